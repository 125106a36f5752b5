#!/bin/bash
# Run once, on an empty datadir, by the MariaDB image's entrypoint (the
# official image's and docker/mariadb/'s alike): creates the Debezium
# connector's own user from debezium/connector-user.sql (the grants Debezium
# documents; mounted at /debezium), with the password from the environment —
# the same DEBEZIUM_DATABASE_PASSWORD that Kafka Connect resolves through
# EnvVarConfigProvider (${env:...} in the connector file).
set -euo pipefail
: "${DEBEZIUM_DATABASE_PASSWORD:?set DEBEZIUM_DATABASE_PASSWORD}"
q() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\'\'}"; }
MYSQL_PWD="${MARIADB_ROOT_PASSWORD:-}" mariadb -uroot \
    -e "SET @debezium_password = $(q "$DEBEZIUM_DATABASE_PASSWORD"); SOURCE /debezium/connector-user.sql;"
