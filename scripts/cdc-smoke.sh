#!/usr/bin/env bash
# Smoke test of the Debezium relay on the local stack, at script level:
#
#   1. scripts/debezium.sh up (the stack, the scratch MariaDB, Connect);
#   2. the connector file has no setting the pinned Debezium/Connect do not
#      know (the launcher's --check);
#   3. the scratch database is migrated with the service's own migrations
#      (`payment-service migrate`);
#   4. two outbox rows are inserted the way the service writes them (one with
#      a traceparent, one without), on a topic of their own;
#   5. the topic is read back with Kafka's Java consumer (TopicDump) and each
#      record must have: topic = aggregatetype, key = aggregateid, value =
#      the payload bytes, headers id / eventType / traceparent (a null value
#      when the row has none), timestamp = created_at in milliseconds.
#
# Usage: scripts/cdc-smoke.sh   (exit 0 when every check passes)
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
DBZ="$ROOT/.stack/debezium"
log() { printf 'cdc-smoke: %s\n' "$*" >&2; }
die() {
    log "FAIL: $*"
    exit 1
}

"$ROOT/scripts/debezium.sh" up
# shellcheck disable=SC1091
source "$ROOT/.stack/env"
# shellcheck disable=SC1091
source "$DBZ/env"
CP="$DBZ/classes:$DBZ/libs/*"
JAVA_LOG=(-Dlog4j2.configurationFile="$ROOT/debezium/launcher/log4j2.properties")

log "connector file: checking for settings the pinned versions do not know"
java "${JAVA_LOG[@]}" -cp "$CP" OutboxConnect --worker "$DBZ/worker.properties" \
    --connector "$ROOT/debezium/payment-outbox-connector.json" --name payment-outbox \
    --set connector.class=io.debezium.connector.mysql.MySqlConnector --check 2>/dev/null ||
    die "debezium/payment-outbox-connector.json has settings Debezium 3.6.3 / Connect 4.3.0 do not define (listed above)"

log "migrating the scratch database with the service's migrations"
# `migrate` loads the whole configuration; the fake gateway needs no secret.
(cd "$ROOT" && PAYMENT__GATEWAY=fake PAYMENT__DATABASE__URL="$DEBEZIUM_DATABASE_URL" cargo run -q -p payment-service -- migrate) ||
    die "payment-service migrate failed"

topic="cdc.smoke.$(date +%s%N)"
id1="$(python3 -c 'import uuid; print(uuid.uuid4())')"
id2="$(python3 -c 'import uuid; print(uuid.uuid4())')"
trace=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01
payload1='{"specversion":"1.0","id":"'"$id1"'","type":"PaymentCreatedEvent","data":{"amount":"10000","note":"ü 한글"}}'
payload2='{"specversion":"1.0","id":"'"$id2"'","type":"PaymentCompletedEvent","data":{}}'
sql() { printf "'%s'" "${1//\'/\'\'}"; }
log "inserting two outbox rows for topic $topic"
mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "${DEBEZIUM_DB_PORT:-3407}" -u root payment -e "
    INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, traceparent, created_at) VALUES
      ($(sql "$id1"), $(sql "$topic"), 'pay-smoke-1', 'PaymentCreatedEvent', $(sql "$payload1"),
       $(sql "$trace"), '2026-01-02 03:04:05.678901'),
      ($(sql "$id2"), $(sql "$topic"), 'pay-smoke-2', 'PaymentCompletedEvent', $(sql "$payload2"),
       NULL, '2026-01-02 03:04:06.000999');" || die "insert failed"

log "reading $topic from the broker"
out="$(java "${JAVA_LOG[@]}" -cp "$CP" TopicDump "$PAYMENT__KAFKA__BROKERS" 30000 2 "$topic" 2>/dev/null)" ||
    die "fewer than 2 records on $topic within 30 s (see $DBZ/connect.log)"
printf '%s\n' "$out" >&2

read -r -d '' check <<'PY' || true
import base64, json, sys
topic, id1, id2, trace, p1, p2 = sys.argv[1:7]
records = {r["key"]: r for r in map(json.loads, sys.stdin.read().splitlines())}
expected = {
    "pay-smoke-1": (id1, "PaymentCreatedEvent", trace, p1, 1767323045678),
    "pay-smoke-2": (id2, "PaymentCompletedEvent", None, p2, 1767323046000),
}
ok = True
for key, (eid, etype, tp, payload, ts) in expected.items():
    r = records.get(key)
    def check(what, got, want):
        global ok
        if got != want:
            ok = False
            print(f"cdc-smoke: {key}: {what} = {got!r}, expected {want!r}", file=sys.stderr)
    if r is None:
        check("record", None, "present")
        continue
    check("topic", r["topic"], topic)
    check("value bytes", base64.b64decode(r["valueBase64"]), payload.encode())
    check("headers", [(h["key"], h["value"]) for h in r["headers"]],
          [("id", eid), ("eventType", etype), ("traceparent", tp)])
    check("timestamp", r["timestamp"], ts)
    check("timestampType", r["timestampType"], "CreateTime")
sys.exit(0 if ok else 1)
PY
python3 -c "$check" "$topic" "$id1" "$id2" "$trace" "$payload1" "$payload2" <<<"$out" ||
    die "records differ from the outbox rows"
log "OK: topic, key, value bytes, id/eventType/traceparent headers and created_at timestamps match"
