//! The ledger's batches on SQLite: one synchronous connection that reads, plans and writes a whole batch on the
//! calling thread, each row one run of a statement prepared once.
//!
//! Through sqlx every statement was a round trip to its connection's worker thread: the batch's task handed the
//! statement over and slept, the worker ran it and woke the task, which built the next one. A batch made a dozen
//! such trips, the worker idled between them (it was busy half the time), and every request waited for their sum
//! (docs/benchmarks.md). Here the batch runs start to finish on one thread, inside `block_in_place` so that the
//! runtime moves its other tasks to another worker meanwhile.
//!
//! The projections are applied on this connection too, for the same reason (`projection.rs`).
//!
//! The store's sqlx writer pool (one connection) stays the process's write lock: a batch or a projection holds that
//! connection while it runs, so the other writes (users, schedules) wait their turn in the pool instead of polling
//! SQLite's file lock. Another process writing to the file is waited for at `BEGIN IMMEDIATE`, asleep, for up to
//! the store's busy timeout.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banksim_core::effective::EffectiveHistory;
use banksim_core::ledger::{AccountKey, AccountState, Book, Leg, Limits, Original, TransactionRecord};
use banksim_core::money::Money;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, Transaction, TransactionBehavior, named_params, params};
use sqlx::SqlitePool;
use uuid::Uuid;

use super::{instant, micros};
use crate::StoreError;
use crate::chain::link;
use crate::ledger::{
    BatchRows, HISTORY_LATER_SQL, HISTORY_OPENING_SQL, LedgerRequest, PostedBatch, ResponseRenderer, StoredResponse,
    account_key, accounts_to_open, accounts_touched, history_starts, parse_currency, parse_stored, plan_batch,
    rollback_originals, wallet_states,
};

/// The connection the ledger's batches and the projections are written on.
#[derive(Debug, Clone)]
pub(super) struct LedgerWriter {
    connection: Arc<tokio::sync::Mutex<Connection>>,
    /// How long a write waits for another process's write lock.
    busy_timeout: Duration,
}

/// Statements the writer keeps prepared.
const STATEMENTS: usize = 32;

/// How often a write tries again for a write lock held by another process.
const LOCK_RETRY: Duration = Duration::from_millis(1);

impl LedgerWriter {
    /// Opens the database file (already created, in WAL mode, by the store's sqlx writer) with the writer's settings.
    pub(super) fn open(path: &Path, busy_timeout: Duration, autocheckpoint_pages: u32) -> Result<Self, StoreError> {
        let connection = Connection::open(path)?;
        // SQLite's own busy wait would sleep on the runtime's thread: `write` waits for the lock instead.
        connection.busy_timeout(Duration::ZERO)?;
        // FULL makes a commit durable before it is acknowledged, also against power loss.
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", true)?;
        connection.pragma_update(None, "wal_autocheckpoint", autocheckpoint_pages)?;
        // Room for every statement a batch or a projection may run (17 and 6; rusqlite keeps 16 by default, and a
        // least-recently-used cache one too small for a batch that runs them all in turn would prepare each anew).
        connection.set_prepared_statement_cache_capacity(STATEMENTS);
        Ok(Self { connection: Arc::new(tokio::sync::Mutex::new(connection)), busy_timeout })
    }

    /// Posts a batch of requests in one transaction, holding `writer`'s one connection meanwhile (see the module).
    pub(super) async fn post_batch(
        &self,
        writer: &SqlitePool,
        requests: &[LedgerRequest],
        render: &dyn ResponseRenderer,
        now: DateTime<Utc>,
    ) -> Result<PostedBatch, StoreError> {
        self.write(writer, |tx| post(tx, requests, render, now)).await
    }

