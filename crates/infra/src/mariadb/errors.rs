//! MariaDB driver errors, classified once: the few a store maps to business
//! variants (duplicate keys, deadlocks), the transient ones (the database
//! is unreachable or busy: retry later) and the permanent ones (the data is
//! refused: the same statement fails again). Every sqlx error of the
//! adapters becomes a [`StoreError`] here and nowhere else.

use payment_application::StoreError;
use sqlx::mysql::MySqlDatabaseError;

/// What a failed statement means to us.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DbFailure {
    /// ER_DUP_ENTRY (1062, SQLSTATE 23000); carries the server's message,
    /// which names the violated key.
    Duplicate(String),
    /// ER_LOCK_DEADLOCK (1213): InnoDB chose this transaction as the victim.
    Deadlock,
    /// The database cannot answer now (unreachable, shutting down, pool
    /// exhausted, login refused, lock wait timeout, too many connections):
    /// retry later.
    Transient,
    /// The data or the statement is refused (SQLSTATE class 22 data
    /// exceptions such as a value out of a column's range, class 23
    /// constraint violations, or anything else the server rejects): the
    /// same statement fails the same way.
    Permanent,
}

/// Server error numbers that say "not now" rather than "never": the
/// server is busy, timed out or going away, or refuses the login (a locked or
/// misconfigured account is an outage to us, fixed without touching the
/// message — never a reason to dead-letter it).
const TRANSIENT_NUMBERS: [u16; 16] = [
    1040, // ER_CON_COUNT_ERROR: too many connections
    1044, // ER_DBACCESS_DENIED_ERROR
    1045, // ER_ACCESS_DENIED_ERROR
    1053, // ER_SERVER_SHUTDOWN
    1129, // ER_HOST_IS_BLOCKED
    1130, // ER_HOST_NOT_PRIVILEGED
    1203, // ER_TOO_MANY_USER_CONNECTIONS
    1205, // ER_LOCK_WAIT_TIMEOUT
    1213, // ER_LOCK_DEADLOCK
    1226, // ER_USER_LIMIT_REACHED
    1290, // ER_OPTION_PREVENTS_STATEMENT: read-only (a failover in progress)
    1317, // ER_QUERY_INTERRUPTED: killed (KILL QUERY, a shutdown)
    1927, // ER_CONNECTION_KILLED
    1969, // ER_STATEMENT_TIMEOUT: max_statement_time exceeded (a busy server)
    4031, // ER_CLIENT_INTERACTION_TIMEOUT: the server closed an idle connection
    4151, // ER_ACCOUNT_HAS_BEEN_LOCKED
];

impl DbFailure {
    /// Whether the same statement may succeed later.
    pub(crate) const fn is_transient(&self) -> bool {
        matches!(self, Self::Transient | Self::Deadlock)
    }
}

pub(crate) fn classify(error: &sqlx::Error) -> DbFailure {
    let db = match error {
        sqlx::Error::Database(db) => db,
        // The connection or the pool failed: nothing reached the server, or
        // its answer never came back.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => return DbFailure::Transient,
        _ => return DbFailure::Permanent,
    };
    let Some(mysql) = db.try_downcast_ref::<MySqlDatabaseError>() else {
        return DbFailure::Permanent;
    };
    server_failure(
        mysql.number(),
        mysql.code().unwrap_or_default(),
        mysql.message(),
    )
}

/// What the server's error `number` with `sqlstate` means.
fn server_failure(number: u16, sqlstate: &str, message: &str) -> DbFailure {
    match number {
        1062 => DbFailure::Duplicate(message.to_owned()),
        1213 => DbFailure::Deadlock,
        number if TRANSIENT_NUMBERS.contains(&number) => DbFailure::Transient,
        // 40001: serialization failure; class 08: connection exception;
        // class 28: invalid authorization.
        _ if sqlstate == "40001" || sqlstate.starts_with("08") || sqlstate.starts_with("28") => {
            DbFailure::Transient
        }
        _ => DbFailure::Permanent,
    }
}

