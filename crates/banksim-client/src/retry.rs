//! When a call is sent again, and how long the client waits first.
//!
//! The rule is: resend only what cannot do harm twice.
//!
//! - A request that never left (the connection could not be opened) can always be sent again.
//! - 429 is a refusal before anything was done: sent again after `Retry-After`, whatever the route.
//! - Reads, login and `PUT`s ([`Safety::Repeatable`]) are sent again after a 502, 503 or 504 and after a lost
//!   answer: repeating them changes nothing.
//! - Money requests ([`Safety::Keyed`]) carry an `Idempotency-Key`, the same on every attempt, so the server
//!   applies them at most once and answers a repeat with the stored answer. They are sent again after a 503 and
//!   after any answer that leaves the outcome unknown: a lost answer (timeout, reset after sending), 500, 502,
//!   504, or 503 `commit_outcome_unknown`.
//! - Other writes ([`Safety::Once`]: register, refresh, logout, cancelling a schedule, deleting a user) are sent
//!   again only when the server says it did nothing (429, or a 503 `write_queue_full` / `circuit_open`): a
//!   repeated refresh would present a used token and revoke the whole session.
//! - No other 4xx is ever retried: the same request would get the same answer.
//!
//! Waits follow `Retry-After` when the server sends one (whole seconds, as banksim does), and give up at once when
//! it asks for longer than [`RetryPolicy::retry_after_max`] (the caller learns the 429/503 instead of hanging);
//! otherwise they grow exponentially with jitter, from `backon`'s [`ExponentialBuilder`].

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use reqwest::StatusCode;

use crate::error::{ApiError, ErrorCode, TransportError};

/// How a call may be repeated (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// Repeating it changes nothing: reads, login, `PUT`s.
    Repeatable,
    /// A money request: repeated with the same `Idempotency-Key`.
    Keyed,
    /// Repeated only when the server says it did nothing.
    Once,
}

/// How often and how patiently a call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retry).
    pub attempts_max: u32,
    /// The first backoff wait.
    pub delay_min: Duration,
    /// The longest backoff wait.
    pub delay_max: Duration,
    /// The longest `Retry-After` honoured; a longer one ends the call with its error.
    pub retry_after_max: Duration,
    /// Whether backoff waits are jittered (so many clients do not retry in step).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// 4 attempts, backoff from 50 ms to 2 s with jitter, `Retry-After` up to 10 s.
    fn default() -> Self {
        Self {
            attempts_max: 4,
            delay_min: Duration::from_millis(50),
            delay_max: Duration::from_secs(2),
            retry_after_max: Duration::from_secs(10),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry: for a caller that runs its own loop over [`crate::Call::attempt`].
    pub fn none() -> Self {
        Self { attempts_max: 1, ..Self::default() }
    }

    /// The default policy with `attempts_max` attempts.
    pub fn attempts(attempts_max: u32) -> Self {
        Self { attempts_max: attempts_max.max(1), ..Self::default() }
    }

    /// The backoff waits between attempts, one per retry.
    pub(crate) fn backoff(&self) -> ExponentialBackoff {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.delay_min)
            .with_max_delay(self.delay_max)
            .with_max_times(self.attempts_max.saturating_sub(1) as usize);
        if self.jitter { builder.with_jitter().build() } else { builder.build() }
    }
}

/// Whether an attempt that ended with `error` may be sent again under `safety`.
pub(crate) fn may_retry_api(safety: Safety, error: &ApiError) -> bool {
    let refused_before_doing_anything =
        matches!(error.error_code, ErrorCode::WriteQueueFull | ErrorCode::CircuitOpen | ErrorCode::RateLimited);
    match error.status {
        StatusCode::TOO_MANY_REQUESTS => true,
        StatusCode::SERVICE_UNAVAILABLE => safety != Safety::Once || refused_before_doing_anything,
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => safety != Safety::Once,
        StatusCode::INTERNAL_SERVER_ERROR => safety == Safety::Keyed,
        _ => false,
    }
}

/// Whether an attempt that got no answer may be sent again under `safety`.
pub(crate) fn may_retry_transport(safety: Safety, error: &TransportError) -> bool {
    !error.sent || safety != Safety::Once
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: StatusCode, code: ErrorCode) -> ApiError {
        ApiError {
            status,
            error_code: code,
            message: String::new(),
            request_id: None,
            errors: Vec::new(),
            retry_after: None,
            service: None,
            batch_results: Vec::new(),
        }
    }

    #[test]
    fn client_errors_other_than_429_are_never_retried() {
        for safety in [Safety::Repeatable, Safety::Keyed, Safety::Once] {
            assert!(may_retry_api(safety, &api(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited)));
            for (status, code) in [
                (StatusCode::BAD_REQUEST, ErrorCode::InsufficientFunds),
                (StatusCode::CONFLICT, ErrorCode::IdempotencyKeyReused),
                (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
                (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ] {
                assert!(!may_retry_api(safety, &api(status, code)), "{status} under {safety:?}");
            }
        }
    }

    #[test]
    fn unknown_outcomes_are_retried_only_with_an_idempotency_key() {
        let lost = api(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError);
        assert!(may_retry_api(Safety::Keyed, &lost));
        assert!(!may_retry_api(Safety::Once, &lost));
        assert!(!may_retry_api(Safety::Repeatable, &lost), "a failing read fails again");
        let unknown = api(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::CommitOutcomeUnknown);
        assert!(may_retry_api(Safety::Keyed, &unknown));
        assert!(!may_retry_api(Safety::Once, &unknown));
        let full = api(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::WriteQueueFull);
        assert!(may_retry_api(Safety::Once, &full), "refused before anything was done");
    }

    #[test]
    fn the_backoff_grows_and_ends() {
        let policy = RetryPolicy { jitter: false, ..RetryPolicy::attempts(4) };
        // backon multiplies by an `f32` factor, so the waits are within a microsecond of doubling.
        let waits: Vec<u128> = policy.backoff().map(|wait| wait.as_millis()).collect();
        assert_eq!(waits, [50, 100, 200]);
        assert_eq!(RetryPolicy::none().backoff().count(), 0);
    }
}
