//! The ledger's storage contract, shared by the backends: what a batch of money movements asks for, what it
//! answers, and the rows it writes (built once here, written by each backend in its own SQL).

use std::collections::HashMap;

use banksim_core::currency::Currency;
use banksim_core::ledger::{
    AccountKey, AccountState, Applied, Book, Command, LedgerError, Limits, Movement, Original, TransactionRecord,
    backdated_wallets,
};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::StoreError;

/// One request's money movements to post, with what the same database transaction must also record.
#[derive(Debug, Clone)]
pub struct LedgerRequest {
    /// The movement, or a client's batch of them.
    pub work: LedgerWork,
    /// The idempotency key the client sent, if any.
    pub idempotency: Option<IdempotencyClaim>,
    /// Who asked, from where: for the audit entry.
    pub audit: AuditContext,
}

/// What one request asks the ledger to post.
#[derive(Debug, Clone)]
pub enum LedgerWork {
    /// One movement.
    One(Command),
    /// A client's batch (`POST /transactions/batch`), in order. An item the server refused before the ledger saw it
    /// (a recipient who is not an active user) is carried as its refusal, so that the batch's answer lists it.
    Batch {
        /// The items.
        items: Vec<Result<Command, LedgerError>>,
        /// All or nothing: one refused item and no item is posted.
        atomic: bool,
    },
}

impl LedgerWork {
    /// The movements to post (a batch's refused items left out).
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        let (one, items) = match self {
            Self::One(command) => (Some(command), &[][..]),
            Self::Batch { items, .. } => (None, &items[..]),
        };
        one.into_iter().chain(items.iter().filter_map(|item| item.as_ref().ok()))
    }

    /// How many movements it carries: what it weighs in a writer's commit.
    pub fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Batch { items, .. } => items.len(),
        }
    }

    /// Whether it carries no movement (an empty batch, which the API refuses before the ledger).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An idempotency key and the fingerprint of the request that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// Keys are scoped to their user.
    pub user_id: Uuid,
    /// The key (1–255 characters).
    pub key: String,
    /// SHA-256 of the request (method, route and canonical body): the same key with another body is a conflict.
    pub request_hash: Vec<u8>,
}

/// The request's context for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    /// The caller.
    pub actor_id: Option<Uuid>,
    /// The client's IP.
    pub ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// The trace id (32 lower-case hex digits) of the request or job run, when it is traced.
    pub trace_id: Option<String>,
}

/// A stored answer to a request with an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// Fingerprint of the request that produced it.
    pub request_hash: Vec<u8>,
    /// HTTP status.
    pub status: u16,
    /// Body, as sent.
    pub body: String,
}

/// What became of one request of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerOutcome {
    /// Posted and committed (boxed: the other outcomes are much smaller).
    Posted(Box<TransactionRecord>),
    /// Refused by a ledger rule; nothing moved (the refusal is audited, and stored under its idempotency key).
    Refused(LedgerError),
    /// Its idempotency key was used before: this is the stored answer (the caller compares fingerprints).
    Replayed(StoredResponse),
    /// A batch's outcome, item by item.
    Batch(BatchOutcome),
}

/// What became of each item of a batch, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Each item's transaction, or why it was refused. When `applied` is false, the transactions are what the
    /// items would have posted: none was.
    pub items: Vec<Result<TransactionRecord, LedgerError>>,
    /// False for an atomic batch with a refused item: nothing of it was posted.
    pub applied: bool,
}

/// Turns an outcome into the HTTP answer stored under an idempotency key, in the same database transaction.
pub trait ResponseRenderer: Send + Sync {
    /// Status and body for `outcome` of `request` (never a replay).
    fn render(&self, request: &LedgerRequest, outcome: &LedgerOutcome) -> (u16, String);
}

/// A user's wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    /// Currency.
    pub currency: Currency,
    /// Balance in minor units.
    pub balance_minor: i64,
    /// Postings so far: a later state of the wallet has a larger version.
    pub version: i64,
    /// Last movement.
    pub updated_at: DateTime<Utc>,
    /// Its balance limits.
    pub limits: Limits,
    /// What its pending transfers hold (out of `balance_minor` already: posted = balance + pending).
    pub pending_minor: i64,
}

/// A hold whose time is up, for the expiry job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueHold {
    /// The hold.
    pub id: Uuid,
    /// Its payer.
    pub from_user_id: Uuid,
    /// Its payee.
    pub to_user_id: Uuid,
    /// Its currency.
    pub currency: Currency,
}

/// An admin's change of one wallet's balance limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsChange {
    /// The wallet's owner.
    pub user_id: Uuid,
    /// The wallet's currency.
    pub currency: Currency,
    /// The new limits (replacing the old ones whole).
    pub limits: Limits,
}