    /// Runs `work` in a write transaction on this connection, holding `writer`'s one connection meanwhile (see the
    /// module); `work` commits.
    pub(super) async fn write<T>(
        &self,
        writer: &SqlitePool,
        work: impl FnOnce(Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _write_lock = writer.acquire().await?;
        let mut connection = self.connection.lock().await;
        let deadline = Instant::now() + self.busy_timeout;
        loop {
            // IMMEDIATE takes the write lock up front (a batch reads before it writes). Held by another process (say
            // `banksim admin`, or a second server on the file), it is waited for asleep, off the thread: on a
            // single-threaded runtime that thread may be the one the holder needs to finish.
            let refused = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
                Ok(tx) => return on_this_thread(|| work(tx)),
                Err(err) => err,
            };
            if !is_busy(&refused) || Instant::now() >= deadline {
                return Err(refused.into());
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }
}

fn is_busy(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

/// Runs blocking `work` on this thread, handing the runtime's other tasks to another worker if there is one (a
/// single-threaded runtime, as in tests, has none: its tasks wait).
fn on_this_thread<T>(work: impl FnOnce() -> T) -> T {
    let flavor = tokio::runtime::Handle::try_current().map(|runtime| runtime.runtime_flavor());
    if matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::MultiThread)) {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Reads, plans and writes the batch in `tx`, and commits it.
fn post(
    tx: Transaction<'_>,
    requests: &[LedgerRequest],
    render: &dyn ResponseRenderer,
    now: DateTime<Utc>,
) -> Result<PostedBatch, StoreError> {
    let stored = load_stored_answers(&tx, requests)?;
    let live: Vec<&LedgerRequest> = requests
        .iter()
        .filter(|r| r.idempotency.as_ref().is_none_or(|c| !stored.contains_key(&(c.user_id, c.key.clone()))))
        .collect();
    let originals = load_originals(&tx, &rollback_originals(&live))?;
    let created = open_accounts(&tx, &accounts_to_open(&live), now)?;
    let mut now = now;
    let mut accounts = Vec::new();
    for id in accounts_touched(&live, &originals) {
        let Some((account, updated_at)) = load_account(&tx, id)? else { continue };
        // Postings never go back in time on an account, even if the clock does.
        now = now.max(updated_at);
        accounts.push(account);
    }
    let histories = load_histories(&tx, &history_starts(&live, now))?;
    let versions: HashMap<Uuid, i64> = accounts.iter().map(|a| (a.id, a.version)).collect();
    let book = Book::new(accounts, originals).with_histories(histories);
    let (outcomes, mut rows) = plan_batch(requests, stored, book, render, now);
    rows.accounts.retain(|a| versions.get(&a.id) != Some(&a.version));
    // A wallet opens with its first movement: drop the ones this batch created for movements it refused.
    {
        let mut delete = tx.prepare_cached("DELETE FROM accounts WHERE id = ?1")?;
        for id in created.into_iter().filter(|id| !rows.accounts.iter().any(|a| a.id == *id)) {
            delete.execute([id])?;
        }
    }
    write_rows(&tx, &rows, now)?;
    commit(tx)?;
    Ok(PostedBatch { outcomes, wallets: wallet_states(&rows.accounts, now) })
}

/// Commits `tx`: a commit that fails leaves its outcome unknown to the caller.
pub(super) fn commit(tx: Transaction<'_>) -> Result<(), StoreError> {
    tx.commit().map_err(|err| StoreError::CommitFailed(sqlx::Error::Io(std::io::Error::other(err))))
}

/// The stored answers of the batch's idempotency keys.
fn load_stored_answers(
    tx: &Transaction<'_>,
    requests: &[LedgerRequest],
) -> Result<HashMap<(Uuid, String), StoredResponse>, StoreError> {
    let mut select = tx.prepare_cached(
        "SELECT request_hash, status_code, response FROM idempotency_keys WHERE user_id = ?1 AND key = ?2",
    )?;
    let mut stored = HashMap::new();
    for claim in requests.iter().filter_map(|r| r.idempotency.as_ref()) {
        let mut rows = select.query(params![claim.user_id, claim.key])?;
        if let Some(row) = rows.next()? {
            let status: i64 = row.get("status_code")?;
            let answer = StoredResponse {
                request_hash: row.get("request_hash")?,
                status: u16::try_from(status).unwrap_or(500),
                body: row.get("response")?,
            };
            stored.insert((claim.user_id, claim.key.clone()), answer);
        }
    }
    Ok(stored)
}

/// The transactions the batch rolls back or settles, with their legs.
fn load_originals(tx: &Transaction<'_>, ids: &[Uuid]) -> Result<Vec<Original>, StoreError> {
    let mut select = tx.prepare_cached(
        "SELECT id, kind, status, from_user_id, to_user_id, amount_minor, currency, to_amount_minor, to_currency, rate,
                description, reversal_of, reversed_by, created_at, effective_at, expires_at
         FROM transactions WHERE id = ?1",
    )?;
    let mut legs = tx.prepare_cached(
        "SELECT p.amount_minor, a.kind, a.user_id, a.currency
         FROM postings p JOIN accounts a ON a.id = p.account_id WHERE p.transaction_id = ?1 ORDER BY p.id",
    )?;
    let mut originals = Vec::with_capacity(ids.len());
    for id in ids {
        let mut rows = select.query([id])?;
        let Some(row) = rows.next()? else { continue };
        let record = transaction_from_row(row)?;
        let mut leg_rows = legs.query([id])?;
        let mut record_legs = Vec::new();
        while let Some(leg) = leg_rows.next()? {
            let kind: String = leg.get("kind")?;
            let currency: String = leg.get("currency")?;
            record_legs.push(Leg {
                account: account_key(&kind, leg.get("user_id")?, &currency)?,
                amount_minor: leg.get("amount_minor")?,
            });
        }
        originals.push(Original { record, legs: record_legs });
    }
    Ok(originals)
}

fn transaction_from_row(row: &Row<'_>) -> Result<TransactionRecord, StoreError> {
    let currency = parse_currency(&row.get::<_, String>("currency")?)?;
    let to_amount: Option<i64> = row.get("to_amount_minor")?;
    let to_currency: Option<String> = row.get("to_currency")?;
    let to_amount = match (to_amount, to_currency) {
        (Some(minor), Some(code)) => Some(Money::new(minor, parse_currency(&code)?)),
        _ => None,
    };
    let rate: Option<String> = row.get("rate")?;
    Ok(TransactionRecord {
        id: row.get("id")?,
        kind: parse_stored(&row.get::<_, String>("kind")?)?,
        status: parse_stored(&row.get::<_, String>("status")?)?,
        from_user_id: row.get("from_user_id")?,
        to_user_id: row.get("to_user_id")?,
        amount: Money::new(row.get("amount_minor")?, currency),
        to_amount,
        rate: rate.as_deref().map(parse_stored).transpose()?,
        description: row.get("description")?,
        reversal_of: row.get("reversal_of")?,
        reversed_by: row.get("reversed_by")?,
        created_at: instant(row.get("created_at")?)?,
        effective_at: instant(row.get("effective_at")?)?,
        expires_at: row.get::<_, Option<i64>>("expires_at")?.map(instant).transpose()?,
    })
}

/// Creates the accounts a batch may need that do not exist yet, and returns the ids of those it created.
fn open_accounts(tx: &Transaction<'_>, keys: &[AccountKey], now: DateTime<Utc>) -> Result<Vec<Uuid>, StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO accounts (id, kind, user_id, currency, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         ON CONFLICT (id) DO NOTHING",
    )?;
    let mut created = Vec::new();
    for key in keys {
        if insert.execute(params![key.id(), key.kind(), key.user_id(), key.currency().code(), micros(now)])? == 1 {
            created.push(key.id());
        }
    }
    Ok(created)
}

/// An account as stored, and when it last changed.
fn load_account(tx: &Transaction<'_>, id: Uuid) -> Result<Option<(AccountState, DateTime<Utc>)>, StoreError> {
    let mut select = tx.prepare_cached(
        "SELECT kind, user_id, currency, balance_minor, version, updated_at, overdraft_minor, max_balance_minor,
                pending_minor
         FROM accounts WHERE id = ?1",
    )?;
    let mut rows = select.query([id])?;
    let Some(row) = rows.next()? else { return Ok(None) };
    let kind: String = row.get("kind")?;
    let currency: String = row.get("currency")?;
    let account = AccountState {
        id,
        key: account_key(&kind, row.get("user_id")?, &currency)?,
        balance_minor: row.get("balance_minor")?,
        version: row.get("version")?,
        limits: Limits {
            overdraft_minor: row.get("overdraft_minor")?,
            max_balance_minor: row.get("max_balance_minor")?,
        },
        pending_minor: row.get("pending_minor")?,
    };
    Ok(Some((account, instant(row.get("updated_at")?)?)))
}

/// The effective-time history of each wallet from its start.
fn load_histories(
    tx: &Transaction<'_>,
    starts: &[(AccountKey, DateTime<Utc>)],
) -> Result<Vec<(AccountKey, EffectiveHistory)>, StoreError> {
    let mut opening = tx.prepare_cached(HISTORY_OPENING_SQL)?;
    let mut later = tx.prepare_cached(HISTORY_LATER_SQL)?;
    let mut histories = Vec::with_capacity(starts.len());
    for &(key, since) in starts {
        let bounds = named_params! { "$1": key.id(), "$2": micros(since) };
        let mut rows = opening.query(bounds)?;
        let recorded: i64 = rows.next()?.map(|row| row.get(0)).transpose()?.unwrap_or(0);
        let mut postings = Vec::new();
        let mut rows = later.query(bounds)?;
        while let Some(row) = rows.next()? {
            postings.push((instant(row.get("at")?)?, row.get("amount_minor")?));
        }
        histories.push((key, EffectiveHistory::from_postings(since, recorded, postings)));
    }
    Ok(histories)
}

/// Writes everything a batch produced, a row per run of a prepared statement (cheap in-process).
fn write_rows(tx: &Transaction<'_>, rows: &BatchRows, now: DateTime<Utc>) -> Result<(), StoreError> {
    let at = micros(now);
    let mut insert = tx.prepare_cached(
        "INSERT INTO transactions (id, kind, status, from_user_id, to_user_id, amount_minor, currency, to_amount_minor,
             to_currency, rate, description, reversal_of, reversed_by, created_at, effective_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    for r in &rows.transactions {
        insert.execute(params![
            r.id,
            r.kind.as_str(),
            r.status.as_str(),
            r.from_user_id,
            r.to_user_id,
            r.amount.amount_minor(),
            r.amount.currency().code(),
            r.to_amount.map(|m| m.amount_minor()),
            r.to_amount.map(|m| m.currency().code()),
            r.rate.map(|rate| rate.to_string()),
            r.description,
            r.reversal_of,
            r.reversed_by,
            micros(r.created_at),
            micros(r.effective_at),
            r.expires_at.map(micros),
        ])?;
    }
    let mut update =
        tx.prepare_cached("UPDATE transactions SET status = ?2, amount_minor = ?3, reversed_by = ?4 WHERE id = ?1")?;
    for r in &rows.updated {
        update.execute(params![r.id, r.status.as_str(), r.amount.amount_minor(), r.reversed_by])?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO postings (transaction_id, account_id, amount_minor, balance_after_minor, account_version,
             effective_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (transaction_id, p) in &rows.postings {
        insert.execute(params![
            transaction_id,
            p.account_id,
            p.amount_minor,
            p.balance_after_minor,
            p.account_version,
            p.effective_at.map(micros),
            at,
        ])?;
    }
    let mut update = tx.prepare_cached(
        "UPDATE accounts SET balance_minor = ?2, version = ?3, pending_minor = ?4, updated_at = ?5 WHERE id = ?1",
    )?;
    for a in &rows.accounts {
        update.execute(params![a.id, a.balance_minor, a.version, a.pending_minor, at])?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (id, aggregate_type, aggregate_id, version, event_type, data, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for e in &rows.events {
        insert.execute(params![e.id, e.aggregate_type, e.aggregate_id, e.version, e.event_type, e.data, at])?;
    }
    append_audit(tx, rows, now)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for k in &rows.idempotency {
        insert.execute(params![k.user_id, k.key, k.request_hash, i64::from(k.status), k.body, at])?;
    }
    Ok(())
}

/// Appends the batch's audit entries to the chain, after its last entry (the write lock keeps appends in order; the
/// autoincrement ids follow the chain).
fn append_audit(tx: &Transaction<'_>, rows: &BatchRows, now: DateTime<Utc>) -> Result<(), StoreError> {
    if rows.audits.is_empty() {
        return Ok(());
    }
    let head: Option<Vec<u8>> =
        tx.prepare_cached("SELECT last_hash FROM audit_chain_head")?.query_row([], |row| row.get(0))?;
    let links = link(&rows.audits, head, now);
    if let Some(last) = links.last() {
        tx.prepare_cached("UPDATE audit_chain_head SET last_hash = ?1")?.execute([&last.hash])?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit_log (entry_id, actor_id, action, entity_type, entity_id, outcome, details, ip, user_agent,
             request_id, prev_hash, hash, created_at, trace_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    for (a, link) in rows.audits.iter().zip(links) {
        insert.execute(params![
            a.entry_id,
            a.actor_id,
            a.action,
            a.entity_type,
            a.entity_id,
            a.outcome,
            a.details,
            a.ip,
            a.user_agent,
            a.request_id,
            link.prev_hash,
            link.hash,
            micros(now),
            a.trace_id,
        ])?;
    }
    Ok(())
}
