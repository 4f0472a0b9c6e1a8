//! Bulk posting on PostgreSQL: the rows [`crate::bulk::Planner`] plans, written with `COPY … FROM STDIN` in the
//! binary format instead of the batch path's `INSERT … SELECT unnest(…)`, all in one database transaction.
//!
//! The ledger's tables are locked (`EXCLUSIVE`: readers go on, no other writer) for the whole posting, so the
//! accounts and the audit chain's head, read once at the start, stay what the planner holds in memory. Rows go out
//! a group of batches at a time: the accounts the group opened (empty), its transactions, postings, events and
//! audit entries, one `COPY` per table, in that order (each row's foreign keys point to rows already written). The
//! accounts' balances and versions, and the chain's head, are set once at the end.

use banksim_core::ledger::{AccountState, Limits, TransactionRecord};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::StoreError;
use crate::bulk::{BulkBatch, BulkOutcome, PlannedBatch, Planner, TrackedAccount};
use crate::ledger::account_key;

/// Movements planned before their rows are sent: large enough that a `COPY`'s round trips are shared by many
/// rows, small enough that the buffers stay some tens of megabytes (about 2.5 KB a movement).
const MOVEMENTS_PER_COPY: usize = 20_000;

/// Bytes handed to the connection at a time.
const SEND_BYTES: usize = 1 << 20;

pub(crate) async fn bulk_post(
    pool: &PgPool,
    batches: &mut (dyn Iterator<Item = BulkBatch> + Send),
) -> Result<BulkOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE accounts, transactions, postings, events, audit_log IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let head: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT last_hash FROM audit_chain_head FOR UPDATE").fetch_one(&mut *tx).await?;
    let rows = sqlx::query(
        "SELECT id, kind, user_id, currency, balance_minor, version, overdraft_minor, max_balance_minor,
                pending_minor, updated_at
         FROM accounts",
    )
    .fetch_all(&mut *tx)
    .await?;
    let stored = rows.iter().map(stored_account).collect::<Result<Vec<_>, sqlx::Error>>()?;
    let mut planner = Planner::new(stored, head);
    let mut group = Group::default();
    let (mut count, mut transactions) = (0, 0);
    for (index, batch) in batches.enumerate() {
        match planner.plan(&batch) {
            Ok(planned) => {
                transactions += planned.rows.transactions.len();
                group.add(&planned);
            }
            Err(outcomes) => {
                tx.rollback().await?;
                return Ok(BulkOutcome::Refused { batch: index, outcomes });
            }
        }
        count += 1;
        if group.movements >= MOVEMENTS_PER_COPY {
            std::mem::take(&mut group).send(&mut tx).await?;
        }
    }
    group.send(&mut tx).await?;
    let changed: Vec<&TrackedAccount> = planner.changed_accounts().collect();
    sqlx::query(
        "UPDATE accounts SET balance_minor = n.balance, version = n.version, pending_minor = n.pending,
             updated_at = n.updated_at
         FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::timestamptz[])
             AS n(id, balance, version, pending, updated_at)
         WHERE accounts.id = n.id",
    )
    .bind(changed.iter().map(|a| a.state.id).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.state.balance_minor).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.state.version).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.state.pending_minor).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.updated_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE audit_chain_head SET last_hash = $1").bind(planner.head()).execute(&mut *tx).await?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(BulkOutcome::Posted { batches: count, transactions })
}

fn stored_account(row: &PgRow) -> Result<TrackedAccount, sqlx::Error> {
    let state = AccountState {
        id: row.try_get("id")?,
        key: account_key(row.try_get("kind")?, row.try_get("user_id")?, row.try_get("currency")?)?,
        balance_minor: row.try_get("balance_minor")?,
        version: row.try_get("version")?,
        limits: Limits {
            overdraft_minor: row.try_get("overdraft_minor")?,
            max_balance_minor: row.try_get("max_balance_minor")?,
        },
        pending_minor: row.try_get("pending_minor")?,
    };
    Ok(TrackedAccount { state, updated_at: row.try_get("updated_at")?, changed: false })
}

