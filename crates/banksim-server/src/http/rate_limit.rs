//! Rate limits, with the standard `RateLimit-*` and `Retry-After` headers and a 429 `rate_limited` beyond them.
//!
//! Three groups of routes have a budget per minute each (0 turns a group off):
//! - `auth` (register, login, refresh, logout, together), per client IP: `AUTH_RATE_LIMIT_PER_MINUTE`, default 5,
//!   so guessing passwords or flooding registrations is slow;
//! - `money` (`POST /api/v1/transactions/…` and creating a schedule), per user: `MONEY_RATE_LIMIT_PER_MINUTE`;
//! - `read` (`GET /api/v1/…` but the service routes), per user: `READ_RATE_LIMIT_PER_MINUTE`.
//!
//! The user is the one of the request's access token, checked as the auth extractors check it (signature and
//! claims); a request without a valid token is not counted in these groups (the route refuses it anyway).
//!
//! With Redis, every instance counts in Redis ([`crate::coordination::shared_limit`], GCRA). Without Redis, and
//! whenever Redis gives no answer (its breaker open, a call failing or late), each instance counts in-process
//! (fixed one-minute windows; the total across instances is then at most instances × limit), so a request is
//! never let through unchecked, nor refused with a 5xx, because of Redis. The in-process counts go on while Redis
//! decides (each request Redis allows is counted here too), so the fallback starts from this instance's recent
//! traffic rather than from nothing.

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use uuid::Uuid;

use crate::app::AppState;
use crate::config::Config;
use crate::coordination::{Redis, SharedLimiter};
use crate::error::ApiError;
use crate::http::client::client_ip;
use crate::metrics::{Metrics, RateLimitCounters};
use crate::service::scenarios::RUNNER_PASS_HEADER;

/// The routes that share the auth budget.
const AUTH_PREFIX: &str = "/api/v1/auth/";
/// The money routes (with `POST`), beside creating a schedule.
const MONEY_PREFIX: &str = "/api/v1/transactions/";
/// Creating a schedule (with `POST`).
const SCHEDULES_PATH: &str = "/api/v1/scheduled-transactions";
/// Every versioned route.
const API_PREFIX: &str = "/api/v1/";
/// The service routes under `/api/v1`, which no user budget covers.
const SERVICE_PREFIXES: [&str; 3] = ["/api/v1/ping", "/api/v1/metrics/", "/api/v1/test/"];
/// Most clients tracked at once per group; the oldest windows go first beyond it.
const CLIENTS_MAX: u64 = 100_000;
/// The period of every budget.
pub const WINDOW: Duration = Duration::from_secs(60);

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

/// A fixed-window counter per client, in this instance's memory.
pub struct RateLimiter<K = IpAddr> {
    limit: u32,
    window: Duration,
    windows: moka::sync::Cache<K, Arc<Mutex<Window>>>,
    decisions: RateLimitCounters,
}

struct Window {
    started: Instant,
    count: u32,
}

impl<K: Hash + Eq + Send + Sync + 'static> RateLimiter<K> {
    /// `limit` requests per `window` per client, counting decisions into `decisions`; a limit of 0 allows
    /// everything.
    pub fn new(limit: u32, window: Duration, decisions: RateLimitCounters) -> Self {
        let windows = moka::sync::Cache::builder().max_capacity(CLIENTS_MAX).time_to_idle(window).build();
        Self { limit, window, windows, decisions }
    }

    /// Counts one request of `client` and says whether it may go ahead.
    pub fn check(&self, client: K) -> Decision {
        let entry = self.window_of(client);
        let mut window = entry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = self.roll(&mut window);
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

    /// Counts one request of `client` that another limiter allowed, without deciding or counting a decision.
    pub fn record(&self, client: K) {
        let entry = self.window_of(client);
        let mut window = entry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.roll(&mut window);
        window.count = window.count.saturating_add(1);
    }

    fn window_of(&self, client: K) -> Arc<Mutex<Window>> {
        self.windows.get_with(client, || Arc::new(Mutex::new(Window { started: Instant::now(), count: 0 })))
    }

    /// Starts a new window when the current one is over; returns now.
    fn roll(&self, window: &mut Window) -> Instant {
        let now = Instant::now();
        if now.duration_since(window.started) >= self.window {
            *window = Window { started: now, count: 0 };
        }
        now
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

/// A group of routes with a budget of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The auth routes, per client IP.
    Auth,
    /// The money routes, per user.
    Money,
    /// The reads, per user.
    Read,
}

impl Group {
    /// Every group.
    pub const ALL: [Self; 3] = [Self::Auth, Self::Money, Self::Read];

    /// Its name, in metrics and Redis keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Money => "money",
            Self::Read => "read",
        }
    }

    /// Its limit per minute in `config` (0: off).
    fn limit(self, config: &Config) -> u32 {
        match self {
            Self::Auth => config.auth_rate_limit_per_minute,
            Self::Money => config.money_rate_limit_per_minute,
            Self::Read => config.read_rate_limit_per_minute,
        }
    }

    /// The group of a request, from its method and path alone.
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        if path.starts_with(AUTH_PREFIX) {
            Some(Self::Auth)
        } else if *method == Method::POST && (path.starts_with(MONEY_PREFIX) || path == SCHEDULES_PATH) {
            Some(Self::Money)
        } else if *method == Method::GET
            && path.starts_with(API_PREFIX)
            && !SERVICE_PREFIXES.iter().any(|service| path.starts_with(service))
        {
            Some(Self::Read)
        } else {
            None
        }
    }
}

