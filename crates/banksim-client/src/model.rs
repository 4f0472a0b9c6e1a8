//! The request and answer bodies of the API, as the spec (`docs/openapi.snapshot.json`) names them.
//!
//! Amounts are [`Amount`]s (exact text), currencies `banksim-core`'s [`Currency`], and the closed sets the server
//! takes from `banksim-core` (roles, transaction kinds and statuses, schedule kinds, statuses and recurrences) are
//! the core's own enums, so client and server cannot disagree on their spelling. Fields the server adds later are
//! ignored; fields that may be absent are `Option`s.

use banksim_core::currency::Currency;
use banksim_core::ledger::{TransactionKind, TransactionStatus};
use banksim_core::schedule::{Recurrence, ScheduleKind, ScheduleStatus};
use banksim_core::user::Role;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::amount::Amount;

// ---- auth and users -----------------------------------------------------------------------------------------

/// `POST /api/v1/auth/register`.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterRequest {
    /// 3–50 of `[A-Za-z0-9_]`.
    pub username: String,
    /// A valid email; stored lower-case.
    pub email: String,
    /// 8–128 characters.
    pub password: String,
    /// `user` (the default), or `admin` when the caller is an admin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

impl RegisterRequest {
    /// A plain user's registration.
    pub fn new(username: impl Into<String>, email: impl Into<String>, password: impl Into<String>) -> Self {
        Self { username: username.into(), email: email.into(), password: password.into(), role: None }
    }
}

/// `POST /api/v1/auth/login`.
#[derive(Debug, Clone, Serialize)]
pub struct LoginRequest {
    /// The email registered.
    pub email: String,
    /// The password.
    pub password: String,
}

/// A user, as every route shows one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// Username.
    pub username: String,
    /// Email, lower-case.
    pub email: String,
    /// Role.
    pub role: Role,
    /// False once deactivated or deleted.
    pub is_active: bool,
    /// Registration time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A new pair of tokens (`POST /api/v1/auth/refresh`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Tokens {
    /// The JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Trades for the next pair once (rotation).
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

/// A new session (`POST /api/v1/auth/login`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Login {
    /// Who logged in.
    pub user: User,
    /// The JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Trades for the next pair once (rotation).
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

/// The body of refresh and logout.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshRequest {
    /// The refresh token.
    pub refresh_token: String,
}

/// `PUT /api/v1/users/{id}`: the fields to change (at least one).
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateUserRequest {
    /// New username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// New email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// New role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Deactivate (`false`) or reactivate (`true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
}

/// A page of users (`GET /api/v1/users`).
#[derive(Debug, Clone, Deserialize)]
pub struct UserList {
    /// The users, in registration order.
    pub users: Vec<User>,
    /// The page size used.
    pub limit: u32,
    /// The offset used.
    pub offset: u64,
    /// How many users match in all.
    pub total: u64,
}

/// A `{"message": …}` answer (a deleted user, a cancelled schedule).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Message {
    /// The text.
    pub message: String,
}

// ---- money ----------------------------------------------------------------------------------------------------

/// `POST /api/v1/transactions/credit` and `/debit`.
#[derive(Debug, Clone, Serialize)]
pub struct AmountRequest {
    /// The amount, exact.
    pub amount: Amount,
    /// Its currency.
    pub currency: Currency,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Admins only: when the movement takes effect, if earlier than now (back-dated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<DateTime<Utc>>,
}

impl AmountRequest {
    /// `amount` of `currency`, without a description.
    pub fn new(amount: impl Into<Amount>, currency: Currency) -> Self {
        Self { amount: amount.into(), currency, description: None, effective_at: None }
    }

    /// The same movement, back-dated to `at` (admins only).
    pub fn effective_at(mut self, at: DateTime<Utc>) -> Self {
        self.effective_at = Some(at);
        self
    }
}

/// `POST /api/v1/transactions/transfer`.
#[derive(Debug, Clone, Serialize)]
pub struct TransferRequest {
    /// The payee.
    pub to_user_id: Uuid,
    /// The amount, exact.
    pub amount: Amount,
    /// Its currency.
    pub currency: Currency,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A two-phase transfer: hold the amount until it is posted, voided or expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<bool>,
    /// How long a hold lives (1..2592000, default 3600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// Admins only, not for a hold: when the transfer takes effect, if earlier than now (back-dated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<DateTime<Utc>>,
}

impl TransferRequest {
    /// A transfer of `amount` of `currency` to `to_user_id`, posted at once.
    pub fn new(to_user_id: Uuid, amount: impl Into<Amount>, currency: Currency) -> Self {
        Self {
            to_user_id,
            amount: amount.into(),
            currency,
            description: None,
            pending: None,
            timeout_secs: None,
            effective_at: None,
        }
    }

