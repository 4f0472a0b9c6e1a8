//! A store that fails on demand: the fault seam of DESIGN.md for tests that need a fault at an exact moment (a
//! commit whose outcome is lost, a call that meets a dead database) instead of sleeping and hoping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use banksim_core::currency::Currency;
use banksim_core::ledger::TransactionRecord;
use banksim_core::schedule::ScheduleStatus;
use banksim_core::user::User;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    AuditContext, AuditQuery, AuditRecord, AuditedAction, Backend, Credentials, EventRecord, ExecutionRecord, FxRate,
    HistoryEntry, HistoryQuery, IdempotencyClaim, LedgerReport, LedgerRequest, NewRefreshToken, NewUser, NextRun,
    OccurrenceUpdate, Projection, ProjectionProgress, ProjectionStatus, RefreshOutcome, ResponseRenderer,
    ScheduleClaim, ScheduleQuery, ScheduleRecord, StatementQuery, Store, StoreError, StoredResponse, SystemTotal,
    TransactionQuery, UserChanges, UserListQuery, UserPage, Wallet,
};
use crate::{DumpedTransaction, DumpedUser, DumpedWallet, SimulationStore};

/// Wraps a real store and passes every call through, except those a test has asked to fail.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    /// Calls still to fail before reaching the database, by method name.
    fail_before: Mutex<HashMap<&'static str, u32>>,
    /// Batches still to commit and then report `CommitFailed`, as a lost answer to `COMMIT` would.
    fail_after_commit: Mutex<u32>,
    /// Calls to hold at a point until the test lets them go, by method name.
    pauses: Mutex<HashMap<&'static str, (PauseAt, Pause)>>,
    /// While set, every call fails with `Unavailable`: the database is down.
    down: std::sync::atomic::AtomicBool,
}

/// Where a paused call stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseAt {
    /// Before it reaches the database.
    Before,
    /// After the database answered, before the caller sees the answer.
    After,
}

/// A call held at a point: the test waits until it is reached, does what must happen meanwhile, then resumes it.
#[derive(Debug, Clone, Default)]
pub struct Pause {
    reached: Arc<tokio::sync::Notify>,
    resume: Arc<tokio::sync::Notify>,
}

impl Pause {
    /// Waits until the paused call has reached its point.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the paused call go on.
    pub fn resume(&self) {
        self.resume.notify_one();
    }

    async fn hold(&self) {
        self.reached.notify_one();
        self.resume.notified().await;
    }
}

impl FaultyStore {
    /// A store that behaves exactly like `inner` until told otherwise.
    pub fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fail_before: Mutex::default(),
            fail_after_commit: Mutex::default(),
            pauses: Mutex::default(),
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Takes the database down (every call fails with `Unavailable`, touching nothing) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Holds the next call of `method` at `at` until the returned [`Pause`] is resumed.
    pub fn pause(&self, method: &'static str, at: PauseAt) -> Pause {
        let pause = Pause::default();
        self.pauses.lock().expect("faults").insert(method, (at, pause.clone()));
        pause
    }

    async fn hold(&self, method: &'static str, at: PauseAt) {
        let pause = {
            let mut pauses = self.pauses.lock().expect("faults");
            match pauses.get(method) {
                Some((point, _)) if *point == at => pauses.remove(method).map(|(_, pause)| pause),
                _ => None,
            }
        };
        if let Some(pause) = pause {
            pause.hold().await;
        }
    }

    /// The next `times` calls of `method` (a `Store` method name) fail with `Unavailable`, touching nothing.
    pub fn fail_before(&self, method: &'static str, times: u32) {
        *self.fail_before.lock().expect("faults").entry(method).or_default() += times;
    }

    /// The next `times` batches are committed by the database, then reported as `CommitFailed`.
    pub fn fail_after_commit(&self, times: u32) {
        *self.fail_after_commit.lock().expect("faults") += times;
    }

