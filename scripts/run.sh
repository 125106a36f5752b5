#!/usr/bin/env bash
# The run command: bring the local stack up and run the service for real
# (release build) on http://127.0.0.1:8087 until Ctrl-C.
# Any PAYMENT__… variable already set wins over the defaults below.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/stack.sh up
# shellcheck source=/dev/null
source .stack/env
export PAYMENT__GATEWAY="${PAYMENT__GATEWAY:-fake}"
export PAYMENT__LOG__FORMAT="${PAYMENT__LOG__FORMAT:-pretty}"
exec cargo run --release --locked -p payment-service -- serve
