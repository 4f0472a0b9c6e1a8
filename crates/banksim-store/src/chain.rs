//! The audit trail's hash chain: each entry's hash covers its content and the hash of the entry before it.
//!
//! An entry's trace id is covered only when it has one: an entry without one (every entry written before trace ids
//! were kept) hashes exactly as it always did, so the chain written by older versions still verifies, while a trace
//! id added to, changed in or removed from an entry breaks its hash. The field list is read from the front, each field
//! length-prefixed, so an entry with a trailing trace id can never hash like one without.
//!
//! Entries are appended one writer at a time (PostgreSQL: the `audit_chain_head` row, locked until commit; SQLite:
//! its single writer), so the "entry before" is always the last committed one, and ids follow the chain's order.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::ledger::AuditRow;

/// The hash the first entry links to.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

/// A stored entry with its place in the chain.
#[derive(Debug, Clone)]
pub(crate) struct ChainedEntry {
    pub record: crate::AuditRecord,
    pub entry_id: Uuid,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
}

/// What an entry's hash covers, borrowed from a row about to be written or from a stored one.
struct Content<'a> {
    entry_id: Uuid,
    actor_id: Option<Uuid>,
    action: &'a str,
    entity_type: &'a str,
    entity_id: Option<&'a str>,
    outcome: &'a str,
    /// The details serialised (serde_json's form: keys sorted, no spaces), as hashed.
    details: &'a str,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    created_at: DateTime<Utc>,
    trace_id: Option<&'a str>,
}

impl Content<'_> {
    /// SHA-256 of the previous hash and every field, each length-prefixed (so bytes cannot move between fields),
    /// the trace id last and only when there is one.
    fn hash(&self, prev: &[u8]) -> Vec<u8> {
        let actor = self.actor_id.map(|a| a.into_bytes()).unwrap_or_default();
        let created_at = self.created_at.timestamp_micros().to_be_bytes();
        let fields: [&[u8]; 11] = [
            self.entry_id.as_bytes(),
            &actor,
            self.action.as_bytes(),
            self.entity_type.as_bytes(),
            self.entity_id.unwrap_or_default().as_bytes(),
            self.outcome.as_bytes(),
            self.details.as_bytes(),
            self.ip.unwrap_or_default().as_bytes(),
            self.user_agent.unwrap_or_default().as_bytes(),
            self.request_id.unwrap_or_default().as_bytes(),
            &created_at,
        ];
        let mut hasher = Sha256::new();
        hasher.update(prev);
        for field in fields.into_iter().chain(self.trace_id.map(str::as_bytes)) {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field);
        }
        hasher.finalize().to_vec()
    }
}

fn row_content<'a>(row: &'a AuditRow, details: &'a str, created_at: DateTime<Utc>) -> Content<'a> {
    Content {
        entry_id: row.entry_id,
        actor_id: row.actor_id,
        action: &row.action,
        entity_type: row.entity_type,
        entity_id: row.entity_id.as_deref(),
        outcome: &row.outcome,
        details,
        ip: row.ip.as_deref(),
        user_agent: row.user_agent.as_deref(),
        request_id: row.request_id.as_deref(),
        created_at,
        trace_id: row.trace_id.as_deref(),
    }
}

fn stored_content<'a>(entry: &'a ChainedEntry, details: &'a str) -> Content<'a> {
    let r = &entry.record;
    Content {
        entry_id: entry.entry_id,
        actor_id: r.actor_id,
        action: &r.action,
        entity_type: &r.entity_type,
        entity_id: r.entity_id.as_deref(),
        outcome: &r.outcome,
        details,
        ip: r.ip.as_deref(),
        user_agent: r.user_agent.as_deref(),
        request_id: r.request_id.as_deref(),
        created_at: r.created_at,
        trace_id: r.trace_id.as_deref(),
    }
}

/// An entry's place in the chain (its details are written as its row holds them: the very text hashed).
#[derive(Debug)]
pub(crate) struct Link {
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The link of each of `rows`, appended in order after the entry whose hash is `last`.
pub(crate) fn link(rows: &[AuditRow], last: Option<Vec<u8>>, created_at: DateTime<Utc>) -> Vec<Link> {
    let mut prev = last.unwrap_or_else(|| GENESIS.to_vec());
    rows.iter()
        .map(|row| {
            let hash = row_content(row, &row.details, created_at).hash(&prev);
            Link { prev_hash: std::mem::replace(&mut prev, hash.clone()), hash }
        })
        .collect()
}

/// Walks entries in id order, starting after the entry whose hash is `prev` (none: the chain's start); returns
/// the first broken link, if any, and the hash to continue from. Entries written before the chain existed (no
/// hash) are skipped.
pub(crate) fn check(entries: &[ChainedEntry], mut prev: Option<Vec<u8>>) -> (Option<String>, Option<Vec<u8>>) {
    for entry in entries {
        let Some(hash) = &entry.hash else { continue };
        let expected_prev = prev.clone().unwrap_or_else(|| GENESIS.to_vec());
        if entry.prev_hash.as_deref() != Some(expected_prev.as_slice()) {
            let broken = format!(
                "audit entry {} does not link to the entry before it (one was deleted or moved)",
                entry.record.id
            );
            return (Some(broken), None);
        }
        let details = entry.record.details.to_string();
        if &stored_content(entry, &details).hash(&expected_prev) != hash {
            return (Some(format!("audit entry {} was changed after it was written", entry.record.id)), None);
        }
        prev = Some(hash.clone());
    }
    (None, prev)
}
