#!/usr/bin/env bash
# The run command: bring the local stack up (MariaDB + Tansu), start the fake
# Toss server, and run the service for real (release build) on
# http://127.0.0.1:8087 until Ctrl-C. No Toss keys needed: the service talks
# to the fake Toss over HTTP exactly as it would to Toss.
# Any PAYMENT__… variable already set wins over the defaults below (set
# PAYMENT__TOSS__BASE_URL and PAYMENT__TOSS__SECRET_KEY to use real Toss).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/stack.sh up
# shellcheck source=/dev/null
source .stack/env

cargo build --release --locked -p payment-service -p fake-toss

FAKE_TOSS_ADDR="${FAKE_TOSS_ADDR:-127.0.0.1:18080}"
if [[ -z "${PAYMENT__TOSS__BASE_URL:-}" ]]; then
    FAKE_TOSS_ADDR="$FAKE_TOSS_ADDR" target/release/fake-toss &
    fake_toss=$!
    trap 'kill "$fake_toss" 2>/dev/null || true' EXIT
    export PAYMENT__TOSS__BASE_URL="http://$FAKE_TOSS_ADDR"
    export PAYMENT__TOSS__SECRET_KEY="${PAYMENT__TOSS__SECRET_KEY:-test_sk_fake}"
fi
export PAYMENT__GATEWAY="${PAYMENT__GATEWAY:-toss}"
export PAYMENT__LOG__FORMAT="${PAYMENT__LOG__FORMAT:-pretty}"

# /api/v1 needs a bearer JWT. Unless keys are configured, this run gets a
# random HS256 secret of its own (never written anywhere), and the tokens
# printed below are signed with it: they die with this run.
if [[ -z "${PAYMENT__AUTH__HS256_SECRET:-}" && -z "${PAYMENT__AUTH__PUBLIC_KEYS_FILE:-}" ]]; then
    PAYMENT__AUTH__HS256_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    export PAYMENT__AUTH__HS256_SECRET
fi
if [[ -n "${PAYMENT__AUTH__HS256_SECRET:-}" ]]; then
    admin_token="$(target/release/payment-service dev-token --sub dev-admin --scope payments:admin)"
    user_token="$(target/release/payment-service dev-token --sub 42)"
    cat <<EOF
Dev tokens (valid 8 h, for this run only):
  back office (payments:admin): export TOKEN=$admin_token
  user 42 (own payments only):  export USER_TOKEN=$user_token
  e.g. curl -H "Authorization: Bearer \$TOKEN" "http://127.0.0.1:8087/api/v1/payments?orderId=..."
EOF
fi
target/release/payment-service serve
