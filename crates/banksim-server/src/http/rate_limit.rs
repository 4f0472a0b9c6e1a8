//! Rate limits per client IP, with the standard `RateLimit-*` and `Retry-After` headers.
//!
//! The auth routes (register, login, refresh, logout) share one budget per client per minute, so guessing
//! passwords or flooding registrations is slow. Counting is in-process (fixed one-minute windows); with several
//! instances each counts its own share, which bounds the total at instances × limit.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::ApiError;
use crate::http::client::client_ip;
use crate::metrics::RateLimitCounters;

/// The routes that share the auth budget.
const AUTH_PREFIX: &str = "/api/v1/auth/";
/// Most clients tracked at once; the oldest windows go first beyond it.
const CLIENTS_MAX: u64 = 100_000;

/// What a request may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allowed {
        /// Requests left in the window.
        remaining: u32,
        /// Seconds until the window resets.
        reset_secs: u64,
    },
    /// Too many: wait.
    Limited {
        /// Seconds until the window resets.
        retry_after_secs: u64,
    },
}

/// A fixed-window counter per client.
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    windows: moka::sync::Cache<IpAddr, Arc<Mutex<Window>>>,
    decisions: RateLimitCounters,
}

struct Window {
    started: Instant,
    count: u32,
}

impl RateLimiter {
    /// `limit` requests per `window` per client, counting decisions into `decisions`; a limit of 0 allows
    /// everything.
    pub fn new(limit: u32, window: Duration, decisions: RateLimitCounters) -> Self {
        let windows = moka::sync::Cache::builder().max_capacity(CLIENTS_MAX).time_to_idle(window).build();
        Self { limit, window, windows, decisions }
    }

    /// Counts one request of `client` and says whether it may go ahead.
    pub fn check(&self, client: IpAddr) -> Decision {
        let entry =
            self.windows.get_with(client, || Arc::new(Mutex::new(Window { started: Instant::now(), count: 0 })));
        let mut window = entry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(window.started) >= self.window {
            *window = Window { started: now, count: 0 };
        }
        let reset_secs = (self.window - now.duration_since(window.started)).as_secs_f64().ceil() as u64;
        if window.count < self.limit {
            window.count += 1;
            self.decisions.allowed.inc();
            Decision::Allowed { remaining: self.limit - window.count, reset_secs }
        } else {
            self.decisions.limited.inc();
            Decision::Limited { retry_after_secs: reset_secs.max(1) }
        }
    }

    /// Requests allowed and refused so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.decisions.allowed.get(), self.decisions.limited.get())
    }

    /// The limit per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// Applies the auth budget to the auth routes; other routes pass untouched.
pub async fn limit_auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limiter = &state.auth_rate_limit;
    if limiter.limit() == 0 || !request.uri().path().starts_with(AUTH_PREFIX) {
        return next.run(request).await;
    }
    let Some(client) = client_ip(request.extensions(), request.headers(), &state.config.trusted_proxies) else {
        return next.run(request).await;
    };
    match limiter.check(client) {
        Decision::Allowed { remaining, reset_secs } => {
            let mut response = next.run(request).await;
            let headers = response.headers_mut();
            for (name, value) in [
                ("ratelimit-limit", u64::from(limiter.limit())),
                ("ratelimit-remaining", u64::from(remaining)),
                ("ratelimit-reset", reset_secs),
            ] {
                headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
            }
            response
        }
        Decision::Limited { retry_after_secs } => {
            tracing::info!(client.ip = %client, "auth rate limit reached");
            let mut response = ApiError::rate_limited(retry_after_secs).into_response();
            let headers = response.headers_mut();
            headers.insert(HeaderName::from_static("ratelimit-limit"), HeaderValue::from(limiter.limit()));
            headers.insert(HeaderName::from_static("ratelimit-remaining"), HeaderValue::from(0));
            headers.insert(HeaderName::from_static("ratelimit-reset"), HeaderValue::from(retry_after_secs));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_budget_then_waits_for_the_window() {
        let limiter = RateLimiter::new(2, Duration::from_millis(200), RateLimitCounters::default());
        let client: IpAddr = [10, 0, 0, 1].into();
        assert!(matches!(limiter.check(client), Decision::Allowed { remaining: 1, .. }));
        assert!(matches!(limiter.check(client), Decision::Allowed { remaining: 0, .. }));
        assert!(matches!(limiter.check(client), Decision::Limited { retry_after_secs: 1 }));
        assert!(matches!(limiter.check([10, 0, 0, 2].into()), Decision::Allowed { .. }), "budgets are per client");
        std::thread::sleep(Duration::from_millis(250));
        assert!(matches!(limiter.check(client), Decision::Allowed { remaining: 1, .. }), "a new window");
        assert_eq!(limiter.counts(), (4, 1));
    }
}
