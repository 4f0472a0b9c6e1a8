//! The HTTP side of the generator: one shared keep-alive client, the routes' URLs built once, the simulated
//! users' sessions, and the requests of setup (register, login, refresh, fund, read a balance).
//!
//! Requests of the traffic phase are built by [`super::drive`] with [`Api`]'s URLs and sent with [`Api::send`],
//! which reads every body to the end (so the connection goes back to the pool) and parses only the fields the
//! generator uses.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use banksim_core::currency::Currency;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::amount;

/// Header carrying a money request's idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Header the server sets on an answer replayed from an earlier request with the same idempotency key.
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Longest the generator waits for one answer. Above the server's own request timeout (30 s by default), so a
/// slow answer shows up as the server's 504 rather than as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the generator waits to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a setup request is tried when the server answers 429 or 503.
const SETUP_ATTEMPTS_MAX: u32 = 30;

/// How often a setup request is tried when the server does not answer.
const SETUP_TRANSPORT_ATTEMPTS_MAX: u32 = 5;

/// Wait after a 503 without `Retry-After`.
pub const BACKPRESSURE_WAIT_DEFAULT: Duration = Duration::from_millis(50);

/// Wait after a 429 without `Retry-After`.
const RATE_LIMIT_WAIT_DEFAULT: Duration = Duration::from_secs(1);

/// Longest wait honoured from a `Retry-After`, so a wrong header cannot stall the run.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// The API being driven: the shared client and every URL, built once.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    /// `POST /api/v1/auth/register`.
    register_url: Url,
    /// `POST /api/v1/auth/login`.
    login_url: Url,
    /// `POST /api/v1/auth/refresh`.
    refresh_url: Url,
    /// `POST /api/v1/transactions/credit`.
    pub credit_url: Url,
    /// `POST /api/v1/transactions/debit`.
    pub debit_url: Url,
    /// `POST /api/v1/transactions/transfer`.
    pub transfer_url: Url,
    /// `GET /api/v1/balances/current?currency=…`.
    pub balance_url: Url,
    /// `GET /api/v1/transactions/history?limit=20`.
    pub history_url: Url,
    /// `POST /api/v1/transactions/batch`.
    pub batch_url: Url,
    /// `/api/v1/transactions`, the base of rollback URLs.
    transactions_url: Url,
}