    /// Runs the fault plan of one call around `call`: an injected failure, or a pause before or after it.
    async fn run<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.check(method)?;
        self.hold(method, PauseAt::Before).await;
        let result = call.await;
        self.hold(method, PauseAt::After).await;
        result
    }

    fn check(&self, method: &'static str) -> Result<(), StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
        }
        let mut faults = self.fail_before.lock().expect("faults");
        match faults.get_mut(method) {
            Some(left) if *left > 0 => {
                *left -= 1;
                Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut))
            }
            _ => Ok(()),
        }
    }

    fn take_commit_failure(&self) -> bool {
        let mut left = self.fail_after_commit.lock().expect("faults");
        let fail = *left > 0;
        *left = left.saturating_sub(1);
        fail
    }
}

/// A lost answer to `COMMIT`: the connection broke after the statement was sent.
fn lost_commit() -> StoreError {
    StoreError::CommitFailed(sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "injected: connection lost after COMMIT",
    )))
}

#[async_trait]
impl Store for FaultyStore {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.run("migrate", self.inner.migrate()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", self.inner.ping()).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    fn pool_status(&self) -> crate::PoolStatus {
        self.inner.pool_status()
    }

    async fn acquire_wait(&self) -> Result<std::time::Duration, StoreError> {
        self.run("acquire_wait", self.inner.acquire_wait()).await
    }

    async fn wal_position(&self) -> Result<Option<crate::WalPosition>, StoreError> {
        self.run("wal_position", self.inner.wal_position()).await
    }

    async fn create_user(&self, user: NewUser, audit: &AuditContext) -> Result<User, StoreError> {
        self.run("create_user", self.inner.create_user(user, audit)).await
    }

    async fn create_users(&self, users: &[NewUser], audit: &AuditContext) -> Result<(), StoreError> {
        self.run("create_users", self.inner.create_users(users, audit)).await
    }