/// The audit entry and event data of a limits change (the same for both backends).
pub(crate) fn limits_rows(
    change: &LimitsChange,
    before: Limits,
    audit: &AuditContext,
) -> (AuditRow, serde_json::Value) {
    let wallet = AccountKey::User { user_id: change.user_id, currency: change.currency };
    let data = json!({"account": wallet, "account_id": wallet.id(), "before": before, "after": change.limits});
    let row = AuditRow {
        entry_id: Uuid::now_v7(),
        actor_id: audit.actor_id,
        action: "wallet.limits".to_owned(),
        entity_type: "wallet",
        entity_id: Some(wallet.id().to_string()),
        outcome: "success".to_owned(),
        details: data.to_string(),
        ip: audit.ip.clone(),
        user_agent: audit.user_agent.clone(),
        request_id: audit.request_id.clone(),
        trace_id: audit.trace_id.clone(),
    };
    (row, data)
}

/// Refuses limits that are negative, or that the wallet's balance already breaks (`balance_limit_exceeded`): every
/// balance of a wallet must stay within its limits. What remains after its holds (`balance_minor`) must be above
/// the floor, and what it holds posted (`balance_minor + pending_minor`, which releasing the holds gives back) below
/// the ceiling.
pub(crate) fn check_new_limits(limits: Limits, balance_minor: i64, pending_minor: i64) -> Result<(), StoreError> {
    let floor_ok = balance_minor >= limits.floor_minor();
    let ceiling_ok = limits.max_balance_minor.is_none_or(|max| balance_minor.saturating_add(pending_minor) <= max);
    if !limits.is_valid() || !floor_ok || !ceiling_ok {
        return Err(StoreError::Conflict("balance_limit_exceeded"));
    }
    Ok(())
}

/// A user wallet as a committed batch left it (for the server's balance cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletState {
    /// Owner.
    pub user_id: Uuid,
    /// The wallet as it is now.
    pub wallet: Wallet,
}

/// What a committed batch did: each request's outcome, in order, and every user wallet it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostedBatch {
    /// One per request.
    pub outcomes: Vec<LedgerOutcome>,
    /// The wallets whose balance moved, as they now are.
    pub wallets: Vec<WalletState>,
}

/// A wallet whose version moved, as the change bus tells it: (owner, currency, version).
pub type WalletVersion = (Uuid, Currency, i64);

/// What the wallet change bus delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletChange {
    /// Wallets changed by a commit (of any instance), in commit order.
    Changed(Vec<WalletVersion>),
    /// A marker announced with `Store::announce_wallet_marker`: every change committed before it was announced has
    /// been delivered before it.
    Marker(String),
    /// The bus lost its connection: changes may have been missed.
    Lost,
}

/// A renewal of the balance read lease ([`crate::Store::renew_balance_lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRenewal {
    /// Whether this store held the lease without a break since its previous renewal, so that no other connection
    /// can have changed a wallet meanwhile. Otherwise the lease was taken anew: changes committed before it was
    /// taken may still be on their way over the change bus.
    pub continuous: bool,
}

/// A subscription to the wallet changes committed by every instance.
#[async_trait::async_trait]
pub trait WalletChangeFeed: Send {
    /// The next delivery (waits for one).
    async fn next(&mut self) -> Result<WalletChange, StoreError>;
}

/// The user wallets among a batch's changed accounts, as of `now`.
pub(crate) fn wallet_states(accounts: &[AccountState], now: DateTime<Utc>) -> Vec<WalletState> {
    accounts
        .iter()
        .filter_map(|account| match account.key {
            AccountKey::User { user_id, currency } => Some(WalletState {
                user_id,
                wallet: Wallet {
                    currency,
                    balance_minor: account.balance_minor,
                    version: account.version,
                    updated_at: now,
                    limits: account.limits,
                    pending_minor: account.pending_minor,
                },
            }),
            _ => None,
        })
        .collect()
}

/// Most wallets named in one notification (PostgreSQL limits a payload to 8000 bytes; each takes about 60).
const WALLETS_PER_NOTICE: usize = 100;