/// Whose budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A client IP (the auth group).
    Client(IpAddr),
    /// A user (the money and read groups).
    User(Uuid),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Client(ip) => write!(f, "ip:{ip}"),
            Self::User(id) => write!(f, "user:{id}"),
        }
    }
}

/// One group's budget: its limit, its in-process counts and its metrics.
struct Budget {
    group: Group,
    limit: u32,
    local: RateLimiter<Subject>,
    decisions: RateLimitCounters,
    fallbacks: Counter,
}

/// Every group's budget, counted in Redis when it answers and in-process otherwise.
pub struct RateLimits {
    budgets: [Budget; 3],
    shared: Option<SharedLimiter>,
}

impl RateLimits {
    /// The budgets of `config`, counting in `redis` when there is one; the series of the groups that are on are
    /// created in `metrics` at once (auth's always are).
    pub fn new(config: &Config, metrics: &Metrics, redis: Option<Arc<Redis>>) -> Self {
        let budgets = Group::ALL.map(|group| {
            let limit = group.limit(config);
            let decisions = if limit > 0 { metrics.rate_limit(group.name()) } else { RateLimitCounters::default() };
            let fallbacks = if limit > 0 && redis.is_some() {
                metrics.rate_limit_fallbacks(group.name())
            } else {
                Counter::default()
            };
            let local = RateLimiter::new(limit, WINDOW, decisions.clone());
            Budget { group, limit, local, decisions, fallbacks }
        });
        Self { budgets, shared: redis.map(SharedLimiter::new) }
    }

    fn budget(&self, group: Group) -> &Budget {
        &self.budgets[group as usize]
    }

    /// The limit of `group` per minute (0: off).
    pub fn limit(&self, group: Group) -> u32 {
        self.budget(group).limit
    }

    /// Requests let through and refused with 429 since start, over every group that is on.
    pub fn decisions(&self) -> (u64, u64) {
        self.budgets.iter().fold((0, 0), |(allowed, limited), budget| {
            (allowed + budget.decisions.allowed.get(), limited + budget.decisions.limited.get())
        })
    }

    /// Counts one request of `subject` in `group` and says whether it may go ahead: Redis decides when it
    /// answers, this instance otherwise.
    pub async fn check(&self, group: Group, subject: Subject) -> Decision {
        let budget = self.budget(group);
        if let Some(shared) = &self.shared {
            let key = format!("banksim:rate:{}:{subject}", group.name());
            match shared.check(&key, budget.limit, WINDOW).await {
                Ok(decision) => {
                    match decision {
                        Decision::Allowed { .. } => {
                            budget.decisions.allowed.inc();
                            budget.local.record(subject);
                        }
                        Decision::Limited { .. } => {
                            budget.decisions.limited.inc();
                        }
                    }
                    return decision;
                }
                Err(err) => {
                    budget.fallbacks.inc();
                    tracing::debug!(group = budget.group.name(), error = %err, "rate limit decided in-process");
                }
            }
        }
        budget.local.check(subject)
    }
}

/// Whether the request comes from this process's scenario runner (simulation mode's console), whose simulated
/// users all log in from the server's own address.
fn from_scenario_runner(state: &AppState, request: &Request) -> bool {
    let (Some(scenarios), Some(sent)) = (&state.scenarios, request.headers().get(RUNNER_PASS_HEADER)) else {
        return false;
    };
    scenarios.pass().admits(sent.as_bytes())
}

