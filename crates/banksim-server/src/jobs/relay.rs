//! The outbox relay: publishes every event of the log, in sequence order, to a NATS JetStream stream.
//!
//! Each event goes to the subject `banksim.events.<aggregate_type>` with its sequence as `Nats-Msg-Id`, so that
//! JetStream drops a message it already holds. One instance publishes at a time: it holds the relay's lease in the
//! database (renewed every round) and records its position there after JetStream has acknowledged the events, like
//! a projection's checkpoint. Delivery is at least once on the wire and exactly once in the stream:
//!
//! - A round publishes a batch without waiting (one TCP connection keeps it in order), then awaits every
//!   acknowledgement in order and records the last acknowledged sequence.
//! - After a failure, a restart or a change of holder, the relay first asks the stream for its last message's
//!   `Nats-Msg-Id` and resumes after it: the stream, not the recorded position, is the truth. So an event published
//!   but not yet recorded (the holder died between the two) is not published again, however long ago that was,
//!   and events a crashed NATS server lost after acknowledging them are published again. The stream's
//!   de-duplication window only has to cover a holder's own retries.
//! - A stream whose last event is beyond the database's log holds another database's events: the relay refuses
//!   to mix them and says so in the log until an operator points it elsewhere.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, header};
use banksim_store::{EventRecord, StoreError};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::app::AppState;

/// The relay's name in the database (its row of `event_relays`).
pub const RELAY: &str = "nats";

/// The subjects every event goes to: `banksim.events.<aggregate_type>`.
pub const SUBJECT_PREFIX: &str = "banksim.events";

/// How long JetStream waits for a duplicate of a message it already holds (a holder's own retries).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long a publish may wait for JetStream's acknowledgement before the round counts as failed.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a round stopped.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error(
        "the stream's last event is {stream} but this database's log ends at {log}: it holds another database's \
         events; point NATS_STREAM at a stream of this database"
    )]
    ForeignStream { stream: i64, log: i64 },
}

impl RelayError {
    fn nats(err: impl std::fmt::Display) -> Self {
        Self::Nats(err.to_string())
    }
}

