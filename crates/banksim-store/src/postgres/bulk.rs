//! Bulk posting on PostgreSQL: the rows [`crate::bulk::Planner`] plans, written with `COPY … FROM STDIN` in the
//! binary format instead of the batch path's `INSERT … SELECT unnest(…)`, all in one database transaction.
//!
//! The ledger's tables are locked (`EXCLUSIVE`: readers go on, no other writer; on an empty ledger `ACCESS
//! EXCLUSIVE` once its indexes and keys are set aside, see [`set_aside_checks`]) for the whole posting, so the
//! accounts and the audit chain's head, read once at the start, stay what the planner holds in memory. Rows go out
//! a group of batches at a time: its transactions, postings, events and audit entries, one `COPY` per table, in that
//! order (each row's foreign keys point to rows already written; a posting's account is checked by `banksim verify`,
//! migration `0050`). The accounts are written once at the end, as the posting left them: those it opened with one
//! `COPY`, those stored before with one `UPDATE`; then the chain's head; then, on an empty ledger, the keys.
//!
//! The caller's task plans and encodes; a writer task owns the transaction and streams the groups, so that both
//! cores work: one planning the next group while PostgreSQL writes the last.

use banksim_core::ledger::{AccountState, Limits, TransactionRecord};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::copy::{COPY_AUDITS, COPY_EVENTS, CopyRows, copy};
use crate::StoreError;
use crate::bulk::{BulkBatch, BulkOutcome, PlannedBatch, Planner, TrackedAccount};
use crate::ledger::{WalletState, account_key, wallet_notices, wallet_states};

/// Movements planned before their rows are sent: large enough that a `COPY`'s round trips are shared by many
/// rows, small enough that the buffers stay some tens of megabytes (about 2.5 KB a movement).
const MOVEMENTS_PER_COPY: usize = 20_000;

/// Memory for each index build at the end of a posting on an empty ledger. Sorting whole tables wants more than
/// PostgreSQL's default 64 MB: 1 GB made the builds of a 100,000-user population a tenth faster than 256 MB
/// (33.3 -> 29.8 s); a smaller population takes only what its sorts need.
const INDEX_BUILD_MEMORY: &str = "1GB";

/// Groups encoded and waiting for the writer: the planner runs ahead of PostgreSQL by this much, no more.
const GROUPS_IN_FLIGHT: usize = 2;

pub(crate) async fn bulk_post(
    pool: &PgPool,
    batches: &mut (dyn Iterator<Item = BulkBatch> + Send),
) -> Result<BulkOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    // `schedule_executions` too: its foreign key into `transactions` is set aside on an empty ledger, and a schedule
    // run that wrote there first would otherwise wait for the chain's head while the posting waits for it.
    sqlx::query(
        "LOCK TABLE accounts, transactions, postings, events, audit_log, schedule_executions IN EXCLUSIVE MODE",
    )
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
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM transactions)").fetch_one(&mut *tx).await?;
    let rebuild = if empty { set_aside_checks(&mut tx).await? } else { Vec::new() };
    // Planning and encoding (this task) and PostgreSQL's writing (fed by the writer task) go on at the same time.
    let (sender, receiver) = tokio::sync::mpsc::channel(GROUPS_IN_FLIGHT);
    let (recycle, recycled) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn(write_groups(tx, receiver, recycle, rebuild));
    let planned = plan_groups(Planner::new(stored, head), batches, &sender, recycled).await;
    let outcome = match planned {
        Some(Planned::Refused(outcome)) => Some(outcome),
        Some(Planned::Done(outcome, finish)) => sender.send(Message::Finish(finish)).await.ok().map(|()| outcome),
        // The writer stopped (an error, reported below).
        None => None,
    };
    drop(sender);
    writer.await.map_err(|_| StoreError::Panicked)??;
    Ok(outcome.expect("the writer reports why it stopped early"))
}

