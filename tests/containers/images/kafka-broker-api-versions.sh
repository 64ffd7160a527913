#!/bin/bash
# The compose file's Kafka health check calls this (apache/kafka's tool) with
# `--bootstrap-server localhost:9092`: here, the broker accepts a connection on that port.
set -euo pipefail
server=localhost:9092
while (($#)); do
  [[ $1 == --bootstrap-server ]] && server=$2 && shift
  shift
done
exec 3<>"/dev/tcp/${server%:*}/${server##*:}"
