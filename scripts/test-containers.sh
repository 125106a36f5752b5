#!/usr/bin/env bash
# The end-to-end suite with its MariaDB and broker from testcontainers
# instead of the local stack (scripts/stack.sh): ensures the Docker Engine
# and the locally built images (scripts/docker.sh images — no registry
# needed), then runs `cargo test` under the `with-containers` launcher
# (tests/src/containers.rs), which starts both containers, hands their URLs
# to the tests as .stack/env would, and removes the containers afterwards.
#
# Usage: scripts/test-containers.sh [CARGO TEST ARGS...]
#   no arguments: cargo test -p payment-e2e
#   otherwise:    cargo test ARGS, e.g. -p payment-infra --test mariadb_repository
#
# Settings:
#   PAYMENT_TEST_MARIADB_IMAGE  here local/mariadb:10.11 (the code's default: mariadb:11.4)
#   PAYMENT_TEST_KAFKA_IMAGE    here local/tansu:0.1.2 (the code's default: apache/kafka:4.3.0)
#   TEST_CONTAINERS_IMAGES=skip use the images as they are: only `scripts/docker.sh engine`
#                               (`images` also release-builds the service for its images)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PAYMENT_TEST_MARIADB_IMAGE="${PAYMENT_TEST_MARIADB_IMAGE:-local/mariadb:10.11}"
export PAYMENT_TEST_KAFKA_IMAGE="${PAYMENT_TEST_KAFKA_IMAGE:-local/tansu:0.1.2}"
# The Debezium tests skip here (Connect publishes to the local stack's broker,
# not the container's): the launcher drops DEBEZIUM_DATABASE_URL, and the
# test command's "must not skip" guard does not apply to this run.
unset PAYMENT_TEST_REQUIRE_DEBEZIUM
if [[ ${TEST_CONTAINERS_IMAGES:-} == skip ]]; then
    scripts/docker.sh engine
else
    scripts/docker.sh images
fi

# Containers of a run killed before it removed them (the label holds the
# launcher's pid); a run still going keeps its own.
label=payment-e2e.containers
for id in $(docker ps -aq --filter "label=$label"); do
    pid="$(docker inspect -f "{{index .Config.Labels \"$label\"}}" "$id")"
    kill -0 "$pid" 2>/dev/null || docker rm -fv "$id" >/dev/null
done

[[ $# -gt 0 ]] || set -- -p payment-e2e
exec cargo run -q -p payment-e2e --bin with-containers -- cargo test "$@"