    async fn find_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        self.run("find_user", self.inner.find_user(id)).await
    }

    async fn find_credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError> {
        self.run("find_credentials", self.inner.find_credentials(email)).await
    }

    async fn list_users(&self, query: UserListQuery) -> Result<UserPage, StoreError> {
        self.run("list_users", self.inner.list_users(query)).await
    }

    async fn count_active_admins(&self) -> Result<u64, StoreError> {
        self.run("count_active_admins", self.inner.count_active_admins()).await
    }

    async fn update_user(
        &self,
        id: Uuid,
        changes: UserChanges,
        now: DateTime<Utc>,
        audit: &AuditContext,
    ) -> Result<User, StoreError> {
        self.run("update_user", self.inner.update_user(id, changes, now, audit)).await
    }

    async fn record_action(&self, action: &AuditedAction, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.run("record_action", self.inner.record_action(action, now)).await
    }

    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<(), StoreError> {
        self.run("insert_refresh_token", self.inner.insert_refresh_token(token)).await
    }

    async fn rotate_refresh_token(
        &self,
        presented: &[u8],
        successor: &[u8],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError> {
        self.run("rotate_refresh_token", self.inner.rotate_refresh_token(presented, successor, now, expires_at)).await
    }

    async fn revoke_refresh_family(
        &self,
        presented: &[u8],
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.run("revoke_refresh_family", self.inner.revoke_refresh_family(presented, user_id, now)).await
    }

    async fn post_batch(
        &self,
        requests: &[LedgerRequest],
        render: &dyn ResponseRenderer,
        now: DateTime<Utc>,
    ) -> Result<crate::PostedBatch, StoreError> {
        let posted = self.run("post_batch", self.inner.post_batch(requests, render, now)).await?;
        if self.take_commit_failure() {
            return Err(lost_commit());
        }
        Ok(posted)
    }

    async fn bulk_post(
        &self,
        batches: &mut (dyn Iterator<Item = crate::BulkBatch> + Send),
    ) -> Result<crate::BulkOutcome, StoreError> {
        self.run("bulk_post", self.inner.bulk_post(batches)).await
    }

    async fn wallet_changes(&self) -> Result<Option<Box<dyn crate::WalletChangeFeed>>, StoreError> {
        self.run("wallet_changes", self.inner.wallet_changes()).await
    }

    async fn announce_wallet_marker(&self, marker: &str) -> Result<(), StoreError> {
        self.run("announce_wallet_marker", self.inner.announce_wallet_marker(marker)).await
    }

    async fn renew_balance_lease(
        &self,
        period: std::time::Duration,
    ) -> Result<Option<crate::LeaseRenewal>, StoreError> {
        self.run("renew_balance_lease", self.inner.renew_balance_lease(period)).await
    }

    async fn release_balance_lease(&self) -> Result<(), StoreError> {
        self.run("release_balance_lease", self.inner.release_balance_lease()).await
    }

    async fn foreign_change_marker(&self) -> Result<Option<i64>, StoreError> {
        self.run("foreign_change_marker", self.inner.foreign_change_marker()).await
    }

    async fn find_idempotent(&self, user_id: Uuid, key: &str) -> Result<Option<StoredResponse>, StoreError> {
        self.run("find_idempotent", self.inner.find_idempotent(user_id, key)).await
    }

    async fn find_transaction(&self, id: Uuid) -> Result<Option<TransactionRecord>, StoreError> {
        self.run("find_transaction", self.inner.find_transaction(id)).await
    }

    async fn list_transactions(&self, query: &TransactionQuery) -> Result<Vec<TransactionRecord>, StoreError> {
        self.run("list_transactions", self.inner.list_transactions(query)).await
    }

    async fn wallets(&self, user_id: Uuid, currency: Option<Currency>) -> Result<Vec<Wallet>, StoreError> {
        self.run("wallets", self.inner.wallets(user_id, currency)).await
    }

    async fn balance_history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        self.run("balance_history", self.inner.balance_history(query)).await
    }

    async fn balance_at(&self, user_id: Uuid, currency: Currency, at: DateTime<Utc>) -> Result<i64, StoreError> {
        self.run("balance_at", self.inner.balance_at(user_id, currency, at)).await
    }

    async fn fx_rates(&self) -> Result<Vec<FxRate>, StoreError> {
        self.run("fx_rates", self.inner.fx_rates()).await
    }

    async fn fx_rate(&self, base: Currency, quote: Currency) -> Result<Option<FxRate>, StoreError> {
        self.run("fx_rate", self.inner.fx_rate(base, quote)).await
    }

    async fn wallet_limits(
        &self,
        user_id: Uuid,
        currency: Currency,
    ) -> Result<banksim_core::ledger::Limits, StoreError> {
        self.run("wallet_limits", self.inner.wallet_limits(user_id, currency)).await
    }

    async fn set_wallet_limits(
        &self,
        change: &crate::LimitsChange,
        audit: &AuditContext,
        now: DateTime<Utc>,
    ) -> Result<banksim_core::ledger::Limits, StoreError> {
        self.run("set_wallet_limits", self.inner.set_wallet_limits(change, audit, now)).await
    }

    async fn due_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<crate::DueHold>, StoreError> {
        self.run("due_holds", self.inner.due_holds(now, limit)).await
    }

    async fn put_fx_rate(&self, rate: FxRate) -> Result<FxRate, StoreError> {
        self.run("put_fx_rate", self.inner.put_fx_rate(rate)).await
    }

    async fn list_events(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        self.run("list_events", self.inner.list_events(after, limit)).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.run("list_audit", self.inner.list_audit(query)).await
    }

    async fn account_balances(&self) -> Result<Vec<(Uuid, i64)>, StoreError> {
        self.run("account_balances", self.inner.account_balances()).await
    }

    async fn verify_ledger(&self) -> Result<LedgerReport, StoreError> {
        self.run("verify_ledger", self.inner.verify_ledger()).await
    }

    async fn create_schedule(
        &self,
        schedule: &ScheduleRecord,
        idempotency: Option<(&IdempotencyClaim, u16, &str)>,
        audit: &AuditContext,
    ) -> Result<(), StoreError> {
        self.run("create_schedule", self.inner.create_schedule(schedule, idempotency, audit)).await
    }

    async fn find_schedule(&self, id: Uuid) -> Result<Option<ScheduleRecord>, StoreError> {
        self.run("find_schedule", self.inner.find_schedule(id)).await
    }

    async fn list_schedules(&self, query: &ScheduleQuery) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.run("list_schedules", self.inner.list_schedules(query)).await
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
        self.run("change_schedule_status", self.inner.change_schedule_status(id, from, to, next, now, audit)).await
    }

    async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<ScheduleClaim>, StoreError> {
        self.run("claim_due_schedules", self.inner.claim_due_schedules(now, lease, limit)).await
    }

    async fn record_occurrence(
        &self,
        claim: &ScheduleClaim,
        update: &OccurrenceUpdate,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.run("record_occurrence", self.inner.record_occurrence(claim, update, now)).await
    }

    async fn retry_occurrence(
        &self,
        claim: &ScheduleClaim,
        attempt: u32,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.run("retry_occurrence", self.inner.retry_occurrence(claim, attempt, retry_at, now)).await
    }

    async fn count_due_schedules(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.run("count_due_schedules", self.inner.count_due_schedules(now)).await
    }

    async fn list_executions(&self, schedule_id: Uuid) -> Result<Vec<ExecutionRecord>, StoreError> {
        self.run("list_executions", self.inner.list_executions(schedule_id)).await
    }

    async fn projection_status(&self, projection: Projection) -> Result<ProjectionStatus, StoreError> {
        self.run("projection_status", self.inner.projection_status(projection)).await
    }

    async fn apply_to_projection(
        &self,
        projection: Projection,
        events: &[EventRecord],
        now: DateTime<Utc>,
    ) -> Result<ProjectionProgress, StoreError> {
        self.run("apply_to_projection", self.inner.apply_to_projection(projection, events, now)).await
    }

    async fn reset_projection(&self, projection: Projection, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.run("reset_projection", self.inner.reset_projection(projection, now)).await
    }

    async fn relay_status(&self, relay: &str) -> Result<crate::RelayStatus, StoreError> {
        self.run("relay_status", self.inner.relay_status(relay)).await
    }

    async fn claim_relay(
        &self,
        relay: &str,
        holder: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        self.run("claim_relay", self.inner.claim_relay(relay, holder, until, now)).await
    }

    async fn advance_relay(
        &self,
        relay: &str,
        holder: Uuid,
        position: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.run("advance_relay", self.inner.advance_relay(relay, holder, position, now)).await
    }

    async fn statements(&self, query: &StatementQuery) -> Result<Vec<crate::WalletStatements>, StoreError> {
        self.run("statements", self.inner.statements(query)).await
    }

    async fn system_totals(&self) -> Result<Vec<SystemTotal>, StoreError> {
        self.run("system_totals", self.inner.system_totals()).await
    }
}

