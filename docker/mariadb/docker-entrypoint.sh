#!/bin/bash
# The subset of the official image's entrypoint the stack uses: on an empty
# datadir, initialise it, set the root password (root@'%' too), create
# MARIADB_DATABASE and run /docker-entrypoint-initdb.d/*.{sh,sql}; then run
# mariadbd with the given options.
set -euo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

if [[ ${1:-} == -* ]]; then set -- mariadbd "$@"; fi
if [[ ${1:-} != mariadbd && ${1:-} != mysqld ]]; then exec "$@"; fi
shift

# --binlog-legacy-event-pos exists from MariaDB 11.4 on, where it restores
# the binlog event positions older servers (this 10.11) always write; the
# `loose-` prefix makes 10.11 accept and ignore it.
args=()
for a in "$@"; do
    case $a in
    --binlog-legacy-event-pos | --binlog-legacy-event-pos=*) args+=("--loose-${a#--}") ;;
    *) args+=("$a") ;;
    esac
done

sql_str() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\'\'}"; }

if [[ ! -d /var/lib/mysql/mysql ]]; then
    if [[ -z ${MARIADB_ROOT_PASSWORD:-} && ${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-} != 1 ]]; then
        log "set MARIADB_ROOT_PASSWORD (or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1)"
        exit 1
    fi
    log "initialising /var/lib/mysql"
    install -d -o mysql -g mysql -m 0755 /var/lib/mysql /run/mysqld
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    mariadbd --user=mysql --skip-networking "${args[@]}" &
    pid=$!
    for ((i = 0; ; i++)); do
        mariadb -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { log "temporary server exited"; exit 1; }
        ((i < 300)) || { log "temporary server not ready after 30 s"; exit 1; }
        sleep 0.1
    done
    pw="$(sql_str "${MARIADB_ROOT_PASSWORD:-}")"
    {
        echo "SET sql_log_bin = 0;"
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY $pw;"
        echo "CREATE USER 'root'@'%' IDENTIFIED BY $pw;"
        echo "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [[ -n ${MARIADB_DATABASE:-} ]]; then
            echo "CREATE DATABASE IF NOT EXISTS \`${MARIADB_DATABASE//\`/\`\`}\`;"
        fi
    } | mariadb -uroot
    export MYSQL_PWD="${MARIADB_ROOT_PASSWORD:-}"
    for f in /docker-entrypoint-initdb.d/*; do
        case $f in
        *.sh)
            log "running $f"
            # shellcheck disable=SC1090  # the init scripts are the user's
            if [[ -x $f ]]; then "$f"; else . "$f"; fi
            ;;
        *.sql)
            log "running $f"
            mariadb -uroot ${MARIADB_DATABASE:+"$MARIADB_DATABASE"} <"$f"
            ;;
        *.sql.gz)
            log "running $f"
            gunzip -c "$f" | mariadb -uroot ${MARIADB_DATABASE:+"$MARIADB_DATABASE"}
            ;;
        *) ;;
        esac
    done
    # Last: until this user exists, healthcheck.sh reports unhealthy.
    mariadb -uroot -e "SET sql_log_bin = 0; CREATE USER 'healthcheck'@'localhost';"
    unset MYSQL_PWD
    kill "$pid"
    wait "$pid" || true
    log "initialised"
fi

exec mariadbd --user=mysql "${args[@]}"
