#!/bin/bash
# tansu on the compose network, advertising the PLAINTEXT listener of KAFKA_ADVERTISED_LISTENERS
# (apache/kafka's variable; "PLAINTEXT://kafka:9092" in docker-compose.yml).
set -euo pipefail
advertised=""
IFS=',' read -ra listeners <<< "${KAFKA_ADVERTISED_LISTENERS:-PLAINTEXT://localhost:9092}"
for listener in "${listeners[@]}"; do
  [[ $listener == PLAINTEXT://* ]] && advertised="${listener#PLAINTEXT://}"
done
[[ -n $advertised ]] || { echo "no PLAINTEXT listener in KAFKA_ADVERTISED_LISTENERS" >&2; exit 2; }
exec /opt/tansu/bin/tansu broker --listener-url "tcp://0.0.0.0:${advertised##*:}" \
  --advertised-listener-url "tcp://${advertised}" --storage-engine memory://tansu/
