//! Turns MariaDB driver errors into the few cases the adapters act on.

use sqlx::mysql::MySqlDatabaseError;

/// What a failed statement means to us.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DbFailure {
    /// ER_DUP_ENTRY (1062, SQLSTATE 23000); carries the server's message,
    /// which names the violated key.
    Duplicate(String),
    /// ER_LOCK_DEADLOCK (1213): InnoDB chose this transaction as the victim.
    Deadlock,
    Other,
}

pub(crate) fn classify(error: &sqlx::Error) -> DbFailure {
    let Some(db) = error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<MySqlDatabaseError>())
    else {
        return DbFailure::Other;
    };
    match db.number() {
        1062 => DbFailure::Duplicate(db.message().to_owned()),
        1213 => DbFailure::Deadlock,
        _ => DbFailure::Other,
    }
}
