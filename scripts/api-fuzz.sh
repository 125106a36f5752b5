#!/usr/bin/env bash
# Property-based API fuzzing: schemathesis (pinned, from PyPI, in a venv
# under .stack/) generates requests from the service's own /openapi.json and
# checks every answer against it: no 5xx, schema-valid requests accepted,
# schema-invalid ones rejected, answers as documented, statuses and
# content types declared, auth enforced. Deterministic: a fixed seed and a
# bounded number of examples per operation. schemathesis runs its default
# phases: examples, coverage, fuzzing, and stateful, which chains
# operations along the document's response links (an order's payments to
# a payment, its trail and its cancel; a confirm to the payment).
#
#   scripts/api-fuzz.sh                 # starts its own service (see below)
#   API_FUZZ_URL=http://127.0.0.1:8087 API_FUZZ_TOKEN=<admin JWT> scripts/api-fuzz.sh
#
# Without API_FUZZ_URL it brings the local stack up, starts the service
# (debug build, in CARGO_TARGET_DIR when set; fake gateway, a scratch
# database `payment_fuzz` and topics of its own, a random HS256 secret) on a
# free port and runs three passes: first with no data (scripts/api-fuzz.toml:
# every operation held to the default rules); then, with three orders seeded
# through the order topic as the README does (sample-orders) and their ids
# offered to the fuzzer (scripts/api-fuzz-seeded.toml), every phase but the
# stateful one; last the stateful phase alone, with five fresh payments
# confirmed first, so that a cancel (the one operation schemathesis starts
# chains from: it reads `orderId` as a reference to an "Order" that no
# operation returns) can succeed and lead on along the links. It stops the
# service afterwards. With API_FUZZ_URL, one pass against that service.
# Extra arguments go to `schemathesis run`.
# Env: API_FUZZ_SEED (default 1), API_FUZZ_MAX_EXAMPLES (default 30).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCHEMATHESIS_VERSION=4.32.5
SEED="${API_FUZZ_SEED:-1}"
MAX_EXAMPLES="${API_FUZZ_MAX_EXAMPLES:-30}"
VENV=.stack/schemathesis-$SCHEMATHESIS_VERSION

if [[ ! -x "$VENV/bin/schemathesis" ]]; then
    echo "api-fuzz: installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# One schemathesis pass with settings file $1 (extra arguments: the caller's).
fuzz() {
    local config=$1
    shift
    "$VENV/bin/schemathesis" --config-file "$config" run "$API_FUZZ_URL/openapi.json" \
        --url "$API_FUZZ_URL" \
        --checks all \
        --seed "$SEED" \
        --max-examples "$MAX_EXAMPLES" \
        --header "Authorization: Bearer $API_FUZZ_TOKEN" \
        --generation-database none \
        --workers 1 \
        --no-color \
        "$@"
}

# seed COUNT ready|confirmed: places COUNT orders on the order topic (as the
# README does), waits for their payments, confirms each when asked (the
# fake gateway approves), and writes the orders and payments as schemathesis
# dictionaries (one quoted string a line) that scripts/api-fuzz-seeded.toml
# lets the reads and the cancel draw half of the time, so they reach a
# payment, not only 404s.
seed() {
    local count=$1 state=$2 order payment
    mkdir -p .stack/api-fuzz
    "$debug/sample-orders" --count "$count" --amount 15000 | cut -f1 > .stack/api-fuzz/orders
    : > .stack/api-fuzz/payments.txt
    while read -r order; do
        payment=""
        for _ in $(seq 300); do
            payment="$(curl -fsS -H "Authorization: Bearer $API_FUZZ_TOKEN" \
                "$API_FUZZ_URL/api/v1/payments?orderId=$order" | python3 -c 'import json,sys; print(next((p["paymentId"] for p in json.load(sys.stdin)), ""))')"
            [[ -n "$payment" ]] && break
            sleep 0.2
        done
        [[ -n "$payment" ]] || { echo "api-fuzz: no payment for seeded order $order" >&2; exit 1; }
        if [[ $state == confirmed ]]; then
            curl -fsS -o /dev/null -H "Authorization: Bearer $API_FUZZ_TOKEN" \
                -H 'content-type: application/json' \
                -d "{\"paymentKey\":\"tgen_fuzz_$payment\",\"orderId\":\"$order\",\"amount\":15000}" \
                "$API_FUZZ_URL/api/v1/payments/confirm"
        fi
        echo "\"$payment\"" >> .stack/api-fuzz/payments.txt
    done < .stack/api-fuzz/orders
    sed 's/.*/"&"/' .stack/api-fuzz/orders > .stack/api-fuzz/orders.txt
}