/// Sets aside every index, key and foreign key of the tables the posting fills (and the foreign keys that point
/// into them from elsewhere), and returns the statements that create them again, as the catalog defines them, to run
/// before the commit: keys and indexes first, then the foreign keys that need them. Only on an empty ledger: building
/// an index over the whole table once (a sort) is cheaper than inserting into it row by row — the transactions' ids,
/// the events' aggregate key and the postings' account key come in random order, so each insert lands on another
/// page, and the indexes outgrow the shared buffers long before the posting ends — but not when the table already
/// holds more than the posting adds. Nothing goes unchecked: a duplicate key
/// or a dangling reference fails its `ADD CONSTRAINT`, and with it the whole transaction, which keeps the tables to
/// itself (`ACCESS EXCLUSIVE` now) and gives everything back if it fails.
async fn set_aside_checks(tx: &mut Transaction<'_, Postgres>) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "WITH filled(rel) AS (
             VALUES ('accounts'::regclass), ('transactions'::regclass), ('postings'::regclass), ('events'::regclass),
                    ('audit_log'::regclass)
         ),
         checks AS (
             -- Foreign keys from or into the filled tables: dropped first, added back last.
             SELECT 1 AS step,
                    format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname) AS drop_statement,
                    format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname,
                           pg_get_constraintdef(c.oid)) AS create_statement
             FROM pg_constraint c
             WHERE c.contype = 'f'
               AND (c.conrelid IN (SELECT rel FROM filled) OR c.confrelid IN (SELECT rel FROM filled))
             UNION ALL
             -- Primary keys and unique constraints (their indexes go with them).
             SELECT 2, format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname),
                    format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname,
                           pg_get_constraintdef(c.oid))
             FROM pg_constraint c
             WHERE c.contype IN ('p', 'u') AND c.conrelid IN (SELECT rel FROM filled)
             UNION ALL
             -- Indexes that back no constraint, unique or not.
             SELECT 3, format('DROP INDEX %s', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid)
             FROM pg_index i
             WHERE i.indrelid IN (SELECT rel FROM filled)
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                               WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid AND c.contype <> 'f')
         )
         SELECT drop_statement, create_statement FROM checks ORDER BY step, drop_statement",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut rebuild = Vec::with_capacity(rows.len());
    for (drop, create) in rows {
        sqlx::query(&drop).execute(&mut **tx).await?;
        rebuild.push(create);
    }
    // Created in the reverse order: indexes and keys, then the foreign keys that refer to the keys.
    rebuild.reverse();
    Ok(rebuild)
}

/// What the writer is sent.
enum Message {
    /// A group's rows.
    Rows(Group),
    /// The end: the accounts' last states and the chain's head to write before the commit.
    Finish(Finish),
}

/// What is written last.
struct Finish {
    /// Every account the posting changed, as it left them.
    accounts: Vec<TrackedAccount>,
    head: Option<Vec<u8>>,
}

/// How planning ended, when the writer did not stop it first.
enum Planned {
    /// Every batch is planned and sent.
    Done(BulkOutcome, Finish),
    /// A batch was refused: nothing is to be committed.
    Refused(BulkOutcome),
}

/// Plans the batches and sends their rows to the writer, a group at a time; `None` when the writer stopped.
///
/// Each group is encoded into the buffers of one the writer has sent back, when there is one: fresh buffers of tens
/// of megabytes per group, grown by doubling and handed back to the system once freed, cost a 100,000-user seeding
/// 2.8 million page faults and 12 s of system time.
async fn plan_groups(
    mut planner: Planner,
    batches: &mut (dyn Iterator<Item = BulkBatch> + Send),
    sender: &tokio::sync::mpsc::Sender<Message>,
    mut recycled: tokio::sync::mpsc::UnboundedReceiver<Group>,
) -> Option<Planned> {
    let mut group = Group::default();
    let (mut count, mut transactions) = (0, 0);
    for (index, batch) in batches.enumerate() {
        match planner.plan(&batch) {
            Ok(planned) => {
                transactions += planned.rows.transactions.len();
                group.add(&planned);
            }
            Err(outcomes) => return Some(Planned::Refused(BulkOutcome::Refused { batch: index, outcomes })),
        }
        count += 1;
        if group.movements >= MOVEMENTS_PER_COPY {
            let next = recycled.try_recv().unwrap_or_default();
            sender.send(Message::Rows(std::mem::replace(&mut group, next))).await.ok()?;
        }
    }
    sender.send(Message::Rows(group)).await.ok()?;
    let finish =
        Finish { accounts: planner.changed_accounts().copied().collect(), head: planner.head().map(<[u8]>::to_vec) };
    Some(Planned::Done(BulkOutcome::Posted { batches: count, transactions }, finish))
}

