#!/usr/bin/env bash
# The test command: bring the local stack up (real MariaDB + real Tansu
# broker, installed if missing) and run every test of the workspace against it.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p payment-domain).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/stack.sh up
# shellcheck source=/dev/null
source .stack/env
cargo test --workspace "$@"
