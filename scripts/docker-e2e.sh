#!/usr/bin/env bash
# One order end to end through the docker-compose stack (the local images of
# docker/compose.local.yml, or the official ones with DOCKER_E2E_OFFICIAL=1):
#
#   OrderPlacedEvent published to the broker (sample-orders, inside the
#   service's container) → the payment is READY (GET /api/v1/payments?orderId=)
#   → confirmed against the fake Toss (POST /api/v1/payments/confirm) →
#   PaymentCompletedEvent read from koosco.commerce.payment.completed.
#
# Usage: scripts/docker-e2e.sh [embedded|debezium]
#
#   embedded  (default) the service's own outbox relay
#   debezium  COMPOSE_PROFILES=debezium: Kafka Connect + Debezium relay it
#
# Brings the stack up first (scripts/docker.sh up: engine, images, compose up
# --wait), leaves it running (scripts/docker.sh down stops it). Prints the
# timings of each step. DOCKER_E2E_DOWN=1 takes the stack down at the end
# (also on failure).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
MODE="${1:-embedded}"
case $MODE in
embedded) unset COMPOSE_PROFILES ;;
debezium) export COMPOSE_PROFILES=debezium ;;
*)
    echo "usage: $0 [embedded|debezium]" >&2
    exit 2
    ;;
esac

# The service confirms through the fake Toss container over HTTP, with the
# very Toss client it uses in production.
export PAYMENT_GATEWAY=toss TOSS_SECRET_KEY=test_sk_fake
export PAYMENT_HOST_PORT="${PAYMENT_HOST_PORT:-18087}"
BASE="http://127.0.0.1:$PAYMENT_HOST_PORT"
TOPIC=koosco.commerce.payment.completed
AMOUNT=15000
WAIT_S=60

log() { printf 'docker-e2e: %s\n' "$*" >&2; }
die() {
    log "FAIL: $*"
    "$ROOT/scripts/docker.sh" compose logs --tail 40 payment-service >&2 || true
    exit 1
}
ms() { date +%s%3N; }
compose() { "$ROOT/scripts/docker.sh" compose "$@"; }

# The service verifies /api/v1 bearer tokens: a secret for this run only.
export PAYMENT_AUTH_HS256_SECRET="${PAYMENT_AUTH_HS256_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"

if [[ ${DOCKER_E2E_DOWN:-} == 1 ]]; then
    trap '"$ROOT/scripts/docker.sh" down || true' EXIT
fi

t0=$(ms)
"$ROOT/scripts/docker.sh" up
t_up=$(($(ms) - t0))
# Whatever ran before (another mode) is recreated by `up`; the service must
# now run the relay this mode asks for.
relay="$(compose exec -T payment-service printenv PAYMENT__OUTBOX__RELAY)"
[[ $relay == "$MODE" ]] || die "the service runs relay '$relay', expected '$MODE'"

TOKEN="$(compose exec -T payment-service payment-service dev-token --sub docker-e2e --scope payments:admin)" ||
    die "dev-token failed"
AUTH="Authorization: Bearer $TOKEN"

# 1. The order service places an order.
t1=$(ms)
line="$(compose exec -T payment-service sample-orders --brokers kafka:9092 --count 1 --amount "$AMOUNT")" ||
    die "sample-orders failed"
ORDER="${line%%$'\t'*}"
[[ $ORDER == order-* ]] || die "unexpected sample-orders output: $line"
log "placed $ORDER ($AMOUNT KRW)"

# 2. The payment appears, READY.
status="" body=""
for ((i = 0; i < WAIT_S * 5; i++)); do
    body="$(curl -fsS -H "$AUTH" "$BASE/api/v1/payments?orderId=$ORDER" 2>/dev/null || true)"
    status="$(python3 -c 'import json,sys; v=json.load(sys.stdin); print(v[0]["status"] if v else "")' <<<"${body:-[]}" 2>/dev/null || true)"
    [[ $status == READY ]] && break
    sleep 0.2
done
[[ $status == READY ]] || die "payment for $ORDER not READY after ${WAIT_S}s (last: ${body:-none})"
t_ready=$(($(ms) - t1))
log "READY after $t_ready ms"

# 3. The widget's confirm, against the fake Toss.
t2=$(ms)
confirm="$(curl -fsS "$BASE/api/v1/payments/confirm" -H "$AUTH" -H 'content-type: application/json' \
    -d "{\"paymentKey\":\"tgen_e2e_${ORDER#order-}\",\"orderId\":\"$ORDER\",\"amount\":$AMOUNT}")" ||
    die "confirm failed: $confirm"
status="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' <<<"$confirm")"
[[ $status == DONE ]] || die "confirm answered status $status: $confirm"
log "confirmed: DONE ($(($(ms) - t2)) ms)"

# 4. PaymentCompletedEvent on the broker (whichever relay published it).
# The local broker is Tansu: its CLI reads a partition; Apache Kafka's
# console consumer reads the topic.
found=""
deadline=$((SECONDS + WAIT_S))
while ((SECONDS < deadline)); do
    if compose exec -T kafka sh -c 'command -v tansu' >/dev/null 2>&1; then
        # Every partition the broker lists for the topic.
        parts="$(compose exec -T kafka timeout 5 tansu topic list --broker tcp://localhost:9092 2>/dev/null |
            python3 -c 'import json,sys; print(*[p["partition_index"] for t in json.load(sys.stdin) if t["name"] == sys.argv[1] for p in t["partitions"]])' "$TOPIC" 2>/dev/null || true)"
        out="$(for p in $parts; do
            compose exec -T kafka timeout 10 tansu cat consume --broker tcp://localhost:9092 \
                --partition "$p" --max-wait-time-ms 300 "$TOPIC" 2>/dev/null || true
        done)"
    else
        out="$(compose exec -T kafka /opt/kafka/bin/kafka-console-consumer.sh \
            --bootstrap-server localhost:9092 --topic "$TOPIC" --from-beginning \
            --timeout-ms 5000 2>/dev/null || true)"
    fi
    if grep -F "$ORDER" <<<"$out" | grep -q PaymentCompletedEvent; then
        found="$(grep -F "$ORDER" <<<"$out" | grep PaymentCompletedEvent | head -n 1)"
        break
    fi
    sleep 1
done
[[ -n $found ]] || die "no PaymentCompletedEvent for $ORDER on $TOPIC after ${WAIT_S}s"
# Exactly once here: a second copy would mean two relays ran (consumers
# would dedupe it by id, but a clean stack must not produce it). Tansu's CLI
# prints one JSON array of records per fetch.
sleep 2
copies="$(for p in ${parts:-}; do
    compose exec -T kafka timeout 10 tansu cat consume --broker tcp://localhost:9092 \
        --partition "$p" --max-wait-time-ms 300 "$TOPIC" 2>/dev/null || true
done | python3 -c '
import json, sys
order, n = sys.argv[1], 0
for line in sys.stdin:
    line = line.strip()
    if line.startswith("["):
        for r in json.loads(line):
            v = r.get("value") or {}
            if v.get("type") == "PaymentCompletedEvent" and order in json.dumps(v):
                n += 1
print(n)' "$ORDER")"
if [[ -n ${parts:-} && $copies != 1 ]]; then
    die "PaymentCompletedEvent for $ORDER is on $TOPIC $copies times (two relays?)"
fi
t_event=$(($(ms) - t2))
log "PaymentCompletedEvent on $TOPIC: ${found:0:200}"
log "ok ($MODE relay): stack up ${t_up} ms, placed→READY ${t_ready} ms, confirm→event read ${t_event} ms"
