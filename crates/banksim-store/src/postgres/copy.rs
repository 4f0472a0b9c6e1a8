//! Rows for PostgreSQL's `COPY … FROM STDIN` in the binary format: the fastest way in for many rows (no statement
//! to parse per row, no text to convert). Bulk posting writes a population's history with it, and the bulk
//! registration of users theirs.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::StoreError;
use crate::chain::Link;
use crate::ledger::{AuditRow, EventRow};

pub(super) const COPY_EVENTS: &str =
    "COPY events (id, aggregate_type, aggregate_id, version, event_type, data, created_at) FROM STDIN BINARY";
pub(super) const COPY_AUDITS: &str = "COPY audit_log (entry_id, actor_id, action, entity_type, entity_id, outcome, \
    details, ip, user_agent, request_id, prev_hash, hash, trace_id, created_at) FROM STDIN BINARY";

/// Bytes handed to the connection at a time.
const SEND_BYTES: usize = 1 << 20;

/// Sends the rows with one `COPY` and empties `rows`.
pub(super) async fn copy(
    tx: &mut Transaction<'_, Postgres>,
    statement: &str,
    rows: &mut CopyRows,
) -> Result<(), StoreError> {
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
    rows.clear();
    Ok(())
}

/// PostgreSQL's epoch for timestamps: 2000-01-01T00:00:00Z.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Rows in `COPY`'s binary format: a header, then per row its field count and each field as a length (−1 for
/// NULL) and its bytes in the type's binary send format.
#[derive(Default)]
pub(super) struct CopyRows {
    data: Vec<u8>,
    count: usize,
}

impl CopyRows {
    /// Starts a row of `fields` fields.
    pub(super) fn row(&mut self, fields: i16) -> &mut Self {
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
    fn finish(&mut self) -> &[u8] {
        self.data.extend_from_slice(&(-1_i16).to_be_bytes());
        &self.data
    }

    /// Empties the buffer, keeping its capacity.
    fn clear(&mut self) {
        self.data.clear();
        self.count = 0;
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let length = i32::try_from(bytes.len()).expect("a field under 2 GiB");
        self.data.extend_from_slice(&length.to_be_bytes());
        self.data.extend_from_slice(bytes);
        self
    }

    pub(super) fn null(&mut self) -> &mut Self {
        self.data.extend_from_slice(&(-1_i32).to_be_bytes());
        self
    }

    pub(super) fn uuid(&mut self, id: Uuid) -> &mut Self {
        self.field(id.as_bytes())
    }

    pub(super) fn opt_uuid(&mut self, id: Option<Uuid>) -> &mut Self {
        match id {
            Some(id) => self.uuid(id),
            None => self.null(),
        }
    }

    pub(super) fn text(&mut self, text: &str) -> &mut Self {
        self.field(text.as_bytes())
    }

    pub(super) fn opt_text(&mut self, text: Option<&str>) -> &mut Self {
        match text {
            Some(text) => self.text(text),
            None => self.null(),
        }
    }

    pub(super) fn bytea(&mut self, bytes: &[u8]) -> &mut Self {
        self.field(bytes)
    }

    pub(super) fn int8(&mut self, value: i64) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    pub(super) fn opt_int8(&mut self, value: Option<i64>) -> &mut Self {
        match value {
            Some(value) => self.int8(value),
            None => self.null(),
        }
    }

    /// A `timestamptz`: microseconds since PostgreSQL's epoch, truncated as sqlx truncates a bound instant.
    pub(super) fn timestamp(&mut self, at: DateTime<Utc>) -> &mut Self {
        let micros = at.timestamp_micros() - PG_EPOCH_MICROS;
        self.int8(micros)
    }

    pub(super) fn opt_timestamp(&mut self, at: Option<DateTime<Utc>>) -> &mut Self {
        match at {
            Some(at) => self.timestamp(at),
            None => self.null(),
        }
    }

    pub(super) fn bool(&mut self, value: bool) -> &mut Self {
        self.field(&[u8::from(value)])
    }

    /// An events row, written at `at`.
    pub(super) fn event(&mut self, e: &EventRow, at: DateTime<Utc>) {
        let row = self.row(7);
        row.uuid(e.id).text(e.aggregate_type).uuid(e.aggregate_id).int8(e.version).text(e.event_type);
        row.text(&e.data).timestamp(at);
    }

    /// An audit_log row with its link in the chain, written at `at`.
    pub(super) fn audit(&mut self, a: &AuditRow, link: &Link, at: DateTime<Utc>) {
        let row = self.row(14);
        row.uuid(a.entry_id).opt_uuid(a.actor_id).text(&a.action).text(a.entity_type);
        row.opt_text(a.entity_id.as_deref()).text(&a.outcome).text(&a.details).opt_text(a.ip.as_deref());
        row.opt_text(a.user_agent.as_deref()).opt_text(a.request_id.as_deref());
        row.bytea(&link.prev_hash).bytea(&link.hash);
        row.opt_text(a.trace_id.as_deref()).timestamp(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(rows: &mut CopyRows, ids: &[u128]) {
        for &id in ids {
            rows.row(3).uuid(Uuid::from_u128(id)).opt_text((id % 2 == 0).then_some("even")).int8(id as i64);
        }
    }

    #[test]
    fn a_reused_buffer_encodes_exactly_what_a_fresh_one_does() {
        let mut reused = CopyRows::default();
        encode(&mut reused, &[1, 2, 3, 4, 5]);
        reused.finish();
        reused.clear();
        encode(&mut reused, &[7, 8]);
        let mut fresh = CopyRows::default();
        encode(&mut fresh, &[7, 8]);
        assert_eq!(reused.count, 2);
        assert_eq!(reused.finish(), fresh.finish(), "a header, two rows and the trailer, nothing left over");
        assert!(fresh.data.starts_with(b"PGCOPY\n\xff\r\n\0"));
    }
}
