//! The PostgreSQL backend: a connection pool, migrations in `migrations/postgres/`.

use std::str::FromStr;
use std::time::Duration;

mod bulk;
mod copy;
mod failover;
mod journal;
mod lease;
mod ledger;
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
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use self::copy::{COPY_AUDITS, COPY_EVENTS, CopyRows, copy};
use crate::ledger::{
    EventRow, FxRate, HistoryEntry, HistoryQuery, LedgerReport, LedgerRequest, ResponseRenderer, TransactionQuery,
    Wallet,
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
    AuditContext, AuditQuery, AuditRecord, Backend, ConnectOptions, EventRecord, IdempotencyClaim, LeaseRenewal, Store,
    StoreError, StoredResponse,
};

/// Serialises the changes that could remove the last active admin (an arbitrary, fixed advisory-lock key).
const LAST_ADMIN_LOCK_KEY: i64 = 0x6261_6e6b_7369_6d01;

const USER_COLUMNS: &str = "id, username, email, role, is_active, created_at, updated_at, sessions_revoked_at";

/// A [`Store`] on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Names this store's connections to the database (`banksim.instance`): the balance read lease's holder.
    instance: Uuid,
}

impl PgStore {
    /// Opens a pool to `url`. Connections are made lazily, so a database that is down at start makes `ping` and
    /// `migrate` fail rather than this call.
    ///
    /// A multi-host URL (`postgres://u@h1:p1,h2:p2/db?target_session_attrs=read-write`) connects to the server that
    /// accepts writes, and follows the primary to another server after a failover (see `failover.rs`).
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, StoreError> {
        let Some(candidates) = failover::candidates(url)? else { return Self::connect_lazy(url, options) };
        let instance = Uuid::new_v4();
        let candidates: Vec<PgConnectOptions> =
            candidates.into_iter().map(|candidate| named(candidate, instance)).collect();
        let current = failover::find_primary(&candidates).await.unwrap_or(0);
        let switched = failover::Switched::default();
        let current_only = switched.clone();
        let pool = Self::pool_options(options)
            .before_acquire(move |connection, meta| {
                let keep = current_only.is_current(meta.age);
                Box::pin(async move { Ok(keep && still_alive(connection, meta).await?) })
            })
            .connect_lazy_with(candidates[current].clone());
        tokio::spawn(failover::watch(pool.clone(), candidates, current, switched));
        Ok(Self { pool, instance })
    }

    /// [`PgStore::connect`] for a single-host URL, for callers outside of an async context: nothing is connected
    /// before the first call.
    pub fn connect_lazy(url: &str, options: ConnectOptions) -> Result<Self, StoreError> {
        if failover::candidates(url)?.is_some() {
            return Err(StoreError::InvalidUrl);
        }
        let instance = Uuid::new_v4();
        let connect = named(PgConnectOptions::from_str(url).map_err(|_| StoreError::InvalidUrl)?, instance);
        Ok(Self { pool: Self::pool_options(options).connect_lazy_with(connect), instance })
    }

    /// The pool's settings. sqlx pings a connection when it goes back to the pool; its default ping when the
    /// connection is taken again doubles that round trip for every query, so it is kept for the connections that
    /// sat idle (see [`still_alive`]).
    fn pool_options(options: ConnectOptions) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(options.pool_size)
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|connection, meta| Box::pin(still_alive(connection, meta)))
    }

    /// The underlying pool, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// `options` with the connection naming its instance, for the balance read lease's trigger.
fn named(options: PgConnectOptions, instance: Uuid) -> PgConnectOptions {
    options.options([("banksim.instance", instance)])
}

/// Longest a connection may sit in the pool and be handed out without a ping.
const IDLE_PING_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a connection taken from the pool still answers: one that was in use less than [`IDLE_PING_AFTER`] ago
/// answered its release ping then and is not asked again.
async fn still_alive(
    connection: &mut sqlx::PgConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    if meta.idle_for >= IDLE_PING_AFTER {
        connection.ping().await?;
    }
    Ok(true)
}

/// The channel of the wallet change bus (the batch writes name it too, in `ledger.rs`).
const WALLET_CHANNEL: &str = "banksim_wallets";

/// The wallet changes of every instance, from `LISTEN banksim_wallets`.
struct WalletListener {
    listener: sqlx::postgres::PgListener,
}

