//! A circuit breaker: closed → open after `failure_threshold` consecutive failures → half-open once `reset_timeout`
//! has passed (at most `half_open_max_calls` trial calls at a time) → closed after a successful trial, open again
//! after a failed one.
//!
//! While open, a call is refused at once (the caller answers 503 with `Retry-After`) instead of waiting on a
//! dependency that is known to be down: no pile-up of requests, and the dependency gets room to recover.
//!
//! Time is tokio's (`tokio::time::Instant`), so tests pause and advance it instead of sleeping.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

/// How a breaker trips and recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting a trial call through.
    pub reset_timeout: Duration,
    /// Trial calls allowed at once while half-open.
    pub half_open_max_calls: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self { failure_threshold: 5, reset_timeout: Duration::from_secs(10), half_open_max_calls: 1 }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused at once.
    Open,
    /// A bounded number of trial calls go through.
    HalfOpen,
}

impl BreakerState {
    /// The API's name (`closed`, `open`, `half-open`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

/// A call refused because the breaker is open (or half-open with its trials taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit {name} is open")]
pub struct Open {
    /// The breaker's name.
    pub name: &'static str,
    /// When a trial may be let through.
    pub retry_after: Duration,
}

/// The outcome of a guarded call: refused by the breaker, or the call's own error.
#[derive(Debug, thiserror::Error)]
pub enum Guarded<E> {
    /// The breaker refused the call; it was not made.
    #[error(transparent)]
    Open(Open),
    /// The call was made and failed.
    #[error(transparent)]
    Failed(E),
}

/// What `GET /api/v1/metrics/circuit-breakers` shows of one breaker.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BreakerReport {
    /// `closed`, `open` or `half-open`.
    #[schema(value_type = String, example = "closed")]
    pub state: BreakerState,
    /// Calls asked for (refused ones included).
    pub total_requests: u64,
    /// Calls that failed.
    pub total_failures: u64,
    /// Calls that succeeded.
    pub total_successes: u64,
    /// Failures in a row now.
    pub current_failures: u32,
    /// The last failure.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Times the breaker opened.
    pub opens: u64,
}

#[derive(Debug)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trials: u32 },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    last_failure_at: Option<DateTime<Utc>>,
}

/// One breaker, shared by every caller of its dependency.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: &'static str,
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    requests: AtomicU64,
    failures: AtomicU64,
    successes: AtomicU64,
    opens: AtomicU64,
}

/// Leave to make one call; say how it went with [`Permit::succeeded`] or [`Permit::failed`]. A permit dropped
/// without a verdict gives its trial slot back and counts as neither.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    trial: bool,
    settled: bool,
}

