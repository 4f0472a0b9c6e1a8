//! The layer every database call of the server passes through: the seam of DESIGN.md where the circuit breaker and
//! injected faults sit.
//!
//! - Every call goes through the database's circuit breaker: while it is open, calls are refused at once with
//!   `StoreError::CircuitOpen` (a 503 with `Retry-After`) instead of piling up on a database known to be down.
//! - A read that meets a broken connection (the server restarted, the connection was cut) is tried once more, on a
//!   fresh connection; a write never is (the writer decides what a failed write means).
//! - Each call made within a traced operation (a request, a scheduler run, a projector round) is a span of its
//!   own, `store.<method>`, with the backend and the outcome.
//!
//! A call made outside of any span (the scheduler's and projectors' idle polls, the writer's commits, which run in
//! tasks of their own) gets no span: an idle instance sends no traces, and a batch commit is reported to the
//! requests that waited on it instead (see [`crate::writer`]).

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use banksim_core::currency::Currency;
use banksim_core::ledger::TransactionRecord;
use banksim_core::schedule::ScheduleStatus;
use banksim_core::user::User;
use banksim_store::{
    AuditContext, AuditQuery, AuditRecord, AuditedAction, Backend, Credentials, EventRecord, ExecutionRecord, FxRate,
    HistoryEntry, HistoryQuery, IdempotencyClaim, LedgerReport, LedgerRequest, NewRefreshToken, NewUser, NextRun,
    OccurrenceUpdate, Projection, ProjectionProgress, ProjectionStatus, RefreshOutcome, ResponseRenderer,
    ScheduleClaim, ScheduleQuery, ScheduleRecord, StatementQuery, Store, StoreError, StoredResponse, SystemTotal,
    TransactionQuery, UserChanges, UserListQuery, UserPage, Wallet,
};
use banksim_store::{DumpedTransaction, DumpedUser, DumpedWallet, SimulationStore};
use chrono::{DateTime, Utc};
use tracing::Instrument;
use uuid::Uuid;

use crate::resilience::{CircuitBreaker, Guarded};

/// A store that passes every call to the real one through its circuit breaker, inside a span of its own when the
/// caller is traced.
pub struct StoreLayer {
    inner: Arc<dyn Store>,
    breaker: Arc<CircuitBreaker>,
    /// The OpenTelemetry name of the database system.
    system: &'static str,
}

impl StoreLayer {
    /// Wraps `inner`, guarded by `breaker`.
    pub fn wrap(inner: Arc<dyn Store>, breaker: Arc<CircuitBreaker>) -> Arc<dyn Store> {
        let system = match inner.backend() {
            Backend::Postgres => "postgresql",
            Backend::Sqlite => "sqlite",
        };
        Arc::new(Self { inner, breaker, system })
    }

    /// A read: guarded, and tried once more on a fresh connection when the first meets a broken one.
    async fn read<T, F, Fut>(&self, method: &'static str, call: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        match self.call(method, call()).await {
            Err(StoreError::Unavailable(cause)) => {
                tracing::debug!(store.method = method, error = %cause, "read met a broken connection; trying again");
                self.call(method, call()).await
            }
            other => other,
        }
    }

    /// Runs one call of `method` through the breaker, in its span when there is a span to hang it under.
    async fn call<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let span = self.span(method);
        let guarded = self.breaker.run(call.instrument(span.clone()), StoreError::is_outage).await;
        let result = guarded.map_err(|error| match error {
            Guarded::Open(open) => StoreError::CircuitOpen { breaker: open.name, retry_after: open.retry_after },
            Guarded::Failed(error) => error,
        });
        if let Err(err) = &result {
            // The error's own text only (never its source, which may quote the database), and a failed span
            // unless the answer is an ordinary one (not found, a conflict, a refused rate).
            span.record("error.message", tracing::field::display(err));
            if !matches!(err, StoreError::NotFound | StoreError::Conflict(_) | StoreError::RateCycle(_)) {
                span.record("otel.status_code", "error");
            }
        }
        result
    }

    fn span(&self, method: &'static str) -> tracing::Span {
        if tracing::Span::current().is_none() || !crate::telemetry::exports_traces() {
            return tracing::Span::none();
        }
        tracing::debug_span!(
            "store",
            otel.name = format!("store.{method}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = self.system,
            db.operation.name = method,
            error.message = tracing::field::Empty,
        )
    }
}

