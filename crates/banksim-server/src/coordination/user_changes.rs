//! User changes reach every instance at once: each `UserDirectory::forget` is published on a Redis channel, and
//! every instance follows the channel and forgets the user in its own cache.
//!
//! - **Publishing** is fire-and-forget, under the `redis` breaker and timeout: a change is committed in the
//!   database before it is published, and a message that is lost (Redis down) only leaves other instances as
//!   stale as they would be without Redis, bounded by `USER_CACHE_TTL_MS`. The message is the user's id as text,
//!   so an operator can force a forget with `redis-cli PUBLISH banksim:user-changes <id>`.
//! - **Following** is a background job on a connection of its own (a subscribed connection can send nothing
//!   else). Pub/sub does not keep messages for a subscriber that is away, so each time the job (re)subscribes it
//!   forgets every cached user: whatever changed while it was not listening is read again. When the connection
//!   breaks it reconnects with a doubling backoff (from 100 ms to 5 s); a `PING` every few seconds notices a
//!   connection that died silently. It stops with the other background jobs.
//! - An instance receives its own messages too; forgetting twice costs one extra read of the user.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use crate::coordination::Redis;
use crate::service::users::UserDirectory;

/// The channel of user changes.
pub const USER_CHANGES_CHANNEL: &str = "banksim:user-changes";

/// First wait before reconnecting the follower; it doubles on each failure in a row.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
/// Longest wait before reconnecting the follower.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);
/// How often a subscribed connection is checked with `PING`.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Shortest wait for the answer to a keepalive `PING`.
const KEEPALIVE_TIMEOUT_MIN: Duration = Duration::from_secs(1);

/// Tells the other instances that a user changed.
#[derive(Debug, Clone)]
pub struct UserChangePublisher {
    redis: Arc<Redis>,
}

impl UserChangePublisher {
    /// A publisher on `redis`.
    pub fn new(redis: Arc<Redis>) -> Self {
        Self { redis }
    }

    /// Publishes `id` in the background (outside a tokio runtime, nothing is sent).
    pub fn publish(&self, id: Uuid) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let redis = self.redis.clone();
        runtime.spawn(
            async move {
                if let Err(err) = redis.publish(USER_CHANGES_CHANNEL, id.to_string()).await {
                    tracing::warn!(user.id = %id, error = %err,
                        "user change not published; other instances see it within USER_CACHE_TTL_MS");
                }
            }
            .instrument(tracing::Span::current()),
        );
    }
}

/// The background job that applies other instances' user changes to this instance's cache.
pub struct UserChangeSubscriber {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl UserChangeSubscriber {
    /// Starts following the channel, forgetting each announced user in `users`.
    pub fn start(redis: Arc<Redis>, users: UserDirectory) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut delay = RECONNECT_DELAY_MIN;
            loop {
                let ended = tokio::select! {
                    ended = follow(&redis, &users, &mut delay) => ended,
                    _ = stopped.changed() => return,
                };
                tracing::warn!(error = %ended, retry_in_ms = delay.as_millis() as u64,
                    "user changes: not following Redis; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stopped.changed() => return,
                }
                delay = (delay * 2).min(RECONNECT_DELAY_MAX);
            }
        });
        Self { stop, task }
    }

    /// Stops following.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Why following stopped.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("Redis did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Failed(#[from] ::redis::RedisError),
    #[error("the connection closed")]
    Closed,
}

/// Subscribes and applies the messages until the connection fails. Resets `delay` once subscribed.
async fn follow(redis: &Redis, users: &UserDirectory, delay: &mut Duration) -> Ended {
    let timeout = redis.timeout();
    let pubsub = match tokio::time::timeout(timeout, redis.client().get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(err)) => return err.into(),
        Err(_) => return Ended::TimedOut(timeout),
    };
    let (mut sink, mut messages) = pubsub.split();
    match tokio::time::timeout(timeout, sink.subscribe(USER_CHANGES_CHANNEL)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return err.into(),
        Err(_) => return Ended::TimedOut(timeout),
    }
    // Whatever changed while this instance was not listening was not heard: read every user again.
    users.forget_all_locally();
    *delay = RECONNECT_DELAY_MIN;
    tracing::info!(channel = USER_CHANGES_CHANNEL, "user changes: following Redis");
    let mut keepalive = tokio::time::interval(KEEPALIVE_INTERVAL);
    keepalive.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return Ended::Closed };
                match std::str::from_utf8(message.get_payload_bytes()).ok().and_then(|text| text.parse::<Uuid>().ok()) {
                    Some(id) => users.forget_locally(id),
                    None => tracing::warn!(channel = USER_CHANGES_CHANNEL, "user changes: ignoring a message that is not a user id"),
                }
            }
            _ = keepalive.tick() => {
                // A keepalive is not on any request's path: it may wait longer than a command before giving up.
                let patience = timeout.max(KEEPALIVE_TIMEOUT_MIN);
                match tokio::time::timeout(patience, sink.ping::<::redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return err.into(),
                    Err(_) => return Ended::TimedOut(patience),
                }
            }
        }
    }
}
