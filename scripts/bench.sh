#!/usr/bin/env bash
# Every performance figure of issue 10 in ONE run, printed side by side with
# its ratio and goal (tests/benches/service.rs), plus the reconciler drain
# (tests/benches/reconcile_drain.rs) and a description of the machine.
#
#   scripts/bench.sh            # the full run (~2-4 min on 2 cores, warm build)
#   BENCH_ORDERS=2000 BENCH_CONFIRMS=500 BENCH_GETS=3000 scripts/bench.sh   # a smoke run
#
# Release build, against the local stack (scripts/stack.sh up: MariaDB on
# 127.0.0.1:3306, Tansu); the service runs as its own process with
# PAYMENT__GATEWAY=fake and PAYMENT__AUTH__DISABLED=true (the bench measures
# the reads and writes, not token checks). Its log goes to
# .stack/bench/service.log. Skip the drain with BENCH_SKIP_DRAIN=1.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/stack.sh up >/dev/null
# shellcheck disable=SC1091
source .stack/env

# A broker of the bench's own (fresh Tansu, memory storage) unless
# BENCH_SHARED_BROKER=1: the shared dev broker holds every topic every test
# run ever created, and each metadata refresh of the service's Kafka clients
# parses all of them — CPU the figures would otherwise charge to the service.
if [[ -z "${BENCH_SHARED_BROKER:-}" ]]; then
  port=${BENCH_KAFKA_PORT:-19392}
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "bench: port $port is taken; set BENCH_KAFKA_PORT" >&2
    exit 1
  fi
  mkdir -p .stack/bench
  (
    unset CLUSTER_ID SCHEMA_REGISTRY OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG
    exec .stack/bin/tansu broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/
  ) >.stack/bench/tansu.log 2>&1 &
  tansu_pid=$!
  trap 'kill "$tansu_pid" 2>/dev/null; wait "$tansu_pid" 2>/dev/null || true' EXIT
  for ((i = 0; i < 150; i++)); do
    if timeout 2 .stack/bin/tansu topic list --broker "tcp://127.0.0.1:$port" >/dev/null 2>&1; then
      break
    fi
    kill -0 "$tansu_pid" 2>/dev/null || { tail -n 20 .stack/bench/tansu.log >&2; exit 1; }
    sleep 0.1
  done
  export PAYMENT__KAFKA__BROKERS="127.0.0.1:$port"
  echo "broker: a fresh Tansu of the bench's own on 127.0.0.1:$port (memory storage)"
else
  echo "broker: the shared dev broker $PAYMENT__KAFKA__BROKERS ($(timeout 5 .stack/bin/tansu topic list --broker "tcp://$PAYMENT__KAFKA__BROKERS" 2>/dev/null | grep -o '"name":' | wc -l) topics)"
fi

cargo build --release --quiet -p payment-service
cargo bench --no-run --quiet -p payment-e2e --bench service --bench reconcile_drain
# A copy: a target dir shared with other checkouts may get their build of
# the binary at the same path while this run goes on.
cp "${CARGO_TARGET_DIR:-$PWD/target}/release/payment-service" .stack/bench/payment-service
export PAYMENT_BIN="$PWD/.stack/bench/payment-service"
export BENCH_LOG="$PWD/.stack/bench/service.log"
: >"$BENCH_LOG"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'),"\
  "$(awk '/MemTotal/ {printf "%.0f GB", $2 / 1048576}' /proc/meminfo) RAM, $(uname -sr)"
mariadb -h 127.0.0.1 -P 3306 -u root -N -B -e \
  "SELECT CONCAT('mariadb: ', @@version, ', innodb_flush_log_at_trx_commit=', @@innodb_flush_log_at_trx_commit, ', sync_binlog=', @@sync_binlog, ', log_bin=', @@log_bin, ', innodb_buffer_pool_size=', @@innodb_buffer_pool_size DIV 1048576, ' MB')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ -f tests/benches/reconcile_drain.rs && -z "${BENCH_SKIP_DRAIN:-}" ]]; then
  echo "reconciler drain (tests/benches/reconcile_drain.rs) …" >&2
  line=$(cargo bench --quiet -p payment-e2e --bench reconcile_drain 2>/dev/null | grep '^reconcile_drain ' | tail -1 || true)
  if [[ -n "$line" ]]; then
    per_s=$(sed -n 's/.*settled_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
    concurrency=$(sed -n 's/.*concurrency=\([0-9]*\).*/\1/p' <<<"$line")
    export RECONCILE_DRAIN="${per_s} settled/s (concurrency ${concurrency})"
  else
    export RECONCILE_DRAIN="failed: see cargo bench -p payment-e2e --bench reconcile_drain"
  fi
fi

cargo bench --quiet -p payment-e2e --bench service
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
