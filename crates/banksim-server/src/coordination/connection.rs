//! The connection to Redis: one multiplexed connection for commands, re-established by redis-rs's
//! `ConnectionManager` after it breaks, every command under the `redis` circuit breaker and a short timeout.
//!
//! The connection is made lazily, on the first command: an instance starts, and serves, while Redis is down.
//! redis-rs is told not to retry a failed connection attempt itself: the breaker paces the attempts instead
//! (after `BREAKER_FAILURE_THRESHOLD` failures in a row, no call is made for `BREAKER_RESET_TIMEOUT_MS`; then one
//! trial call, whose success closes the breaker), so a Redis that is down costs each request at most one
//! `REDIS_TIMEOUT_MS` wait before the breaker opens, and nothing while it is open.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, RedisResult};
use tracing::Instrument;

use crate::resilience::{CircuitBreaker, Guarded, Open};

/// Why Redis gave no answer. The callers treat all alike: they decide without Redis.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The `redis` breaker is open: no call was made.
    #[error(transparent)]
    Open(Open),
    /// Redis did not answer in time.
    #[error("Redis did not answer within {0:?}")]
    TimedOut(Duration),
    /// The call failed (no connection, an error reply).
    #[error("Redis call failed: {0}")]
    Failed(RedisError),
}

/// Redis, as this instance reaches it. Cheap to share behind an `Arc`.
pub struct Redis {
    client: Client,
    commands: ConnectionManager,
    breaker: Arc<CircuitBreaker>,
    timeout: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client's connection info may hold a password.
        f.debug_struct("Redis").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Redis {
    /// Redis at `url`, reached lazily (nothing is sent before the first command), each call guarded by `breaker`
    /// and cut off after `timeout`. Needs a tokio runtime.
    pub fn connect(url: &str, timeout: Duration, breaker: Arc<CircuitBreaker>) -> RedisResult<Self> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(0);
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self { client, commands, breaker, timeout })
    }

    /// How long a call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The client, for the connections that are not shared (pub/sub).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `call` on the shared connection, under the breaker and the timeout. Every error counts as a failure of
    /// Redis: banksim's own commands do not fail by design.
    pub async fn call<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let span = span(operation);
        let timeout = self.timeout;
        let attempt = call(self.commands.clone());
        let timed = async move {
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(Unavailable::Failed(error)),
                Err(_) => Err(Unavailable::TimedOut(timeout)),
            }
        };
        match self.breaker.run(timed.instrument(span.clone()), |_| true).await {
            Ok(value) => Ok(value),
            Err(Guarded::Open(open)) => Err(Unavailable::Open(open)),
            Err(Guarded::Failed(error)) => {
                span.record("error.message", tracing::field::display(&error));
                span.record("otel.status_code", "error");
                Err(error)
            }
        }
    }

    /// `PING`: whether Redis answers now (for `/readyz`).
    pub async fn ping(&self) -> Result<(), Unavailable> {
        self.call("ping", |mut connection| async move {
            ::redis::cmd("PING").query_async::<String>(&mut connection).await.map(drop)
        })
        .await
    }

    /// `PUBLISH channel message`; returns how many subscribers received it.
    pub async fn publish(&self, channel: &'static str, message: String) -> Result<u64, Unavailable> {
        self.call("publish", |mut connection| async move {
            ::redis::cmd("PUBLISH").arg(channel).arg(message).query_async::<u64>(&mut connection).await
        })
        .await
    }
}

/// A span for one Redis call when the caller is traced and traces are exported (as the store calls have).
fn span(operation: &'static str) -> tracing::Span {
    if tracing::Span::current().is_none() || !crate::telemetry::exports_traces() {
        return tracing::Span::none();
    }
    tracing::debug_span!(
        "redis",
        otel.name = format!("redis.{operation}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "redis",
        db.operation.name = operation,
        error.message = tracing::field::Empty,
    )
}