#[async_trait]
impl SimulationStore for FaultyStore {
    async fn virtual_now(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.run("virtual_now", self.inner.virtual_now()).await
    }

    async fn claim_clock(
        &self,
        holder: Uuid,
        wall_now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.run("claim_clock", self.inner.claim_clock(holder, wall_now, until)).await
    }

    async fn release_clock(&self, holder: Uuid) -> Result<(), StoreError> {
        self.run("release_clock", self.inner.release_clock(holder)).await
    }

    async fn move_clock(&self, holder: Uuid, to: DateTime<Utc>, wall_now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.run("move_clock", self.inner.move_clock(holder, to, wall_now)).await
    }

    async fn next_due_instant(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.run("next_due_instant", self.inner.next_due_instant()).await
    }

    async fn dump_users(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<DumpedUser>, StoreError> {
        self.run("dump_users", self.inner.dump_users(after, limit)).await
    }

    async fn dump_wallets(&self, after: Option<(Uuid, String)>, limit: u32) -> Result<Vec<DumpedWallet>, StoreError> {
        self.run("dump_wallets", self.inner.dump_wallets(after, limit)).await
    }

    async fn dump_transactions(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<DumpedTransaction>, StoreError> {
        self.run("dump_transactions", self.inner.dump_transactions(after, limit)).await
    }
}
