//! The embedded SQLite backend: one file in WAL mode, migrations in `migrations/sqlite/`.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly one connection: they queue in
//! the pool instead of failing with `SQLITE_BUSY`, and a read-then-write transaction can never be interleaved with
//! another writer. The ledger's batches and the projections hold that pool's connection too, while they run on a
//! synchronous connection of their own (`ledger_writer.rs`). Reads use a separate pool and, thanks to WAL, never
//! wait for the writer. A third connection copies the log back into the database file, so that the writer only
//! appends (`checkpoint.rs`).
//!
//! Instants are stored as integer microseconds since the Unix epoch (see the migration).

use std::str::FromStr;
use std::time::Duration;

mod checkpoint;
mod journal;
mod ledger;
mod ledger_writer;
mod projection;
mod relay;
mod schedule;
mod simulation;

use async_trait::async_trait;
use banksim_core::currency::Currency;
use banksim_core::ledger::TransactionRecord;
use banksim_core::schedule::ScheduleStatus;
use banksim_core::user::{Role, User};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::ledger::{
    FxRate, HistoryEntry, HistoryQuery, LedgerReport, LedgerRequest, ResponseRenderer, TransactionQuery, Wallet,
};
use crate::model::{
    AuditedAction, Credentials, NewRefreshToken, NewUser, RefreshOutcome, UserChanges, UserListQuery, UserPage,
    offset_i64, parse_role, registration_audits, user_audit_row, user_change_names, user_json,
};
use crate::projection::{
    Projection, ProjectionProgress, ProjectionStatus, StatementQuery, SystemTotal, WalletStatements,
};
use crate::schedule::{ExecutionRecord, NextRun, OccurrenceUpdate, ScheduleClaim, ScheduleQuery, ScheduleRecord};
use crate::{
    AuditContext, AuditQuery, AuditRecord, Backend, ConnectOptions, EventRecord, IdempotencyClaim, Store, StoreError,
    StoredResponse,
};

/// How long a connection waits for a lock held by another process (e.g. `banksim admin` next to a server).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const USER_COLUMNS: &str = "id, username, email, role, is_active, created_at, updated_at, sessions_revoked_at";

/// A [`Store`] on an SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// A connection of its own that only reads `PRAGMA data_version`: its value moves with every commit of every
    /// other connection (the writer's, another process's), which is how a cache learns it may be stale.
    watcher: std::sync::Arc<tokio::sync::Mutex<sqlx::SqliteConnection>>,
    /// A file beside the database that every store open on it holds a shared lock on: whoever can turn it into an
    /// exclusive lock is alone on the database, and no other writer can have changed it.
    instances: std::sync::Arc<std::fs::File>,
    /// The connection that copies the write-ahead log into the database file (see `checkpoint.rs`).
    checkpointer: SqlitePool,
    /// The connection the ledger's batches and the projections are written on, under the writer pool's lock (see
    /// `ledger_writer.rs`).
    ledger_writer: ledger_writer::LedgerWriter,
}

/// The marker of a store alone on its database: nothing but itself can change it.
const ALONE: i64 = i64::MIN;

impl SqliteStore {
    /// Opens (creating it, and its folder, when missing) the database file that `url` names (`sqlite:path`).
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, StoreError> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::InvalidUrl)?
            .journal_mode(SqliteJournalMode::Wal)
            // FULL makes a commit durable before it is acknowledged, also against power loss.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        make_private_file(base.get_filename()).map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        // No ping when a connection is taken from a pool (sqlx's default): the database is a file in this process,
        // and each ping is a round trip to the connection's worker thread before every query.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(
                base.clone().create_if_missing(true).pragma("wal_autocheckpoint", checkpoint::WRITER_PAGES.to_string()),
            )
            .await?;
        let checkpointer =
            SqlitePoolOptions::new().max_connections(1).test_before_acquire(false).connect_lazy_with(base.clone());
        let reader = SqlitePoolOptions::new()
            .max_connections(readers_max(options.pool_size))
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(base.clone().read_only(true));
        let instances = instances_file(base.get_filename()).map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        let ledger_writer =
            ledger_writer::LedgerWriter::open(base.get_filename(), BUSY_TIMEOUT, checkpoint::WRITER_PAGES)?;
        let watcher = sqlx::ConnectOptions::connect(&base.read_only(true)).await?;
        // Started last: a store that failed to open leaves no task behind.
        tokio::spawn(checkpoint::run(checkpointer.clone()));
        Ok(Self {
            writer,
            reader,
            watcher: std::sync::Arc::new(tokio::sync::Mutex::new(watcher)),
            checkpointer,
            instances: std::sync::Arc::new(instances),
            ledger_writer,
        })
    }
}