/// The running relay of this instance.
pub struct EventRelay {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl EventRelay {
    /// Connects to NATS in the background (the instance starts and serves while NATS is down) and follows the log.
    pub fn start(state: AppState, url: &str) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let url = url.to_owned();
        let task = tokio::spawn(async move {
            let idle = Duration::from_millis(state.config.relay_poll_interval_ms);
            let client = match async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .max_reconnects(None)
                .connect(url.as_str())
                .await
            {
                Ok(client) => client,
                Err(err) => {
                    tracing::error!(error = %err, "NATS_URL cannot be used; the event relay is off");
                    return;
                }
            };
            let context = jetstream::ContextBuilder::new().timeout(ACK_TIMEOUT).build(client);
            let mut relay = Relay { state, context, holder: Uuid::new_v4(), cursor: None };
            loop {
                let full = match relay.round().await {
                    Ok(published) => published >= relay.state.config.relay_batch_max as usize,
                    Err(err) => {
                        relay.state.metrics.relay().failures.inc();
                        tracing::warn!(error = %err, "event relay round failed; trying again after the poll interval");
                        relay.cursor = None;
                        false
                    }
                };
                if *stopped.borrow() {
                    return;
                }
                if !full {
                    tokio::select! {
                        () = tokio::time::sleep(idle) => {}
                        _ = stopped.changed() => return,
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// Stops after the round in progress.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Relay {
    state: AppState,
    context: jetstream::Context,
    /// This instance's name in the relay's lease.
    holder: Uuid,
    /// The sequence of the last event in the stream, once this holder has read it; `None` after a failure or a
    /// lost lease, when it must be read again.
    cursor: Option<i64>,
}

impl Relay {
    /// Takes or renews the lease, then publishes the next events after the position; returns how many.
    async fn round(&mut self) -> Result<usize, RelayError> {
        let store = &self.state.store;
        let now = self.state.clock.now();
        let lease = chrono::Duration::milliseconds(i64::try_from(self.state.config.relay_lease_ms).unwrap_or(i64::MAX));
        if store.claim_relay(RELAY, self.holder, now + lease, now).await?.is_none() {
            // Another instance publishes; look again next round.
            self.cursor = None;
            return Ok(0);
        }
        let cursor = match self.cursor {
            Some(cursor) => cursor,
            None => {
                let published = self.stream_end().await?;
                let head = store.relay_status(RELAY).await?.head;
                if published > head {
                    return Err(RelayError::ForeignStream { stream: published, log: head });
                }
                store.advance_relay(RELAY, self.holder, published, now).await?;
                *self.cursor.insert(published)
            }
        };
        let events = store.list_events(cursor, self.state.config.relay_batch_max).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let (acknowledged, failure) = self.publish(&events).await;
        if let Some(last) = acknowledged {
            let published = events.iter().take_while(|e| e.sequence <= last).count();
            self.state.metrics.relay().published.inc_by(published as u64);
            self.cursor = Some(last);
            if !store.advance_relay(RELAY, self.holder, last, self.state.clock.now()).await? {
                // The lease ran out mid-round and another instance took over: it resumes from the stream's end.
                self.cursor = None;
            }
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(events.len()),
        }
    }

    /// Makes sure the stream exists and reads the sequence of the last event it holds (0 when empty).
    async fn stream_end(&self) -> Result<i64, RelayError> {
        let mut stream = self
            .context
            .get_or_create_stream(stream::Config {
                name: self.state.config.nats_stream.clone(),
                subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(RelayError::nats)?;
        let last = stream.info().await.map_err(RelayError::nats)?.state.last_sequence;
        if last == 0 {
            return Ok(0);
        }
        let message = stream.get_raw_message(last).await.map_err(RelayError::nats)?;
        let sequence = message
            .headers
            .get(header::NATS_MESSAGE_ID)
            .and_then(|id| id.as_str().parse::<i64>().ok())
            .ok_or_else(|| RelayError::Nats(format!("the stream's message {last} has no event sequence")))?;
        Ok(sequence)
    }

    /// Publishes `events` in order without waiting, then awaits each acknowledgement in order. Returns the last
    /// sequence acknowledged without a gap before it, and the first failure.
    async fn publish(&self, events: &[EventRecord]) -> (Option<i64>, Option<RelayError>) {
        let mut pending = Vec::with_capacity(events.len());
        let mut failure = None;
        for event in events {
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_MESSAGE_ID, event.sequence.to_string().as_str());
            let subject = format!("{SUBJECT_PREFIX}.{}", event.aggregate_type);
            match self.context.publish_with_headers(subject, headers, message(event).into()).await {
                Ok(ack) => pending.push((event.sequence, ack)),
                Err(err) => {
                    failure = Some(RelayError::nats(err));
                    break;
                }
            }
        }
        let mut acknowledged = None;
        for (sequence, ack) in pending {
            match ack.await {
                Ok(_) => acknowledged = Some(sequence),
                Err(err) => {
                    failure.get_or_insert(RelayError::nats(err));
                    break;
                }
            }
        }
        (acknowledged, failure)
    }
}

/// An event as published: every field of the log's record, as JSON.
fn message(event: &EventRecord) -> Vec<u8> {
    let body = json!({
        "sequence": event.sequence,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "version": event.version,
        "event_type": event.event_type,
        "data": event.data,
        "created_at": event.created_at,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    #[test]
    fn a_published_event_carries_every_field_of_the_log() {
        let event = EventRecord {
            sequence: 42,
            aggregate_type: "transaction".into(),
            aggregate_id: Uuid::nil(),
            version: 1,
            event_type: "MoneyTransferred".into(),
            data: json!({"amount_minor": 500}),
            created_at: Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap(),
        };
        let body: serde_json::Value = serde_json::from_slice(&message(&event)).expect("json");
        assert_eq!(
            body,
            json!({
                "sequence": 42,
                "aggregate_type": "transaction",
                "aggregate_id": "00000000-0000-0000-0000-000000000000",
                "version": 1,
                "event_type": "MoneyTransferred",
                "data": {"amount_minor": 500},
                "created_at": "2026-12-01T12:00:00Z",
            })
        );
    }
}
