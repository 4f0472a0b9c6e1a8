//! Bulk posting ([`crate::Store::bulk_post`]): a whole history of ledger batches written in one go into a ledger
//! that nobody else writes to meanwhile, as `banksim seed --population` does on a fresh database.
//!
//! The rules are not written twice. [`Planner`] plans each batch in memory exactly as a backend's `post_batch`
//! does — the same [`plan_batch`] over a [`Book`] of the accounts the batch touches, the same clock rule, the same
//! audit chain [`link`] — but keeps the accounts and the chain's head in memory between batches instead of reading
//! them back from the database. A backend then only chooses how to write the rows (PostgreSQL: `COPY`).

use std::collections::{HashMap, HashSet};

use banksim_core::ledger::{AccountKey, AccountState, Book, Limits};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::chain::{Link, link};
use crate::ledger::{
    BatchRows, LedgerOutcome, LedgerRequest, ResponseRenderer, accounts_to_open, accounts_touched, plan_batch,
    rollback_originals,
};
use crate::{Store, StoreError};

/// One batch of a bulk posting: the requests one [`Store::post_batch`] call would post, and its `now`.
#[derive(Debug, Clone)]
pub struct BulkBatch {
    /// The requests, in order. None carries an idempotency key, a back-dated movement (a bulk posting does not
    /// read the wallets' histories), a rollback or a settlement of a hold (movements that name earlier
    /// transactions, which a bulk posting does not read back).
    pub requests: Vec<LedgerRequest>,
    /// The instant of the batch, as `post_batch` takes it.
    pub now: DateTime<Utc>,
}

/// What a bulk posting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkOutcome {
    /// Every batch was posted whole.
    Posted {
        /// Batches posted.
        batches: usize,
        /// Transactions written.
        transactions: usize,
    },
    /// A batch had a request that was not posted whole (a refused movement): the posting stopped there.
    Refused {
        /// Its index among the batches.
        batch: usize,
        /// Its outcomes, one per request, as `post_batch` would have answered.
        outcomes: Vec<LedgerOutcome>,
    },
}

/// Whether every request of a batch was posted whole.
fn all_posted(outcomes: &[LedgerOutcome]) -> bool {
    outcomes.iter().all(|outcome| match outcome {
        LedgerOutcome::Posted(_) => true,
        LedgerOutcome::Batch(batch) => batch.applied && batch.items.iter().all(Result::is_ok),
        LedgerOutcome::Refused(_) | LedgerOutcome::Replayed(_) => false,
    })
}

/// Transactions a batch's outcomes posted.
fn transactions_posted(outcomes: &[LedgerOutcome]) -> usize {
    outcomes
        .iter()
        .map(|outcome| match outcome {
            LedgerOutcome::Posted(_) => 1,
            LedgerOutcome::Batch(batch) if batch.applied => batch.items.iter().filter(|item| item.is_ok()).count(),
            _ => 0,
        })
        .sum()
}

/// A bulk posting's requests carry no idempotency key, so no answer is ever stored: the renderer is never asked.
pub(crate) struct NoAnswers;

impl ResponseRenderer for NoAnswers {
    fn render(&self, _request: &LedgerRequest, _outcome: &LedgerOutcome) -> (u16, String) {
        unreachable!("a bulk posting's requests carry no idempotency key")
    }
}

/// The bulk path of a backend without one of its own: each batch through [`Store::post_batch`], one commit each,
/// stopping at the first batch not posted whole (the batches before it stay committed).
pub(crate) async fn post_one_by_one<S: Store + ?Sized>(
    store: &S,
    batches: &mut (dyn Iterator<Item = BulkBatch> + Send),
) -> Result<BulkOutcome, StoreError> {
    let (mut count, mut transactions) = (0, 0);
    for (index, batch) in batches.enumerate() {
        check_bulk_postable(&batch);
        let posted = store.post_batch(&batch.requests, &NoAnswers, batch.now).await?;
        if !all_posted(&posted.outcomes) {
            return Ok(BulkOutcome::Refused { batch: index, outcomes: posted.outcomes });
        }
        transactions += transactions_posted(&posted.outcomes);
        count += 1;
    }
    Ok(BulkOutcome::Posted { batches: count, transactions })
}

/// Asserts the contract of [`BulkBatch::requests`]: a caller that breaks it has a bug.
fn check_bulk_postable(batch: &BulkBatch) {
    assert!(batch.requests.iter().all(|r| r.idempotency.is_none()), "a bulk posting carries no idempotency key");
    let requests: Vec<&LedgerRequest> = batch.requests.iter().collect();
    assert!(rollback_originals(&requests).is_empty(), "a bulk posting carries no rollback or settlement");
    assert!(
        requests.iter().flat_map(|r| r.work.commands()).all(|c| c.effective_at.is_none()),
        "a bulk posting carries no back-dated movement"
    );
}