/// The [`StoreError`] of a failed statement that no business variant
/// claims: [`StoreError::Unavailable`] when retrying may help,
/// [`StoreError::Unexpected`] when it cannot.
pub(crate) fn store_error(error: sqlx::Error, what: &'static str) -> StoreError {
    let transient = classify(&error).is_transient();
    let error = anyhow::Error::new(error).context(what);
    if transient {
        StoreError::Unavailable(error)
    } else {
        StoreError::Unexpected(error)
    }
}

/// A `.context(…)` for sqlx results that classifies the error.
pub(crate) trait SqlContext<T> {
    /// The result, its error classified as a [`StoreError`] doing `what`.
    fn store_context(self, what: &'static str) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for Result<T, sqlx::Error> {
    fn store_context(self, what: &'static str) -> Result<T, StoreError> {
        self.map_err(|error| store_error(error, what))
    }
}

#[cfg(test)]
mod tests {
    use payment_application::Classify as _;

    use super::*;

    #[test]
    fn refused_data_and_violated_constraints_are_permanent() {
        for (number, sqlstate, what) in [
            (1406, "22001", "data too long for column"),
            (
                1264,
                "22003",
                "out of range value (DECIMAL(19,4) and 10^15)",
            ),
            (
                1366,
                "22007",
                "incorrect string value (not ASCII in an ascii column)",
            ),
            (1292, "22007", "incorrect datetime value"),
            (1365, "22012", "division by zero"),
            (1048, "23000", "column cannot be null"),
            (1452, "23000", "foreign key constraint fails"),
            (4025, "23000", "CHECK constraint failed (JSON_VALID)"),
            (1054, "42S22", "unknown column: a bug, not an outage"),
        ] {
            let failure = server_failure(number, sqlstate, what);
            assert_eq!(failure, DbFailure::Permanent, "{number} {what}");
            assert!(!failure.is_transient(), "{number} {what}");
        }
    }

    #[test]
    fn a_duplicate_key_names_the_key_and_is_permanent_unless_the_store_maps_it() {
        let message = "Duplicate entry 'order-1' for key 'uq_payments_order_id'";
        let failure = server_failure(1062, "23000", message);
        // The store maps the uniques it owns (inbox, stream versions, order)
        // from this message; any other duplicate is a refusal for good.
        assert_eq!(failure, DbFailure::Duplicate(message.to_owned()));
        assert!(!failure.is_transient());
    }

    #[test]
    fn deadlocks_lock_waits_and_timeouts_are_transient() {
        assert_eq!(
            server_failure(1213, "40001", "deadlock"),
            DbFailure::Deadlock
        );
        for (number, sqlstate, what) in [
            (1205, "HY000", "lock wait timeout exceeded"),
            (
                1969,
                "70100",
                "query execution was interrupted (max_statement_time)",
            ),
            (1317, "70100", "query execution was interrupted"),
            (9997, "40001", "any serialization failure"),
        ] {
            let failure = server_failure(number, sqlstate, what);
            assert!(failure.is_transient(), "{number} {what}: {failure:?}");
        }
        assert!(DbFailure::Deadlock.is_transient());
    }

    #[test]
    fn an_unreachable_busy_or_refusing_server_is_transient() {
        for (number, sqlstate, what) in [
            (1040, "08004", "too many connections"),
            (1045, "28000", "access denied"),
            (1053, "08S01", "server shutdown in progress"),
            (1290, "HY000", "read-only (failover)"),
            (1927, "70100", "connection was killed"),
            (4031, "HY000", "client interaction timeout"),
            (1158, "08S01", "got an error reading communication packets"),
            (9999, "08S01", "any connection exception"),
            (9998, "28000", "any invalid authorization"),
        ] {
            let failure = server_failure(number, sqlstate, what);
            assert_eq!(failure, DbFailure::Transient, "{number} {what}");
        }
    }

    #[test]
    fn a_failed_connection_or_pool_is_transient_and_a_bad_row_permanent() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for error in [
            sqlx::Error::Io(refused),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Protocol("connection reset".into()),
        ] {
            let store = store_error(error, "read");
            assert!(matches!(store, StoreError::Unavailable(_)), "{store:?}");
            assert!(!store.is_permanent());
        }
        for error in [
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("state".into()),
            sqlx::Error::Decode("not a number".into()),
        ] {
            let store = store_error(error, "read");
            assert!(matches!(store, StoreError::Unexpected(_)), "{store:?}");
            assert!(store.is_permanent());
        }
    }
}