    /// The same transfer as a hold (`pending: true`), expiring after `timeout_secs` if given.
    pub fn pending(mut self, timeout_secs: Option<u32>) -> Self {
        self.pending = Some(true);
        self.timeout_secs = timeout_secs;
        self
    }
}

/// `POST /api/v1/transactions/exchange`.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeRequest {
    /// The wallet money leaves.
    pub from_currency: Currency,
    /// The wallet money enters.
    pub to_currency: Currency,
    /// The amount, in `from_currency`.
    pub amount: Amount,
}

/// `POST /api/v1/transactions/{id}/post`: the whole hold, or a part of it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PostTransferRequest {
    /// The part to post; the rest is released. `None` posts the whole hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
}

/// A transaction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Transaction {
    /// Id.
    pub id: Uuid,
    /// Credit, debit, transfer or exchange.
    #[serde(rename = "type")]
    pub kind: TransactionKind,
    /// Where it stands (a 201 shows the final status).
    pub status: TransactionStatus,
    /// The payer (`None` for a credit).
    pub from_user_id: Option<Uuid>,
    /// The payee (`None` for a debit).
    pub to_user_id: Option<Uuid>,
    /// The amount moved.
    pub amount: Amount,
    /// Its currency.
    pub currency: Currency,
    /// Free text.
    pub description: Option<String>,
    /// The transaction this one compensates.
    pub reversal_of: Option<Uuid>,
    /// The transaction that compensated this one.
    pub reversed_by: Option<Uuid>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When it takes effect: `created_at`, or earlier for a back-dated movement (`None` only in an answer stored
    /// under an idempotency key by a server older than effective time, replayed now).
    #[serde(default)]
    pub effective_at: Option<DateTime<Utc>>,
    /// When a pending hold expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// An exchange's converted amount.
    pub to_amount: Option<Amount>,
    /// An exchange's target currency.
    pub to_currency: Option<Currency>,
    /// An exchange's rate.
    pub rate: Option<Amount>,
}

/// The kind of a batch item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchItemKind {
    /// Money in.
    Credit,
    /// Money out.
    Debit,
    /// Money to another user.
    Transfer,
}

/// One item of `POST /api/v1/transactions/batch`.
#[derive(Debug, Clone, Serialize)]
pub struct BatchItem {
    /// Credit, debit or transfer.
    #[serde(rename = "type")]
    pub kind: BatchItemKind,
    /// The amount, exact.
    pub amount: Amount,
    /// Its currency.
    pub currency: Currency,
    /// The payee of a transfer (or, for an admin, of a credit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_user_id: Option<Uuid>,
    /// Admins only: the payer of a debit or transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_user_id: Option<Uuid>,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Admins only: when the movement takes effect, if earlier than now (back-dated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<DateTime<Utc>>,
}

impl BatchItem {
    /// A transfer of `amount` of `currency` to `to_user_id`.
    pub fn transfer(to_user_id: Uuid, amount: impl Into<Amount>, currency: Currency) -> Self {
        Self {
            kind: BatchItemKind::Transfer,
            amount: amount.into(),
            currency,
            to_user_id: Some(to_user_id),
            from_user_id: None,
            description: None,
            effective_at: None,
        }
    }
}

/// `POST /api/v1/transactions/batch`: one idempotency key for the whole batch.
#[derive(Debug, Clone, Serialize)]
pub struct BatchRequest {
    /// All or nothing (`true`), or each item on its own.
    pub atomic: bool,
    /// The items, in order.
    pub transactions: Vec<BatchItem>,
}

/// Why a batch item was not posted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchItemError {
    /// The stable code (`batch_failed` for a fine item of a refused atomic batch).
    pub error_code: String,
    /// For people.
    pub error: String,
}

/// How one batch item went.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchItemResult {
    /// The item's place in the request.
    pub index: u32,
    /// `success` or `failed`.
    pub status: String,
    /// The transaction, when posted.
    pub transaction: Option<Transaction>,
    /// Why not, when not.
    pub error: Option<BatchItemError>,
}

/// The answer to a batch: one result per item.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchResponse {
    /// The results, in the items' order.
    pub results: Vec<BatchItemResult>,
}

/// Filters and page of `GET /api/v1/transactions/history`.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Page size (1–100; the server's default is 20).
    pub limit: Option<u32>,
    /// Skip this many.
    pub offset: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this kind.
    pub kind: Option<TransactionKind>,
    /// Only this status.
    pub status: Option<TransactionStatus>,
    /// Only this currency.
    pub currency: Option<Currency>,
    /// Not before.
    pub since: Option<DateTime<Utc>>,
    /// Not after.
    pub until: Option<DateTime<Utc>>,
}

