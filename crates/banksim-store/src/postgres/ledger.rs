//! The ledger on PostgreSQL: batches of movements in one transaction, with bulk writes (`UNNEST`).
//!
//! Locks are always taken in the same order — idempotency keys (advisory locks, sorted), rollback originals
//! (sorted by id), then accounts (sorted by id) — so concurrent batches queue behind each other instead of
//! deadlocking. A deadlock or serialization failure that still happens (a bug, or an operator's concurrent
//! change) retries the whole batch a few times.

use std::collections::HashMap;

use banksim_core::currency::Currency;
use banksim_core::effective::EffectiveHistory;
use banksim_core::ledger::{AccountKey, AccountState, Book, Leg, Limits, Original, TransactionRecord};
use banksim_core::money::Money;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use crate::StoreError;
use crate::chain::{Link, link};
use crate::ledger::{
    AuditContext, AuditRow, BatchRows, DueHold, FxRate, HISTORY_LATER_SQL, HISTORY_OPENING_SQL, HistoryEntry,
    HistoryQuery, LedgerReport, LedgerRequest, LimitsChange, PostedBatch, ResponseRenderer, StoredResponse,
    TransactionQuery, Wallet, account_key, accounts_to_open, accounts_touched, check_new_limits, claimed_keys,
    history_starts, limits_rows, parse_currency, parse_stored, plan_batch, refuse_gaining_cycle, rollback_originals,
    wallet_notices, wallet_states, with_effective_balances,
};

/// How often a batch is tried when PostgreSQL reports a deadlock or serialization failure.
const BATCH_ATTEMPTS: u32 = 3;

/// Batches of at least this many movements give their connection's grown buffers back after they commit.
const SHRINK_AFTER_MOVEMENTS: usize = 256;

pub(crate) const TRANSACTION_COLUMNS: &str = "id, kind, status, from_user_id, to_user_id, amount_minor, currency, \
    to_amount_minor, to_currency, rate, description, reversal_of, reversed_by, created_at, effective_at, expires_at";

