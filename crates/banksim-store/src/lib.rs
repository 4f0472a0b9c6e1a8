//! banksim's storage: one [`Store`] trait, one implementation per backend.
//!
//! - [`postgres`]: PostgreSQL with a connection pool, for production and many instances.
//! - [`sqlite`]: an embedded SQLite file (WAL, one writer), the default that needs no other service.
//!
//! Each backend carries its own versioned migrations (`migrations/<backend>/`), applied by [`Store::migrate`].
//! Every backend passes the same conformance suite (`tests/conformance.rs`).

pub mod bulk;
mod chain;
pub mod error;
pub mod journal;
pub mod ledger;
pub mod model;
pub mod postgres;
pub mod projection;
pub mod relay;
pub mod replication;
pub mod schedule;
pub mod simulation;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod verify;

use std::sync::Arc;

use async_trait::async_trait;
use banksim_core::currency::Currency;
use banksim_core::ledger::TransactionRecord;
use banksim_core::schedule::ScheduleStatus;
use banksim_core::user::User;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use bulk::{BulkBatch, BulkOutcome};
pub use error::StoreError;
pub use journal::{AuditQuery, AuditRecord, EventRecord, replay_balances};
pub use ledger::{
    AuditContext, BatchOutcome, DueHold, FxRate, HistoryEntry, HistoryQuery, IdempotencyClaim, LeaseRenewal,
    LedgerOutcome, LedgerReport, LedgerRequest, LedgerWork, LimitsChange, PostedBatch, ResponseRenderer,
    StoredResponse, TransactionQuery, Wallet, WalletChange, WalletChangeFeed, WalletState, WalletVersion,
};
pub use model::{
    AuditedAction, Credentials, NewRefreshToken, NewUser, RefreshOutcome, UserChanges, UserCursor, UserListQuery,
    UserPage,
};
pub use projection::{Projection, ProjectionProgress, ProjectionStatus, StatementQuery, SystemTotal, WalletStatements};
pub use relay::RelayStatus;
pub use replication::{Lsn, WalPosition};
pub use schedule::{
    ExecutionRecord, ExecutionStatus, NextRun, OccurrenceUpdate, ScheduleClaim, ScheduleQuery, ScheduleRecord,
};
pub use simulation::{DumpedTransaction, DumpedUser, DumpedWallet, SimulationStore, StateHash, state_hash};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL, pooled.
    Postgres,
    /// Embedded SQLite.
    Sqlite,
}

impl Backend {
    /// The backend's name for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// Everything banksim keeps. One method per use case; each documents its contract, which every backend keeps.
/// The virtual clock and the state dump of simulation mode are a part of their own, [`SimulationStore`].
#[async_trait]
pub trait Store: SimulationStore + Send + Sync + 'static {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// Applies every migration not yet applied. Safe to call on every start, and from several instances at once.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the connections, waiting for those in use to be returned.
    async fn close(&self);

    /// The connection pool now (SQLite: its reader and writer pools together).
    fn pool_status(&self) -> PoolStatus;

    /// How long taking a connection from the (reading) pool takes now: a sample of the pool's acquire wait.
    async fn acquire_wait(&self) -> Result<std::time::Duration, StoreError>;

    /// Where the database stands in its write-ahead log (a primary's insert and flush positions, a standby's
    /// receive and replay positions), for routing reads to a replica and measuring its lag. `None` for a backend
    /// without one (SQLite).
    async fn wal_position(&self) -> Result<Option<WalPosition>, StoreError> {
        Ok(None)
    }

    /// Inserts a user. Fails with `Conflict("email_taken")` or `Conflict("username_taken")` (both compared
    /// case-insensitively).
    ///
    /// With the user, the same transaction writes its `UserRegistered` event and its audit entry.
    async fn create_user(&self, user: NewUser, audit: &AuditContext) -> Result<User, StoreError>;

    /// Inserts many users in one database transaction, all or none, each with its `UserRegistered` event and audit
    /// entry (the rows [`Store::create_user`] writes), in the order given. Fails with `Conflict("email_taken")` or
    /// `Conflict("username_taken")` (nothing is written then) when one clashes with a stored user or another of
    /// the batch. For bulk seeding (`banksim seed --population`): far fewer round trips than one call per user.
    async fn create_users(&self, users: &[NewUser], audit: &AuditContext) -> Result<(), StoreError>;

