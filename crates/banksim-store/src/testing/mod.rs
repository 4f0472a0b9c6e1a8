//! Fresh, isolated databases for tests, on every backend this machine offers.
//!
//! SQLite always runs (a new file in a temporary folder per test). PostgreSQL runs when `TEST_DATABASE_URL` is set:
//! each test gets its own schema in that database, named by a UUID, reached through the connection's
//! `search_path`, so tests run in parallel without seeing each other's rows.

use std::io::Write;
use std::sync::Once;

use sqlx::Connection;
use uuid::Uuid;

use crate::Backend;

/// The variable that points the tests at a PostgreSQL server.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// The backends to run each test against: SQLite, plus PostgreSQL when `TEST_DATABASE_URL` is set.
///
/// The first call says which ones on the terminal (bypassing the test harness's output capture), so a test run
/// always shows whether PostgreSQL was covered.
pub fn backends() -> Vec<Backend> {
    static ANNOUNCE: Once = Once::new();
    let postgres = std::env::var(TEST_DATABASE_URL).is_ok_and(|url| !url.is_empty());
    let backends = if postgres { vec![Backend::Sqlite, Backend::Postgres] } else { vec![Backend::Sqlite] };
    ANNOUNCE.call_once(|| {
        let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
        let hint = if postgres { "" } else { " (set TEST_DATABASE_URL to add postgres)" };
        let _ = writeln!(std::io::stderr(), "banksim test backends: {}{hint}", names.join(", "));
    });
    backends
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// The connection URL the code under test should use.
    pub url: String,
    backend: Backend,
    schema: Option<String>,
    _folder: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// Makes a new, empty (unmigrated) database on `backend`.
    ///
    /// # Panics
    /// When the database cannot be created: a test cannot go on without it.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let folder = tempfile::tempdir().expect("create a temporary folder");
                let url = format!("sqlite:{}", folder.path().join("banksim.db").display());
                Self { url, backend, schema: None, _folder: Some(folder) }
            }
            Backend::Postgres => {
                let base = postgres_url();
                let schema = format!("test_{}", Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect to TEST_DATABASE_URL");
                sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await.expect("create schema");
                let separator = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
                Self { url, backend, schema: Some(schema), _folder: None }
            }
        }
    }

    /// The backend this database lives on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs raw SQL on the database behind the store's back (tests use it to tamper with the ledger).
    ///
    /// # Panics
    /// When the statement fails.
    pub async fn execute(&self, sql: &str) {
        execute(&self.url, sql).await;
    }

    /// Runs raw SQL on the database behind the store's back, and says whether the database took it (tests of what
    /// a schema refuses).
    ///
    /// # Errors
    /// The database's refusal, or a failed connection.
    pub async fn try_execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        try_execute(&self.url, sql).await
    }

    /// Runs a query that answers one integer (a `count(*)`) on the database behind the store's back.
    ///
    /// # Panics
    /// When the query fails.
    pub async fn query_count(&self, sql: &str) -> i64 {
        query_count(&self.url, sql).await
    }

    /// Removes the database. Call it when the test passed; a failed test leaves its schema for inspection (the
    /// SQLite folder goes either way).
    pub async fn remove(self) {
        if let Some(schema) = &self.schema
            && let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_url()).await
        {
            let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut conn).await;
        }
    }
}

fn postgres_url() -> String {
    std::env::var(TEST_DATABASE_URL).expect("TEST_DATABASE_URL is set")
}

/// Runs raw SQL on the database at `url` (a URL that [`TestDatabase::create`] made, or any banksim database URL).
///
/// # Panics
/// When the connection or the statement fails.
pub async fn execute(url: &str, sql: &str) {
    try_execute(url, sql).await.expect("execute");
}

/// Runs raw SQL on the database at `url`, with the backend's default checks on (SQLite's foreign keys included).
///
/// # Errors
/// The database's refusal, or a failed connection.
pub async fn try_execute(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        sqlx::query(sql).execute(&mut conn).await.map(drop)
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::query(sql).execute(&mut conn).await.map(drop)
    }
}

/// Runs a query that answers one integer (a `count(*)`) on the database at `url`.
///
/// # Panics
/// When the connection or the query fails.
pub async fn query_count(url: &str, sql: &str) -> i64 {
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connect to SQLite");
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("query")
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect to PostgreSQL");
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("query")
    }
}

/// A transaction held open on a test database that blocks every ledger write until [`WriteLock::release`].
#[derive(Debug)]
pub struct WriteLock {
    connection: Option<WriteLockConnection>,
}

#[derive(Debug)]
enum WriteLockConnection {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl TestDatabase {
    /// Takes a lock that makes every ledger write wait: SQLite's write lock, or an exclusive lock on PostgreSQL's
    /// `accounts` table (reads go on).
    ///
    /// # Panics
    /// When the lock cannot be taken.
    pub async fn lock_writes(&self) -> WriteLock {
        let connection = if self.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("connect to SQLite");
            sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.expect("lock");
            WriteLockConnection::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("connect to PostgreSQL");
            sqlx::query("BEGIN").execute(&mut conn).await.expect("begin");
            sqlx::query("LOCK TABLE accounts IN EXCLUSIVE MODE").execute(&mut conn).await.expect("lock");
            WriteLockConnection::Postgres(conn)
        };
        WriteLock { connection: Some(connection) }
    }
}

impl WriteLock {
    /// Lets the writes go on.
    ///
    /// # Panics
    /// When the lock cannot be released.
    pub async fn release(mut self) {
        match self.connection.take() {
            Some(WriteLockConnection::Sqlite(mut conn)) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.expect("unlock");
            }
            Some(WriteLockConnection::Postgres(mut conn)) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.expect("unlock");
            }
            None => {}
        }
    }
}

mod child;
mod cluster;
mod faulty;
mod nats;
mod ports;

pub use child::{ChildServer, Readiness, ServerKind};
pub use cluster::PgServer;
pub use faulty::{FaultyStore, Pause, PauseAt};
pub use nats::NatsServer;
pub use ports::{free_port, free_ports};