pub(crate) async fn post_batch(
    pool: &PgPool,
    requests: &[LedgerRequest],
    render: &dyn ResponseRenderer,
    now: DateTime<Utc>,
) -> Result<PostedBatch, StoreError> {
    let mut attempt = 1;
    loop {
        match try_post_batch(pool, requests, render, now).await {
            Err(StoreError::Other(sqlx::Error::Database(db)))
                if attempt < BATCH_ATTEMPTS && is_transient(db.as_ref()) =>
            {
                tracing::warn!(attempt, code = ?db.code(), "ledger batch retried");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Deadlocks and serialization failures, and a key stored by a concurrent batch between our lookup and our
/// insert (then the retry finds it and replays it): retrying the whole batch is safe.
fn is_transient(error: &dyn sqlx::error::DatabaseError) -> bool {
    match error.code().as_deref() {
        Some("40P01" | "40001") => true,
        Some("23505") => error.constraint() == Some("idempotency_keys_pkey"),
        _ => false,
    }
}

async fn try_post_batch(
    pool: &PgPool,
    requests: &[LedgerRequest],
    render: &dyn ResponseRenderer,
    now: DateTime<Utc>,
) -> Result<PostedBatch, StoreError> {
    let mut connection = pool.acquire().await?;
    let posted = post_on(&mut connection, requests, render, now).await?;
    // A connection keeps its buffers at the largest statement it ever sent (megabytes for a client's batch of a
    // thousand): hand that memory back rather than keep it in every connection of the pool.
    if requests.iter().map(|request| request.work.len()).sum::<usize>() >= SHRINK_AFTER_MOVEMENTS {
        connection.shrink_buffers();
    }
    Ok(posted)
}

/// One attempt at the batch, in one database transaction on `connection`.
async fn post_on(
    connection: &mut PgConnection,
    requests: &[LedgerRequest],
    render: &dyn ResponseRenderer,
    now: DateTime<Utc>,
) -> Result<PostedBatch, StoreError> {
    let mut tx = connection.begin().await?;
    let stored = lock_and_load_keys(&mut tx, requests).await?;
    let live: Vec<&LedgerRequest> = requests
        .iter()
        .filter(|r| r.idempotency.as_ref().is_none_or(|c| !stored.contains_key(&(c.user_id, c.key.clone()))))
        .collect();
    let originals = lock_originals(&mut tx, &rollback_originals(&live)).await?;
    let (mut accounts, mut last_posted) = lock_accounts(&mut tx, &accounts_touched(&live, &originals)).await?;
    // Wallets and system accounts seen for the first time are created now, in id order, then locked too. A
    // batch already holds every lock it will ever need except these new rows, so this cannot deadlock.
    let missing: Vec<AccountKey> =
        accounts_to_open(&live).into_iter().filter(|key| !accounts.iter().any(|a| a.key == *key)).collect();
    let mut created = Vec::new();
    if !missing.is_empty() {
        created = open_accounts(&mut tx, &missing, now).await?;
        let ids: Vec<Uuid> = missing.iter().map(|key| key.id()).collect();
        // A concurrent batch may have opened one of them first and posted to it already: its last posting counts.
        let (opened, opened_last_posted) = lock_accounts(&mut tx, &ids).await?;
        accounts.extend(opened);
        last_posted = last_posted.max(opened_last_posted);
    }
    // A batch that waited for locks may carry an older clock reading than a batch that posted before it: never let
    // an account's postings go back in time, so history and balance-at-time order agree with posting order.
    let now = last_posted.map_or(now, |last| last.max(now));
    let histories = load_histories(&mut tx, &history_starts(&live, now)).await?;
    let versions: HashMap<Uuid, i64> = accounts.iter().map(|a| (a.id, a.version)).collect();
    let book = Book::new(accounts, originals).with_histories(histories);
    let (outcomes, mut rows) = plan_batch(requests, stored, book, render, now);
    rows.accounts.retain(|a| versions.get(&a.id) != Some(&a.version));
    // A wallet opens with its first movement: drop the ones this batch created for movements it refused.
    let unused: Vec<Uuid> = created.into_iter().filter(|id| !rows.accounts.iter().any(|a| a.id == *id)).collect();
    if !unused.is_empty() {
        sqlx::query("DELETE FROM accounts WHERE id = ANY($1)").bind(&unused).execute(&mut *tx).await?;
    }
    // The audit chain is appended to by one transaction at a time; its head is locked last, when every other row lock
    // is held, so it is held briefly and never while waiting for another lock. Every posted movement has its audit
    // row, so the head is held before any event of the batch takes its sequence (events commit in sequence order).
    debug_assert!(rows.events.is_empty() || !rows.audits.is_empty(), "events without audit rows");
    let links = link_audit(&mut tx, &rows.audits, now).await?;
    let wallets = wallet_states(&rows.accounts, now);
    write_rows(&mut tx, &rows, &links, &wallet_notices(&wallets), now).await?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(PostedBatch { outcomes, wallets })
}

/// Serialises requests that share an idempotency key (across instances), then reads the answers already stored.
async fn lock_and_load_keys(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[LedgerRequest],
) -> Result<HashMap<(Uuid, String), StoredResponse>, StoreError> {
    let keys = claimed_keys(requests);
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    // PostgreSQL hashes the keys itself, so every instance (whatever its build) takes the same lock for the same
    // key; the locks are taken in hash order, like every other lock of a batch.
    let names: Vec<String> = keys.iter().map(|(user, key)| format!("{user}:{key}")).collect();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(h)
         FROM (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS locks",
    )
    .bind(&names)
    .execute(&mut **tx)
    .await?;
    let (users, names): (Vec<Uuid>, Vec<String>) = keys.into_iter().unzip();
    let rows = sqlx::query(
        "SELECT user_id, key, request_hash, status_code, response FROM idempotency_keys
         WHERE (user_id, key) IN (SELECT * FROM unnest($1::uuid[], $2::text[]))",
    )
    .bind(&users)
    .bind(&names)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            let status: i32 = row.try_get("status_code")?;
            Ok((
                (row.try_get("user_id")?, row.try_get("key")?),
                StoredResponse {
                    request_hash: row.try_get("request_hash")?,
                    status: u16::try_from(status).unwrap_or(500),
                    body: row.try_get("response")?,
                },
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

async fn lock_originals(tx: &mut Transaction<'_, Postgres>, ids: &[Uuid]) -> Result<Vec<Original>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    let records = sqlx::query(&sql).bind(ids).fetch_all(&mut **tx).await?;
    let legs = sqlx::query(
        "SELECT p.transaction_id, p.amount_minor, a.kind, a.user_id, a.currency
         FROM postings p JOIN accounts a ON a.id = p.account_id WHERE p.transaction_id = ANY($1) ORDER BY p.id",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut originals: Vec<Original> = records
        .iter()
        .map(|row| Ok(Original { record: transaction_from_row(row)?, legs: Vec::new() }))
        .collect::<Result<_, sqlx::Error>>()?;
    for row in &legs {
        let id: Uuid = row.try_get("transaction_id")?;
        let leg = Leg {
            account: account_key(row.try_get("kind")?, row.try_get("user_id")?, row.try_get("currency")?)?,
            amount_minor: row.try_get("amount_minor")?,
        };
        if let Some(original) = originals.iter_mut().find(|o| o.record.id == id) {
            original.legs.push(leg);
        }
    }
    Ok(originals)
}

/// Creates empty accounts (ids are derived; `keys` are sorted by id, the order in which rows are inserted) and
/// returns the ids of those this call created (not those a concurrent batch created first).
async fn open_accounts(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[AccountKey],
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, StoreError> {
    let ids: Vec<Uuid> = keys.iter().map(|k| k.id()).collect();
    let kinds: Vec<&str> = keys.iter().map(|k| k.kind()).collect();
    let users: Vec<Option<Uuid>> = keys.iter().map(|k| k.user_id()).collect();
    let currencies: Vec<&str> = keys.iter().map(|k| k.currency().code()).collect();
    let created = sqlx::query_scalar(
        "INSERT INTO accounts (id, kind, user_id, currency, created_at, updated_at)
         SELECT id, kind, user_id, currency, $5, $5 FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[])
             AS t(id, kind, user_id, currency)
         ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&users)
    .bind(&currencies)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    Ok(created)
}

/// The effective-time history of each wallet from its start, read under the batch's lock on the wallet.
async fn load_histories(
    tx: &mut Transaction<'_, Postgres>,
    starts: &[(AccountKey, DateTime<Utc>)],
) -> Result<Vec<(AccountKey, EffectiveHistory)>, StoreError> {
    let mut histories = Vec::with_capacity(starts.len());
    for &(key, since) in starts {
        let recorded: Option<i64> =
            sqlx::query_scalar(HISTORY_OPENING_SQL).bind(key.id()).bind(since).fetch_optional(&mut **tx).await?;
        let later = sqlx::query(HISTORY_LATER_SQL)
            .bind(key.id())
            .bind(since)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("at")?, row.try_get("amount_minor")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        histories.push((key, EffectiveHistory::from_postings(since, recorded.unwrap_or(0), later)));
    }
    Ok(histories)
}

/// Locks accounts in id order; returns them and the latest instant any of them was posted to.
async fn lock_accounts(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
) -> Result<(Vec<AccountState>, Option<DateTime<Utc>>), StoreError> {
    let rows = sqlx::query(
        "SELECT id, kind, user_id, currency, balance_minor, version, updated_at, overdraft_minor, max_balance_minor,
                pending_minor
         FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut last_posted: Option<DateTime<Utc>> = None;
    let mut accounts = Vec::with_capacity(rows.len());
    for row in &rows {
        let updated_at: DateTime<Utc> = row.try_get("updated_at")?;
        last_posted = Some(last_posted.map_or(updated_at, |last| last.max(updated_at)));
        accounts.push(AccountState {
            id: row.try_get("id")?,
            key: account_key(row.try_get("kind")?, row.try_get("user_id")?, row.try_get("currency")?)?,
            balance_minor: row.try_get("balance_minor")?,
            version: row.try_get("version")?,
            limits: limits_from_row(row)?,
            pending_minor: row.try_get("pending_minor")?,
        });
    }
    Ok((accounts, last_posted))
}

/// Writes everything a batch produced in one statement: each part is a data-modifying CTE over `unnest`ed
/// arrays, so the whole write is one round trip whatever the batch size. Foreign keys between the parts (postings
/// to their transaction, a reversal to its original) are checked at the end of the statement.
async fn write_rows(
    tx: &mut Transaction<'_, Postgres>,
    rows: &BatchRows,
    links: &[Link],
    notices: &[String],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let t = &rows.transactions;
    let p = &rows.postings;
    let a = &rows.accounts;
    let e = &rows.events;
    let au = &rows.audits;
    let k = &rows.idempotency;
    let u = &rows.updated;
    sqlx::query(WRITE_BATCH_SQL)
        .bind(now)
        // transactions: $2..$15
        .bind(t.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.from_user_id).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.to_user_id).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.amount.amount_minor()).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.amount.currency().code()).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.to_amount.map(|m| m.amount_minor())).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.to_amount.map(|m| m.currency().code())).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.rate.map(|rate| rate.to_string())).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.description.clone()).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.reversal_of).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.reversed_by).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.created_at).collect::<Vec<_>>())
        // earlier transactions changed (rolled back, holds settled): $16, $17 (and $51, $52)
        .bind(u.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(u.iter().map(|r| r.reversed_by).collect::<Vec<_>>())
        // postings: $18..$22
        .bind(p.iter().map(|(tx, _)| *tx).collect::<Vec<_>>())
        .bind(p.iter().map(|(_, p)| p.account_id).collect::<Vec<_>>())
        .bind(p.iter().map(|(_, p)| p.amount_minor).collect::<Vec<_>>())
        .bind(p.iter().map(|(_, p)| p.balance_after_minor).collect::<Vec<_>>())
        .bind(p.iter().map(|(_, p)| p.account_version).collect::<Vec<_>>())
        // accounts: $23..$25
        .bind(a.iter().map(|a| a.id).collect::<Vec<_>>())
        .bind(a.iter().map(|a| a.balance_minor).collect::<Vec<_>>())
        .bind(a.iter().map(|a| a.version).collect::<Vec<_>>())
        // events: $26..$31
        .bind(e.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.aggregate_type).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.aggregate_id).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.version).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.event_type).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.data.as_str()).collect::<Vec<_>>())
        // audit entries: $32..$41
        .bind(au.iter().map(|a| a.entry_id).collect::<Vec<_>>())
        .bind(au.iter().map(|a| a.actor_id).collect::<Vec<_>>())
        .bind(au.iter().map(|a| a.action.clone()).collect::<Vec<_>>())
        .bind(au.iter().map(|a| a.entity_type).collect::<Vec<_>>())
        .bind(au.iter().map(|a| a.entity_id.clone()).collect::<Vec<_>>())
        .bind(au.iter().map(|a| a.outcome.clone()).collect::<Vec<_>>())
        .bind(au.iter().map(|a| a.details.as_str()).collect::<Vec<_>>())
        .bind(au.iter().map(|a| a.ip.clone()).collect::<Vec<_>>())
        .bind(au.iter().map(|a| a.user_agent.clone()).collect::<Vec<_>>())
        .bind(au.iter().map(|a| a.request_id.clone()).collect::<Vec<_>>())
        // idempotency answers: $42..$46
        .bind(k.iter().map(|k| k.user_id).collect::<Vec<_>>())
        .bind(k.iter().map(|k| k.key.clone()).collect::<Vec<_>>())
        .bind(k.iter().map(|k| k.request_hash.clone()).collect::<Vec<_>>())
        .bind(k.iter().map(|k| i32::from(k.status)).collect::<Vec<_>>())
        .bind(k.iter().map(|k| k.body.clone()).collect::<Vec<_>>())
        // audit chain links: $47, $48
        .bind(links.iter().map(|l| l.prev_hash.as_slice()).collect::<Vec<_>>())
        .bind(links.iter().map(|l| l.hash.as_slice()).collect::<Vec<_>>())
        // audit entries' trace ids: $49
        .bind(au.iter().map(|a| a.trace_id.clone()).collect::<Vec<_>>())
        // the change bus's notices of the wallets changed: $50
        .bind(notices)
        // changed transactions' status and amount: $51, $52
        .bind(u.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(u.iter().map(|r| r.amount.amount_minor()).collect::<Vec<_>>())
        // new transactions' expiry (holds): $53
        .bind(t.iter().map(|r| r.expires_at).collect::<Vec<_>>())
        // accounts' pending amounts: $54
        .bind(a.iter().map(|a| a.pending_minor).collect::<Vec<_>>())
        // back-dated postings' and transactions' effective instants: $55, $56
        .bind(p.iter().map(|(_, p)| p.effective_at).collect::<Vec<_>>())
        .bind(t.iter().map(|r| r.effective_at).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

const WRITE_BATCH_SQL: &str = "
WITH new_transactions AS (
    INSERT INTO transactions (id, kind, status, from_user_id, to_user_id, amount_minor, currency, to_amount_minor,
        to_currency, rate, description, reversal_of, reversed_by, created_at, expires_at, effective_at)
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::uuid[], $7::bigint[],
        $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::uuid[], $14::uuid[],
        $15::timestamptz[], $53::timestamptz[], $56::timestamptz[])
        AS t(id, kind, status, from_user_id, to_user_id, amount_minor, currency, to_amount_minor, to_currency, rate,
             description, reversal_of, reversed_by, created_at, expires_at, effective_at)
),
changed AS (
    UPDATE transactions SET status = r.status, amount_minor = r.amount, reversed_by = r.by
    FROM unnest($16::uuid[], $17::uuid[], $51::text[], $52::bigint[]) AS r(id, by, status, amount)
    WHERE transactions.id = r.id
),
new_postings AS (
    INSERT INTO postings (transaction_id, account_id, amount_minor, balance_after_minor, account_version,
        effective_at, created_at)
    SELECT *, $1 FROM unnest($18::uuid[], $19::uuid[], $20::bigint[], $21::bigint[], $22::bigint[],
        $55::timestamptz[])
),
balances AS (
    UPDATE accounts SET balance_minor = n.balance, version = n.version, pending_minor = n.pending, updated_at = $1
    FROM unnest($23::uuid[], $24::bigint[], $25::bigint[], $54::bigint[]) AS n(id, balance, version, pending)
    WHERE accounts.id = n.id
),
new_events AS (
    INSERT INTO events (id, aggregate_type, aggregate_id, version, event_type, data, created_at)
    SELECT *, $1 FROM unnest($26::uuid[], $27::text[], $28::uuid[], $29::bigint[], $30::text[], $31::text[])
),
chain_head AS (
    UPDATE audit_chain_head SET last_hash = $48[cardinality($48)] WHERE cardinality($48) > 0
),
new_audit AS (
    INSERT INTO audit_log (entry_id, actor_id, action, entity_type, entity_id, outcome, details, ip, user_agent,
        request_id, prev_hash, hash, trace_id, created_at)
    SELECT entry_id, actor_id, action, entity_type, entity_id, outcome, details, ip, user_agent, request_id,
        prev_hash, hash, trace_id, $1
    FROM unnest($32::uuid[], $33::uuid[], $34::text[], $35::text[], $36::text[], $37::text[],
        $38::text[], $39::text[], $40::text[], $41::text[], $47::bytea[], $48::bytea[], $49::text[])
        AS a(entry_id, actor_id, action, entity_type, entity_id, outcome, details, ip, user_agent, request_id,
             prev_hash, hash, trace_id)
),
new_keys AS (
    INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response, created_at)
    SELECT *, $1 FROM unnest($42::uuid[], $43::text[], $44::bytea[], $45::int[], $46::text[])
),
-- The wallets changed, on the change bus: delivered to every listener when (and only if) this transaction commits.
-- Selecting from this part is what makes it run (it changes no table).
notices AS (
    SELECT pg_notify('banksim_wallets', notice) FROM unnest($50::text[]) AS notice
)
SELECT count(*) FROM notices";