impl Api {
    /// A client for the API at `base` (`http://host:port`), keeping up to `connections` idle connections.
    pub fn new(base: &str, connections: u32, currency: Currency) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        let parsed = Url::parse(&base).with_context(|| format!("--url {base:?} is not a URL"))?;
        if parsed.scheme() != "http" {
            bail!("--url {base:?}: only plain http:// is supported (this build has no TLS)");
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            bail!("--url {base:?}: give the server's base URL, without a query or fragment");
        }
        let url =
            |text: String| Url::parse(&text).with_context(|| format!("--url {base:?} makes the bad URL {text:?}"));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections as usize)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // The generator only talks to the server under test, never through a proxy from the environment.
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        let api = format!("{base}/api/v1");
        Ok(Self {
            http,
            register_url: url(format!("{api}/auth/register"))?,
            login_url: url(format!("{api}/auth/login"))?,
            refresh_url: url(format!("{api}/auth/refresh"))?,
            credit_url: url(format!("{api}/transactions/credit"))?,
            debit_url: url(format!("{api}/transactions/debit"))?,
            transfer_url: url(format!("{api}/transactions/transfer"))?,
            balance_url: url(format!("{api}/balances/current?currency={}", currency.code()))?,
            history_url: url(format!("{api}/transactions/history?limit=20"))?,
            batch_url: url(format!("{api}/transactions/batch"))?,
            transactions_url: url(format!("{api}/transactions"))?,
            base,
        })
    }

    /// Checks that the server answers `GET /healthz`, so a wrong URL fails at once with a clear message.
    pub async fn check_reachable(&self) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.base);
        let response = self.http.get(&url).send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        response.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            bail!("{url} answered {status}: is this a banksim server?");
        }
        Ok(())
    }

    /// `POST /api/v1/transactions/{id}/rollback`.
    pub fn rollback_url(&self, id: Uuid) -> Url {
        self.transaction_action_url(id, "rollback")
    }

    /// `POST /api/v1/transactions/{id}/post`: posts a hold.
    pub fn post_hold_url(&self, id: Uuid) -> Url {
        self.transaction_action_url(id, "post")
    }

    fn transaction_action_url(&self, id: Uuid, action: &str) -> Url {
        let mut url = self.transactions_url.clone();
        url.path_segments_mut().expect("an http URL has a path").extend([id.to_string().as_str(), action]);
        url
    }

    /// A GET request. URLs are parsed once, in [`Api::new`], and cloned for each request.
    pub fn get(&self, url: &Url) -> RequestBuilder {
        self.http.get(url.clone())
    }

    /// A POST request.
    pub fn post(&self, url: &Url) -> RequestBuilder {
        self.http.post(url.clone())
    }

    /// Sends a request and reads its whole answer, timing both. On a 2xx answer the body's `id` is parsed when
    /// `want_id` is set; on an error answer, its `error_code`.
    pub async fn send(&self, request: RequestBuilder, want_id: bool) -> Result<Answer, reqwest::Error> {
        let started = Instant::now();
        let response = request.send().await?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let replayed = response.headers().get(IDEMPOTENT_REPLAYED).is_some_and(|value| value == "true");
        let body = response.bytes().await?;
        let latency = started.elapsed();
        let (id, error_code) = if status.is_success() {
            let id = if want_id { serde_json::from_slice::<IdOnly>(&body).ok().map(|body| body.id) } else { None };
            (id, None)
        } else {
            let code = serde_json::from_slice::<ErrorOnly<'_>>(&body).ok().and_then(|body| body.error_code);
            (None, code.map(|code| code.into_owned().into_boxed_str()))
        };
        Ok(Answer { status, latency, retry_after, replayed, id, error_code })
    }

    /// Sends a setup request until it gets an answer that is neither 429 nor 503, waiting as told by
    /// `Retry-After`, and retrying transport errors. `build` makes the request again for every attempt.
    async fn send_patiently(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        let mut last_problem = String::new();
        let mut transport_errors = 0;
        for _ in 1..=SETUP_ATTEMPTS_MAX {
            match build().send().await {
                Ok(response) => {
                    let status = response.status();
                    let wait = retry_after(&response);
                    let body = response.bytes().await.map(|bytes| bytes.to_vec());
                    match (status, body) {
                        (StatusCode::TOO_MANY_REQUESTS, _) => {
                            last_problem = "429 rate limited".to_owned();
                            tokio::time::sleep(wait.unwrap_or(RATE_LIMIT_WAIT_DEFAULT)).await;
                        }
                        (StatusCode::SERVICE_UNAVAILABLE, _) => {
                            last_problem = "503 unavailable".to_owned();
                            tokio::time::sleep(wait.unwrap_or(BACKPRESSURE_WAIT_DEFAULT)).await;
                        }
                        (status, Ok(body)) => return Ok((status, body)),
                        (_, Err(err)) => last_problem = format!("reading the answer: {err}"),
                    }
                }
                Err(err) => {
                    transport_errors += 1;
                    if transport_errors == SETUP_TRANSPORT_ATTEMPTS_MAX {
                        return Err(err).context(format!("{what}: no answer after {transport_errors} attempts"));
                    }
                    tokio::time::sleep(Duration::from_millis(100) * transport_errors).await;
                }
            }
        }
        bail!("{what}: no usable answer after {SETUP_ATTEMPTS_MAX} attempts (last: {last_problem})")
    }

    /// Registers the user (a 409 `email_taken` or `username_taken` means an earlier run did), then logs in.
    pub async fn register_or_login(&self, username: String, email: String, password: &str) -> anyhow::Result<SimUser> {
        let registration = Registration { username: &username, email: &email, password };
        let (status, body) = self
            .send_patiently("registering", || self.http.post(self.register_url.clone()).json(&registration))
            .await?;
        match status {
            StatusCode::CREATED => {}
            StatusCode::CONFLICT => {
                let code = error_code(&body);
                if !matches!(code.as_deref(), Some("email_taken" | "username_taken")) {
                    bail!("registering {username}: 409 {}", String::from_utf8_lossy(&body));
                }
            }
            status => bail!("registering {username}: {status} {}", String::from_utf8_lossy(&body)),
        }
        let credentials = Credentials { email: &email, password };
        let (status, body) =
            self.send_patiently("logging in", || self.http.post(self.login_url.clone()).json(&credentials)).await?;
        if status == StatusCode::UNAUTHORIZED {
            bail!(
                "logging in {email}: the user exists but the password is refused: pass the --password it was \
                 created with, or another --seed"
            );
        }
        if status != StatusCode::OK {
            bail!("logging in {email}: {status} {}", String::from_utf8_lossy(&body));
        }
        let login: LoginAnswer = serde_json::from_slice(&body).context("reading the login answer")?;
        Ok(SimUser { id: login.user.id, email, session: RwLock::new(Session::new(login.tokens)?) })
    }

    /// Trades the user's refresh token for a new pair; if that fails (the token was revoked, say), logs in again.
    pub async fn refresh(&self, user: &SimUser, password: &str) -> anyhow::Result<()> {
        let refresh_token = user.session.read().map_err(|_| poisoned())?.refresh_token.clone();
        let body = RefreshRequest { refresh_token: &refresh_token };
        let (status, answer) =
            self.send_patiently("refreshing a token", || self.http.post(self.refresh_url.clone()).json(&body)).await?;
        let tokens: Tokens = if status == StatusCode::OK {
            serde_json::from_slice(&answer).context("reading the refresh answer")?
        } else {
            let credentials = Credentials { email: &user.email, password };
            let (status, answer) = self
                .send_patiently("logging in again", || self.http.post(self.login_url.clone()).json(&credentials))
                .await?;
            if status != StatusCode::OK {
                bail!("logging in {} again: {status} {}", user.email, String::from_utf8_lossy(&answer));
            }
            serde_json::from_slice::<LoginAnswer>(&answer).context("reading the login answer")?.tokens
        };
        *user.session.write().map_err(|_| poisoned())? = Session::new(tokens)?;
        Ok(())
    }

    /// Credits `amount` to the user with the idempotency key `key`, retrying with the same key when there is no
    /// answer. True if money moved now (see [`moved_now`]).
    pub async fn fund(&self, user: &SimUser, amount: &str, currency: Currency, key: Uuid) -> anyhow::Result<bool> {
        let body = MoneyRequest { to_user_id: None, amount, currency: currency.code(), pending: false };
        let key = key_header(key);
        let authorization = user.authorization()?;
        let (mut attempts, mut transport_errors) = (0, 0);
        let answer = loop {
            attempts += 1;
            let request = self
                .http
                .post(self.credit_url.clone())
                .header(AUTHORIZATION, authorization.clone())
                .header(IDEMPOTENCY_KEY, key.clone())
                .json(&body);
            // Not `send_patiently`: whether money moved is only known from the answer's `Idempotent-Replayed`.
            match self.send(request, false).await {
                Ok(answer) if answer.status == StatusCode::SERVICE_UNAVAILABLE && attempts < SETUP_ATTEMPTS_MAX => {
                    tokio::time::sleep(answer.retry_after.unwrap_or(BACKPRESSURE_WAIT_DEFAULT)).await;
                }
                Ok(answer) => break answer,
                Err(_) if transport_errors + 1 < SETUP_TRANSPORT_ATTEMPTS_MAX => {
                    transport_errors += 1;
                    tokio::time::sleep(Duration::from_millis(100) * transport_errors).await;
                }
                Err(err) => return Err(err).context(format!("funding {}", user.email)),
            }
        };
        if answer.status != StatusCode::CREATED {
            bail!(
                "funding {}: {} {}",
                user.email,
                answer.status,
                answer.error_code.as_deref().unwrap_or("no error_code")
            );
        }
        Ok(moved_now(answer.replayed, transport_errors > 0))
    }

    /// The user's balance in `currency`, in minor units.
    pub async fn balance(&self, user: &SimUser, currency: Currency) -> anyhow::Result<i64> {
        let authorization = user.authorization()?;
        let (status, body) = self
            .send_patiently("reading a balance", || {
                self.http.get(self.balance_url.clone()).header(AUTHORIZATION, authorization.clone())
            })
            .await?;
        if status != StatusCode::OK {
            bail!("reading the balance of {}: {status} {}", user.email, String::from_utf8_lossy(&body));
        }
        let balance: BalanceAnswer = serde_json::from_slice(&body).context("reading a balance answer")?;
        amount::parse_number(&balance.amount, currency)
            .map_err(|message| anyhow::anyhow!("the balance of {}: {message}", user.email))
    }
}

