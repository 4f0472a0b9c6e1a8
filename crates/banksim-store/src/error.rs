//! The storage layer's one error type.

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed row does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness or business rule held by the database refused the change. The code is an API error code
    /// (`email_taken`, `username_taken`, `last_admin`).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database cannot be reached, or no connection became free in time.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database URL names no supported backend.
    #[error("unsupported database URL: expected postgres://, postgresql:// or sqlite:")]
    InvalidUrl,
    /// A migration failed.
    #[error("migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The exchange rate would close a cycle of exchanges (these currencies, in order, back to the first) whose
    /// rates multiply to more than one: going round it would create money. Nothing was written.
    #[error("the rate would let a cycle of exchanges create money")]
    RateCycle(Vec<banksim_core::currency::Currency>),
    /// A batch panicked (a broken invariant); nothing of it was written.
    #[error("ledger batch panicked")]
    Panicked,
    /// The dependency's circuit breaker is open: the call was not made (the server's store layer refuses calls to a
    /// database that keeps failing, for `retry_after`).
    #[error("circuit {breaker} is open")]
    CircuitOpen {
        /// The breaker's name.
        breaker: &'static str,
        /// When a trial call may be let through.
        retry_after: std::time::Duration,
    },
    /// A commit failed: whether it took effect is unknown (never a 503 that invites a blind retry).
    #[error("commit failed; outcome unknown")]
    CommitFailed(#[source] sqlx::Error),
    /// Stored data breaks an invariant the code relies on (an unreadable or out-of-order event). Its text is for
    /// logs and operators, never for clients.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// Anything else: a bug or a broken database. Its text is for logs, never for clients.
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

impl StoreError {
    /// Whether the failed call certainly wrote nothing. Only a commit whose answer was lost leaves that unknown.
    pub fn nothing_written(&self) -> bool {
        !matches!(self, Self::CommitFailed(_))
    }

    /// Whether the database itself failed (unreachable, a broken connection, a commit without an answer), as
    /// opposed to refusing the call by its rules: what a circuit breaker counts.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::CommitFailed(_))
    }
}

/// SQLSTATEs that say the connection or the server went away, not that the statement was wrong: connection
/// exceptions (class 08), an administrator's or a crash's shutdown (57P01–57P03), too many connections (53300), a
/// standby that cannot take writes (25006, read-only transaction after a failover).
fn is_connection_failure(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "25006")
}

/// Unique indexes whose violation means a known conflict, and the API code each one stands for. PostgreSQL reports
/// the index name; SQLite reports `table.column` for plain indexes and `index 'name'` for expression indexes.
const UNIQUE_CONFLICTS: &[(&str, &str)] =
    &[("users_email_key", "email_taken"), ("users.email", "email_taken"), ("users_username_key", "username_taken")];

/// The SQLite ledger writer's errors (its connection is rusqlite's, see `sqlite/ledger_writer.rs`), sorted as sqlx
/// sorts SQLite's: a result code of the database, for logs and never for clients.
impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Other(sqlx::Error::Io(std::io::Error::other(err)))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err),
            sqlx::Error::Database(db) if db.code().is_some_and(|code| is_connection_failure(&code)) => {
                Self::Unavailable(err)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                let name = db.constraint().map(str::to_owned).unwrap_or_else(|| db.message().to_owned());
                match UNIQUE_CONFLICTS.iter().find(|(key, _)| name.contains(key)) {
                    Some((_, code)) => Self::Conflict(code),
                    None => Self::Other(err),
                }
            }
            _ => Self::Other(err),
        }
    }
}