#[async_trait]
impl Store for StoreLayer {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.call("migrate", self.inner.migrate()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read("ping", || self.inner.ping()).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    fn pool_status(&self) -> banksim_store::PoolStatus {
        self.inner.pool_status()
    }

    async fn acquire_wait(&self) -> Result<std::time::Duration, StoreError> {
        self.read("acquire_wait", || self.inner.acquire_wait()).await
    }

    async fn wal_position(&self) -> Result<Option<banksim_store::WalPosition>, StoreError> {
        self.read("wal_position", || self.inner.wal_position()).await
    }

    async fn create_user(&self, user: NewUser, audit: &AuditContext) -> Result<User, StoreError> {
        self.call("create_user", self.inner.create_user(user, audit)).await
    }

    async fn create_users(&self, users: &[NewUser], audit: &AuditContext) -> Result<(), StoreError> {
        self.call("create_users", self.inner.create_users(users, audit)).await
    }

    async fn find_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        self.read("find_user", || self.inner.find_user(id)).await
    }

    async fn find_credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError> {
        self.read("find_credentials", || self.inner.find_credentials(email)).await
    }

    async fn list_users(&self, query: UserListQuery) -> Result<UserPage, StoreError> {
        self.read("list_users", || self.inner.list_users(query)).await
    }

    async fn count_active_admins(&self) -> Result<u64, StoreError> {
        self.read("count_active_admins", || self.inner.count_active_admins()).await
    }

    async fn update_user(
        &self,
        id: Uuid,
        changes: UserChanges,
        now: DateTime<Utc>,
        audit: &AuditContext,
    ) -> Result<User, StoreError> {
        self.call("update_user", self.inner.update_user(id, changes, now, audit)).await
    }

    async fn record_action(&self, action: &AuditedAction, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.call("record_action", self.inner.record_action(action, now)).await
    }

    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<(), StoreError> {
        self.call("insert_refresh_token", self.inner.insert_refresh_token(token)).await
    }

    async fn rotate_refresh_token(
        &self,
        presented: &[u8],
        successor: &[u8],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError> {
        self.call("rotate_refresh_token", self.inner.rotate_refresh_token(presented, successor, now, expires_at)).await
    }

    async fn revoke_refresh_family(
        &self,
        presented: &[u8],
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.call("revoke_refresh_family", self.inner.revoke_refresh_family(presented, user_id, now)).await
    }

    async fn post_batch(
        &self,
        requests: &[LedgerRequest],
        render: &dyn ResponseRenderer,
        now: DateTime<Utc>,
    ) -> Result<banksim_store::PostedBatch, StoreError> {
        self.call("post_batch", self.inner.post_batch(requests, render, now)).await
    }

    async fn bulk_post(
        &self,
        batches: &mut (dyn Iterator<Item = banksim_store::BulkBatch> + Send),
    ) -> Result<banksim_store::BulkOutcome, StoreError> {
        self.call("bulk_post", self.inner.bulk_post(batches)).await
    }

    async fn wallet_changes(&self) -> Result<Option<Box<dyn banksim_store::WalletChangeFeed>>, StoreError> {
        self.call("wallet_changes", self.inner.wallet_changes()).await
    }

    async fn announce_wallet_marker(&self, marker: &str) -> Result<(), StoreError> {
        self.call("announce_wallet_marker", self.inner.announce_wallet_marker(marker)).await
    }

    async fn renew_balance_lease(
        &self,
        period: std::time::Duration,
    ) -> Result<Option<banksim_store::LeaseRenewal>, StoreError> {
        // Around the breaker: a background renewal every 125 ms must neither take a half-open breaker's trial nor
        // reset its count of failures.
        self.inner.renew_balance_lease(period).await
    }

    async fn release_balance_lease(&self) -> Result<(), StoreError> {
        self.inner.release_balance_lease().await
    }

    async fn foreign_change_marker(&self) -> Result<Option<i64>, StoreError> {
        self.read("foreign_change_marker", || self.inner.foreign_change_marker()).await
    }

    async fn find_idempotent(&self, user_id: Uuid, key: &str) -> Result<Option<StoredResponse>, StoreError> {
        self.read("find_idempotent", || self.inner.find_idempotent(user_id, key)).await
    }

    async fn find_transaction(&self, id: Uuid) -> Result<Option<TransactionRecord>, StoreError> {
        self.read("find_transaction", || self.inner.find_transaction(id)).await
    }

    async fn list_transactions(&self, query: &TransactionQuery) -> Result<Vec<TransactionRecord>, StoreError> {
        self.read("list_transactions", || self.inner.list_transactions(query)).await
    }

    async fn wallets(&self, user_id: Uuid, currency: Option<Currency>) -> Result<Vec<Wallet>, StoreError> {
        self.read("wallets", || self.inner.wallets(user_id, currency)).await
    }

    async fn balance_history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        self.read("balance_history", || self.inner.balance_history(query)).await
    }