/// The change bus's payloads for `wallets`: `user:currency:version` entries, comma-separated, in chunks.
pub(crate) fn wallet_notices(wallets: &[WalletState]) -> Vec<String> {
    wallets
        .chunks(WALLETS_PER_NOTICE)
        .map(|chunk| {
            chunk
                .iter()
                .map(|w| format!("{}:{}:{}", w.user_id, w.wallet.currency, w.wallet.version))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// The prefix of a marker's payload on the change bus.
pub(crate) const MARKER_PREFIX: &str = "marker:";

/// Reads a change bus payload back (entries that do not parse are skipped: a newer version's format).
pub(crate) fn parse_wallet_notice(payload: &str) -> WalletChange {
    if let Some(marker) = payload.strip_prefix(MARKER_PREFIX) {
        return WalletChange::Marker(marker.to_owned());
    }
    let changes = payload
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(':');
            let user_id = parts.next()?.parse().ok()?;
            let currency = Currency::parse(parts.next()?).ok()?;
            let version = parts.next()?.parse().ok()?;
            Some((user_id, currency, version))
        })
        .collect();
    WalletChange::Changed(changes)
}

/// One entry of a wallet's history: a posting with its transaction, in effective time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The transaction.
    pub transaction_id: Uuid,
    /// Signed change of the balance.
    pub change_minor: i64,
    /// The balance in effect right after it (every posting effective before it, or at the same instant and
    /// recorded before it, counted).
    pub balance_after_minor: i64,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When it takes effect (`created_at` unless back-dated): the history's order.
    pub effective_at: DateTime<Utc>,
    /// Kind of the transaction.
    pub kind: banksim_core::ledger::TransactionKind,
    /// Whether the transaction is a rollback.
    pub is_reversal: bool,
}

/// Which postings of a wallet to list, newest first in effective time.
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery {
    /// Owner.
    pub user_id: Uuid,
    /// Currency.
    pub currency: Currency,
    /// Most entries.
    pub limit: u32,
    /// Only those effective at or after.
    pub since: Option<DateTime<Utc>>,
    /// Only those effective at or before.
    pub until: Option<DateTime<Utc>>,
}

/// Fills in the balances of a page of history, newest first in effective time, given the balance in effect at the
/// newest entry's instant. The page is a run of consecutive entries (no posting falls between two of them in
/// effective order), and none effective at that instant comes after the newest, so each balance before is the
/// balance after minus the change.
pub(crate) fn with_effective_balances(mut page: Vec<HistoryEntry>, newest_minor: i64) -> Vec<HistoryEntry> {
    let mut balance = newest_minor;
    for entry in &mut page {
        entry.balance_after_minor = balance;
        balance = balance.saturating_sub(entry.change_minor);
    }
    page
}

/// Which transactions of a user to list, newest first.
#[derive(Debug, Clone)]
pub struct TransactionQuery {
    /// The user, as payer or payee.
    pub user_id: Uuid,
    /// Only of this kind.
    pub kind: Option<banksim_core::ledger::TransactionKind>,
    /// Only with this status.
    pub status: Option<banksim_core::ledger::TransactionStatus>,
    /// Only in this currency.
    pub currency: Option<Currency>,
    /// Only at or after.
    pub since: Option<DateTime<Utc>>,
    /// Only at or before.
    pub until: Option<DateTime<Utc>>,
    /// Page size.
    pub limit: u32,
    /// Rows to skip (ignored with `before`).
    pub offset: u64,
    /// Keyset position: only transactions strictly older than this (created_at, id).
    pub before: Option<(DateTime<Utc>, Uuid)>,
}

/// An exchange rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FxRate {
    /// From.
    pub base: Currency,
    /// To.
    pub quote: Currency,
    /// Units of `quote` per unit of `base`.
    pub rate: banksim_core::money::Rate,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The result of checking every ledger invariant.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LedgerReport {
    /// Accounts checked.
    pub accounts: u64,
    /// Transactions checked.
    pub transactions: u64,
    /// Postings checked.
    pub postings: u64,
    /// Every broken invariant, in words; empty when the ledger is sound.
    pub violations: Vec<String>,
}

impl LedgerReport {
    /// Whether every invariant holds.
    pub fn is_sound(&self) -> bool {
        self.violations.is_empty()
    }
}

/// An event row to append.
#[derive(Debug, Clone)]
pub(crate) struct EventRow {
    pub id: Uuid,
    pub aggregate_type: &'static str,
    pub aggregate_id: Uuid,
    pub version: i64,
    pub event_type: &'static str,
    /// The event's data, serialised.
    pub data: String,
}

/// A movement event's data, serialised straight from the planned rows: building a `serde_json::Value` of each
/// transaction first (a map of strings per field, then dropped) was a tenth of the seeding's CPU.
#[derive(serde::Serialize)]
struct MovementEventData<'a> {
    transaction: &'a TransactionRecord,
    legs: Vec<EventLeg>,
    /// Only a back-dated movement's event says when it takes effect (the projections date it by that).
    #[serde(skip_serializing_if = "Option::is_none")]
    effective_at: Option<DateTime<Utc>>,
}