/// One answer, with only what the generator looks at.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// From sending the request to the last byte of the body.
    pub latency: Duration,
    /// The `Retry-After` header, in seconds, if any.
    pub retry_after: Option<Duration>,
    /// Whether the server replayed a stored answer (`Idempotent-Replayed: true`).
    pub replayed: bool,
    /// The created transaction's id, for a 2xx answer when asked for.
    pub id: Option<Uuid>,
    /// The `error_code` of an error answer's body.
    pub error_code: Option<Box<str>>,
}

/// A simulated user and their current session.
#[derive(Debug)]
pub struct SimUser {
    /// The user's id.
    pub id: Uuid,
    /// The login email.
    pub email: String,
    session: RwLock<Session>,
}

impl SimUser {
    /// The `Authorization` header of the current access token (cheap to clone).
    pub fn authorization(&self) -> anyhow::Result<HeaderValue> {
        Ok(self.session.read().map_err(|_| poisoned())?.authorization.clone())
    }

    /// When the session should be refreshed: once two thirds of its access token's life have passed.
    pub fn refresh_at(&self) -> anyhow::Result<Instant> {
        Ok(self.session.read().map_err(|_| poisoned())?.refresh_at)
    }
}

/// Whether a 201 answer to a money request means money moved during this run. A replayed answer normally
/// comes from an earlier run that sent the same idempotency key (the same `--run-id`): that money moved then,
/// not now. But after an attempt whose outcome was unknown (no answer, or a 5xx that may follow a commit), a
/// replay is the stored answer of that attempt of ours, so the money did move now.
pub fn moved_now(replayed: bool, earlier_attempt_unknown: bool) -> bool {
    !replayed || earlier_attempt_unknown
}

