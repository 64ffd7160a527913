#!/usr/bin/env bash
# Runs the containers' health checks where nothing schedules them: podman without systemd (a container,
# a CI runner, WSL) does not ("unable to get systemd connection to add healthchecks"), so every container
# stays "starting" and docker-compose's `depends_on: condition: service_healthy` waits forever.
#
#   infra/podman-healthchecks.sh [SECONDS] &      # then: docker-compose up -d
#
# Every SECONDS (default 5) it runs `podman healthcheck run` for each running container that has a
# health check and is due: one still starting is checked at every round (so that its dependents start
# as soon as it is healthy), one healthy or unhealthy at the interval its health check gives (30 s if
# none). podman keeps the status, the failing streak and the start period as when it schedules them.
# Docker, and podman with systemd, schedule health checks themselves: this is not needed there.
set -uo pipefail
round=${1:-5}
podman=${PODMAN:-podman}
# id, health status, the health check's interval in nanoseconds (nothing: the container has no health check)
format='{{.Id}} {{.State.Health.Status}} {{if .Config.Healthcheck}}{{printf "%d" .Config.Healthcheck.Interval}}{{end}}'
declare -A last=()
while true; do
  now=$(date +%s)
  while read -r id status interval; do
    [[ -z $interval ]] && continue  # no health check
    every=30
    ((interval >= 1000000000)) && every=$((interval / 1000000000))
    if [[ $status == starting || $((now - ${last[$id]:-0})) -ge $every ]]; then
      last[$id]=$now
      "$podman" healthcheck run "$id" </dev/null >/dev/null 2>&1 || true  # not the loop's input
    fi
  done < <("$podman" ps -q --filter status=running 2>/dev/null | xargs -r "$podman" inspect --format "$format" 2>/dev/null)
  sleep "$round"
done