    async fn balance_at(&self, user_id: Uuid, currency: Currency, at: DateTime<Utc>) -> Result<i64, StoreError> {
        self.read("balance_at", || self.inner.balance_at(user_id, currency, at)).await
    }

    async fn fx_rates(&self) -> Result<Vec<FxRate>, StoreError> {
        self.read("fx_rates", || self.inner.fx_rates()).await
    }

    async fn fx_rate(&self, base: Currency, quote: Currency) -> Result<Option<FxRate>, StoreError> {
        self.read("fx_rate", || self.inner.fx_rate(base, quote)).await
    }

    async fn wallet_limits(
        &self,
        user_id: Uuid,
        currency: Currency,
    ) -> Result<banksim_core::ledger::Limits, StoreError> {
        self.read("wallet_limits", || self.inner.wallet_limits(user_id, currency)).await
    }

    async fn set_wallet_limits(
        &self,
        change: &banksim_store::LimitsChange,
        audit: &AuditContext,
        now: DateTime<Utc>,
    ) -> Result<banksim_core::ledger::Limits, StoreError> {
        self.call("set_wallet_limits", self.inner.set_wallet_limits(change, audit, now)).await
    }

    async fn due_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<banksim_store::DueHold>, StoreError> {
        self.read("due_holds", || self.inner.due_holds(now, limit)).await
    }

    async fn put_fx_rate(&self, rate: FxRate) -> Result<FxRate, StoreError> {
        self.call("put_fx_rate", self.inner.put_fx_rate(rate)).await
    }

    async fn list_events(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        self.read("list_events", || self.inner.list_events(after, limit)).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.read("list_audit", || self.inner.list_audit(query)).await
    }

    async fn account_balances(&self) -> Result<Vec<(Uuid, i64)>, StoreError> {
        self.read("account_balances", || self.inner.account_balances()).await
    }

    async fn verify_ledger(&self) -> Result<LedgerReport, StoreError> {
        self.read("verify_ledger", || self.inner.verify_ledger()).await
    }

    async fn create_schedule(
        &self,
        schedule: &ScheduleRecord,
        idempotency: Option<(&IdempotencyClaim, u16, &str)>,
        audit: &AuditContext,
    ) -> Result<(), StoreError> {
        self.call("create_schedule", self.inner.create_schedule(schedule, idempotency, audit)).await
    }

    async fn find_schedule(&self, id: Uuid) -> Result<Option<ScheduleRecord>, StoreError> {
        self.read("find_schedule", || self.inner.find_schedule(id)).await
    }