/// The name and email of user `index` of the simulation seeded with `seed`: the same on every run, so reruns
/// find the users of earlier ones.
pub fn user_identity(seed: u64, index: u32) -> (String, String) {
    let username = format!("sim{seed}_{index:05}");
    let email = format!("sim{seed}.{index:05}@simulate.example.com");
    (username, email)
}

/// The idempotency key as a header value.
pub fn key_header(key: Uuid) -> HeaderValue {
    let mut buffer = Uuid::encode_buffer();
    HeaderValue::from_str(key.hyphenated().encode_lower(&mut buffer)).expect("a UUID is a valid header value")
}

#[derive(Debug)]
struct Session {
    authorization: HeaderValue,
    refresh_token: String,
    refresh_at: Instant,
}

impl Session {
    fn new(tokens: Tokens) -> anyhow::Result<Self> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", tokens.access_token))
            .context("the access token is not a valid header value")?;
        authorization.set_sensitive(true);
        Ok(Self {
            authorization,
            refresh_token: tokens.refresh_token,
            refresh_at: Instant::now() + Duration::from_secs(tokens.expires_in) * 2 / 3,
        })
    }
}

/// The wait a `Retry-After` header asks for, in whole seconds as banksim sends it (an HTTP date is ignored),
/// capped at [`RETRY_AFTER_MAX`].
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let seconds = response.headers().get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds).min(RETRY_AFTER_MAX))
}

fn poisoned() -> anyhow::Error {
    anyhow::anyhow!("a session lock was poisoned by a panic")
}

fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorOnly<'_>>(body).ok().and_then(|body| body.error_code).map(|code| code.into_owned())
}