/// Whose budget `request` of `group` spends: the client IP for auth, the token's user for the others (none for a
/// request without a valid access token).
fn subject(state: &AppState, group: Group, request: &Request) -> Option<Subject> {
    match group {
        Group::Auth if from_scenario_runner(state, request) => None,
        Group::Auth => {
            client_ip(request.extensions(), request.headers(), &state.config.trusted_proxies).map(Subject::Client)
        }
        Group::Money | Group::Read => {
            let token = crate::auth::bearer(request.headers()).ok().flatten()?;
            let claims = state.tokens.verify_access(token).ok()?;
            Some(Subject::User(claims.user_id))
        }
    }
}

/// Applies each group's budget to its routes; other routes pass untouched.
pub async fn limit_requests(
    state: &AppState,
    request: Request,
    next: impl AsyncFnOnce(Request) -> Response,
) -> Response {
    let limits = &state.rate_limits;
    let Some(group) = Group::of(request.method(), request.uri().path()).filter(|g| limits.limit(*g) > 0) else {
        return next(request).await;
    };
    let Some(subject) = subject(state, group, &request) else {
        return next(request).await;
    };
    let limit = limits.limit(group);
    match limits.check(group, subject).await {
        Decision::Allowed { remaining, reset_secs } => {
            let mut response = next(request).await;
            let headers = response.headers_mut();
            for (name, value) in [
                ("ratelimit-limit", u64::from(limit)),
                ("ratelimit-remaining", u64::from(remaining)),
                ("ratelimit-reset", reset_secs),
            ] {
                headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
            }
            response
        }
        Decision::Limited { retry_after_secs } => {
            match subject {
                Subject::Client(ip) => tracing::info!(group = group.name(), client.ip = %ip, "rate limit reached"),
                Subject::User(id) => tracing::info!(group = group.name(), user.id = %id, "rate limit reached"),
            }
            let mut response = ApiError::rate_limited(retry_after_secs).into_response();
            let headers = response.headers_mut();
            headers.insert(HeaderName::from_static("ratelimit-limit"), HeaderValue::from(limit));
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

    #[test]
    fn requests_allowed_elsewhere_spend_the_local_budget_without_counting_decisions() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60), RateLimitCounters::default());
        let user = Subject::User(Uuid::nil());
        limiter.record(user);
        limiter.record(user);
        assert!(matches!(limiter.check(user), Decision::Allowed { remaining: 0, .. }));
        assert!(matches!(limiter.check(user), Decision::Limited { .. }));
        assert_eq!(limiter.counts(), (1, 1), "only its own decisions are counted");
    }

    #[test]
    fn routes_fall_into_their_groups() {
        let group = |method: Method, path: &str| Group::of(&method, path);
        assert_eq!(group(Method::POST, "/api/v1/auth/login"), Some(Group::Auth));
        assert_eq!(group(Method::POST, "/api/v1/transactions/credit"), Some(Group::Money));
        assert_eq!(group(Method::POST, "/api/v1/transactions/3f1c/rollback"), Some(Group::Money));
        assert_eq!(group(Method::POST, "/api/v1/scheduled-transactions"), Some(Group::Money));
        assert_eq!(group(Method::POST, "/api/v1/scheduled-transactions/3f1c/pause"), None);
        assert_eq!(group(Method::GET, "/api/v1/balances/current"), Some(Group::Read));
        assert_eq!(group(Method::GET, "/api/v1/transactions/history"), Some(Group::Read));
        assert_eq!(group(Method::GET, "/api/v1/me"), Some(Group::Read));
        for service in ["/api/v1/ping", "/api/v1/metrics/basic", "/api/v1/metrics/circuit-breakers"] {
            assert_eq!(group(Method::GET, service), None, "{service}");
        }
        assert_eq!(group(Method::GET, "/api/v1/test/circuit-breaker/success"), None);
        assert_eq!(group(Method::GET, "/readyz"), None);
        assert_eq!(group(Method::PUT, "/api/v1/users/3f1c"), None);
    }

    #[test]
    fn subjects_name_their_kind_in_keys() {
        assert_eq!(Subject::Client([203, 0, 113, 9].into()).to_string(), "ip:203.0.113.9");
        assert_eq!(Subject::User(Uuid::nil()).to_string(), "user:00000000-0000-0000-0000-000000000000");
    }
}