    async fn list_schedules(&self, query: &ScheduleQuery) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.read("list_schedules", || self.inner.list_schedules(query)).await
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
        self.call("change_schedule_status", self.inner.change_schedule_status(id, from, to, next, now, audit)).await
    }

    async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<ScheduleClaim>, StoreError> {
        self.call("claim_due_schedules", self.inner.claim_due_schedules(now, lease, limit)).await
    }

    async fn record_occurrence(
        &self,
        claim: &ScheduleClaim,
        update: &OccurrenceUpdate,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.call("record_occurrence", self.inner.record_occurrence(claim, update, now)).await
    }

    async fn retry_occurrence(
        &self,
        claim: &ScheduleClaim,
        attempt: u32,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.call("retry_occurrence", self.inner.retry_occurrence(claim, attempt, retry_at, now)).await
    }

    async fn count_due_schedules(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.read("count_due_schedules", || self.inner.count_due_schedules(now)).await
    }

    async fn list_executions(&self, schedule_id: Uuid) -> Result<Vec<ExecutionRecord>, StoreError> {
        self.read("list_executions", || self.inner.list_executions(schedule_id)).await
    }

    async fn projection_status(&self, projection: Projection) -> Result<ProjectionStatus, StoreError> {
        self.read("projection_status", || self.inner.projection_status(projection)).await
    }

    async fn apply_to_projection(
        &self,
        projection: Projection,
        events: &[EventRecord],
        now: DateTime<Utc>,
    ) -> Result<ProjectionProgress, StoreError> {
        self.call("apply_to_projection", self.inner.apply_to_projection(projection, events, now)).await
    }

    async fn reset_projection(&self, projection: Projection, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.call("reset_projection", self.inner.reset_projection(projection, now)).await
    }

    async fn relay_status(&self, relay: &str) -> Result<banksim_store::RelayStatus, StoreError> {
        self.read("relay_status", || self.inner.relay_status(relay)).await
    }

    async fn claim_relay(
        &self,
        relay: &str,
        holder: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        self.call("claim_relay", self.inner.claim_relay(relay, holder, until, now)).await
    }

    async fn advance_relay(
        &self,
        relay: &str,
        holder: Uuid,
        position: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.call("advance_relay", self.inner.advance_relay(relay, holder, position, now)).await
    }

    async fn statements(&self, query: &StatementQuery) -> Result<Vec<banksim_store::WalletStatements>, StoreError> {
        self.read("statements", || self.inner.statements(query)).await
    }

    async fn system_totals(&self) -> Result<Vec<SystemTotal>, StoreError> {
        self.read("system_totals", || self.inner.system_totals()).await
    }
}

#[async_trait]
impl SimulationStore for StoreLayer {
    async fn virtual_now(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read("virtual_now", || self.inner.virtual_now()).await
    }

    async fn claim_clock(
        &self,
        holder: Uuid,
        wall_now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.call("claim_clock", self.inner.claim_clock(holder, wall_now, until)).await
    }

    async fn release_clock(&self, holder: Uuid) -> Result<(), StoreError> {
        self.call("release_clock", self.inner.release_clock(holder)).await
    }

    async fn move_clock(&self, holder: Uuid, to: DateTime<Utc>, wall_now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.call("move_clock", self.inner.move_clock(holder, to, wall_now)).await
    }

    async fn next_due_instant(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read("next_due_instant", || self.inner.next_due_instant()).await
    }

    async fn dump_users(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<DumpedUser>, StoreError> {
        self.read("dump_users", || self.inner.dump_users(after, limit)).await
    }

    async fn dump_wallets(&self, after: Option<(Uuid, String)>, limit: u32) -> Result<Vec<DumpedWallet>, StoreError> {
        self.read("dump_wallets", || self.inner.dump_wallets(after.clone(), limit)).await
    }

    async fn dump_transactions(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<DumpedTransaction>, StoreError> {
        self.read("dump_transactions", || self.inner.dump_transactions(after, limit)).await
    }
}