/// The most readers a store keeps: the pool size, but no more than twice the CPUs. A reader is a thread of its own
/// working on the CPU (the file's pages are in the system's cache), and a pool keeps its readers with their caches
/// (about 2 MB each): sixteen of them on two cores were a quarter of the server's resident memory after the SQLite
/// `batch` scenario, for no more throughput than four (docs/benchmarks.md).
fn readers_max(pool_size: u32) -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let cap = u32::try_from(cpus.saturating_mul(2)).unwrap_or(u32::MAX);
    pool_size.min(cap).max(1)
}

/// Opens (creating it `0600`) the file beside the database whose locks tell how many stores have it open, and takes
/// a shared lock on it for as long as the store lives.
fn instances_file(database: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut name = database.as_os_str().to_owned();
    name.push("-instances");
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(std::path::PathBuf::from(name))?;
    file.lock_shared()?;
    Ok(file)
}

/// Creates the database file (and its folder) readable by its owner only, before SQLite opens it: it holds
/// password hashes. SQLite gives its `-wal` and `-shm` files the database file's mode. An existing file of looser
/// mode is tightened when it is ours.
fn make_private_file(path: &std::path::Path) -> std::io::Result<()> {
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
        return Ok(());
    }
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(folder)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            // Not ours to change (another owner) is not a reason to refuse to start.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Writes a consistent copy of the database to `to` (`VACUUM INTO`: the database as one read transaction sees
    /// it, while writers go on), created `0600` like the database itself. `to` must not exist yet.
    pub async fn backup_to(&self, to: &std::path::Path) -> Result<(), StoreError> {
        let io = |e: std::io::Error| StoreError::Unavailable(sqlx::Error::Io(e));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(to).map_err(io)?;
        let path = to.to_str().ok_or_else(|| io(std::io::Error::other("the backup path is not valid UTF-8")))?;
        sqlx::query("VACUUM INTO $1").bind(path).execute(&self.reader).await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/sqlite").run(&self.writer).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    fn pool_status(&self) -> crate::PoolStatus {
        let pools = [&self.reader, &self.writer];
        crate::PoolStatus {
            max: pools.iter().map(|p| p.options().get_max_connections()).sum(),
            size: pools.iter().map(|p| p.size()).sum(),
            idle: pools.iter().map(|p| u32::try_from(p.num_idle()).unwrap_or(u32::MAX)).sum(),
        }
    }

    async fn acquire_wait(&self) -> Result<std::time::Duration, StoreError> {
        let started = std::time::Instant::now();
        let connection = self.reader.acquire().await?;
        let waited = started.elapsed();
        drop(connection);
        Ok(waited)
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
        self.checkpointer.close().await;
    }

    async fn create_user(&self, user: NewUser, audit: &AuditContext) -> Result<User, StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        let sql = format!(
            "INSERT INTO users (id, username, email, password_hash, role, is_active, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6) RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(user.id)
            .bind(&user.username)
            .bind(&user.email)
            .bind(&user.password_hash)
            .bind(user.role.as_str())
            .bind(micros(user.now))
            .fetch_one(&mut *tx)
            .await?;
        let created = user_from_row(&row)?;
        record_user_change(&mut tx, &created, "UserRegistered", "user.register", None, audit, user.now).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn create_users(&self, users: &[NewUser], audit: &AuditContext) -> Result<(), StoreError> {
        let Some(now) = users.iter().map(|u| u.now).max() else { return Ok(()) };
        let audits = registration_audits(users, audit);
        let mut tx = begin_write(&self.writer).await?;
        for chunk in users.chunks(USERS_PER_STATEMENT) {
            let mut query = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO users (id, username, email, password_hash, role, is_active, created_at, updated_at) ",
            );
            query.push_values(chunk, |mut row, user| {
                row.push_bind(user.id)
                    .push_bind(user.username.as_str())
                    .push_bind(user.email.as_str())
                    .push_bind(user.password_hash.as_str())
                    .push_bind(user.role.as_str())
                    .push_bind(true)
                    .push_bind(micros(user.now))
                    .push_bind(micros(user.now));
            });
            query.build().execute(&mut *tx).await?;
        }
        // The audit entries first, as `record_user_change` writes them, then the events (each the first of its user).
        journal::append_audit(&mut tx, &audits, now).await?;
        let events: Vec<_> = users.iter().zip(&audits).collect();
        for chunk in events.chunks(USERS_PER_STATEMENT) {
            let mut query = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (id, aggregate_type, aggregate_id, version, event_type, data, created_at) ",
            );
            query.push_values(chunk, |mut row, (user, entry)| {
                row.push_bind(Uuid::now_v7())
                    .push_bind("user")
                    .push_bind(user.id)
                    .push_bind(1_i64)
                    .push_bind("UserRegistered")
                    .push_bind(entry.details.as_str())
                    .push_bind(micros(now));
            });
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn find_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.reader).await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    async fn find_credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1");
        let row = sqlx::query(&sql).bind(email).fetch_optional(&self.reader).await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Credentials { user: user_from_row(&row)?, password_hash: row.try_get("password_hash")? }))
    }

    async fn list_users(&self, query: UserListQuery) -> Result<UserPage, StoreError> {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE is_active OR $1")
            .bind(query.include_inactive)
            .fetch_one(&self.reader)
            .await?;
        let (after_at, after_id) = query.after.map(|c| (micros(c.created_at), c.id)).unzip();
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users
             WHERE (is_active OR $1) AND ($2 IS NULL OR (created_at, id) > ($2, $3))
             ORDER BY created_at, id LIMIT $4 OFFSET $5"
        );
        let rows = sqlx::query(&sql)
            .bind(query.include_inactive)
            .bind(after_at)
            .bind(after_id)
            .bind(i64::from(query.limit))
            .bind(if query.after.is_some() { 0 } else { offset_i64(query.offset) })
            .fetch_all(&self.reader)
            .await?;
        let users = rows.iter().map(user_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(UserPage::new(users, total, query.limit))
    }

    async fn count_active_admins(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin' AND is_active")
            .fetch_one(&self.reader)
            .await?;
        Ok(count.unsigned_abs())
    }

    async fn update_user(
        &self,
        id: Uuid,
        changes: UserChanges,
        now: DateTime<Utc>,
        audit: &AuditContext,
    ) -> Result<User, StoreError> {
        // The single writer connection serialises this whole transaction against every other write.
        let mut tx = begin_write(&self.writer).await?;
        let target = find_user_in(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        if changes.may_remove_an_admin() && target.role == Role::Admin && target.is_active {
            let others: i64 =
                sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin' AND is_active AND id <> $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            if others == 0 {
                return Err(StoreError::Conflict("last_admin"));
            }
        }
        let before = find_user_in(&mut tx, id).await?;
        let sql = format!(
            "UPDATE users SET username = COALESCE($2, username), email = COALESCE($3, email),
                 role = COALESCE($4, role), is_active = COALESCE($5, is_active), updated_at = $6,
                 sessions_revoked_at = CASE WHEN $5 = 0 THEN $7 ELSE sessions_revoked_at END
             WHERE id = $1 RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(&changes.username)
            .bind(&changes.email)
            .bind(changes.role.map(Role::as_str))
            .bind(changes.is_active)
            .bind(micros(now))
            .bind(micros(changes.sessions_end_at.unwrap_or(now)))
            .fetch_one(&mut *tx)
            .await?;
        if changes.is_active == Some(false) {
            sqlx::query("UPDATE refresh_token_families SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
            schedule::pause_user_schedules(&mut tx, id, now).await?;
        }
        let user = user_from_row(&row)?;
        let (event, action) = user_change_names(&changes);
        record_user_change(&mut tx, &user, event, action, before.as_ref(), audit, now).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        sqlx::query("INSERT INTO refresh_token_families (id, user_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(token.family_id)
            .bind(token.user_id)
            .execute(&mut *tx)
            .await?;
        insert_refresh_token(&mut *tx, &token).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        presented: &[u8],
        successor: &[u8],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        let row = sqlx::query(
            "SELECT t.id, t.family_id, t.user_id, t.expires_at, t.used_at, t.revoked_at, u.is_active
             FROM refresh_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(presented)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(RefreshOutcome::Invalid) };
        let family_id: Uuid = row.try_get("family_id")?;
        let user_id: Uuid = row.try_get("user_id")?;
        if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
            return Ok(RefreshOutcome::Invalid);
        }
        if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
            revoke_family(&mut tx, family_id, now).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused { user_id });
        }
        if row.try_get::<i64, _>("expires_at")? <= micros(now) || !row.try_get::<bool, _>("is_active")? {
            return Ok(RefreshOutcome::Invalid);
        }
        sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1")
            .bind(row.try_get::<Uuid, _>("id")?)
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
        let next = NewRefreshToken {
            id: Uuid::new_v4(),
            family_id,
            user_id,
            token_hash: successor.to_vec(),
            issued_at: now,
            expires_at,
        };
        insert_refresh_token(&mut *tx, &next).await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated { user_id })
    }

    async fn revoke_refresh_family(
        &self,
        presented: &[u8],
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        let family: Option<Uuid> =
            sqlx::query_scalar("SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND user_id = $2")
                .bind(presented)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(family) = family else { return Ok(false) };
        revoke_family(&mut tx, family, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn post_batch(
        &self,
        requests: &[LedgerRequest],
        render: &dyn ResponseRenderer,
        now: DateTime<Utc>,
    ) -> Result<crate::PostedBatch, StoreError> {
        self.ledger_writer.post_batch(&self.writer, requests, render, now).await
    }

    async fn wallet_changes(&self) -> Result<Option<Box<dyn crate::WalletChangeFeed>>, StoreError> {
        Ok(None)
    }

    async fn announce_wallet_marker(&self, _marker: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn foreign_change_marker(&self) -> Result<Option<i64>, StoreError> {
        // Alone on the file (the usual embedded case): only this process writes, and its writer keeps the caches.
        let alone = self.instances.try_lock().is_ok();
        // Either way the shared lock is taken again: `flock` converts a lock by dropping it first, so a probe that
        // failed has left this store holding none, and every other store would then believe itself alone and keep
        // serving its cache through this one's commits.
        self.instances.lock_shared().map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        if alone {
            return Ok(Some(ALONE));
        }
        let mut watcher = self.watcher.lock().await;
        let version: i64 = sqlx::query_scalar("PRAGMA data_version").fetch_one(&mut *watcher).await?;
        Ok(Some(version))
    }

    async fn find_idempotent(&self, user_id: Uuid, key: &str) -> Result<Option<StoredResponse>, StoreError> {
        ledger::find_idempotent(&self.reader, user_id, key).await
    }

    async fn find_transaction(&self, id: Uuid) -> Result<Option<TransactionRecord>, StoreError> {
        ledger::find_transaction(&self.reader, id).await
    }

    async fn list_transactions(&self, query: &TransactionQuery) -> Result<Vec<TransactionRecord>, StoreError> {
        ledger::list_transactions(&self.reader, query).await
    }

    async fn wallets(&self, user_id: Uuid, currency: Option<Currency>) -> Result<Vec<Wallet>, StoreError> {
        ledger::wallets(&self.reader, user_id, currency).await
    }

    async fn balance_history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        ledger::balance_history(&self.reader, query).await
    }

    async fn balance_at(&self, user_id: Uuid, currency: Currency, at: DateTime<Utc>) -> Result<i64, StoreError> {
        ledger::balance_at(&self.reader, user_id, currency, at).await
    }

    async fn fx_rates(&self) -> Result<Vec<FxRate>, StoreError> {
        ledger::fx_rates(&self.reader).await
    }

    async fn fx_rate(&self, base: Currency, quote: Currency) -> Result<Option<FxRate>, StoreError> {
        ledger::fx_rate(&self.reader, base, quote).await
    }

    async fn wallet_limits(
        &self,
        user_id: Uuid,
        currency: Currency,
    ) -> Result<banksim_core::ledger::Limits, StoreError> {
        ledger::wallet_limits(&self.reader, user_id, currency).await
    }

    async fn set_wallet_limits(
        &self,
        change: &crate::LimitsChange,
        audit: &AuditContext,
        now: DateTime<Utc>,
    ) -> Result<banksim_core::ledger::Limits, StoreError> {
        ledger::set_wallet_limits(&self.writer, change, audit, now).await
    }

    async fn due_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<crate::DueHold>, StoreError> {
        ledger::due_holds(&self.reader, now, limit).await
    }

    async fn put_fx_rate(&self, rate: FxRate) -> Result<FxRate, StoreError> {
        ledger::put_fx_rate(&self.writer, &rate).await
    }

    async fn list_events(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        journal::list_events(&self.reader, after, limit).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        journal::list_audit(&self.reader, query).await
    }

    async fn account_balances(&self) -> Result<Vec<(Uuid, i64)>, StoreError> {
        journal::account_balances(&self.reader).await
    }

    async fn record_action(&self, action: &AuditedAction, now: DateTime<Utc>) -> Result<(), StoreError> {
        let row = crate::ledger::AuditRow::of_action(action);
        let mut tx = begin_write(&self.writer).await?;
        journal::append_audit(&mut tx, std::slice::from_ref(&row), now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn verify_ledger(&self) -> Result<LedgerReport, StoreError> {
        ledger::verify(&self.reader).await
    }

    async fn create_schedule(
        &self,
        schedule: &ScheduleRecord,
        idempotency: Option<(&IdempotencyClaim, u16, &str)>,
        audit: &AuditContext,
    ) -> Result<(), StoreError> {
        schedule::create_schedule(&self.writer, schedule, idempotency, audit).await
    }

    async fn find_schedule(&self, id: Uuid) -> Result<Option<ScheduleRecord>, StoreError> {
        schedule::find_schedule(&self.reader, id).await
    }

    async fn list_schedules(&self, query: &ScheduleQuery) -> Result<Vec<ScheduleRecord>, StoreError> {
        schedule::list_schedules(&self.reader, query).await
    }

    async fn change_schedule_status(
        &self,
        id: Uuid,
        from: &[ScheduleStatus],
        to: ScheduleStatus,
        next: NextRun,
        now: DateTime<Utc>,
        audit: &AuditContext,
    ) -> Result<ScheduleRecord, StoreError> {
        schedule::change_schedule_status(&self.writer, id, from, to, next, now, audit).await
    }

    async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<ScheduleClaim>, StoreError> {
        schedule::claim_due_schedules(&self.writer, now, lease, limit).await
    }

    async fn record_occurrence(
        &self,
        claim: &ScheduleClaim,
        update: &OccurrenceUpdate,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        schedule::record_occurrence(&self.writer, claim, update, now).await
    }

    async fn retry_occurrence(
        &self,
        claim: &ScheduleClaim,
        attempt: u32,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        schedule::retry_occurrence(&self.writer, claim, attempt, retry_at, now).await
    }

    async fn count_due_schedules(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let due: i64 =
            sqlx::query_scalar("SELECT count(*) FROM schedules WHERE status = 'active' AND next_execution_at <= $1")
                .bind(micros(now))
                .fetch_one(&self.reader)
                .await?;
        Ok(u64::try_from(due).unwrap_or(0))
    }

    async fn list_executions(&self, schedule_id: Uuid) -> Result<Vec<ExecutionRecord>, StoreError> {
        schedule::list_executions(&self.reader, schedule_id).await
    }

    async fn projection_status(&self, projection: Projection) -> Result<ProjectionStatus, StoreError> {
        projection::status(&self.reader, projection).await
    }

    async fn apply_to_projection(
        &self,
        projection: Projection,
        events: &[EventRecord],
        now: DateTime<Utc>,
    ) -> Result<ProjectionProgress, StoreError> {
        projection::apply(&self.ledger_writer, &self.writer, projection, events, now).await
    }

    async fn reset_projection(&self, projection: Projection, now: DateTime<Utc>) -> Result<(), StoreError> {
        projection::reset(&self.writer, projection, now).await
    }

    async fn relay_status(&self, relay: &str) -> Result<crate::RelayStatus, StoreError> {
        relay::status(&self.reader, relay).await
    }

    async fn claim_relay(
        &self,
        relay: &str,
        holder: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        relay::claim(&self.writer, relay, holder, until, now).await
    }

    async fn advance_relay(
        &self,
        relay: &str,
        holder: Uuid,
        position: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        relay::advance(&self.writer, relay, holder, position, now).await
    }

    async fn statements(&self, query: &StatementQuery) -> Result<Vec<WalletStatements>, StoreError> {
        projection::statements(&self.reader, query).await
    }

    async fn system_totals(&self) -> Result<Vec<SystemTotal>, StoreError> {
        projection::system_totals(&self.reader).await
    }
}

async fn insert_refresh_token<'c, E>(executor: E, token: &NewRefreshToken) -> Result<(), StoreError>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token.id)
    .bind(token.family_id)
    .bind(token.user_id)
    .bind(&token.token_hash)
    .bind(micros(token.issued_at))
    .bind(micros(token.expires_at))
    .execute(executor)
    .await?;
    Ok(())
}

/// Revokes a refresh-token family and ends its user's access tokens issued until `now` (the single writer
/// serialises this with every rotation).
async fn revoke_family(tx: &mut Transaction<'_, Sqlite>, family: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
    let user_id: Uuid = sqlx::query_scalar(
        "UPDATE refresh_token_families SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING user_id",
    )
    .bind(family)
    .bind(micros(now))
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
        .bind(family)
        .bind(micros(now))
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE users SET sessions_revoked_at = max(coalesce(sessions_revoked_at, $2), $2) WHERE id = $1")
        .bind(user_id)
        .bind(micros(now))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes the event and the audit entry of a change to a user, in the change's transaction.
async fn record_user_change(
    tx: &mut Transaction<'_, Sqlite>,
    user: &User,
    event: &str,
    action: &str,
    before: Option<&User>,
    audit: &AuditContext,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let details = serde_json::json!({"before": before.map(user_json), "after": user_json(user)});
    // The audit entry first: it takes the chain's head, and every event is appended while holding it, so events
    // commit in sequence order and a reader of "events after N" never misses one that commits late.
    journal::append_audit(tx, &[user_audit_row(user.id, action, details.clone(), audit)], now).await?;
    journal::append_event(tx, "user", user.id, event, &details, now).await
}

async fn find_user_in(tx: &mut Transaction<'_, Sqlite>, id: Uuid) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?;
    Ok(row.as_ref().map(user_from_row).transpose()?)
}

fn user_from_row(row: &SqliteRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        role: parse_role(row.try_get("role")?)?,
        is_active: row.try_get("is_active")?,
        created_at: instant(row.try_get("created_at")?)?,
        updated_at: instant(row.try_get("updated_at")?)?,
        sessions_revoked_at: row.try_get::<Option<i64>, _>("sessions_revoked_at")?.map(instant).transpose()?,
    })
}

/// Users (and their events) inserted per statement by [`Store::create_users`]: SQLite binds at most 32,766
/// parameters, and a user row has 8.
const USERS_PER_STATEMENT: usize = 2_000;

/// A write transaction that takes SQLite's write lock at once (`BEGIN IMMEDIATE`): when another process (a second
/// instance on the same file) is writing, it waits for the busy timeout, where a deferred transaction that read
/// first would fail at its first write.
pub(crate) async fn begin_write(writer: &SqlitePool) -> Result<Transaction<'static, Sqlite>, StoreError> {
    Ok(writer.begin_with("BEGIN IMMEDIATE").await?)
}

/// An instant as stored: microseconds since the Unix epoch.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A stored instant back as a date-time.
pub(crate) fn instant(micros: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| sqlx::Error::Decode(format!("instant out of range: {micros}").into()))
}

#[cfg(test)]
mod tests {
    use super::readers_max;

    #[test]
    fn readers_follow_the_pool_size_up_to_twice_the_cpus() {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let cap = u32::try_from(cpus * 2).expect("CPU count");
        assert_eq!(readers_max(0), 1);
        assert_eq!(readers_max(1), 1);
        assert_eq!(readers_max(cap), cap);
        assert_eq!(readers_max(cap + 1), cap);
        assert_eq!(readers_max(u32::MAX), cap);
    }
}