    /// The user with this id, active or not.
    async fn find_user(&self, id: Uuid) -> Result<Option<User>, StoreError>;

    /// The user with this (lower-case) email and their password hash, active or not.
    async fn find_credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError>;

    /// One page of users in registration order, with the total count matching the filter.
    async fn list_users(&self, query: UserListQuery) -> Result<UserPage, StoreError>;

    /// How many active admins there are.
    async fn count_active_admins(&self) -> Result<u64, StoreError>;

    /// Applies `changes` to a user and returns the result. Fails with `NotFound`, `Conflict("email_taken")`,
    /// `Conflict("username_taken")`, or `Conflict("last_admin")` when the change would leave no active admin; the
    /// last-admin check and the change are one atomic step, so two admins demoting each other at once cannot both
    /// succeed. Deactivating a user here also revokes all their refresh tokens and pauses every active schedule
    /// of theirs (each with its `SchedulePaused` event and audit entry), in the same transaction.
    ///
    /// With the change, the same transaction writes its `UserUpdated` (or `UserDeactivated`) event and its audit
    /// entry with the user before and after.
    async fn update_user(
        &self,
        id: Uuid,
        changes: UserChanges,
        now: DateTime<Utc>,
        audit: &AuditContext,
    ) -> Result<User, StoreError>;

