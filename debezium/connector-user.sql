-- The connector's own MariaDB account, with exactly the privileges Debezium
-- documents for its MySQL/MariaDB connectors (not root):
--   SELECT                 read tables during a snapshot
--   RELOAD                 FLUSH TABLES / lock for the (schema) snapshot
--   SHOW DATABASES         list databases during a snapshot
--   REPLICATION SLAVE      read the binlog
--   REPLICATION CLIENT     SHOW MASTER STATUS / SHOW BINARY LOGS (MariaDB:
--                          an alias of BINLOG MONITOR)
--
-- The password is never written here: the caller sets @debezium_password in
-- the same session first, e.g.
--   mariadb -e "SET @debezium_password = '...'; SOURCE debezium/connector-user.sql"
-- (scripts/debezium.sh does that for the local stack; a container entrypoint
-- can do the same from its environment). Kafka Connect reads the same
-- password from its environment (`${env:DEBEZIUM_DATABASE_PASSWORD}` in
-- payment-outbox-connector.json). Re-running it resets the password.

SET @debezium_user_sql = CONCAT(
    'CREATE USER IF NOT EXISTS ''debezium''@''%'' IDENTIFIED BY ',
    QUOTE(@debezium_password));
PREPARE debezium_user FROM @debezium_user_sql;
EXECUTE debezium_user;
DEALLOCATE PREPARE debezium_user;

SET @debezium_user_sql = CONCAT(
    'ALTER USER ''debezium''@''%'' IDENTIFIED BY ', QUOTE(@debezium_password));
PREPARE debezium_user FROM @debezium_user_sql;
EXECUTE debezium_user;
DEALLOCATE PREPARE debezium_user;
SET @debezium_user_sql = NULL;

GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT
    ON *.* TO 'debezium'@'%';
