//! The HTTP side of the generator, through `banksim-client`: one shared keep-alive client with every URL built
//! once, the simulated users' sessions, and the requests of setup (register, login, refresh, fund, read a
//! balance), which use the client's own retries (429, 503, lost answers; money with the same idempotency key).
//!
//! Requests of the traffic phase are built by [`super::drive`] with the same client but sent one attempt at a time
//! ([`banksim_client::Call::attempt`]): every attempt is a measurement, and a 503 there is backpressure to count,
//! not to wait out. [`Answer`] is what the generator keeps of one attempt.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use banksim_client::{AmountRequest, Attempt, Client, Error, ErrorCode, RegisterRequest, RetryPolicy, StatusCode};
use banksim_core::currency::Currency;
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use uuid::Uuid;

/// Longest the generator waits for one answer. Above the server's own request timeout (30 s by default), so a
/// slow answer shows up as the server's 504 rather than as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the generator waits to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a setup request is tried when the server answers 429 or 503 or does not answer.
const SETUP_ATTEMPTS_MAX: u32 = 30;

/// Wait after a 503 without `Retry-After`.
pub const BACKPRESSURE_WAIT_DEFAULT: Duration = Duration::from_millis(50);

/// Longest wait honoured from a `Retry-After`, so a wrong header cannot stall the run.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// The API being driven: the shared client (its pool and URLs).
#[derive(Debug)]
pub struct Api {
    /// The client, without credentials; each user acts through [`SimUser::client`].
    client: Client,
}

impl Api {
    /// A client for the API at `base` (`http://host:port`), keeping up to `connections` idle connections, sending
    /// `headers` with every request, and showing every attempt to `observer` (the recorder of `--record`), if given.
    pub fn new(
        base: &str,
        connections: u32,
        headers: &[(reqwest::header::HeaderName, HeaderValue)],
        observer: Option<std::sync::Arc<dyn banksim_client::Observer>>,
    ) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/');
        let parsed = Url::parse(base).with_context(|| format!("--url {base:?} is not a URL"))?;
        if parsed.scheme() != "http" {
            bail!("--url {base:?}: only plain http:// is supported (this build has no TLS)");
        }
        let setup_retries = RetryPolicy {
            attempts_max: SETUP_ATTEMPTS_MAX,
            delay_min: Duration::from_millis(100),
            retry_after_max: RETRY_AFTER_MAX,
            ..RetryPolicy::default()
        };
        let mut builder = Client::builder(base)
            .pool_max_idle_per_host(connections as usize)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .retry(setup_retries);
        if let Some(observer) = observer {
            builder = builder.observer(observer);
        }
        for (name, value) in headers {
            builder = builder.header(name.clone(), value.clone());
        }
        let client = builder.build().map_err(|err| anyhow::anyhow!("--url {base:?}: {err}"))?;
        Ok(Self { client })
    }

    /// Checks that the server answers `GET /healthz`, so a wrong URL fails at once with a clear message.
    pub async fn check_reachable(&self) -> anyhow::Result<()> {
        match self.client.health().retry(RetryPolicy::none()).await {
            Ok(_) => Ok(()),
            Err(Error::Transport(err)) => Err(err).context("cannot reach the server's /healthz"),
            Err(err) => bail!("/healthz answered {err}: is this a banksim server?"),
        }
    }

    /// Registers the user (a 409 `email_taken` or `username_taken` means an earlier run did), then logs in.
    pub async fn register_or_login(&self, username: String, email: String, password: &str) -> anyhow::Result<SimUser> {
        let registration = RegisterRequest::new(username.as_str(), email.as_str(), password);
        match self.client.register(&registration).await {
            Ok(_) => {}
            Err(err) if matches!(err.error_code(), Some(ErrorCode::EmailTaken | ErrorCode::UsernameTaken)) => {}
            Err(err) => return Err(err).context(format!("registering {username}")),
        }
        let login = match self.client.login(&email, password).await {
            Ok(login) => login,
            Err(err) if err.error_code() == Some(&ErrorCode::InvalidCredentials) => bail!(
                "logging in {email}: the user exists but the password is refused: pass the --password it was \
                 created with, or another --seed"
            ),
            Err(err) => return Err(err).context(format!("logging in {email}")),
        };
        let session = Session::new(&self.client, &login.access_token, login.refresh_token, login.expires_in)?;
        Ok(SimUser { id: login.user.id, email, session: RwLock::new(session) })
    }

    /// Trades the user's refresh token for a new pair; if that fails (the token was revoked, say), logs in again.
    pub async fn refresh(&self, user: &SimUser, password: &str) -> anyhow::Result<()> {
        let refresh_token = user.session.read().map_err(|_| poisoned())?.refresh_token.clone();
        let session = match self.client.refresh(&refresh_token).await {
            Ok(tokens) => Session::new(&self.client, &tokens.access_token, tokens.refresh_token, tokens.expires_in)?,
            Err(_) => {
                let login = self
                    .client
                    .login(&user.email, password)
                    .await
                    .with_context(|| format!("logging in {} again", user.email))?;
                Session::new(&self.client, &login.access_token, login.refresh_token, login.expires_in)?
            }
        };
        *user.session.write().map_err(|_| poisoned())? = session;
        Ok(())
    }

    /// Credits `amount` to the user with the idempotency key `key`, which the client reuses on every retry. True
    /// if money moved now (see [`moved_now`]).
    pub async fn fund(&self, user: &SimUser, amount: &str, currency: Currency, key: Uuid) -> anyhow::Result<bool> {
        let reply = user
            .client()
            .credit(&AmountRequest::new(amount, currency))
            .idempotency_key(key)
            .parse_as::<serde::de::IgnoredAny>()
            .reply()
            .await
            .with_context(|| format!("funding {}", user.email))?;
        if reply.status != StatusCode::CREATED {
            bail!("funding {}: {}", user.email, reply.status);
        }
        Ok(moved_now(reply.replayed, reply.earlier_attempt_unknown))
    }

    /// The user's balance in `currency`, in minor units.
    pub async fn balance(&self, user: &SimUser, currency: Currency) -> anyhow::Result<i64> {
        let balance = user
            .client()
            .current_balance(currency)
            .await
            .with_context(|| format!("reading the balance of {}", user.email))?;
        balance.amount.to_minor(currency).with_context(|| format!("the balance of {}", user.email))
    }
}