/// A page of the caller's transactions, newest first.
#[derive(Debug, Clone, Deserialize)]
pub struct TransactionList {
    /// The transactions.
    pub transactions: Vec<Transaction>,
    /// The page size used.
    pub limit: u32,
    /// The offset used.
    pub offset: u64,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

// ---- balances -------------------------------------------------------------------------------------------------

/// A wallet's balance now (`GET /api/v1/balances/current`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CurrentBalance {
    /// The caller.
    pub user_id: Uuid,
    /// The posted balance.
    pub amount: Amount,
    /// The currency.
    pub currency: Currency,
    /// Last movement; `None` for a wallet that never had one.
    pub last_updated_at: Option<DateTime<Utc>>,
    /// The posted balance (= `amount`).
    pub posted: Amount,
    /// What the wallet's pending transfers hold.
    pub pending_out: Amount,
    /// What the wallet may still spend (`posted − pending_out + overdraft`).
    pub available: Amount,
}

/// One of the caller's wallets (`GET /api/v1/balances`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WalletBalance {
    /// The currency.
    pub currency: Currency,
    /// The posted balance.
    pub amount: Amount,
    /// Last movement.
    pub last_updated_at: Option<DateTime<Utc>>,
    /// The posted balance (= `amount`).
    pub posted: Amount,
    /// What the wallet's pending transfers hold.
    pub pending_out: Amount,
    /// What the wallet may still spend.
    pub available: Amount,
}

/// Every wallet of the caller.
#[derive(Debug, Clone, Deserialize)]
pub struct Balances {
    /// The wallets.
    pub balances: Vec<WalletBalance>,
}

/// The balance at an instant (`GET /api/v1/balances/at-time`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BalanceAtTime {
    /// The caller.
    pub user_id: Uuid,
    /// The balance after every movement at or before `timestamp`.
    pub amount: Amount,
    /// The currency.
    pub currency: Currency,
    /// The instant asked for.
    pub timestamp: DateTime<Utc>,
}

/// Filters of `GET /api/v1/balances/historical`.
#[derive(Debug, Clone, Default)]
pub struct BalanceHistoryQuery {
    /// Only this currency.
    pub currency: Option<Currency>,
    /// Page size (1–100).
    pub limit: Option<u32>,
    /// Not before.
    pub since: Option<DateTime<Utc>>,
    /// Not after.
    pub until: Option<DateTime<Utc>>,
}

/// Why a balance changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceReason {
    /// Money came in from outside.
    Credit,
    /// Money left to outside.
    Debit,
    /// A transfer out.
    TransferSent,
    /// A transfer in.
    TransferReceived,
    /// A rollback.
    Rollback,
    /// A currency exchange.
    Exchange,
    /// A reason this build does not know.
    #[serde(other)]
    Other,
}

/// One change of a balance.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BalanceChange {
    /// The transaction that changed it.
    pub transaction_id: Uuid,
    /// The wallet's owner.
    pub user_id: Uuid,
    /// The balance right after the change.
    pub amount: Amount,
    /// The signed movement.
    pub change: Amount,
    /// The currency.
    pub currency: Currency,
    /// When it took effect (the history's order).
    pub timestamp: DateTime<Utc>,
    /// A back-dated movement only: when it was recorded.
    #[serde(default)]
    pub recorded_at: Option<DateTime<Utc>>,
    /// Why.
    pub reason: BalanceReason,
}

/// The caller's balance history, newest first.
#[derive(Debug, Clone, Deserialize)]
pub struct BalanceHistory {
    /// The changes.
    pub history: Vec<BalanceChange>,
    /// The page size used.
    pub limit: u32,
}

/// One wallet's day.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DailyStatement {
    /// The UTC day.
    pub date: NaiveDate,
    /// The currency.
    pub currency: Currency,
    /// Balance at the start of the day.
    pub opening: Amount,
    /// Money in.
    pub credits: Amount,
    /// Money out.
    pub debits: Amount,
    /// Balance at the end of the day.
    pub closing: Amount,
}

/// Daily statements (`GET /api/v1/balances/statements`).
#[derive(Debug, Clone, Deserialize)]
pub struct DailyStatements {
    /// The statements.
    pub statements: Vec<DailyStatement>,
    /// The first day.
    pub from: NaiveDate,
    /// The last day.
    pub to: NaiveDate,
}

/// The limits of a wallet (admin).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WalletLimits {
    /// The wallet's owner.
    pub user_id: Uuid,
    /// The currency.
    pub currency: Currency,
    /// How far below zero the balance may go; `None`: not at all.
    pub overdraft: Option<Amount>,
    /// The ceiling; `None`: none.
    pub max_balance: Option<Amount>,
}

/// `PUT /api/v1/admin/wallets/{user_id}/{currency}/limits`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PutLimitsRequest {
    /// How far below zero the balance may go; `None` for none.
    pub overdraft: Option<Amount>,
    /// The ceiling; `None` for none.
    pub max_balance: Option<Amount>,
}