/// An account as the bulk posting has left it so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrackedAccount {
    /// Its state.
    pub state: AccountState,
    /// Its last posting (the batch's `now` after the clock rule).
    pub updated_at: DateTime<Utc>,
    /// Whether the bulk posting changed it.
    pub changed: bool,
    /// When the bulk posting opened it (the `now` its first batch was given); `None` for an account stored before.
    pub opened_at: Option<DateTime<Utc>>,
}

/// A planned batch: the rows to write, as `post_batch` would write them.
#[derive(Debug)]
pub(crate) struct PlannedBatch {
    /// The instant of its rows (`created_at` of postings, events and audit entries; `updated_at` of accounts).
    pub now: DateTime<Utc>,
    /// The rows. `accounts` holds the accounts it changed, as it left them.
    pub rows: BatchRows,
    /// The chain link of each audit row.
    pub links: Vec<Link>,
}

/// Plans batch after batch in memory, carrying the accounts and the audit chain's head from one to the next.
#[derive(Debug, Default)]
pub(crate) struct Planner {
    accounts: HashMap<Uuid, TrackedAccount>,
    head: Option<Vec<u8>>,
}

impl Planner {
    /// A planner over the accounts stored when the bulk posting began and the audit chain's head then.
    pub(crate) fn new(stored: Vec<TrackedAccount>, head: Option<Vec<u8>>) -> Self {
        Self { accounts: stored.into_iter().map(|a| (a.state.id, a)).collect(), head }
    }

    /// Plans `batch` as `post_batch` would on a database holding what was planned so far. A batch with a request
    /// not posted whole changes nothing and gives its outcomes back.
    pub(crate) fn plan(&mut self, batch: &BulkBatch) -> Result<PlannedBatch, Vec<LedgerOutcome>> {
        check_bulk_postable(batch);
        let live: Vec<&LedgerRequest> = batch.requests.iter().collect();
        // The accounts `post_batch` would lock, then those it would open (empty, at the given `now`).
        let mut last_posted: Option<DateTime<Utc>> = None;
        let mut states = Vec::new();
        for id in accounts_touched(&live, &[]) {
            if let Some(account) = self.accounts.get(&id) {
                last_posted = Some(last_posted.map_or(account.updated_at, |last| last.max(account.updated_at)));
                states.push(account.state);
            }
        }
        // An account's id is a hash of its key (UUID v5, SHA-1): worked out once per key here, not per comparison.
        let missing: Vec<(AccountKey, Uuid)> = accounts_to_open(&live)
            .into_iter()
            .map(|key| (key, key.id()))
            .filter(|(_, id)| !self.accounts.contains_key(id))
            .collect();
        for (key, id) in &missing {
            last_posted = Some(last_posted.map_or(batch.now, |last| last.max(batch.now)));
            states.push(empty_account(*key, *id));
        }
        // The clock rule of `post_batch`: an account's postings never go back in time.
        let now = last_posted.map_or(batch.now, |last| last.max(batch.now));
        let versions: HashMap<Uuid, i64> = states.iter().map(|a| (a.id, a.version)).collect();
        let (outcomes, mut rows) = plan_batch(&batch.requests, HashMap::new(), Book::new(states, []), &NoAnswers, now);
        if !all_posted(&outcomes) {
            return Err(outcomes);
        }
        rows.accounts.retain(|a| versions.get(&a.id) != Some(&a.version));
        // A wallet opens with its first movement: only the opened accounts that were posted to are created.
        let changed: HashSet<Uuid> = rows.accounts.iter().map(|a| a.id).collect();
        for (key, id) in missing.into_iter().filter(|(_, id)| changed.contains(id)) {
            let state = empty_account(key, id);
            let account = TrackedAccount { state, updated_at: batch.now, changed: true, opened_at: Some(batch.now) };
            self.accounts.insert(id, account);
        }
        for state in &rows.accounts {
            let account = self.accounts.get_mut(&state.id).expect("a changed account was locked or opened");
            account.state = *state;
            account.updated_at = now;
            account.changed = true;
        }
        let links = if rows.audits.is_empty() { Vec::new() } else { link(&rows.audits, self.head.take(), now) };
        if let Some(last) = links.last() {
            self.head = Some(last.hash.clone());
        }
        Ok(PlannedBatch { now, rows, links })
    }

    /// Every account the bulk posting changed, as it left them.
    pub(crate) fn changed_accounts(&self) -> impl Iterator<Item = &TrackedAccount> {
        self.accounts.values().filter(|a| a.changed)
    }

    /// The audit chain's head now.
    pub(crate) fn head(&self) -> Option<&[u8]> {
        self.head.as_deref()
    }
}

/// An account as `post_batch` opens it: empty, no limits.
fn empty_account(key: AccountKey, id: Uuid) -> AccountState {
    AccountState { id, key, balance_minor: 0, version: 0, limits: Limits::default(), pending_minor: 0 }
}
