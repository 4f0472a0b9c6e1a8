//! Outbox relays: processes that publish the event log, in sequence order, to a system outside the database.
//!
//! A relay cannot hold a database lock while it publishes, so one instance at a time holds a relay by a lease
//! ([`Store::claim_relay`](crate::Store::claim_relay)) that it renews on every round; its position moves only
//! while it still holds the lease ([`Store::advance_relay`](crate::Store::advance_relay)). An instance that dies
//! leaves the lease to expire, and the next holder resumes from the last position stored. Delivery is therefore at
//! least once: the receiving side removes duplicates by the event's sequence.

use chrono::{DateTime, Utc};

/// Where a relay stands against the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayStatus {
    /// The sequence of the last event the relay has published and recorded (0 before the first).
    pub position: i64,
    /// The sequence of the log's last event (0 for an empty log).
    pub head: i64,
    /// When the oldest event not yet published was appended; `None` when the relay is caught up.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

impl RelayStatus {
    /// How far behind the log's head the relay is, in events.
    pub fn lag_events(&self) -> i64 {
        (self.head - self.position).max(0)
    }

    /// How long the oldest event not yet published has waited, at `now`.
    pub fn lag(&self, now: DateTime<Utc>) -> std::time::Duration {
        self.oldest_pending_at.and_then(|at| (now - at).to_std().ok()).unwrap_or_default()
    }
}