// ---- schedules ------------------------------------------------------------------------------------------------

/// `POST /api/v1/scheduled-transactions`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateScheduleRequest {
    /// Credit, debit or transfer.
    pub transaction_type: TransactionKind,
    /// The amount of each occurrence.
    pub amount: Amount,
    /// Its currency.
    pub currency: Currency,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The payee of a transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_user_id: Option<Uuid>,
    /// Once or recurring.
    pub schedule_type: ScheduleKind,
    /// The first execution.
    pub execute_at: DateTime<Utc>,
    /// The calendar of a recurring schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurrence_pattern: Option<Recurrence>,
    /// No occurrence after this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurrence_end_date: Option<DateTime<Utc>>,
    /// At most this many occurrences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_occurrences: Option<u32>,
}

impl CreateScheduleRequest {
    /// A one-time `kind` of `amount` at `execute_at`.
    pub fn once(
        kind: TransactionKind,
        amount: impl Into<Amount>,
        currency: Currency,
        execute_at: DateTime<Utc>,
    ) -> Self {
        Self {
            transaction_type: kind,
            amount: amount.into(),
            currency,
            description: None,
            to_user_id: None,
            schedule_type: ScheduleKind::Once,
            execute_at,
            recurrence_pattern: None,
            recurrence_end_date: None,
            max_occurrences: None,
        }
    }

    /// The same, recurring on `pattern`.
    pub fn recurring(mut self, pattern: Recurrence, max_occurrences: Option<u32>) -> Self {
        self.schedule_type = ScheduleKind::Recurring;
        self.recurrence_pattern = Some(pattern);
        self.max_occurrences = max_occurrences;
        self
    }
}

/// A scheduled transaction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Schedule {
    /// Id.
    pub id: Uuid,
    /// The owner.
    pub user_id: Uuid,
    /// Credit, debit or transfer.
    pub transaction_type: TransactionKind,
    /// The amount of each occurrence.
    pub amount: Amount,
    /// Its currency.
    pub currency: Currency,
    /// Free text.
    pub description: Option<String>,
    /// The payee of a transfer.
    pub to_user_id: Option<Uuid>,
    /// Once or recurring.
    pub schedule_type: ScheduleKind,
    /// The first execution.
    pub execute_at: DateTime<Utc>,
    /// The calendar.
    pub recurrence_pattern: Option<Recurrence>,
    /// No occurrence after this.
    pub recurrence_end_date: Option<DateTime<Utc>>,
    /// At most this many occurrences.
    pub max_occurrences: Option<u32>,
    /// Occurrences run so far.
    pub current_occurrence: u32,
    /// The next run, if any.
    pub next_execution_at: Option<DateTime<Utc>>,
    /// The last run, if any.
    pub last_executed_at: Option<DateTime<Utc>>,
    /// Where it stands.
    pub status: ScheduleStatus,
    /// Whether it will still run.
    pub is_active: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Filters and page of `GET /api/v1/scheduled-transactions`.
#[derive(Debug, Clone, Default)]
pub struct ScheduleQuery {
    /// Page size (1–100).
    pub limit: Option<u32>,
    /// Skip this many.
    pub offset: Option<u64>,
    /// Only this status.
    pub status: Option<ScheduleStatus>,
    /// Only active (or inactive) ones.
    pub is_active: Option<bool>,
}

/// A page of the caller's schedules.
#[derive(Debug, Clone, Deserialize)]
pub struct ScheduleList {
    /// The schedules.
    pub scheduled_transactions: Vec<Schedule>,
    /// The page size used.
    pub limit: u32,
    /// The offset used.
    pub offset: u64,
}

/// How one run of a schedule ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// The transaction was posted.
    Success,
    /// It was refused (after its retries).
    Failed,
    /// It was not run (the schedule had ended).
    Skipped,
    /// A status this build does not know.
    #[serde(other)]
    Other,
}

/// One run of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Execution {
    /// When it ran.
    pub executed_at: DateTime<Utc>,
    /// Which occurrence (1-based).
    pub occurrence: u32,
    /// How it ended.
    pub status: ExecutionStatus,
    /// The transaction posted, if any.
    pub transaction_id: Option<Uuid>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Every run of a schedule.
#[derive(Debug, Clone, Deserialize)]
pub struct Executions {
    /// The runs.
    pub executions: Vec<Execution>,
}

// ---- service --------------------------------------------------------------------------------------------------

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// `GET /readyz`: the instance and its dependencies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Readiness {
    /// `ok`, `degraded` or `unavailable`.
    pub status: String,
    /// Each dependency's state.
    pub checks: ReadinessChecks,
}

/// The dependencies of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReadinessChecks {
    /// The primary database.
    pub database: String,
    /// The read replica, when configured.
    pub replica: Option<String>,
    /// Redis, when configured.
    pub redis: Option<String>,
}