/// A leg of a movement event.
#[derive(serde::Serialize)]
struct EventLeg {
    account: AccountKey,
    account_id: Uuid,
    amount_minor: i64,
}

/// An audit row to append.
#[derive(Debug, Clone)]
pub(crate) struct AuditRow {
    pub entry_id: Uuid,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub entity_type: &'static str,
    pub entity_id: Option<String>,
    pub outcome: String,
    /// The details serialised as the chain hashes them: compact, keys in serde_json's sorted order (the chain's
    /// check serialises a stored entry's details again, as a `serde_json::Value`, which sorts them).
    pub details: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
}

impl AuditRow {
    /// The row of an entry written on its own.
    pub(crate) fn of_action(action: &crate::AuditedAction) -> Self {
        Self {
            entry_id: Uuid::now_v7(),
            actor_id: action.context.actor_id,
            action: action.action.clone(),
            entity_type: action.entity_type,
            entity_id: action.entity_id.clone(),
            outcome: action.outcome.clone(),
            details: action.details.to_string(),
            ip: action.context.ip.clone(),
            user_agent: action.context.user_agent.clone(),
            request_id: action.context.request_id.clone(),
            trace_id: action.context.trace_id.clone(),
        }
    }
}

/// An idempotency row to insert.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyRow {
    pub user_id: Uuid,
    pub key: String,
    pub request_hash: Vec<u8>,
    pub status: u16,
    pub body: String,
}

/// Everything a batch writes, in one commit.
#[derive(Debug, Default)]
pub(crate) struct BatchRows {
    pub transactions: Vec<TransactionRecord>,
    pub postings: Vec<(Uuid, banksim_core::ledger::Posting)>,
    pub accounts: Vec<AccountState>,
    /// Earlier transactions the batch changed (rolled back, or holds settled), as they now stand.
    pub updated: Vec<TransactionRecord>,
    pub events: Vec<EventRow>,
    pub audits: Vec<AuditRow>,
    pub idempotency: Vec<IdempotencyRow>,
    /// Ids of the earlier transactions changed (filling `updated` at the end).
    pub changed: Vec<Uuid>,
}

impl BatchRows {
    /// Adds the movement rows of `other` (planned on its own) after these.
    fn append(&mut self, other: BatchRows) {
        let BatchRows { transactions, postings, accounts: _, updated: _, events, audits, idempotency, changed } = other;
        self.transactions.extend(transactions);
        self.postings.extend(postings);
        self.events.extend(events);
        self.audits.extend(audits);
        self.idempotency.extend(idempotency);
        self.changed.extend(changed);
    }
}

/// The accounts a batch may have to create (receiving wallets and system accounts), sorted by id.
pub(crate) fn accounts_to_open(requests: &[&LedgerRequest]) -> Vec<AccountKey> {
    let mut keys: Vec<AccountKey> = requests
        .iter()
        .flat_map(|r| {
            r.work.commands().flat_map(|command| {
                let mut keys = banksim_core::ledger::accounts_opened(command);
                keys.extend(
                    banksim_core::ledger::accounts_needed(command).into_iter().filter(|k| k.user_id().is_none()),
                );
                keys
            })
        })
        .collect();
    // An id is a SHA-1 of the key: worked out once per key, not twice per comparison.
    keys.sort_by_cached_key(|k| k.id());
    keys.dedup();
    keys
}