/// The rows of a group of batches, encoded for `COPY`, one buffer per table.
#[derive(Default)]
struct Group {
    accounts: CopyRows,
    transactions: CopyRows,
    postings: CopyRows,
    events: CopyRows,
    audits: CopyRows,
    movements: usize,
}

const COPY_ACCOUNTS: &str = "COPY accounts (id, kind, user_id, currency, created_at, updated_at) FROM STDIN BINARY";
const COPY_TRANSACTIONS: &str = "COPY transactions (id, kind, status, from_user_id, to_user_id, amount_minor, \
    currency, to_amount_minor, to_currency, rate, description, reversal_of, reversed_by, created_at, expires_at, \
    effective_at) FROM STDIN BINARY";
const COPY_POSTINGS: &str = "COPY postings (transaction_id, account_id, amount_minor, balance_after_minor, \
    account_version, created_at) FROM STDIN BINARY";
const COPY_EVENTS: &str =
    "COPY events (id, aggregate_type, aggregate_id, version, event_type, data, created_at) FROM STDIN BINARY";
const COPY_AUDITS: &str = "COPY audit_log (entry_id, actor_id, action, entity_type, entity_id, outcome, details, ip, \
    user_agent, request_id, prev_hash, hash, trace_id, created_at) FROM STDIN BINARY";

impl Group {
    /// Encodes a planned batch's rows, as the batch path's statement writes them.
    fn add(&mut self, planned: &PlannedBatch) {
        let PlannedBatch { now, rows, links, opened, opened_at } = planned;
        debug_assert!(rows.updated.is_empty() && rows.idempotency.is_empty(), "not a bulk batch");
        for key in opened {
            let row = self.accounts.row(6);
            row.uuid(key.id()).text(key.kind()).opt_uuid(key.user_id()).text(key.currency().code());
            row.timestamp(*opened_at).timestamp(*opened_at);
        }
        for t in &rows.transactions {
            self.transactions.transaction(t);
        }
        for (transaction_id, p) in &rows.postings {
            let row = self.postings.row(6);
            row.uuid(*transaction_id).uuid(p.account_id).int8(p.amount_minor).int8(p.balance_after_minor);
            row.int8(p.account_version).timestamp(*now);
        }
        for e in &rows.events {
            let row = self.events.row(7);
            row.uuid(e.id).text(e.aggregate_type).uuid(e.aggregate_id).int8(e.version).text(e.event_type);
            row.jsonb(&e.data).timestamp(*now);
        }
        for (a, (prev, hash)) in rows.audits.iter().zip(links) {
            let row = self.audits.row(14);
            row.uuid(a.entry_id).opt_uuid(a.actor_id).text(&a.action).text(a.entity_type);
            row.opt_text(a.entity_id.as_deref()).text(&a.outcome).jsonb(&a.details).opt_text(a.ip.as_deref());
            row.opt_text(a.user_agent.as_deref()).opt_text(a.request_id.as_deref()).bytea(prev).bytea(hash);
            row.opt_text(a.trace_id.as_deref()).timestamp(*now);
        }
        self.movements += rows.transactions.len();
    }

    /// Writes the group, each table with its own `COPY`, parents before children.
    async fn send(self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
        copy(tx, COPY_ACCOUNTS, self.accounts).await?;
        copy(tx, COPY_TRANSACTIONS, self.transactions).await?;
        copy(tx, COPY_POSTINGS, self.postings).await?;
        copy(tx, COPY_EVENTS, self.events).await?;
        copy(tx, COPY_AUDITS, self.audits).await
    }
}

async fn copy(tx: &mut Transaction<'_, Postgres>, statement: &str, rows: CopyRows) -> Result<(), StoreError> {
    if rows.count == 0 {
        return Ok(());
    }
    let count = rows.count;
    let data = rows.finish();
    let mut copy = tx.copy_in_raw(statement).await?;
    for chunk in data.chunks(SEND_BYTES) {
        copy.send(chunk).await?;
    }
    let written = copy.finish().await?;
    debug_assert_eq!(written, count as u64, "{statement}");
    Ok(())
}

