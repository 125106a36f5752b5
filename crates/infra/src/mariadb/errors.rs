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
/// server is busy or going away, or refuses the login (a locked or
/// misconfigured account is an outage to us, fixed without touching the
/// message — never a reason to dead-letter it).
const TRANSIENT_NUMBERS: [u16; 14] = [
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
    1927, // ER_CONNECTION_KILLED
    4031, // ER_CLIENT_INTERACTION_TIMEOUT: the server closed an idle connection
    4151, // ER_ACCOUNT_HAS_BEEN_LOCKED
];

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
    let sqlstate = mysql.code().unwrap_or_default();
    match mysql.number() {
        1062 => DbFailure::Duplicate(mysql.message().to_owned()),
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
    let transient = matches!(classify(&error), DbFailure::Transient | DbFailure::Deadlock);
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