    /// Writes an audit entry on its own: a refused attempt (a failed login, a permission refused on a money route)
    /// or an admin action that changes no row of its own (a move of the virtual clock).
    async fn record_action(&self, action: &AuditedAction, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Stores a new refresh token (its hash).
    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<(), StoreError>;

    /// Spends the refresh token with hash `presented` and, atomically, stores its successor (hash `successor`,
    /// expiring at `expires_at`) in the same family for the same user.
    ///
    /// A token works once: presenting a spent token again revokes its whole family ([`RefreshOutcome::Reused`]).
    /// Unknown, expired and revoked tokens, and tokens of inactive users, give [`RefreshOutcome::Invalid`].
    async fn rotate_refresh_token(
        &self,
        presented: &[u8],
        successor: &[u8],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError>;

    /// Revokes the family of the refresh token with hash `presented`, if it belongs to `user_id`. Returns whether
    /// such a token exists (revoking an already revoked family again is fine).
    async fn revoke_refresh_family(
        &self,
        presented: &[u8],
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Posts a batch of money movements in one database transaction, in order, each succeeding or failing on its
    /// own. With each posted movement the same commit writes its transaction, postings, new balances, event,
    /// audit entry and idempotency answer; a refused movement writes its audit entry and idempotency answer.
    /// A request whose idempotency key is already stored (or claimed earlier in the batch) is not applied: its
    /// outcome is the stored answer. Safe to call from many writers and instances at once: accounts are locked
    /// in a fixed order, so batches never deadlock or lose updates.
    ///
    /// Returns the outcomes and the user wallets the batch changed. On PostgreSQL the same commit announces those
    /// wallets on the change bus (`NOTIFY banksim_wallets`), so every instance's balance cache hears of them.
    async fn post_batch(
        &self,
        requests: &[LedgerRequest],
        render: &dyn ResponseRenderer,
        now: DateTime<Utc>,
    ) -> Result<PostedBatch, StoreError>;

    /// Posts a whole history of batches into a ledger that nobody else writes to meanwhile (`banksim seed
    /// --population` on a fresh database), writing exactly the rows that one [`Store::post_batch`] call per batch,
    /// at the batch's `now`, would write — ids, balances, postings, events, audit entries and their hash chain.
    /// Batches are taken from `batches` in order until it ends, or until a
    /// batch has a request that is not posted whole: then the posting stops and returns that batch's outcomes.
    ///
    /// The requests carry no idempotency key, rollback or settlement of a hold (asserted: a caller that sends one
    /// has a bug).
    ///
    /// The default posts each batch with [`Store::post_batch`] (one commit a batch; after a refusal the batches
    /// before it stay committed); SQLite uses it, its single writer gains nothing from another path. PostgreSQL
    /// writes the rows with `COPY` in one database transaction holding exclusive locks on the ledger's tables
    /// (readers go on, except on an empty ledger, whose indexes and keys are dropped and built again at the end):
    /// all or nothing, a refusal included, and announces every wallet it changed on the change bus before its commit.
    async fn bulk_post(
        &self,
        batches: &mut (dyn Iterator<Item = BulkBatch> + Send),
    ) -> Result<BulkOutcome, StoreError> {
        bulk::post_one_by_one(self, batches).await
    }

    /// Subscribes to the wallet changes every instance commits, in commit order (PostgreSQL `LISTEN`). `None` where
    /// the backend has no such bus (SQLite: see [`Store::foreign_change_marker`]).
    async fn wallet_changes(&self) -> Result<Option<Box<dyn WalletChangeFeed>>, StoreError>;

    /// Announces `marker` on the change bus: a subscriber that receives it has received every change committed
    /// before this call began. Does nothing where there is no bus.
    async fn announce_wallet_marker(&self, marker: &str) -> Result<(), StoreError>;

    /// A value that changes whenever another connection (another process, or this one's writer) has committed to the
    /// database since it was last read (SQLite's `PRAGMA data_version`); `None` where the change bus tells instead.
    async fn foreign_change_marker(&self) -> Result<Option<i64>, StoreError>;

    /// Takes or renews this store's balance read lease for `period` from before this call began (PostgreSQL): while
    /// it holds, no other connection commits a change to a wallet (a database trigger makes such a change wait
    /// until the lease has run out, and keeps it from being taken again while others write), so the holder's
    /// cache, which its own writes update, is never older than the database. `None`: not granted (another instance
    /// holds it, another writer has closed it lately), or the backend has no such lease (SQLite).
    async fn renew_balance_lease(&self, _period: std::time::Duration) -> Result<Option<LeaseRenewal>, StoreError> {
        Ok(None)
    }

    /// Gives the balance read lease back before it runs out (a stopping instance), so that other writers need not
    /// wait for it.
    async fn release_balance_lease(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The stored answer for a user's idempotency key.
    async fn find_idempotent(&self, user_id: Uuid, key: &str) -> Result<Option<StoredResponse>, StoreError>;

    /// One transaction.
    async fn find_transaction(&self, id: Uuid) -> Result<Option<TransactionRecord>, StoreError>;

    /// A user's transactions (as payer or payee), newest first.
    async fn list_transactions(&self, query: &TransactionQuery) -> Result<Vec<TransactionRecord>, StoreError>;

    /// A user's wallets (only `currency`'s when given), by currency.
    async fn wallets(&self, user_id: Uuid, currency: Option<Currency>) -> Result<Vec<Wallet>, StoreError>;

    /// A wallet's balance limits (none for a wallet that does not exist).
    async fn wallet_limits(
        &self,
        user_id: Uuid,
        currency: Currency,
    ) -> Result<banksim_core::ledger::Limits, StoreError>;

    /// Replaces a wallet's balance limits, opening the wallet (empty) if it does not exist, with its audit entry
    /// (`wallet.limits`) and `WalletLimitsSet` event in the same transaction. Serialised with the ledger's batches by
    /// the account's lock. Fails with `Conflict("balance_limit_exceeded")` when a limit is negative or the wallet's
    /// balance is outside the new limits, and `NotFound` for an unknown user. On PostgreSQL the commit announces the
    /// wallet on the change bus one version ahead, so that no instance's balance cache keeps the old limits.
    async fn set_wallet_limits(
        &self,
        change: &LimitsChange,
        audit: &AuditContext,
        now: DateTime<Utc>,
    ) -> Result<banksim_core::ledger::Limits, StoreError>;

    /// Pending holds whose `expires_at` is at or before `now`, oldest first, at most `limit`.
    async fn due_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<DueHold>, StoreError>;

    /// A wallet's postings, newest first.
    async fn balance_history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError>;

    /// A wallet's exact balance after every posting at or before `at` (0 before the first).
    async fn balance_at(&self, user_id: Uuid, currency: Currency, at: DateTime<Utc>) -> Result<i64, StoreError>;

    /// Every exchange rate.
    async fn fx_rates(&self) -> Result<Vec<FxRate>, StoreError>;

    /// One exchange rate.
    async fn fx_rate(&self, base: Currency, quote: Currency) -> Result<Option<FxRate>, StoreError>;

    /// Sets an exchange rate, unless it would let a cycle of exchanges through its pair create money (the product
    /// of the rates around any cycle must stay at most one): then fails with `RateCycle`, naming the cycle. The check
    /// and the change are one atomic step, so two admins setting rates at once cannot build such a cycle together.
    async fn put_fx_rate(&self, rate: FxRate) -> Result<FxRate, StoreError>;

    /// Events after `after` (a sequence number), in log order.
    async fn list_events(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError>;

    /// Audit entries matching `query`, newest first.
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// Every account's id and stored balance.
    async fn account_balances(&self) -> Result<Vec<(Uuid, i64)>, StoreError>;

    /// Checks every ledger invariant of DESIGN.md.
    async fn verify_ledger(&self) -> Result<LedgerReport, StoreError>;

    /// Inserts a schedule, its `ScheduleCreated` event and its audit entry (`schedule.create`), and (when given)
    /// the idempotency answer (status, body) under the caller's key, in one transaction. Fails with
    /// `Conflict("idempotency_key_taken")` if the key is already stored (nothing is written then).
    async fn create_schedule(
        &self,
        schedule: &ScheduleRecord,
        idempotency: Option<(&IdempotencyClaim, u16, &str)>,
        audit: &AuditContext,
    ) -> Result<(), StoreError>;

    /// The schedule with this id, whatever its status.
    async fn find_schedule(&self, id: Uuid) -> Result<Option<ScheduleRecord>, StoreError>;

    /// A user's schedules matching the query's filters, newest first (creation instant, then id).
    async fn list_schedules(&self, query: &ScheduleQuery) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// Moves a schedule from one of the statuses `from` to `to` (pause, resume, cancel) and returns it, with
    /// `next_execution_at` as `next` says (computed from the row as locked), its event (`SchedulePaused`,
    /// `ScheduleResumed`, `ScheduleCancelled`) and audit entry (`schedule.pause`, `schedule.resume`,
    /// `schedule.cancel`), atomically. A move to `active` also resets `consecutive_failures`, so a schedule paused
    /// after failures starts afresh; `attempt` is kept (an attempt's idempotency key is never used twice). A lease
    /// held by a worker is left alone. Fails with `NotFound` if there is no such schedule,
    /// `Conflict("schedule_state")` if its status is not in `from`.
    async fn change_schedule_status(
        &self,
        id: Uuid,
        from: &[ScheduleStatus],
        to: ScheduleStatus,
        next: NextRun,
        now: DateTime<Utc>,
        audit: &AuditContext,
    ) -> Result<ScheduleRecord, StoreError>;

    /// Claims up to `limit` active schedules due at `now` (`next_execution_at <= now`) whose lease is free (none,
    /// or expired), leasing them until `now + lease` under a new lease token, and returns them oldest due first.
    /// No other worker, on any instance, gets them until the lease ends or the claimer records or retries the
    /// occurrence: PostgreSQL uses `FOR UPDATE SKIP LOCKED`, SQLite its single writer. A lease that expires (its
    /// instance died, or is slow) makes the schedule claimable again, and the old claim powerless.
    async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<ScheduleClaim>, StoreError>;

    /// Records the outcome of occurrence `update.execution.occurrence` and advances the schedule
    /// (`current_occurrence`, `next_execution_at`, status, `consecutive_failures`, `last_executed_at` =
    /// `executed_at`, `attempt` = 0, lease freed), with its event (`ScheduleExecuted`, `ScheduleFailed`, or
    /// `ScheduleSkipped`) and audit entry (`schedule.execute`), in one transaction — only if `claim` still holds
    /// the schedule (its lease token) and the schedule is still at occurrence − 1: otherwise returns `false` and
    /// changes nothing, so a duplicate or stale record is harmless.
    ///
    /// If the owner paused or cancelled the schedule while the occurrence ran, that status is kept (the
    /// occurrence is still recorded), except that a paused schedule takes a final status (`completed`, `failed`)
    /// from the update. Fails with `NotFound` if there is no such schedule.
    async fn record_occurrence(
        &self,
        claim: &ScheduleClaim,
        update: &OccurrenceUpdate,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Makes the claimed occurrence again at `retry_at` as attempt `attempt` (failed attempts so far; the same as
    /// the claim's to repeat an attempt whose outcome is unknown), and frees the lease — only if `claim` still
    /// holds the schedule (its lease token) at the same occurrence and attempt: otherwise returns `false` and
    /// changes nothing. Fails with `NotFound` if there is no such schedule.
    async fn retry_occurrence(
        &self,
        claim: &ScheduleClaim,
        attempt: u32,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// How many active schedules are due at `now` (the scheduler's backlog).
    async fn count_due_schedules(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Every recorded occurrence of a schedule, in order.
    async fn list_executions(&self, schedule_id: Uuid) -> Result<Vec<ExecutionRecord>, StoreError>;

    /// Where a projection stands: its checkpoint, the log's head, and how old its oldest pending event is.
    async fn projection_status(&self, projection: Projection) -> Result<ProjectionStatus, StoreError>;

    /// Applies a delivery of events to a projection and moves its checkpoint to the last of them, in one
    /// transaction. `events` must be the log's events in order, as read after the checkpoint with
    /// [`Store::list_events`]; those at or before the checkpoint are skipped, so a duplicate or overlapping
    /// delivery changes nothing twice. One consumer applies at a time: PostgreSQL returns
    /// [`ProjectionProgress::Busy`] at once while another holds the checkpoint row, SQLite queues on its writer.
    /// Fails with `Corrupt` (nothing written) if the delivery skips an event after the checkpoint or a money event
    /// cannot be read.
    async fn apply_to_projection(
        &self,
        projection: Projection,
        events: &[EventRecord],
        now: DateTime<Utc>,
    ) -> Result<ProjectionProgress, StoreError>;

    /// Empties a projection's read model and sets its checkpoint back to 0, in one transaction (after the consumer
    /// applying it, if any, has committed), so that it is rebuilt from the whole log.
    async fn reset_projection(&self, projection: Projection, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Where the outbox relay `relay` stands: its position, the log's head and the age of its oldest pending event
    /// (position 0 for a relay that never ran).
    async fn relay_status(&self, relay: &str) -> Result<RelayStatus, StoreError>;

    /// Takes or renews the lease of the outbox relay `relay` for `holder` until `until`: granted when nobody holds
    /// it, `holder` does, or the holder's lease has expired at `now`. Returns the relay's position when granted,
    /// `None` while another holder's lease runs.
    async fn claim_relay(
        &self,
        relay: &str,
        holder: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError>;

    /// Moves the relay's position forward to `position` (never back) if `holder` still holds its lease; returns
    /// whether it did.
    async fn advance_relay(
        &self,
        relay: &str,
        holder: Uuid,
        position: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// A user's stored statement days in a range, and each wallet's closing balance before it, by currency.
    async fn statements(&self, query: &StatementQuery) -> Result<Vec<WalletStatements>, StoreError>;

    /// The system totals of every currency that had a movement, as far as the projection has come.
    async fn system_totals(&self) -> Result<Vec<SystemTotal>, StoreError>;
}

/// Opens the store that `url` names: `postgres://…` / `postgresql://…`, or `sqlite:…` (a file path; created with
/// its folder when missing).
pub async fn connect(url: &str, options: ConnectOptions) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url, options).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url, options).await?))
    } else {
        Err(StoreError::InvalidUrl)
    }
}

/// A connection pool's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Most connections it may open.
    pub max: u32,
    /// Connections open now.
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
}

/// Tuning shared by the backends.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// Most connections to keep open (PostgreSQL; SQLite's readers).
    pub pool_size: u32,
    /// How long to wait for a free connection before answering `Unavailable`.
    pub acquire_timeout: std::time::Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self { pool_size: 16, acquire_timeout: std::time::Duration::from_secs(5) }
    }
}