/// Writes what it is sent in the bulk posting's transaction, sends each group back emptied for its buffers to be
/// reused, and commits once told to finish. When the planner stops without saying so (a refused batch), rolls back:
/// nothing of the posting is kept.
async fn write_groups(
    mut tx: Transaction<'static, Postgres>,
    mut receiver: tokio::sync::mpsc::Receiver<Message>,
    recycle: tokio::sync::mpsc::UnboundedSender<Group>,
    rebuild: Vec<String>,
) -> Result<(), StoreError> {
    while let Some(message) = receiver.recv().await {
        match message {
            Message::Rows(mut group) => {
                group.send(&mut tx).await?;
                // The planner may have finished already; then the buffers are simply dropped.
                let _ = recycle.send(group);
            }
            Message::Finish(finish) => {
                // The accounts before the keys: on an empty ledger theirs are set aside too, and 200,000 accounts
                // went in 3.3 s with their keys checked row by row, against a fraction of a second for the builds.
                finish.write(&mut tx).await?;
                if !rebuild.is_empty() {
                    let memory = format!("SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'");
                    sqlx::query(&memory).execute(&mut *tx).await?;
                }
                for statement in &rebuild {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
                tx.commit().await.map_err(StoreError::CommitFailed)?;
                return Ok(());
            }
        }
    }
    tx.rollback().await?;
    Ok(())
}

impl Finish {
    /// Writes every changed account as the posting left it — creates those it opened (one row each, instead of an
    /// empty row and an update: 5 s of a 100,000-user seeding), updates those stored before — announces the changed
    /// wallets, and moves the audit chain's head.
    async fn write(self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
        let (opened, stored): (Vec<&TrackedAccount>, Vec<&TrackedAccount>) =
            self.accounts.iter().partition(|a| a.opened_at.is_some());
        if !stored.is_empty() {
            update_accounts(tx, &stored).await?;
        }
        let mut rows = CopyRows::default();
        for account in &opened {
            rows.account(account);
        }
        copy(tx, COPY_ACCOUNTS, &mut rows).await?;
        if !opened.is_empty() {
            // Statistics for the accounts just written, as the rest of the service's queries will want them.
            sqlx::query("ANALYZE accounts").execute(&mut **tx).await?;
        }
        // The change bus hears of every wallet changed, as of a batch's commit: a cache elsewhere may hold one (read
        // after the users were registered, before this commit), and nothing else would drop it.
        let wallets: Vec<WalletState> =
            self.accounts.iter().flat_map(|a| wallet_states(std::slice::from_ref(&a.state), a.updated_at)).collect();
        sqlx::query("SELECT pg_notify($1, notice) FROM unnest($2::text[]) AS notice")
            .bind(super::WALLET_CHANNEL)
            .bind(wallet_notices(&wallets))
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE audit_chain_head SET last_hash = $1").bind(self.head).execute(&mut **tx).await?;
        Ok(())
    }
}

/// Sets the balance, version and last posting of accounts stored before the posting.
async fn update_accounts(tx: &mut Transaction<'_, Postgres>, accounts: &[&TrackedAccount]) -> Result<(), StoreError> {
    // Statistics first: a table never analysed may be taken for a few pages, and the join then scans it once per
    // account (quadratic: 4 s for 4,000 accounts).
    sqlx::query("ANALYZE accounts").execute(&mut **tx).await?;
    sqlx::query(
        "UPDATE accounts SET balance_minor = n.balance, version = n.version, pending_minor = n.pending,
                 updated_at = n.updated_at
             FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::timestamptz[])
                 AS n(id, balance, version, pending, updated_at)
             WHERE accounts.id = n.id",
    )
    .bind(accounts.iter().map(|a| a.state.id).collect::<Vec<_>>())
    .bind(accounts.iter().map(|a| a.state.balance_minor).collect::<Vec<_>>())
    .bind(accounts.iter().map(|a| a.state.version).collect::<Vec<_>>())
    .bind(accounts.iter().map(|a| a.state.pending_minor).collect::<Vec<_>>())
    .bind(accounts.iter().map(|a| a.updated_at).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
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
    Ok(TrackedAccount { state, updated_at: row.try_get("updated_at")?, changed: false, opened_at: None })
}

/// The rows of a group of batches, encoded for `COPY`, one buffer per table.
#[derive(Default)]
struct Group {
    transactions: CopyRows,
    postings: CopyRows,
    events: CopyRows,
    audits: CopyRows,
    movements: usize,
}

const COPY_ACCOUNTS: &str = "COPY accounts (id, kind, user_id, currency, balance_minor, version, overdraft_minor, \
    max_balance_minor, pending_minor, created_at, updated_at) FROM STDIN BINARY";
const COPY_TRANSACTIONS: &str = "COPY transactions (id, kind, status, from_user_id, to_user_id, amount_minor, \
    currency, to_amount_minor, to_currency, rate, description, reversal_of, reversed_by, created_at, expires_at, \
    effective_at) FROM STDIN BINARY";
const COPY_POSTINGS: &str = "COPY postings (transaction_id, account_id, amount_minor, balance_after_minor, \
    account_version, effective_at, created_at) FROM STDIN BINARY";

impl Group {
    /// Encodes a planned batch's rows, as the batch path's statement writes them.
    fn add(&mut self, planned: &PlannedBatch) {
        let PlannedBatch { now, rows, links } = planned;
        debug_assert!(rows.updated.is_empty() && rows.idempotency.is_empty(), "not a bulk batch");
        for t in &rows.transactions {
            self.transactions.transaction(t);
        }
        for (transaction_id, p) in &rows.postings {
            let row = self.postings.row(7);
            row.uuid(*transaction_id).uuid(p.account_id).int8(p.amount_minor).int8(p.balance_after_minor);
            row.int8(p.account_version).opt_timestamp(p.effective_at).timestamp(*now);
        }
        for e in &rows.events {
            self.events.event(e, *now);
        }
        for (a, link) in rows.audits.iter().zip(links) {
            self.audits.audit(a, link, *now);
        }
        self.movements += rows.transactions.len();
    }

    /// Writes the group, each table with its own `COPY`, parents before children, and leaves it empty (its buffers
    /// keep their capacity).
    async fn send(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
        copy(tx, COPY_TRANSACTIONS, &mut self.transactions).await?;
        copy(tx, COPY_POSTINGS, &mut self.postings).await?;
        copy(tx, COPY_EVENTS, &mut self.events).await?;
        copy(tx, COPY_AUDITS, &mut self.audits).await?;
        self.movements = 0;
        Ok(())
    }
}

impl CopyRows {
    /// An accounts row, as the posting left it.
    fn account(&mut self, account: &TrackedAccount) {
        let TrackedAccount { state, updated_at, opened_at, .. } = account;
        let row = self.row(11);
        row.uuid(state.id).text(state.key.kind()).opt_uuid(state.key.user_id()).text(state.key.currency().code());
        row.int8(state.balance_minor).int8(state.version).opt_int8(state.limits.overdraft_minor);
        row.opt_int8(state.limits.max_balance_minor).int8(state.pending_minor);
        row.timestamp(opened_at.unwrap_or(*updated_at)).timestamp(*updated_at);
    }

    /// A transactions row.
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
        row.timestamp(t.created_at).opt_timestamp(t.expires_at).timestamp(t.effective_at);
    }
}
