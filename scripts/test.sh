#!/usr/bin/env bash
# The test command: installs and starts everything the tests need, then runs
# every test.
#
#   1. the local stack: real MariaDB + the Tansu broker (scripts/stack.sh);
#   2. real Debezium (Kafka Connect + the MySQL-connector stand-in + the Outbox
#      Event Router) tailing a scratch MariaDB (scripts/debezium.sh);
#   3. `cargo test --workspace` against both (the Debezium tests must not
#      skip: PAYMENT_TEST_REQUIRE_DEBEZIUM);
#   4. the docker-compose stack, built from local images, carrying one order
#      end to end through Debezium (scripts/docker-e2e.sh; installs and starts
#      a Docker Engine when missing);
#   5. the end-to-end suite once more with MariaDB and the broker from
#      testcontainers (scripts/test-containers.sh);
#   6. schemathesis against the running service's OpenAPI document
#      (scripts/api-fuzz.sh).
#
# Extra arguments go to step 3's `cargo test` only, and then steps 4–6 are
# skipped (e.g. `scripts/test.sh -p payment-domain` for a quick run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== test.sh: %s (%(%H:%M:%S)T)\n' "$1" -1 >&2; }

# The cargo test runs' output, for the closing count.
RESULTS="$(mktemp)"
trap 'rm -f "$RESULTS"' EXIT
counted() { "$@" 2>&1 | tee -a "$RESULTS"; }

step "local stack"
scripts/stack.sh up
step "Debezium"
scripts/debezium.sh up
# shellcheck source=/dev/null
source .stack/env
# shellcheck source=/dev/null
source .stack/debezium/env
export PAYMENT_TEST_REQUIRE_DEBEZIUM=1

# With arguments, exactly the cargo test they name (`--workspace` would
# override a `-p`).
args=("$@")
[[ $# -gt 0 ]] || args=(--workspace)
step "cargo test ${args[*]}"
status=0
counted cargo test "${args[@]}" || status=$?

if [[ $# -eq 0 && $status -eq 0 ]]; then
    step "docker compose stack, one order through Debezium"
    DOCKER_E2E_DOWN=1 scripts/docker-e2e.sh debezium
    step "end-to-end suite through testcontainers"
    counted scripts/test-containers.sh || status=$?
    if [[ $status -eq 0 ]]; then
        step "schemathesis"
        scripts/api-fuzz.sh
    fi
    step "done"
fi
awk '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$RESULTS"
exit "$status"