/// One answer, with only what the generator looks at.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// From sending the request to the last byte of the body.
    pub latency: Duration,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<Duration>,
    /// Whether the server replayed a stored answer (`Idempotent-Replayed: true`).
    pub replayed: bool,
    /// The created transaction's id, for a 2xx answer to a money request.
    pub id: Option<Uuid>,
    /// The `error_code` of an error answer's body.
    pub error_code: Option<ErrorCode>,
}

impl Answer {
    /// What the generator keeps of one attempt of a money request (its answer parsed as little as it can be).
    pub fn of_money<T: Created>(attempt: Attempt<T>) -> Self {
        let (id, error_code) = match attempt.result {
            Ok(created) => (created.id(), None),
            Err(err) => (None, err.error_code().cloned()),
        };
        Self::new(attempt.status, attempt.latency, attempt.retry_after, attempt.replayed, id, error_code)
    }

    /// What the generator keeps of one attempt of a read (its answer checked to be JSON and dropped).
    pub fn of_read(attempt: Attempt<serde::de::IgnoredAny>) -> Self {
        let error_code = attempt.result.err().and_then(|err| err.error_code().cloned());
        Self::new(attempt.status, attempt.latency, attempt.retry_after, attempt.replayed, None, error_code)
    }

    fn new(
        status: StatusCode,
        latency: Duration,
        retry_after: Option<Duration>,
        replayed: bool,
        id: Option<Uuid>,
        error_code: Option<ErrorCode>,
    ) -> Self {
        let retry_after = retry_after.map(|wait| wait.min(RETRY_AFTER_MAX));
        Self { status, latency, retry_after, replayed, id, error_code }
    }
}

/// What the generator reads from a money request's answer: the transaction's id, if it needs one.
pub trait Created: serde::de::DeserializeOwned {
    /// The created transaction's id.
    fn id(&self) -> Option<Uuid>;
}

/// The one field the generator reads from a movement's answer.
#[derive(Debug, Deserialize)]
pub struct CreatedId {
    /// The transaction's id.
    pub id: Uuid,
}

impl Created for CreatedId {
    fn id(&self) -> Option<Uuid> {
        Some(self.id)
    }
}

impl Created for serde::de::IgnoredAny {
    /// A batch's answer (many transactions), checked to be JSON and dropped: its movements are not rolled back.
    fn id(&self) -> Option<Uuid> {
        None
    }
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
    /// The client acting as this user with the current access token (cheap: the pool is shared).
    pub fn client(&self) -> Client {
        self.session.read().expect("session locks are never poisoned: nothing panics while holding one").client.clone()
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

#[derive(Debug)]
struct Session {
    /// The shared client with this session's `Authorization` header.
    client: Client,
    refresh_token: String,
    refresh_at: Instant,
}

impl Session {
    fn new(api: &Client, access_token: &str, refresh_token: String, expires_in: u64) -> anyhow::Result<Self> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {access_token}"))
            .context("the access token is not a valid header value")?;
        authorization.set_sensitive(true);
        Ok(Self {
            client: api.with_authorization(authorization),
            refresh_token,
            refresh_at: Instant::now() + Duration::from_secs(expires_in) * 2 / 3,
        })
    }
}

fn poisoned() -> anyhow::Error {
    anyhow::anyhow!("a session lock was poisoned by a panic")
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
    fn a_replay_counts_as_movement_only_after_an_attempt_we_did_not_hear_back_from() {
        assert!(moved_now(false, false));
        assert!(moved_now(false, true));
        assert!(!moved_now(true, false), "an earlier run's answer: that money moved then");
        assert!(moved_now(true, true), "our own lost attempt's answer: the money moved now");
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(Api::new("http://127.0.0.1:8080/", 4, &[], None).is_ok());
        assert!(Api::new("https://bank.example.com", 4, &[], None).is_err());
        assert!(Api::new("not a url", 4, &[], None).is_err());
        assert!(Api::new("http://127.0.0.1:8080/?x=1", 4, &[], None).is_err());
        assert!(Api::new("http://127.0.0.1:8080/bank", 4, &[], None).is_ok(), "a base URL with a path");
    }
}