#[async_trait]
impl crate::WalletChangeFeed for WalletListener {
    async fn next(&mut self) -> Result<crate::WalletChange, StoreError> {
        // `try_recv` tells a lost connection apart (None; the next call reconnects and listens again): what was
        // notified meanwhile is lost, and the subscriber must forget what it cached.
        match self.listener.try_recv().await? {
            Some(notice) => Ok(crate::ledger::parse_wallet_notice(notice.payload())),
            None => Ok(crate::WalletChange::Lost),
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/postgres").run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn pool_status(&self) -> crate::PoolStatus {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        crate::PoolStatus { max: self.pool.options().get_max_connections(), size: self.pool.size(), idle }
    }

    async fn acquire_wait(&self) -> Result<std::time::Duration, StoreError> {
        let started = std::time::Instant::now();
        let connection = self.pool.acquire().await?;
        let waited = started.elapsed();
        drop(connection);
        Ok(waited)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn wal_position(&self) -> Result<Option<crate::WalPosition>, StoreError> {
        // A standby refuses the primary's functions (and a primary's replay functions answer NULL): `CASE` calls
        // only those that apply. Positions travel as text (`pg_lsn` has no driver type) and are parsed here.
        let row = sqlx::query(
            "SELECT pg_is_in_recovery() AS in_recovery,
                 CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn()::text END AS inserted,
                 CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END AS flushed,
                 pg_last_wal_receive_lsn()::text AS received, pg_last_wal_replay_lsn()::text AS replayed,
                 pg_last_xact_replay_timestamp() AS replayed_commit_at, clock_timestamp() AS now,
                 current_setting('synchronous_commit') <> 'off' AS durable_commits",
        )
        .fetch_one(&self.pool)
        .await?;
        let lsn = |column: &str| -> Result<Option<crate::Lsn>, StoreError> {
            let text: Option<String> = row.try_get(column)?;
            text.map(|t| t.parse().map_err(|_| StoreError::Corrupt(format!("{column}: unreadable LSN {t:?}"))))
                .transpose()
        };
        Ok(Some(crate::WalPosition {
            in_recovery: row.try_get("in_recovery")?,
            inserted: lsn("inserted")?,
            flushed: lsn("flushed")?,
            durable_commits: row.try_get("durable_commits")?,
            received: lsn("received")?,
            replayed: lsn("replayed")?,
            replayed_commit_at: row.try_get("replayed_commit_at")?,
            now: row.try_get("now")?,
        }))
    }

    async fn create_user(&self, user: NewUser, audit: &AuditContext) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "INSERT INTO users (id, username, email, password_hash, role, is_active, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, true, $6, $6) RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(user.id)
            .bind(&user.username)
            .bind(&user.email)
            .bind(&user.password_hash)
            .bind(user.role.as_str())
            .bind(user.now)
            .fetch_one(&mut *tx)
            .await?;
        let created = user_from_row(&row)?;
        record_user_change(&mut tx, &created, "UserRegistered", "user.register", None, audit, user.now).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn create_users(&self, users: &[NewUser], audit: &AuditContext) -> Result<(), StoreError> {
        let Some(now) = users.iter().map(|u| u.now).max() else { return Ok(()) };
        let mut tx = self.pool.begin().await?;
        insert_registrations(&mut tx, users, audit, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    async fn find_credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1");
        let row = sqlx::query(&sql).bind(email).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Credentials { user: user_from_row(&row)?, password_hash: row.try_get("password_hash")? }))
    }

    async fn list_users(&self, query: UserListQuery) -> Result<UserPage, StoreError> {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE is_active OR $1")
            .bind(query.include_inactive)
            .fetch_one(&self.pool)
            .await?;
        let (after_at, after_id) = query.after.map(|c| (c.created_at, c.id)).unzip();
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users
             WHERE (is_active OR $1) AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
             ORDER BY created_at, id LIMIT $4 OFFSET $5"
        );
        let rows = sqlx::query(&sql)
            .bind(query.include_inactive)
            .bind(after_at)
            .bind(after_id)
            .bind(i64::from(query.limit))
            .bind(if query.after.is_some() { 0 } else { offset_i64(query.offset) })
            .fetch_all(&self.pool)
            .await?;
        let users = rows.iter().map(user_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(UserPage::new(users, total, query.limit))
    }

    async fn count_active_admins(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin' AND is_active")
            .fetch_one(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        if changes.may_remove_an_admin() {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LAST_ADMIN_LOCK_KEY).execute(&mut *tx).await?;
            let others: i64 =
                sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin' AND is_active AND id <> $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            let target = find_user_in(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
            if target.role == Role::Admin && target.is_active && others == 0 {
                return Err(StoreError::Conflict("last_admin"));
            }
        }
        let before = find_user_in(&mut tx, id).await?;
        let sql = format!(
            "UPDATE users SET username = COALESCE($2, username), email = COALESCE($3, email),
                 role = COALESCE($4, role), is_active = COALESCE($5, is_active), updated_at = $6,
                 sessions_revoked_at = CASE WHEN $5 = false THEN $7 ELSE sessions_revoked_at END
             WHERE id = $1 RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(&changes.username)
            .bind(&changes.email)
            .bind(changes.role.map(Role::as_str))
            .bind(changes.is_active)
            .bind(now)
            .bind(changes.sessions_end_at.unwrap_or(now))
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        if changes.is_active == Some(false) {
            // Every family row is locked by the revocation, so a rotation in flight either commits first (and its
            // successor is revoked here) or sees the family revoked.
            sqlx::query("UPDATE refresh_token_families SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now)
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        // The family is locked first, as revocation locks it: a logout either waits for this rotation (and then
        // revokes its successor too) or has revoked the family when this rotation reads it.
        let family: Option<Uuid> = sqlx::query_scalar(
            "SELECT f.id FROM refresh_token_families f JOIN refresh_tokens t ON t.family_id = f.id
             WHERE t.token_hash = $1 FOR UPDATE OF f",
        )
        .bind(presented)
        .fetch_optional(&mut *tx)
        .await?;
        if family.is_none() {
            return Ok(RefreshOutcome::Invalid);
        }
        let row = sqlx::query(
            "SELECT t.id, t.family_id, t.user_id, t.expires_at, t.used_at, t.revoked_at, u.is_active
             FROM refresh_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 FOR UPDATE OF t",
        )
        .bind(presented)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(RefreshOutcome::Invalid) };
        let family_id: Uuid = row.try_get("family_id")?;
        let user_id: Uuid = row.try_get("user_id")?;
        let revoked_at: Option<DateTime<Utc>> = row.try_get("revoked_at")?;
        let used_at: Option<DateTime<Utc>> = row.try_get("used_at")?;
        let presented_expires_at: DateTime<Utc> = row.try_get("expires_at")?;
        let is_active: bool = row.try_get("is_active")?;
        if revoked_at.is_some() {
            return Ok(RefreshOutcome::Invalid);
        }
        if used_at.is_some() {
            revoke_family(&mut tx, family_id, now).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused { user_id });
        }
        if presented_expires_at <= now || !is_active {
            return Ok(RefreshOutcome::Invalid);
        }
        sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1")
            .bind(row.try_get::<Uuid, _>("id")?)
            .bind(now)
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
        let mut tx = self.pool.begin().await?;
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
        ledger::post_batch(&self.pool, requests, render, now).await
    }

    async fn bulk_post(
        &self,
        batches: &mut (dyn Iterator<Item = crate::BulkBatch> + Send),
    ) -> Result<crate::BulkOutcome, StoreError> {
        bulk::bulk_post(&self.pool, batches).await
    }

    async fn wallet_changes(&self) -> Result<Option<Box<dyn crate::WalletChangeFeed>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(WALLET_CHANNEL).await?;
        Ok(Some(Box::new(WalletListener { listener })))
    }

    async fn announce_wallet_marker(&self, marker: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WALLET_CHANNEL)
            .bind(format!("{}{marker}", crate::ledger::MARKER_PREFIX))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn foreign_change_marker(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    async fn renew_balance_lease(&self, period: Duration) -> Result<Option<LeaseRenewal>, StoreError> {
        lease::renew(&self.pool, self.instance, period).await
    }

    async fn release_balance_lease(&self) -> Result<(), StoreError> {
        lease::release(&self.pool, self.instance).await
    }

    async fn find_idempotent(&self, user_id: Uuid, key: &str) -> Result<Option<StoredResponse>, StoreError> {
        ledger::find_idempotent(&self.pool, user_id, key).await
    }

    async fn find_transaction(&self, id: Uuid) -> Result<Option<TransactionRecord>, StoreError> {
        ledger::find_transaction(&self.pool, id).await
    }

    async fn list_transactions(&self, query: &TransactionQuery) -> Result<Vec<TransactionRecord>, StoreError> {
        ledger::list_transactions(&self.pool, query).await
    }

    async fn wallets(&self, user_id: Uuid, currency: Option<Currency>) -> Result<Vec<Wallet>, StoreError> {
        ledger::wallets(&self.pool, user_id, currency).await
    }

    async fn balance_history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        ledger::balance_history(&self.pool, query).await
    }

    async fn balance_at(&self, user_id: Uuid, currency: Currency, at: DateTime<Utc>) -> Result<i64, StoreError> {
        ledger::balance_at(&self.pool, user_id, currency, at).await
    }

    async fn fx_rates(&self) -> Result<Vec<FxRate>, StoreError> {
        ledger::fx_rates(&self.pool).await
    }

    async fn fx_rate(&self, base: Currency, quote: Currency) -> Result<Option<FxRate>, StoreError> {
        ledger::fx_rate(&self.pool, base, quote).await
    }

    async fn wallet_limits(
        &self,
        user_id: Uuid,
        currency: Currency,
    ) -> Result<banksim_core::ledger::Limits, StoreError> {
        ledger::wallet_limits(&self.pool, user_id, currency).await
    }

    async fn set_wallet_limits(
        &self,
        change: &crate::LimitsChange,
        audit: &AuditContext,
        now: DateTime<Utc>,
    ) -> Result<banksim_core::ledger::Limits, StoreError> {
        ledger::set_wallet_limits(&self.pool, change, audit, now).await
    }

    async fn due_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<crate::DueHold>, StoreError> {
        ledger::due_holds(&self.pool, now, limit).await
    }

    async fn put_fx_rate(&self, rate: FxRate) -> Result<FxRate, StoreError> {
        ledger::put_fx_rate(&self.pool, &rate).await
    }

    async fn list_events(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        journal::list_events(&self.pool, after, limit).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        journal::list_audit(&self.pool, query).await
    }

    async fn account_balances(&self) -> Result<Vec<(Uuid, i64)>, StoreError> {
        journal::account_balances(&self.pool).await
    }

    async fn record_action(&self, action: &AuditedAction, now: DateTime<Utc>) -> Result<(), StoreError> {
        let row = crate::ledger::AuditRow::of_action(action);
        let mut tx = self.pool.begin().await?;
        journal::append_audit(&mut tx, std::slice::from_ref(&row), now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn verify_ledger(&self) -> Result<LedgerReport, StoreError> {
        ledger::verify(&self.pool).await
    }

    async fn create_schedule(
        &self,
        schedule: &ScheduleRecord,
        idempotency: Option<(&IdempotencyClaim, u16, &str)>,
        audit: &AuditContext,
    ) -> Result<(), StoreError> {
        schedule::create_schedule(&self.pool, schedule, idempotency, audit).await
    }

    async fn find_schedule(&self, id: Uuid) -> Result<Option<ScheduleRecord>, StoreError> {
        schedule::find_schedule(&self.pool, id).await
    }

    async fn list_schedules(&self, query: &ScheduleQuery) -> Result<Vec<ScheduleRecord>, StoreError> {
        schedule::list_schedules(&self.pool, query).await
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
        schedule::change_schedule_status(&self.pool, id, from, to, next, now, audit).await
    }

    async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<ScheduleClaim>, StoreError> {
        schedule::claim_due_schedules(&self.pool, now, lease, limit).await
    }

    async fn record_occurrence(
        &self,
        claim: &ScheduleClaim,
        update: &OccurrenceUpdate,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        schedule::record_occurrence(&self.pool, claim, update, now).await
    }

    async fn retry_occurrence(
        &self,
        claim: &ScheduleClaim,
        attempt: u32,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        schedule::retry_occurrence(&self.pool, claim, attempt, retry_at, now).await
    }

    async fn count_due_schedules(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let due: i64 =
            sqlx::query_scalar("SELECT count(*) FROM schedules WHERE status = 'active' AND next_execution_at <= $1")
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(due).unwrap_or(0))
    }

    async fn list_executions(&self, schedule_id: Uuid) -> Result<Vec<ExecutionRecord>, StoreError> {
        schedule::list_executions(&self.pool, schedule_id).await
    }

    async fn projection_status(&self, projection: Projection) -> Result<ProjectionStatus, StoreError> {
        projection::status(&self.pool, projection).await
    }

    async fn apply_to_projection(
        &self,
        projection: Projection,
        events: &[EventRecord],
        now: DateTime<Utc>,
    ) -> Result<ProjectionProgress, StoreError> {
        projection::apply(&self.pool, projection, events, now).await
    }

    async fn reset_projection(&self, projection: Projection, now: DateTime<Utc>) -> Result<(), StoreError> {
        projection::reset(&self.pool, projection, now).await
    }

    async fn relay_status(&self, relay: &str) -> Result<crate::RelayStatus, StoreError> {
        relay::status(&self.pool, relay).await
    }

    async fn claim_relay(
        &self,
        relay: &str,
        holder: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        relay::claim(&self.pool, relay, holder, until, now).await
    }

    async fn advance_relay(
        &self,
        relay: &str,
        holder: Uuid,
        position: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        relay::advance(&self.pool, relay, holder, position, now).await
    }

    async fn statements(&self, query: &StatementQuery) -> Result<Vec<WalletStatements>, StoreError> {
        projection::statements(&self.pool, query).await
    }

    async fn system_totals(&self) -> Result<Vec<SystemTotal>, StoreError> {
        projection::system_totals(&self.pool).await
    }
}

async fn insert_refresh_token<'c, E>(executor: E, token: &NewRefreshToken) -> Result<(), StoreError>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token.id)
    .bind(token.family_id)
    .bind(token.user_id)
    .bind(&token.token_hash)
    .bind(token.issued_at)
    .bind(token.expires_at)
    .execute(executor)
    .await?;
    Ok(())
}

/// Revokes a refresh-token family and ends its user's access tokens issued until `now`. The family row is locked
/// first, then its tokens are revoked by a later statement, which sees every successor that a rotation holding
/// the lock before committed.
async fn revoke_family(tx: &mut Transaction<'_, Postgres>, family: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
    let user_id: Uuid = sqlx::query_scalar(
        "UPDATE refresh_token_families SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING user_id",
    )
    .bind(family)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
        .bind(family)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE users SET sessions_revoked_at = GREATEST(sessions_revoked_at, $2) WHERE id = $1")
        .bind(user_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes the event and the audit entry of a change to a user, in the change's transaction.
async fn record_user_change(
    tx: &mut Transaction<'_, Postgres>,
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

/// Writes `users`, their audit entries (chained after the head, in order) and their `UserRegistered` events (each
/// the first of its aggregate), one `COPY` per table: a population's 100,000 users took 2 s of statements as
/// `INSERT … SELECT unnest(…)`. The audit entries take the chain's head first, as `record_user_change` does, so
/// events commit in sequence order.
async fn insert_registrations(
    tx: &mut Transaction<'_, Postgres>,
    users: &[NewUser],
    audit: &AuditContext,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let audits = registration_audits(users, audit);
    let links = ledger::link_audit(tx, &audits, now).await?;
    let mut rows = CopyRows::default();
    for user in users {
        let row = rows.row(8);
        row.uuid(user.id).text(&user.username).text(&user.email).text(&user.password_hash).text(user.role.as_str());
        row.bool(true).timestamp(user.now).timestamp(user.now);
    }
    copy(tx, COPY_USERS, &mut rows).await?;
    for (entry, link) in audits.iter().zip(&links) {
        rows.audit(entry, link, now);
    }
    copy(tx, COPY_AUDITS, &mut rows).await?;
    for (user, entry) in users.iter().zip(&audits) {
        // Each entry's details as the chain hashed them: also its user's event data.
        let event = EventRow {
            id: Uuid::now_v7(),
            aggregate_type: "user",
            aggregate_id: user.id,
            version: 1,
            event_type: "UserRegistered",
            data: entry.details.clone(),
        };
        rows.event(&event, now);
    }
    copy(tx, COPY_EVENTS, &mut rows).await?;
    ledger::move_audit_head(tx, &links).await
}

const COPY_USERS: &str = "COPY users (id, username, email, password_hash, role, is_active, created_at, updated_at) \
    FROM STDIN BINARY";

async fn find_user_in(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?;
    Ok(row.as_ref().map(user_from_row).transpose()?)
}

fn user_from_row(row: &PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        role: parse_role(row.try_get("role")?)?,
        is_active: row.try_get("is_active")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        sessions_revoked_at: row.try_get("sessions_revoked_at")?,
    })
}