#[derive(Serialize)]
struct Registration<'a> {
    username: &'a str,
    email: &'a str,
    password: &'a str,
}

#[derive(Serialize)]
struct Credentials<'a> {
    email: &'a str,
    password: &'a str,
}

#[derive(Serialize)]
struct RefreshRequest<'a> {
    refresh_token: &'a str,
}

/// The body of a credit, a debit or a transfer. The amount is exact decimal text.
#[derive(Debug, Serialize)]
pub struct MoneyRequest<'a> {
    /// The payee of a transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_user_id: Option<Uuid>,
    /// Decimal text such as `"12.34"`.
    pub amount: &'a str,
    /// ISO 4217 code.
    pub currency: &'static str,
    /// A transfer held until it is posted (two-phase).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

#[derive(Deserialize)]
struct LoginAnswer {
    user: UserId,
    #[serde(flatten)]
    tokens: Tokens,
}

#[derive(Deserialize)]
struct UserId {
    id: Uuid,
}

#[derive(Deserialize)]
struct Tokens {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct BalanceAnswer {
    amount: serde_json::Number,
}

#[derive(Deserialize)]
struct IdOnly {
    id: Uuid,
}

#[derive(Deserialize)]
struct ErrorOnly<'a> {
    #[serde(borrow)]
    error_code: Option<std::borrow::Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_valid_and_depend_only_on_seed_and_index() {
        let (username, email) = user_identity(42, 7);
        assert_eq!((username.as_str(), email.as_str()), ("sim42_00007", "sim42.00007@simulate.example.com"));
        assert_eq!(user_identity(42, 7), (username, email));
        let (longest, _) = user_identity(u64::MAX, 99_999);
        assert!(longest.len() <= 50 && longest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }

    #[test]
    fn money_bodies_are_small_and_exact() {
        let credit = MoneyRequest { to_user_id: None, amount: "12.34", currency: "USD", pending: false };
        assert_eq!(serde_json::to_string(&credit).expect("json"), r#"{"amount":"12.34","currency":"USD"}"#);
        let to = Uuid::from_u128(1);
        let transfer = MoneyRequest { to_user_id: Some(to), amount: "0.01", currency: "USD", pending: false };
        assert_eq!(
            serde_json::to_string(&transfer).expect("json"),
            format!(r#"{{"to_user_id":"{to}","amount":"0.01","currency":"USD"}}"#)
        );
    }

    #[test]
    fn a_replay_counts_as_movement_only_after_an_attempt_we_did_not_hear_back_from() {
        assert!(moved_now(false, false));
        assert!(moved_now(false, true));
        assert!(!moved_now(true, false), "an earlier run's answer: that money moved then");
        assert!(moved_now(true, true), "our own lost attempt's answer: the money moved now");
    }

    #[test]
    fn error_codes_are_read_from_error_bodies() {
        let body = br#"{"error":"not enough","code":400,"error_code":"insufficient_funds","request_id":"r"}"#;
        assert_eq!(error_code(body).as_deref(), Some("insufficient_funds"));
        assert_eq!(error_code(b"not json"), None);
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(Api::new("http://127.0.0.1:8080/", 4, Currency::USD).is_ok());
        assert!(Api::new("https://bank.example.com", 4, Currency::USD).is_err());
        assert!(Api::new("not a url", 4, Currency::USD).is_err());
        assert!(Api::new("http://127.0.0.1:8080/?x=1", 4, Currency::USD).is_err());
        let prefixed = Api::new("http://127.0.0.1:8080/bank", 4, Currency::USD).expect("a base URL with a path");
        assert_eq!(prefixed.credit_url.as_str(), "http://127.0.0.1:8080/bank/api/v1/transactions/credit");
        let api = Api::new("http://127.0.0.1:8080/", 4, Currency::EUR).expect("api");
        assert_eq!(api.balance_url.as_str(), "http://127.0.0.1:8080/api/v1/balances/current?currency=EUR");
        assert_eq!(
            api.rollback_url(Uuid::nil()).as_str(),
            "http://127.0.0.1:8080/api/v1/transactions/00000000-0000-0000-0000-000000000000/rollback"
        );
    }
}