/// The ids of the earlier transactions a batch changes (rollbacks' originals, settled holds), sorted (the order in
/// which they are locked).
pub(crate) fn rollback_originals(requests: &[&LedgerRequest]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = requests
        .iter()
        .flat_map(|r| r.work.commands())
        .filter_map(|command| match command.movement {
            Movement::Rollback { original_id: id, .. } | Movement::Settle { hold_id: id, .. } => Some(id),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Every account a batch touches, given its rollbacks' originals, sorted by id (the order in which they are locked).
pub(crate) fn accounts_touched(requests: &[&LedgerRequest], originals: &[Original]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = requests
        .iter()
        .flat_map(|r| r.work.commands().flat_map(banksim_core::ledger::accounts_needed))
        .chain(originals.iter().flat_map(|o| o.legs.iter().map(|l| l.account)))
        .map(AccountKey::id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A wallet's balance after its last posting recorded at or before `$2` (both backends): a history's opening.
pub(crate) const HISTORY_OPENING_SQL: &str = "SELECT balance_after_minor FROM postings
    WHERE account_id = $1 AND created_at <= $2 ORDER BY created_at DESC, account_version DESC LIMIT 1";

/// A wallet's postings recorded after `$2`, in posting order, each with when it takes effect (both backends).
pub(crate) const HISTORY_LATER_SQL: &str = "SELECT COALESCE(effective_at, created_at) AS at, amount_minor
    FROM postings WHERE account_id = $1 AND created_at > $2 ORDER BY account_version";

/// The wallets whose effective-time history a batch needs, each from the earliest instant one of its movements is
/// back-dated to on it, sorted by account id.
pub(crate) fn history_starts(requests: &[&LedgerRequest], now: DateTime<Utc>) -> Vec<(AccountKey, DateTime<Utc>)> {
    let mut starts: HashMap<AccountKey, DateTime<Utc>> = HashMap::new();
    for (key, at) in requests.iter().flat_map(|r| r.work.commands()).flat_map(|c| backdated_wallets(c, now)) {
        starts.entry(key).and_modify(|since| *since = (*since).min(at)).or_insert(at);
    }
    let mut starts: Vec<_> = starts.into_iter().collect();
    starts.sort_by_cached_key(|(key, _)| key.id());
    starts
}

/// The requests of a batch that carry an idempotency key, deduplicated, sorted by (user, key).
pub(crate) fn claimed_keys(requests: &[LedgerRequest]) -> Vec<(Uuid, String)> {
    let mut keys: Vec<(Uuid, String)> =
        requests.iter().filter_map(|r| r.idempotency.as_ref().map(|c| (c.user_id, c.key.clone()))).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Applies a batch in memory: each request is either a replay (its key is already stored, or claimed by an
/// earlier request of the batch), posted, or refused; returns the outcomes and every row to write.
pub(crate) fn plan_batch(
    requests: &[LedgerRequest],
    stored: HashMap<(Uuid, String), StoredResponse>,
    mut book: Book,
    render: &dyn ResponseRenderer,
    now: DateTime<Utc>,
) -> (Vec<LedgerOutcome>, BatchRows) {
    let mut stored = stored;
    let mut rows = BatchRows::default();
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        let key = request.idempotency.as_ref().map(|c| (c.user_id, c.key.clone()));
        if let Some(previous) = key.as_ref().and_then(|k| stored.get(k)) {
            outcomes.push(LedgerOutcome::Replayed(previous.clone()));
            continue;
        }
        let outcome = match &request.work {
            LedgerWork::One(command) => match apply_one(&mut book, request, command, now, &mut rows) {
                Ok(record) => LedgerOutcome::Posted(Box::new(record)),
                Err(refusal) => LedgerOutcome::Refused(refusal),
            },
            LedgerWork::Batch { items, atomic } => {
                LedgerOutcome::Batch(apply_items(&mut book, request, items, *atomic, now, &mut rows))
            }
        };
        if let (Some(claim), Some(key)) = (&request.idempotency, key) {
            let (status, body) = render.render(request, &outcome);
            rows.idempotency.push(IdempotencyRow {
                user_id: claim.user_id,
                key: claim.key.clone(),
                request_hash: claim.request_hash.clone(),
                status,
                body: body.clone(),
            });
            stored.insert(key, StoredResponse { request_hash: claim.request_hash.clone(), status, body });
        }
        outcomes.push(outcome);
    }
    rows.accounts = book.accounts().copied().collect();
    rows.accounts.sort_by_key(|a| a.id);
    // One row update per changed transaction, with its last state (a hold settled and rolled back in one batch).
    rows.changed.sort_unstable();
    rows.changed.dedup();
    rows.updated = rows.changed.iter().filter_map(|id| book.original(*id).map(|o| o.record.clone())).collect();
    (outcomes, rows)
}

/// Applies one movement: its audit row always, its transaction, postings and event when it is posted.
fn apply_one(
    book: &mut Book,
    request: &LedgerRequest,
    command: &Command,
    now: DateTime<Utc>,
    rows: &mut BatchRows,
) -> Result<TransactionRecord, LedgerError> {
    let before = book_balances(book, command);
    let result = book.apply(command, now);
    rows.audits.push(audit_row(request, command, &result, before, book));
    let applied = result?;
    let record = applied.transaction.clone();
    rows.changed.extend(applied.reversed);
    if applied.settles {
        rows.changed.push(applied.transaction.id);
    }
    add_posted(rows, applied);
    Ok(record)
}

/// Applies a client's batch item by item. An atomic batch with a refused item leaves the book as it found it and
/// writes one audit entry for the whole refusal; its items' results still say what each would have done.
fn apply_items(
    book: &mut Book,
    request: &LedgerRequest,
    items: &[Result<Command, LedgerError>],
    atomic: bool,
    now: DateTime<Utc>,
    rows: &mut BatchRows,
) -> BatchOutcome {
    let apply = |book: &mut Book, rows: &mut BatchRows| -> Vec<Result<TransactionRecord, LedgerError>> {
        items
            .iter()
            .map(|item| match item {
                Ok(command) => apply_one(book, request, command, now, rows),
                Err(refusal) => Err(*refusal),
            })
            .collect()
    };
    if !atomic {
        return BatchOutcome { items: apply(book, rows), applied: true };
    }
    let before = book.clone();
    let mut own = BatchRows::default();
    let items = apply(book, &mut own);
    if items.iter().all(Result::is_ok) {
        rows.append(own);
        return BatchOutcome { items, applied: true };
    }
    *book = before;
    rows.audits.push(batch_refusal_audit(request, &items));
    BatchOutcome { items, applied: false }
}

/// The one audit entry of an atomic batch refused whole: which items were refused, and why.
fn batch_refusal_audit(request: &LedgerRequest, items: &[Result<TransactionRecord, LedgerError>]) -> AuditRow {
    let refused: Vec<serde_json::Value> = items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            item.as_ref().err().map(|refusal| json!({"index": index, "reason": refusal.code()}))
        })
        .collect();
    AuditRow {
        entry_id: Uuid::now_v7(),
        actor_id: request.audit.actor_id,
        action: "transaction.batch".to_owned(),
        entity_type: "transaction",
        entity_id: None,
        outcome: "batch_failed".to_owned(),
        details: json!({"items": items.len(), "refused": refused}).to_string(),
        ip: request.audit.ip.clone(),
        user_agent: request.audit.user_agent.clone(),
        request_id: request.audit.request_id.clone(),
        trace_id: request.audit.trace_id.clone(),
    }
}

fn add_posted(rows: &mut BatchRows, applied: Applied) {
    let Applied { transaction, postings, reversed, settles, event_version } = applied;
    let legs = postings
        .iter()
        .map(|p| EventLeg { account: p.account, account_id: p.account_id, amount_minor: p.amount_minor })
        .collect();
    let (aggregate_id, event_type) = match reversed {
        Some(original) => (original, "TransactionRolledBack"),
        None => (transaction.id, event_type(&transaction, settles)),
    };
    let effective_at = postings.first().and_then(|p| p.effective_at);
    let data = serde_json::to_string(&MovementEventData { transaction: &transaction, legs, effective_at })
        .expect("an event of plain fields serialises");
    rows.events.push(EventRow {
        id: Uuid::now_v7(),
        aggregate_type: "transaction",
        aggregate_id,
        version: event_version,
        event_type,
        data,
    });
    rows.postings.extend(postings.into_iter().map(|p| (transaction.id, p)));
    if !settles {
        rows.transactions.push(transaction);
    }
}

fn event_type(transaction: &TransactionRecord, settles: bool) -> &'static str {
    use banksim_core::ledger::{TransactionKind, TransactionStatus};
    match transaction.status {
        TransactionStatus::Pending => return "TransferHeld",
        TransactionStatus::Success if settles => return "TransferPosted",
        TransactionStatus::Voided => return "TransferVoided",
        TransactionStatus::Expired => return "TransferExpired",
        _ => {}
    }
    match transaction.kind {
        TransactionKind::Credit => "MoneyCredited",
        TransactionKind::Debit => "MoneyDebited",
        TransactionKind::Transfer => "MoneyTransferred",
        TransactionKind::Exchange => "MoneyExchanged",
    }
}

/// The balances of the accounts a command names directly, before it is applied (for the audit's before/after).
fn book_balances(book: &Book, command: &Command) -> Vec<(AccountKey, i64)> {
    banksim_core::ledger::accounts_needed(command)
        .into_iter()
        .filter(|k| k.user_id().is_some())
        .map(|k| (k, book.account(k).map_or(0, |a| a.balance_minor)))
        .collect()
}

fn audit_row(
    request: &LedgerRequest,
    command: &Command,
    result: &Result<Applied, LedgerError>,
    before: Vec<(AccountKey, i64)>,
    book: &Book,
) -> AuditRow {
    let (action, entity_id) = match &command.movement {
        Movement::Credit { .. } => ("transaction.credit", Some(command.transaction_id)),
        Movement::Debit { .. } => ("transaction.debit", Some(command.transaction_id)),
        Movement::Transfer { .. } => ("transaction.transfer", Some(command.transaction_id)),
        Movement::Exchange { .. } => ("transaction.exchange", Some(command.transaction_id)),
        Movement::Rollback { original_id, .. } => ("transaction.rollback", Some(*original_id)),
        Movement::Hold { .. } => ("transaction.hold", Some(command.transaction_id)),
        Movement::Settle { hold_id, settlement, .. } => match settlement {
            banksim_core::ledger::Settlement::Post(_) => ("transaction.post", Some(*hold_id)),
            banksim_core::ledger::Settlement::Void => ("transaction.void", Some(*hold_id)),
            banksim_core::ledger::Settlement::Expire => ("transaction.expire", Some(*hold_id)),
        },
    };
    let details = match result {
        Ok(applied) => {
            let balances = before
                .into_iter()
                .map(|(key, before_minor)| BalanceChange {
                    account: SortedAccountKey::of(key),
                    after_minor: book.account(key).map_or(0, |a| a.balance_minor),
                    before_minor,
                })
                .collect();
            let transaction = SortedTransaction::of(&applied.transaction);
            serde_json::to_string(&MovementAuditDetails { balances, transaction })
                .expect("audit details of plain fields serialise")
        }
        Err(refusal) => {
            json!({"movement": format!("{:?}", command.movement), "reason": refusal.to_string()}).to_string()
        }
    };
    AuditRow {
        entry_id: Uuid::now_v7(),
        actor_id: request.audit.actor_id.or(Some(command.movement.actor_id())),
        action: action.to_owned(),
        entity_type: "transaction",
        entity_id: entity_id.map(|id| id.to_string()),
        outcome: match result {
            Ok(_) => "success".to_owned(),
            Err(refusal) => refusal.code().to_owned(),
        },
        details,
        ip: request.audit.ip.clone(),
        user_agent: request.audit.user_agent.clone(),
        request_id: request.audit.request_id.clone(),
        trace_id: request.audit.trace_id.clone(),
    }
}

/// A movement's audit details, serialised straight to the text the chain hashes (no `serde_json::Value` tree): every
/// struct here declares its fields in serde_json's sorted key order, the order a `Value` gives them, since the
/// chain's check serialises the stored details again as a `Value` (a test holds the two forms equal).
#[derive(serde::Serialize)]
struct MovementAuditDetails<'a> {
    balances: Vec<BalanceChange>,
    transaction: SortedTransaction<'a>,
}

/// A wallet's balance before and after a movement.
#[derive(serde::Serialize)]
struct BalanceChange {
    account: SortedAccountKey,
    after_minor: i64,
    before_minor: i64,
}

/// An [`AccountKey`] as its `Value` orders it (its own serialisation puts the `kind` tag first).
#[derive(serde::Serialize)]
struct SortedAccountKey {
    currency: Currency,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<Uuid>,
}

impl SortedAccountKey {
    fn of(key: AccountKey) -> Self {
        Self { currency: key.currency(), kind: key.kind(), user_id: key.user_id() }
    }
}

/// A [`TransactionRecord`] with its fields in sorted order.
#[derive(serde::Serialize)]
struct SortedTransaction<'a> {
    amount: &'a banksim_core::money::Money,
    created_at: &'a DateTime<Utc>,
    description: &'a Option<String>,
    effective_at: &'a DateTime<Utc>,
    expires_at: &'a Option<DateTime<Utc>>,
    from_user_id: &'a Option<Uuid>,
    id: &'a Uuid,
    kind: &'a banksim_core::ledger::TransactionKind,
    rate: &'a Option<banksim_core::money::Rate>,
    reversal_of: &'a Option<Uuid>,
    reversed_by: &'a Option<Uuid>,
    status: &'a banksim_core::ledger::TransactionStatus,
    to_amount: &'a Option<banksim_core::money::Money>,
    to_user_id: &'a Option<Uuid>,
}

impl<'a> SortedTransaction<'a> {
    fn of(t: &'a TransactionRecord) -> Self {
        let TransactionRecord {
            id,
            kind,
            status,
            from_user_id,
            to_user_id,
            amount,
            to_amount,
            rate,
            description,
            reversal_of,
            reversed_by,
            created_at,
            effective_at,
            expires_at,
        } = t;
        Self {
            amount,
            created_at,
            description,
            effective_at,
            expires_at,
            from_user_id,
            id,
            kind,
            rate,
            reversal_of,
            reversed_by,
            status,
            to_amount,
            to_user_id,
        }
    }
}

/// Refuses a new rate that would let some cycle of exchanges through its pair create money (see
/// `banksim_core::fx`), given the table in force.
pub(crate) fn refuse_gaining_cycle(table: &[FxRate], new: &FxRate) -> Result<(), StoreError> {
    let rates: Vec<_> = table.iter().map(|r| (r.base, r.quote, r.rate)).collect();
    match banksim_core::fx::gaining_cycle(&rates, new.base, new.quote, new.rate) {
        Some(cycle) => Err(StoreError::RateCycle(cycle)),
        None => Ok(()),
    }
}

/// The account key of a stored (kind, user, currency) triple, or a decode error.
pub(crate) fn account_key(kind: &str, user_id: Option<Uuid>, currency: &str) -> Result<AccountKey, sqlx::Error> {
    let currency = parse_currency(currency)?;
    AccountKey::from_parts(kind, user_id, currency)
        .ok_or_else(|| sqlx::Error::Decode(format!("account kind {kind:?} with owner {user_id:?}").into()))
}

/// A stored currency code.
pub(crate) fn parse_currency(code: &str) -> Result<Currency, sqlx::Error> {
    Currency::parse(code).map_err(|e| sqlx::Error::Decode(format!("currency {code:?}: {e}").into()))
}

/// A stored value parsed with `FromStr` (kinds, statuses, rates).
pub(crate) fn parse_stored<T: std::str::FromStr>(raw: &str) -> Result<T, sqlx::Error>
where
    T::Err: std::fmt::Display,
{
    raw.parse().map_err(|e: T::Err| sqlx::Error::Decode(format!("stored value {raw:?}: {e}").into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain's check hashes a stored entry's details as a `Value` serialises them: the typed form must be the
    /// very same text, for every field filled and for every field empty.
    #[test]
    fn a_movements_audit_details_are_the_text_their_value_serialises_to() {
        use banksim_core::ledger::{TransactionKind, TransactionStatus};
        use banksim_core::money::{Money, Rate};
        let at = "2030-01-31T23:59:59.123456Z".parse::<DateTime<Utc>>().expect("instant");
        let full = TransactionRecord {
            id: Uuid::now_v7(),
            kind: TransactionKind::Exchange,
            status: TransactionStatus::RolledBack,
            from_user_id: Some(Uuid::new_v4()),
            to_user_id: Some(Uuid::new_v4()),
            amount: Money::new(12_345, Currency::USD),
            to_amount: Some(Money::new(-7, Currency::JPY)),
            rate: Some(Rate::parse("1.0833").expect("rate")),
            description: Some("rent \"May\" \u{e9}\u{1F600}\n\t\\".to_owned()),
            reversal_of: Some(Uuid::new_v4()),
            reversed_by: Some(Uuid::new_v4()),
            created_at: at,
            effective_at: at - chrono::Duration::days(3),
            expires_at: Some(at + chrono::Duration::seconds(1)),
        };
        let empty = TransactionRecord {
            kind: TransactionKind::Credit,
            status: TransactionStatus::Success,
            from_user_id: None,
            to_user_id: None,
            to_amount: None,
            rate: None,
            description: None,
            reversal_of: None,
            reversed_by: None,
            expires_at: None,
            ..full.clone()
        };
        let keys = [
            AccountKey::User { user_id: Uuid::new_v4(), currency: Currency::EUR },
            AccountKey::World { currency: Currency::GBP },
            AccountKey::Fx { currency: Currency::USD },
            AccountKey::Pending { currency: Currency::JPY },
        ];
        for record in [&full, &empty] {
            let typed = MovementAuditDetails {
                balances: keys
                    .iter()
                    .map(|&k| BalanceChange { account: SortedAccountKey::of(k), after_minor: -1, before_minor: 9 })
                    .collect(),
                transaction: SortedTransaction::of(record),
            };
            let balances: Vec<serde_json::Value> =
                keys.iter().map(|k| json!({"account": k, "before_minor": 9, "after_minor": -1})).collect();
            let value = json!({"transaction": record, "balances": balances});
            assert_eq!(serde_json::to_string(&typed).expect("serialise"), value.to_string());
        }
    }

    #[test]
    fn wallet_notices_read_back_and_stay_under_the_payload_limit() {
        let now = Utc::now();
        let wallets: Vec<WalletState> = (0..250_i64)
            .map(|i| WalletState {
                user_id: Uuid::new_v4(),
                wallet: Wallet {
                    currency: Currency::JPY,
                    balance_minor: i,
                    version: i64::MAX - i,
                    updated_at: now,
                    limits: Limits::default(),
                    pending_minor: 0,
                },
            })
            .collect();
        let notices = wallet_notices(&wallets);
        assert_eq!(notices.len(), 3);
        let mut read = Vec::new();
        for notice in &notices {
            assert!(notice.len() < 8000, "{}", notice.len());
            let WalletChange::Changed(changes) = parse_wallet_notice(notice) else { panic!("{notice}") };
            read.extend(changes);
        }
        let written: Vec<WalletVersion> =
            wallets.iter().map(|w| (w.user_id, w.wallet.currency, w.wallet.version)).collect();
        assert_eq!(read, written);
        assert_eq!(parse_wallet_notice("marker:abc:7"), WalletChange::Marker("abc:7".to_owned()));
    }
}
