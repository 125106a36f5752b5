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

cargo build --release --quiet -p payment-service
cargo bench --no-run --quiet -p payment-e2e --bench service
export PAYMENT_BIN="$PWD/target/release/payment-service"
mkdir -p .stack/bench
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