service_pid=""
stop_service() {
    if [[ -n "$service_pid" ]]; then
        kill "$service_pid" 2>/dev/null || true
        wait "$service_pid" 2>/dev/null || true
    fi
}
trap stop_service EXIT

if [[ -z "${API_FUZZ_URL:-}" ]]; then
    scripts/stack.sh up >&2
    # shellcheck source=/dev/null
    source .stack/env
    cargo build --locked -q -p payment-service --bins
    # Where cargo put them: a shared CARGO_TARGET_DIR, or ./target.
    debug="${CARGO_TARGET_DIR:-target}/debug"
    bin="$debug/payment-service"

    mariadb -h127.0.0.1 -uroot -e 'DROP DATABASE IF EXISTS payment_fuzz; CREATE DATABASE payment_fuzz'
    run_id="fuzz-$$-$(date +%s)"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    export PAYMENT__DATABASE__URL="mysql://root@127.0.0.1:3306/payment_fuzz"
    export PAYMENT__HTTP__ADDR="127.0.0.1:$port"
    export PAYMENT__GATEWAY=fake
    export PAYMENT__KAFKA__GROUP_ID="$run_id"
    export PAYMENT__TOPICS__ORDER_PLACED="$run_id.order.placed"
    export PAYMENT__TOPICS__ORDER_REFUND_REQUESTED="$run_id.order.refund.requested"
    export PAYMENT__LOG__FILTER=warn
    PAYMENT__AUTH__HS256_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    export PAYMENT__AUTH__HS256_SECRET
    unset PAYMENT__AUTH__PUBLIC_KEYS_FILE PAYMENT__AUTH__DISABLED PAYMENT__HTTP__OPS_ADDR
    "$bin" serve > ".stack/api-fuzz-service.log" 2>&1 &
    service_pid=$!
    API_FUZZ_URL="http://127.0.0.1:$port"
    for _ in $(seq 300); do
        curl -fsS -o /dev/null "$API_FUZZ_URL/health/ready" 2>/dev/null && break
        kill -0 "$service_pid" 2>/dev/null || { cat .stack/api-fuzz-service.log >&2; exit 1; }
        sleep 0.2
    done
    API_FUZZ_TOKEN="$("$bin" dev-token --sub api-fuzz --scope payments:admin --ttl-secs 3600)"
    echo "api-fuzz: pass 1 of 3, no data: every operation held to the default rules" >&2
    fuzz scripts/api-fuzz.toml "$@"
    echo "api-fuzz: pass 2 of 3, seeded orders and READY payments" >&2
    seed 3 ready
    fuzz scripts/api-fuzz-seeded.toml --phases examples,coverage,fuzzing "$@"
    echo "api-fuzz: pass 3 of 3, stateful, from fresh approved payments" >&2
    seed 5 confirmed
    fuzz scripts/api-fuzz-seeded.toml --phases stateful "$@"
    exit 0
fi

: "${API_FUZZ_TOKEN:?API_FUZZ_TOKEN: a payments:admin bearer token for API_FUZZ_URL}"
fuzz scripts/api-fuzz.toml "$@"