/// PostgreSQL's epoch for timestamps: 2000-01-01T00:00:00Z.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Rows in `COPY`'s binary format: a header, then per row its field count and each field as a length (−1 for
/// NULL) and its bytes in the type's binary send format.
#[derive(Default)]
struct CopyRows {
    data: Vec<u8>,
    count: usize,
}

impl CopyRows {
    /// Starts a row of `fields` fields.
    fn row(&mut self, fields: i16) -> &mut Self {
        if self.data.is_empty() {
            self.data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
            self.data.extend_from_slice(&0_i32.to_be_bytes()); // flags
            self.data.extend_from_slice(&0_i32.to_be_bytes()); // header extension length
        }
        self.count += 1;
        self.data.extend_from_slice(&fields.to_be_bytes());
        self
    }

    /// The buffer with its trailer.
    fn finish(mut self) -> Vec<u8> {
        self.data.extend_from_slice(&(-1_i16).to_be_bytes());
        self.data
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let length = i32::try_from(bytes.len()).expect("a field under 2 GiB");
        self.data.extend_from_slice(&length.to_be_bytes());
        self.data.extend_from_slice(bytes);
        self
    }

    fn null(&mut self) -> &mut Self {
        self.data.extend_from_slice(&(-1_i32).to_be_bytes());
        self
    }

    fn uuid(&mut self, id: Uuid) -> &mut Self {
        self.field(id.as_bytes())
    }

    fn opt_uuid(&mut self, id: Option<Uuid>) -> &mut Self {
        match id {
            Some(id) => self.uuid(id),
            None => self.null(),
        }
    }

    fn text(&mut self, text: &str) -> &mut Self {
        self.field(text.as_bytes())
    }

    fn opt_text(&mut self, text: Option<&str>) -> &mut Self {
        match text {
            Some(text) => self.text(text),
            None => self.null(),
        }
    }

    fn bytea(&mut self, bytes: &[u8]) -> &mut Self {
        self.field(bytes)
    }

    fn int8(&mut self, value: i64) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    fn opt_int8(&mut self, value: Option<i64>) -> &mut Self {
        match value {
            Some(value) => self.int8(value),
            None => self.null(),
        }
    }

    /// A `timestamptz`: microseconds since PostgreSQL's epoch, truncated as sqlx truncates a bound instant.
    fn timestamp(&mut self, at: DateTime<Utc>) -> &mut Self {
        let micros = at.timestamp_micros() - PG_EPOCH_MICROS;
        self.int8(micros)
    }

    fn opt_timestamp(&mut self, at: Option<DateTime<Utc>>) -> &mut Self {
        match at {
            Some(at) => self.timestamp(at),
            None => self.null(),
        }
    }

    /// A `jsonb`: its format version (1), then the JSON text.
    fn jsonb(&mut self, value: &serde_json::Value) -> &mut Self {
        let start = self.data.len();
        self.data.extend_from_slice(&0_i32.to_be_bytes());
        self.data.push(1);
        serde_json::to_writer(&mut self.data, value).expect("a JSON value serialises");
        let length = i32::try_from(self.data.len() - start - 4).expect("a field under 2 GiB");
        self.data[start..start + 4].copy_from_slice(&length.to_be_bytes());
        self
    }

    /// A transactions row (`effective_at` is `created_at`, as the batch path writes it).
    fn transaction(&mut self, t: &TransactionRecord) {
        let row = self.row(16);
        row.uuid(t.id).text(t.kind.as_str()).text(t.status.as_str()).opt_uuid(t.from_user_id);
        row.opt_uuid(t.to_user_id).int8(t.amount.amount_minor()).text(t.amount.currency().code());
        row.opt_int8(t.to_amount.map(|m| m.amount_minor())).opt_text(t.to_amount.map(|m| m.currency().code()));
        match &t.rate {
            Some(rate) => row.text(&rate.to_string()),
            None => row.null(),
        };
        row.opt_text(t.description.as_deref()).opt_uuid(t.reversal_of).opt_uuid(t.reversed_by);
        row.timestamp(t.created_at).opt_timestamp(t.expires_at).timestamp(t.created_at);
    }
}