/// Locks the audit chain's head and links `rows` after it. The caller must move the head to the last new hash in the
/// same transaction ([`move_audit_head`]).
pub(crate) async fn link_audit(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[AuditRow],
    now: DateTime<Utc>,
) -> Result<Vec<Link>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // FOR UPDATE waits for the previous appender and then reads the head it committed.
    let head: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT last_hash FROM audit_chain_head FOR UPDATE").fetch_one(&mut **tx).await?;
    Ok(link(rows, head, now))
}

/// Moves the audit chain's head, locked by [`link_audit`], to the last of the links it gave (none: it stays).
pub(crate) async fn move_audit_head(tx: &mut Transaction<'_, Postgres>, links: &[Link]) -> Result<(), StoreError> {
    if let Some(last) = links.last() {
        sqlx::query("UPDATE audit_chain_head SET last_hash = $1").bind(&last.hash).execute(&mut **tx).await?;
    }
    Ok(())
}

/// A transaction row back as a record.
pub(crate) fn transaction_from_row(row: &PgRow) -> Result<TransactionRecord, sqlx::Error> {
    let currency = parse_currency(row.try_get("currency")?)?;
    let to_amount: Option<i64> = row.try_get("to_amount_minor")?;
    let to_currency: Option<&str> = row.try_get("to_currency")?;
    let to_amount = match (to_amount, to_currency) {
        (Some(minor), Some(code)) => Some(Money::new(minor, parse_currency(code)?)),
        _ => None,
    };
    let rate: Option<&str> = row.try_get("rate")?;
    Ok(TransactionRecord {
        id: row.try_get("id")?,
        kind: parse_stored(row.try_get("kind")?)?,
        status: parse_stored(row.try_get("status")?)?,
        from_user_id: row.try_get("from_user_id")?,
        to_user_id: row.try_get("to_user_id")?,
        amount: Money::new(row.try_get("amount_minor")?, currency),
        to_amount,
        rate: rate.map(parse_stored).transpose()?,
        description: row.try_get("description")?,
        reversal_of: row.try_get("reversal_of")?,
        reversed_by: row.try_get("reversed_by")?,
        created_at: row.try_get("created_at")?,
        effective_at: row.try_get("effective_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

pub(crate) async fn find_transaction(pool: &PgPool, id: Uuid) -> Result<Option<TransactionRecord>, StoreError> {
    let sql = format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
    Ok(row.as_ref().map(transaction_from_row).transpose()?)
}

/// A user's transactions, newest first: two index walks (as payer, as payee) each reading no more than the page
/// needs, merged. One `from_user_id = $1 OR to_user_id = $1` scan would read and sort the user's whole history.
/// Only the filters given are in the SQL, so that the time bounds and the cursor are index conditions.
pub(crate) async fn list_transactions(
    pool: &PgPool,
    q: &TransactionQuery,
) -> Result<Vec<TransactionRecord>, StoreError> {
    let offset = if q.before.is_some() { 0 } else { crate::model::offset_i64(q.offset) };
    let window = i64::from(q.limit).saturating_add(offset);
    let mut sql = QueryBuilder::<Postgres>::new(format!("SELECT {TRANSACTION_COLUMNS} FROM ("));
    for (branch, side) in ["from_user_id", "to_user_id"].into_iter().enumerate() {
        if branch > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push(format!("(SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE {side} = ")).push_bind(q.user_id);
        if branch > 0 {
            // A transaction of the user's on both sides (an exchange) came with the first walk.
            sql.push(" AND from_user_id IS DISTINCT FROM ").push_bind(q.user_id);
        }
        if let Some(kind) = q.kind {
            sql.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(status) = q.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(currency) = q.currency {
            sql.push(" AND currency = ").push_bind(currency.code());
        }
        if let Some(since) = q.since {
            sql.push(" AND created_at >= ").push_bind(since);
        }
        if let Some(until) = q.until {
            sql.push(" AND created_at <= ").push_bind(until);
        }
        if let Some((at, id)) = q.before {
            sql.push(" AND (created_at, id) < (").push_bind(at).push(", ").push_bind(id).push(")");
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(window).push(")");
    }
    sql.push(") AS page ORDER BY created_at DESC, id DESC LIMIT ").push_bind(i64::from(q.limit));
    sql.push(" OFFSET ").push_bind(offset);
    let rows = sql.build().fetch_all(pool).await?;
    rows.iter().map(transaction_from_row).collect::<Result<_, _>>().map_err(Into::into)
}

pub(crate) async fn wallets(
    pool: &PgPool,
    user_id: Uuid,
    currency: Option<Currency>,
) -> Result<Vec<Wallet>, StoreError> {
    let rows = sqlx::query(
        "SELECT currency, balance_minor, version, updated_at, overdraft_minor, max_balance_minor, pending_minor
         FROM accounts
         WHERE kind = 'user' AND user_id = $1 AND ($2::text IS NULL OR currency = $2) ORDER BY currency",
    )
    .bind(user_id)
    .bind(currency.map(Currency::code))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Wallet {
                currency: parse_currency(row.try_get("currency")?)?,
                balance_minor: row.try_get("balance_minor")?,
                version: row.try_get("version")?,
                updated_at: row.try_get("updated_at")?,
                limits: limits_from_row(row)?,
                pending_minor: row.try_get("pending_minor")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

fn limits_from_row(row: &PgRow) -> Result<Limits, sqlx::Error> {
    Ok(Limits {
        overdraft_minor: row.try_get("overdraft_minor")?,
        max_balance_minor: row.try_get("max_balance_minor")?,
    })
}

pub(crate) async fn due_holds(pool: &PgPool, now: DateTime<Utc>, limit: u32) -> Result<Vec<DueHold>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, from_user_id, to_user_id, currency FROM transactions
         WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DueHold {
                id: row.try_get("id")?,
                from_user_id: row.try_get("from_user_id")?,
                to_user_id: row.try_get("to_user_id")?,
                currency: parse_currency(row.try_get("currency")?)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

pub(crate) async fn wallet_limits(pool: &PgPool, user_id: Uuid, currency: Currency) -> Result<Limits, StoreError> {
    let row = sqlx::query("SELECT overdraft_minor, max_balance_minor FROM accounts WHERE id = $1")
        .bind(AccountKey::User { user_id, currency }.id())
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(limits_from_row).transpose()?.unwrap_or_default())
}

/// Opens the wallet if needed, locks it (as a ledger batch would), checks its balance against the new limits and
/// stores them, with the audit entry and event.
pub(crate) async fn set_wallet_limits(
    pool: &PgPool,
    change: &LimitsChange,
    audit: &AuditContext,
    now: DateTime<Utc>,
) -> Result<Limits, StoreError> {
    let wallet = AccountKey::User { user_id: change.user_id, currency: change.currency };
    let mut tx = pool.begin().await?;
    let user: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = $1").bind(change.user_id).fetch_optional(&mut *tx).await?;
    if user.is_none() {
        return Err(StoreError::NotFound);
    }
    open_accounts(&mut tx, &[wallet], now).await?;
    let (accounts, _) = lock_accounts(&mut tx, &[wallet.id()]).await?;
    let account = accounts.first().ok_or(StoreError::NotFound)?;
    check_new_limits(change.limits, account.balance_minor, account.pending_minor)?;
    // The audit chain's head before the wallet's update, as a batch takes them: the update's trigger may then lock
    // the balance read lease, which a batch asks for while holding the head.
    sqlx::query("SELECT 1 FROM audit_chain_head FOR UPDATE").execute(&mut *tx).await?;
    sqlx::query("UPDATE accounts SET overdraft_minor = $2, max_balance_minor = $3 WHERE id = $1")
        .bind(wallet.id())
        .bind(change.limits.overdraft_minor)
        .bind(change.limits.max_balance_minor)
        .execute(&mut *tx)
        .await?;
    let (row, data) = limits_rows(change, account.limits, audit);
    super::journal::append_audit(&mut tx, &[row], now).await?;
    super::journal::append_event(&mut tx, "wallet", wallet.id(), "WalletLimitsSet", &data, now).await?;
    // Caches keep wallets by version, and limits do not move the version (it counts postings): announcing the
    // next version drops every cached copy and keeps none until the wallet's next posting.
    let notice = format!("{}:{}:{}", change.user_id, change.currency, account.version + 1);
    sqlx::query("SELECT pg_notify('banksim_wallets', $1)").bind(notice).execute(&mut *tx).await?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(change.limits)
}

/// The balance of wallet `$1` in effect at `{at}` (an SQL expression): the balance after its last posting recorded
/// by then, plus its postings recorded later but back-dated to it (on the partial index of back-dated postings).
fn balance_in_effect(at: &str) -> String {
    format!(
        "(COALESCE((SELECT balance_after_minor FROM postings WHERE account_id = $1 AND created_at <= {at}
                    ORDER BY created_at DESC, account_version DESC LIMIT 1), 0)
          + COALESCE((SELECT sum(amount_minor) FROM postings WHERE account_id = $1 AND effective_at IS NOT NULL
                      AND created_at > {at} AND effective_at <= {at}), 0)::bigint)"
    )
}

/// A wallet's postings newest first in effective time: the ordinary ones (effective when recorded) and the
/// back-dated ones each walk their own index, merged; the balance in effect at the newest one comes with the page,
/// read in the same snapshot.
pub(crate) async fn balance_history(pool: &PgPool, q: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
    let account = AccountKey::User { user_id: q.user_id, currency: q.currency }.id();
    let sql = format!(
        "WITH page AS (
             SELECT * FROM (
                 (SELECT transaction_id, amount_minor, created_at, created_at AS effective_at, account_version
                  FROM postings WHERE account_id = $1 AND effective_at IS NULL
                    AND ($2::timestamptz IS NULL OR created_at >= $2) AND ($3::timestamptz IS NULL OR created_at <= $3)
                  ORDER BY created_at DESC, account_version DESC LIMIT $4)
                 UNION ALL
                 (SELECT transaction_id, amount_minor, created_at, effective_at, account_version
                  FROM postings WHERE account_id = $1 AND effective_at IS NOT NULL
                    AND ($2::timestamptz IS NULL OR created_at >= $2)
                    AND ($2::timestamptz IS NULL OR effective_at >= $2) AND ($3::timestamptz IS NULL OR effective_at <= $3)
                  ORDER BY effective_at DESC, created_at DESC, account_version DESC LIMIT $4)
             ) AS merged ORDER BY effective_at DESC, created_at DESC, account_version DESC LIMIT $4
         ),
         newest AS (SELECT effective_at FROM page ORDER BY effective_at DESC, created_at DESC, account_version DESC
                    LIMIT 1)
         SELECT p.transaction_id, p.amount_minor, p.created_at, p.effective_at, t.kind,
                t.reversal_of IS NOT NULL AS is_reversal, (SELECT {} FROM newest n) AS newest_balance_minor
         FROM page p JOIN transactions t ON t.id = p.transaction_id
         ORDER BY p.effective_at DESC, p.created_at DESC, p.account_version DESC",
        balance_in_effect("n.effective_at")
    );
    let rows =
        sqlx::query(&sql).bind(account).bind(q.since).bind(q.until).bind(i64::from(q.limit)).fetch_all(pool).await?;
    let newest: i64 = rows.first().map(|row| row.try_get("newest_balance_minor")).transpose()?.unwrap_or(0);
    let page = rows
        .iter()
        .map(|row| {
            Ok(HistoryEntry {
                transaction_id: row.try_get("transaction_id")?,
                change_minor: row.try_get("amount_minor")?,
                balance_after_minor: 0,
                created_at: row.try_get("created_at")?,
                effective_at: row.try_get("effective_at")?,
                kind: parse_stored(row.try_get("kind")?)?,
                is_reversal: row.try_get("is_reversal")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(with_effective_balances(page, newest))
}

/// The balance in effect at `at`: every posting effective at or before it.
pub(crate) async fn balance_at(
    pool: &PgPool,
    user_id: Uuid,
    currency: Currency,
    at: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let account = AccountKey::User { user_id, currency }.id();
    let balance: i64 = sqlx::query_scalar(&format!("SELECT {}", balance_in_effect("$2")))
        .bind(account)
        .bind(at)
        .fetch_one(pool)
        .await?;
    Ok(balance)
}

pub(crate) async fn find_idempotent(
    pool: &PgPool,
    user_id: Uuid,
    key: &str,
) -> Result<Option<StoredResponse>, StoreError> {
    let row =
        sqlx::query("SELECT request_hash, status_code, response FROM idempotency_keys WHERE user_id = $1 AND key = $2")
            .bind(user_id)
            .bind(key)
            .fetch_optional(pool)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let status: i32 = row.try_get("status_code")?;
    Ok(Some(StoredResponse {
        request_hash: row.try_get("request_hash")?,
        status: u16::try_from(status).unwrap_or(500),
        body: row.try_get("response")?,
    }))
}

fn fx_from_row(row: &PgRow) -> Result<FxRate, sqlx::Error> {
    Ok(FxRate {
        base: parse_currency(row.try_get("base")?)?,
        quote: parse_currency(row.try_get("quote")?)?,
        rate: parse_stored(row.try_get("rate")?)?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn fx_rates(pool: &PgPool) -> Result<Vec<FxRate>, StoreError> {
    let rows =
        sqlx::query("SELECT base, quote, rate, updated_at FROM fx_rates ORDER BY base, quote").fetch_all(pool).await?;
    rows.iter().map(fx_from_row).collect::<Result<_, _>>().map_err(Into::into)
}

pub(crate) async fn fx_rate(pool: &PgPool, base: Currency, quote: Currency) -> Result<Option<FxRate>, StoreError> {
    let row = sqlx::query("SELECT base, quote, rate, updated_at FROM fx_rates WHERE base = $1 AND quote = $2")
        .bind(base.code())
        .bind(quote.code())
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(fx_from_row).transpose()?)
}

pub(crate) async fn put_fx_rate(pool: &PgPool, rate: &FxRate) -> Result<FxRate, StoreError> {
    let mut tx = pool.begin().await?;
    // One rate change at a time, checked against the table as it stands (readers go on).
    sqlx::query("LOCK TABLE fx_rates IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
    let table = sqlx::query("SELECT base, quote, rate, updated_at FROM fx_rates").fetch_all(&mut *tx).await?;
    let table = table.iter().map(fx_from_row).collect::<Result<Vec<_>, _>>()?;
    refuse_gaining_cycle(&table, rate)?;
    let row = sqlx::query(
        "INSERT INTO fx_rates (base, quote, rate, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (base, quote) DO UPDATE SET rate = excluded.rate, updated_at = excluded.updated_at
         RETURNING base, quote, rate, updated_at",
    )
    .bind(rate.base.code())
    .bind(rate.quote.code())
    .bind(rate.rate.to_string())
    .bind(rate.updated_at)
    .fetch_one(&mut *tx)
    .await?;
    let saved = fx_from_row(&row)?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(saved)
}

/// Walks the audit chain from its start and names its first broken link.
async fn first_broken_link(pool: &PgPool) -> Result<Option<String>, StoreError> {
    const PAGE: u32 = 1_000;
    let (mut after, mut prev) = (0, None);
    loop {
        let page = super::journal::audit_chain(pool, after, PAGE).await?;
        let Some(last) = page.last() else {
            // Entries removed from the end leave the head pointing past the last one.
            let head: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT last_hash FROM audit_chain_head").fetch_one(pool).await?;
            return Ok((head.is_some() && head != prev).then(|| "the last entries were removed".to_owned()));
        };
        after = last.record.id;
        let (broken, next) = crate::chain::check(&page, prev);
        if broken.is_some() {
            return Ok(broken);
        }
        prev = next;
    }
}

/// Checks every ledger invariant with set-based queries.
pub(crate) async fn verify(pool: &PgPool) -> Result<LedgerReport, StoreError> {
    let mut report = LedgerReport {
        accounts: count(pool, "SELECT count(*) FROM accounts").await?,
        transactions: count(pool, "SELECT count(*) FROM transactions").await?,
        postings: count(pool, "SELECT count(*) FROM postings").await?,
        violations: Vec::new(),
    };
    for (query, what) in crate::verify::CHECKS {
        let rows: Vec<String> = sqlx::query_scalar(&crate::verify::postgres_sql(query)).fetch_all(pool).await?;
        report.violations.extend(rows.into_iter().map(|detail| format!("{what}: {detail}")));
    }
    if let Some(broken) = first_broken_link(pool).await? {
        report.violations.push(format!("the audit chain is broken: {broken}"));
    }
    Ok(report)
}

async fn count(pool: &PgPool, sql: &str) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
    Ok(n.unsigned_abs())
}
