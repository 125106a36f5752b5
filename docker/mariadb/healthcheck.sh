#!/bin/bash
# Like the official image's healthcheck.sh for the two checks the stack uses:
#   --connect              the server accepts a connection
#   --innodb_initialized   InnoDB is up
# healthcheck@localhost (no privileges, socket only) exists once the
# entrypoint has finished initialising.
set -uo pipefail
q() { mariadb --no-defaults -S /run/mysqld/mysqld.sock -u healthcheck -N -e "$1" 2>/dev/null; }
(($#)) || set -- --connect
for check in "$@"; do
    case $check in
    --connect) q 'SELECT 1' >/dev/null || exit 1 ;;
    --innodb_initialized)
        [[ "$(q "SELECT 1 FROM information_schema.ENGINES WHERE ENGINE='InnoDB' AND SUPPORT IN ('YES','DEFAULT')")" == 1 ]] || exit 1
        ;;
    *) echo "healthcheck.sh: unknown check $check" >&2; exit 2 ;;
    esac
done
