#!/bin/bash
# Map apache/kafka's settings onto Tansu's flags. Tansu serves ONE listener:
# the inter-broker one (KAFKA_INTER_BROKER_LISTENER_NAME, PLAINTEXT by
# default), i.e. the compose network (kafka:9092). Other listeners (the
# host's EXTERNAL one) are not served: reach the broker from a container on
# the network (`docker compose exec ...`). Storage is memory: a restart
# empties the broker, as scripts/stack.sh's Tansu.
set -euo pipefail
name="${KAFKA_INTER_BROKER_LISTENER_NAME:-PLAINTEXT}"
pick() { # pick LIST NAME -> host:port of NAME://host:port in LIST
    local item
    IFS=, read -r -a items <<<"$1"
    for item in "${items[@]}"; do
        if [[ ${item%%://*} == "$2" ]]; then
            echo "${item#*://}"
            return 0
        fi
    done
    return 1
}
listen="$(pick "${KAFKA_LISTENERS:-PLAINTEXT://:9092}" "$name")" || { echo "no $name in KAFKA_LISTENERS" >&2; exit 1; }
advertised="$(pick "${KAFKA_ADVERTISED_LISTENERS:-PLAINTEXT://localhost:9092}" "$name")" || advertised="$listen"
[[ ${listen%:*} == "" ]] && listen="0.0.0.0$listen"
for other in ${KAFKA_ADVERTISED_LISTENERS//,/ }; do
    [[ ${other%%://*} == "$name" ]] || echo "tansu: listener ${other%%://*} (${other#*://}) is not served by this stand-in" >&2
done
# Tansu reads these from the environment too; only the flags below count.
unset LISTENER_URL ADVERTISED_LISTENER_URL STORAGE_ENGINE SCHEMA_REGISTRY
export CLUSTER_ID="${CLUSTER_ID:-tansu_cluster}"
if (($#)); then exec "$@"; fi
exec tansu broker --listener-url "tcp://$listen" --advertised-listener-url "tcp://$advertised" \
    --storage-engine memory://tansu/