impl Permit<'_> {
    /// The call succeeded: a trial closes the breaker, a closed breaker forgets its failures. A call let through
    /// before the breaker opened that succeeds late changes nothing: only a trial decides an open breaker's fate.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.successes.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.breaker.lock();
        match inner.phase {
            Phase::Closed { .. } => inner.phase = Phase::Closed { failures: 0 },
            Phase::HalfOpen { .. } if self.trial => {
                inner.phase = Phase::Closed { failures: 0 };
                tracing::info!(breaker = self.breaker.name, "circuit closed after a successful trial");
            }
            Phase::HalfOpen { .. } | Phase::Open { .. } => {}
        }
    }

    /// The call failed: a trial opens the breaker again; a closed one opens at its threshold. (A late failure of a
    /// call let through before the breaker opened is counted, and changes nothing else.)
    pub fn failed(mut self) {
        self.settled = true;
        self.breaker.failures.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.breaker.lock();
        inner.last_failure_at = Some(Utc::now());
        let failures = match inner.phase {
            Phase::Closed { failures } => failures + 1,
            Phase::HalfOpen { .. } if self.trial => self.breaker.settings.failure_threshold,
            Phase::HalfOpen { .. } | Phase::Open { .. } => return,
        };
        if failures >= self.breaker.settings.failure_threshold {
            inner.phase = Phase::Open { until: Instant::now() + self.breaker.settings.reset_timeout };
            self.breaker.opens.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(breaker = self.breaker.name, failures, "circuit opened");
        } else {
            inner.phase = Phase::Closed { failures };
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled && self.trial {
            let mut inner = self.breaker.lock();
            if let Phase::HalfOpen { trials } = &mut inner.phase {
                *trials = trials.saturating_sub(1);
            }
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker named `name` (`database`, `replica`, `redis`, …).
    pub fn new(name: &'static str, settings: BreakerSettings) -> Self {
        Self {
            name,
            settings: BreakerSettings { failure_threshold: settings.failure_threshold.max(1), ..settings },
            inner: Mutex::new(Inner { phase: Phase::Closed { failures: 0 }, last_failure_at: None }),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            opens: AtomicU64::new(0),
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Leave for one call, or [`Open`] at once.
    pub fn permit(&self) -> Result<Permit<'_>, Open> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        let now = Instant::now();
        if let Phase::Open { until } = inner.phase {
            if now < until {
                return Err(Open { name: self.name, retry_after: until - now });
            }
            inner.phase = Phase::HalfOpen { trials: 0 };
            tracing::info!(breaker = self.name, "circuit half-open: letting a trial through");
        }
        match &mut inner.phase {
            Phase::Closed { .. } => Ok(Permit { breaker: self, trial: false, settled: false }),
            Phase::HalfOpen { trials } if *trials < self.settings.half_open_max_calls => {
                *trials += 1;
                Ok(Permit { breaker: self, trial: true, settled: false })
            }
            _ => Err(Open { name: self.name, retry_after: self.settings.reset_timeout }),
        }
    }

    /// Makes `call` under the breaker: refused at once while open; its error counts as a failure when
    /// `is_failure` says so (a refusal by the dependency's own rules is not its failure).
    pub async fn run<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
        is_failure: impl FnOnce(&E) -> bool,
    ) -> Result<T, Guarded<E>> {
        let permit = self.permit().map_err(Guarded::Open)?;
        match call.await {
            Ok(value) => {
                permit.succeeded();
                Ok(value)
            }
            Err(error) if is_failure(&error) => {
                permit.failed();
                Err(Guarded::Failed(error))
            }
            Err(error) => {
                permit.succeeded();
                Err(Guarded::Failed(error))
            }
        }
    }

    /// Where it stands now (an open breaker whose timeout has passed reads as half-open).
    pub fn state(&self) -> BreakerState {
        match self.lock().phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until } if Instant::now() < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Its figures, for the report.
    pub fn report(&self) -> BreakerReport {
        let state = self.state();
        let inner = self.lock();
        BreakerReport {
            state,
            total_requests: self.requests.load(Ordering::Relaxed),
            total_failures: self.failures.load(Ordering::Relaxed),
            total_successes: self.successes.load(Ordering::Relaxed),
            current_failures: match inner.phase {
                Phase::Closed { failures } => failures,
                _ => self.settings.failure_threshold,
            },
            last_failure_at: inner.last_failure_at,
            opens: self.opens.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(
            "test",
            BreakerSettings { failure_threshold: 2, reset_timeout: Duration::from_secs(10), half_open_max_calls: 1 },
        )
    }

    async fn fail(breaker: &CircuitBreaker) -> Result<(), Guarded<&'static str>> {
        breaker.run(async { Err::<(), _>("down") }, |_| true).await
    }

    async fn succeed(breaker: &CircuitBreaker) -> Result<(), Guarded<&'static str>> {
        breaker.run(async { Ok::<(), &'static str>(()) }, |_| true).await
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_it_and_it_refuses_at_once() {
        let breaker = breaker();
        assert!(matches!(fail(&breaker).await, Err(Guarded::Failed("down"))));
        assert_eq!(breaker.state(), BreakerState::Closed, "one failure is below the threshold");
        assert!(matches!(fail(&breaker).await, Err(Guarded::Failed("down"))));
        assert_eq!(breaker.state(), BreakerState::Open);
        let mut called = false;
        let refused = breaker
            .run(
                async {
                    called = true;
                    Ok::<(), &str>(())
                },
                |_| true,
            )
            .await;
        assert!(
            matches!(refused, Err(Guarded::Open(Open { retry_after, .. })) if retry_after <= Duration::from_secs(10))
        );
        assert!(!called, "an open breaker makes no call");
        let report = breaker.report();
        assert_eq!((report.total_requests, report.total_failures, report.opens), (3, 2, 1));
        assert!(report.last_failure_at.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count_of_failures_in_a_row() {
        let breaker = breaker();
        fail(&breaker).await.expect_err("fails");
        succeed(&breaker).await.expect("succeeds");
        fail(&breaker).await.expect_err("fails");
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.report().current_failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_timeout_one_trial_goes_through_and_its_success_closes_it() {
        let breaker = breaker();
        fail(&breaker).await.expect_err("fails");
        fail(&breaker).await.expect_err("fails");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let trial = breaker.permit().expect("a trial");
        assert!(breaker.permit().is_err(), "one trial at a time");
        trial.succeeded();
        assert_eq!(breaker.state(), BreakerState::Closed);
        succeed(&breaker).await.expect("closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_opens_it_again_for_a_whole_timeout() {
        let breaker = breaker();
        fail(&breaker).await.expect_err("fails");
        fail(&breaker).await.expect_err("fails");
        tokio::time::advance(Duration::from_secs(10)).await;
        fail(&breaker).await.expect_err("the trial fails");
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.report().opens, 2);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(breaker.permit().is_err(), "still open");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(breaker.permit().is_ok(), "half-open again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_of_a_call_made_before_the_breaker_opened_changes_nothing() {
        let breaker = breaker();
        let early = breaker.permit().expect("closed");
        let also_early = breaker.permit().expect("closed");
        fail(&breaker).await.expect_err("fails");
        fail(&breaker).await.expect_err("fails");
        assert_eq!(breaker.state(), BreakerState::Open);
        early.succeeded();
        assert_eq!(breaker.state(), BreakerState::Open, "a late success does not close it");
        also_early.failed();
        assert_eq!(breaker.report().opens, 1, "a late failure does not open it again");
        tokio::time::advance(Duration::from_secs(10)).await;
        let late = breaker.permit().expect("a trial");
        assert!(breaker.permit().is_err());
        late.succeeded();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_abandoned_without_a_verdict_frees_its_slot() {
        let breaker = breaker();
        fail(&breaker).await.expect_err("fails");
        fail(&breaker).await.expect_err("fails");
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(breaker.permit().expect("a trial"));
        assert!(breaker.permit().is_ok(), "the slot came back");
    }

    #[tokio::test(start_paused = true)]
    async fn errors_that_are_not_the_dependencys_failure_do_not_count() {
        let breaker = breaker();
        for _ in 0..5 {
            let refused = breaker.run(async { Err::<(), _>("not found") }, |_| false).await;
            assert!(matches!(refused, Err(Guarded::Failed("not found"))));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
