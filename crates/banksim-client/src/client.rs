//! [`Client`]: one shared keep-alive HTTP client, the API's URLs built once, and a [`Call`] per request that
//! carries the idempotency key and the retry policy.

use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{ApiError, Error, TransportError, truncated};
use crate::observe::{Exchange, ExchangeAnswer, Observer};
use crate::retry::{RetryPolicy, Safety, may_retry_api, may_retry_transport};

/// The header of a money request's idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The header on an answer replayed from an earlier request with the same idempotency key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The header of the request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest wait for one answer by default: above the server's own request timeout (30 s by default), so that a
/// slow request ends as the server's 504 rather than as a lost answer.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// Longest wait to open a connection by default.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// A client of one banksim server. Cheap to clone (the connection pool and the URLs are shared); each clone may
/// carry its own access token ([`Client::with_token`]).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    authorization: Authorization,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    urls: Urls,
    retry: RetryPolicy,
    observer: Option<Arc<dyn Observer>>,
    /// Sent with every request.
    headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug, Clone)]
enum Authorization {
    None,
    Bearer(HeaderValue),
    /// A token that is not a valid header value: every call fails with [`Error::Setup`].
    Invalid,
}

/// Every fixed URL of the API, parsed once.
#[derive(Debug)]
pub(crate) struct Urls {
    /// `{base}/api/v1`, the root of the paths built per call.
    pub(crate) api: Url,
    pub(crate) healthz: Url,
    pub(crate) readyz: Url,
    pub(crate) register: Url,
    pub(crate) login: Url,
    pub(crate) refresh: Url,
    pub(crate) logout: Url,
    pub(crate) me: Url,
    pub(crate) users: Url,
    pub(crate) credit: Url,
    pub(crate) debit: Url,
    pub(crate) transfer: Url,
    pub(crate) exchange: Url,
    pub(crate) batch: Url,
    pub(crate) history: Url,
    pub(crate) balances: Url,
    pub(crate) balance_current: Url,
    pub(crate) balance_at_time: Url,
    pub(crate) balance_history: Url,
    pub(crate) statements: Url,
    pub(crate) schedules: Url,
}

impl Urls {
    fn new(base: &str) -> Result<Self, Error> {
        let base = base.trim_end_matches('/');
        let parsed = Url::parse(base).map_err(|err| Error::Setup(format!("{base:?} is not a URL: {err}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Setup(format!("{base:?}: the base URL must be http:// or https://")));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(Error::Setup(format!("{base:?}: give the server's base URL, without a query or fragment")));
        }
        let url = |path: &str| {
            Url::parse(&format!("{base}{path}")).map_err(|err| Error::Setup(format!("{base}{path}: {err}")))
        };
        Ok(Self {
            api: url("/api/v1")?,
            healthz: url("/healthz")?,
            readyz: url("/readyz")?,
            register: url("/api/v1/auth/register")?,
            login: url("/api/v1/auth/login")?,
            refresh: url("/api/v1/auth/refresh")?,
            logout: url("/api/v1/auth/logout")?,
            me: url("/api/v1/me")?,
            users: url("/api/v1/users")?,
            credit: url("/api/v1/transactions/credit")?,
            debit: url("/api/v1/transactions/debit")?,
            transfer: url("/api/v1/transactions/transfer")?,
            exchange: url("/api/v1/transactions/exchange")?,
            batch: url("/api/v1/transactions/batch")?,
            history: url("/api/v1/transactions/history")?,
            balances: url("/api/v1/balances")?,
            balance_current: url("/api/v1/balances/current")?,
            balance_at_time: url("/api/v1/balances/at-time")?,
            balance_history: url("/api/v1/balances/historical")?,
            statements: url("/api/v1/balances/statements")?,
            schedules: url("/api/v1/scheduled-transactions")?,
        })
    }

    /// `{base}/api/v1/<segments…>`, each segment escaped.
    pub(crate) fn path(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        url.path_segments_mut().expect("an http URL has a path").extend(segments);
        url
    }
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    base: String,
    http: Option<reqwest::Client>,
    pool_max_idle_per_host: usize,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    observer: Option<Arc<dyn Observer>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ClientBuilder {
    /// Use this reqwest client (its pool, timeouts and proxies) instead of building one.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Idle keep-alive connections kept per host (default: reqwest's).
    pub fn pool_max_idle_per_host(mut self, connections: usize) -> Self {
        self.pool_max_idle_per_host = connections;
        self
    }

    /// Longest wait for one answer ([`REQUEST_TIMEOUT_DEFAULT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Longest wait to connect ([`CONNECT_TIMEOUT_DEFAULT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The retry policy of every call (each call may override it).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Shows every attempt of the client (and of its clones) to `observer`.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Sends this header with every request of the client (and of its clones).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The client.
    pub fn build(self) -> Result<Client, Error> {
        let urls = Urls::new(&self.base)?;
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .pool_max_idle_per_host(self.pool_max_idle_per_host)
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_nodelay(true)
                .timeout(self.timeout)
                .connect_timeout(self.connect_timeout)
                // The client talks to the server it is given, never through a proxy from the environment.
                .no_proxy()
                .build()
                .map_err(|err| Error::Setup(format!("building the HTTP client: {err}")))?,
        };
        let inner = Inner { http, urls, retry: self.retry, observer: self.observer, headers: self.headers };
        Ok(Client { inner: Arc::new(inner), authorization: Authorization::None })
    }
}

impl Client {
    /// A client of the server at `base` (`http://host:port`, optionally with a path prefix), with the defaults.
    pub fn new(base: &str) -> Result<Self, Error> {
        Self::builder(base).build()
    }

    /// A builder for a client of the server at `base`.
    pub fn builder(base: &str) -> ClientBuilder {
        ClientBuilder {
            base: base.to_owned(),
            http: None,
            pool_max_idle_per_host: usize::MAX,
            timeout: REQUEST_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            retry: RetryPolicy::default(),
            observer: None,
            headers: Vec::new(),
        }
    }

    /// The same client acting with `access_token` (`Authorization: Bearer …`). A token that cannot be a header
    /// value makes every call fail with [`Error::Setup`].
    pub fn with_token(&self, access_token: &str) -> Self {
        let authorization = match HeaderValue::from_str(&format!("Bearer {access_token}")) {
            Ok(mut value) => {
                value.set_sensitive(true);
                Authorization::Bearer(value)
            }
            Err(_) => Authorization::Invalid,
        };
        Self { inner: Arc::clone(&self.inner), authorization }
    }

    /// The same client with a ready `Authorization` header value (cheap: no formatting, no parsing).
    pub fn with_authorization(&self, authorization: HeaderValue) -> Self {
        Self { inner: Arc::clone(&self.inner), authorization: Authorization::Bearer(authorization) }
    }

    /// The same client without credentials.
    pub fn anonymous(&self) -> Self {
        Self { inner: Arc::clone(&self.inner), authorization: Authorization::None }
    }

    /// The URLs, for the route modules.
    pub(crate) fn urls(&self) -> &Urls {
        &self.inner.urls
    }

    /// A call of `method` on `url` without a body. Fixed routes lend their prebuilt URL, so a call of one
    /// allocates no URL until it is sent.
    pub(crate) fn call<'a, T>(&'a self, method: Method, url: Cow<'a, Url>, safety: Safety) -> Call<'a, T> {
        Call {
            client: self,
            method,
            url,
            body: None,
            setup_error: None,
            safety,
            key: None,
            retry: self.inner.retry,
            headers: Vec::new(),
            answer: PhantomData,
        }
    }

    /// A call of `method` on `url` with `body` as JSON.
    pub(crate) fn call_with<'a, T, B: Serialize + ?Sized>(
        &'a self,
        method: Method,
        url: Cow<'a, Url>,
        safety: Safety,
        body: &B,
    ) -> Call<'a, T> {
        let mut call = self.call(method, url, safety);
        match serde_json::to_vec(body) {
            Ok(json) => call.body = Some(Bytes::from(json)),
            Err(err) => call.setup_error = Some(format!("encoding the request body: {err}")),
        }
        call
    }
}

/// An idempotency key: a UUID or any text of 1–255 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(HeaderValue);

impl IdempotencyKey {
    /// A fresh random (v4) key.
    pub fn random() -> Self {
        Self::from(Uuid::new_v4())
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("keys are made from text")
    }
}

impl From<Uuid> for IdempotencyKey {
    fn from(key: Uuid) -> Self {
        let mut buffer = Uuid::encode_buffer();
        let text = key.hyphenated().encode_lower(&mut buffer);
        Self(HeaderValue::from_str(text).expect("a UUID is a valid header value"))
    }
}

impl TryFrom<&str> for IdempotencyKey {
    type Error = Error;

    fn try_from(key: &str) -> Result<Self, Error> {
        HeaderValue::from_str(key)
            .map(Self)
            .map_err(|_| Error::Setup(format!("{key:?} cannot be sent as an Idempotency-Key header")))
    }
}

/// One request to make: built by a [`Client`] method, adjusted with the builder methods, then awaited.
///
/// `.await` gives the answer's body (`Result<T, Error>`), after retries; [`Call::reply`] gives it with the
/// answer's details (status, whether it was replayed, attempts); [`Call::attempt`] sends it exactly once and can
/// be called again to repeat it with the same key.
#[must_use = "a call does nothing until it is awaited"]
#[derive(Debug)]
pub struct Call<'a, T> {
    client: &'a Client,
    method: Method,
    url: Cow<'a, Url>,
    body: Option<Bytes>,
    setup_error: Option<String>,
    safety: Safety,
    key: Option<IdempotencyKey>,
    retry: RetryPolicy,
    headers: Vec<(HeaderName, HeaderValue)>,
    answer: PhantomData<fn() -> T>,
}

/// The answer to a call.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// The parsed body.
    pub body: T,
    /// The answer's status.
    pub status: StatusCode,
    /// The request id the server gave the last attempt (`X-Request-ID`); see [`Reply::request_id`].
    request_id: Option<HeaderValue>,
    /// Whether the server replayed a stored answer (`Idempotent-Replayed: true`): the request was already done,
    /// by an earlier attempt of this call or by an earlier call with the same key.
    pub replayed: bool,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// Whether an earlier attempt of this call may have taken effect without the client learning it (a lost
    /// answer, a 5xx after a possible commit). With `replayed`, this tells whether the effect is this call's own:
    /// `!replayed || earlier_attempt_unknown`.
    pub earlier_attempt_unknown: bool,
    /// The idempotency key sent, for money requests.
    pub idempotency_key: Option<IdempotencyKey>,
    /// From sending the last attempt to the last byte of its answer.
    pub latency: Duration,
}

/// What one attempt got: an answer (a success or an API error), with its details.
#[derive(Debug)]
pub struct Attempt<T> {
    /// The answer's status.
    pub status: StatusCode,
    /// From sending the request to the last byte of the answer.
    pub latency: Duration,
    /// The `X-Request-ID` header; see [`Attempt::request_id`]. Kept as the header value, so that reading an
    /// answer allocates nothing for it.
    request_id: Option<HeaderValue>,
    /// `Idempotent-Replayed: true`.
    pub replayed: bool,
    /// The `Retry-After` header, in whole seconds as banksim sends it (an HTTP date is ignored).
    pub retry_after: Option<Duration>,
    /// The parsed body, or the API error (or [`Error::Decode`]).
    pub result: Result<T, Error>,
}

impl<'a, T: DeserializeOwned> Call<'a, T> {
    /// Sends `key` as the `Idempotency-Key` instead of a random one (money requests get a random one by
    /// default; any other call sends it too if given).
    pub fn idempotency_key(mut self, key: impl Into<IdempotencyKey>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The retry policy of this call.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Adds a header (a fault to simulate, a replica position, …).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Reads the answer's body as `U` instead (a smaller struct, `serde_json::Value`, or
    /// `serde::de::IgnoredAny` to check it is JSON and keep nothing).
    pub fn parse_as<U: DeserializeOwned>(self) -> Call<'a, U> {
        Call {
            client: self.client,
            method: self.method,
            url: self.url,
            body: self.body,
            setup_error: self.setup_error,
            safety: self.safety,
            key: self.key,
            retry: self.retry,
            headers: self.headers,
            answer: PhantomData,
        }
    }

    /// The idempotency key the call sends: the caller's, or a random one for a money request (drawn once, so every
    /// attempt of the call sends the same).
    pub fn key(&mut self) -> Option<&IdempotencyKey> {
        if self.key.is_none() && self.safety == Safety::Keyed {
            self.key = Some(IdempotencyKey::random());
        }
        self.key.as_ref()
    }

    /// Sends the call once and reads its whole answer. Call it again to repeat the request (same key, same body).
    /// `Err` only when no complete answer came back.
    pub async fn attempt(&mut self) -> Result<Attempt<T>, Error> {
        if let Some(problem) = &self.setup_error {
            return Err(Error::Setup(problem.clone()));
        }
        let key = self.key().cloned();
        let mut request = self.client.inner.http.request(self.method.clone(), self.url.as_ref().clone());
        match &self.client.authorization {
            Authorization::None => {}
            Authorization::Bearer(value) => request = request.header(AUTHORIZATION, value.clone()),
            Authorization::Invalid => {
                return Err(Error::Setup("the access token cannot be sent as a header".to_owned()));
            }
        }
        if let Some(key) = &key {
            request = request.header(IDEMPOTENCY_KEY, key.0.clone());
        }
        for (name, value) in self.client.inner.headers.iter().chain(&self.headers) {
            request = request.header(name.clone(), value.clone());
        }
        if let Some(body) = &self.body {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json")).body(body.clone());
        }
        let started = Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                self.observe(key.as_ref(), None);
                return Err(TransportError::new(err).into());
            }
        };
        let status = response.status();
        let headers = response.headers();
        let request_id = headers.get(X_REQUEST_ID).cloned();
        let replayed = headers.get(IDEMPOTENT_REPLAYED).is_some_and(|value| value == "true");
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Only an observer needs the headers once the body has been read.
        let observed_headers = self.client.inner.observer.is_some().then(|| headers.clone());
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => {
                self.observe(key.as_ref(), None);
                return Err(TransportError::new(err).into());
            }
        };
        let latency = started.elapsed();
        if let Some(headers) = &observed_headers {
            self.observe(key.as_ref(), Some(ExchangeAnswer { status, headers, body: &body }));
        }
        let result = if status.is_success() {
            // An empty body (204) reads as JSON `null`, which is what `()` expects.
            let json: &[u8] = if body.is_empty() { b"null" } else { &body };
            serde_json::from_slice(json).map_err(|source| Error::Decode { status, source, body: truncated(&body) })
        } else {
            let header_id = request_id.as_ref().and_then(|id| id.to_str().ok()).map(str::to_owned);
            Err(ApiError::from_answer(status, header_id, retry_after, &body).into())
        };
        Ok(Attempt { status, latency, request_id, replayed, retry_after, result })
    }

    /// Shows the attempt to the client's observer, if it has one.
    fn observe(&self, key: Option<&IdempotencyKey>, answer: Option<ExchangeAnswer<'_>>) {
        let Some(observer) = &self.client.inner.observer else { return };
        let authorization = match &self.client.authorization {
            Authorization::Bearer(value) => Some(value),
            Authorization::None | Authorization::Invalid => None,
        };
        observer.attempted(&Exchange {
            method: &self.method,
            url: self.url.as_ref(),
            authorization,
            idempotency_key: key.map(IdempotencyKey::as_str),
            headers: &self.headers,
            body: self.body.as_deref(),
            answer,
        });
    }

    /// Sends the call, retrying as its [`Safety`] and [`RetryPolicy`] allow (see [`crate::retry`]), and gives the
    /// answer with its details.
    pub async fn reply(mut self) -> Result<Reply<T>, Error> {
        let mut backoff = self.retry.backoff();
        let mut attempts = 0;
        let mut earlier_attempt_unknown = false;
        loop {
            attempts += 1;
            let (error, retryable, asked_wait) = match self.attempt().await {
                Ok(Attempt { status, latency, request_id, replayed, result: Ok(body), .. }) => {
                    return Ok(Reply {
                        body,
                        status,
                        request_id,
                        replayed,
                        attempts,
                        earlier_attempt_unknown,
                        idempotency_key: self.key.clone(),
                        latency,
                    });
                }
                Ok(Attempt { result: Err(Error::Api(api)), retry_after, .. }) => {
                    let retryable = may_retry_api(self.safety, &api);
                    let outcome_unknown = api.outcome_unknown();
                    let wait = retry_after.or(api.retry_after);
                    (Error::Api(api), retryable, (wait, outcome_unknown))
                }
                Ok(Attempt { result: Err(error), .. }) => return Err(error),
                Err(Error::Transport(transport)) => {
                    let retryable = may_retry_transport(self.safety, &transport);
                    let outcome_unknown = transport.outcome_unknown();
                    (Error::Transport(transport), retryable, (None, outcome_unknown))
                }
                Err(error) => return Err(error),
            };
            let (asked_wait, outcome_unknown) = asked_wait;
            if !retryable {
                return Err(error);
            }
            let Some(backoff_wait) = backoff.next() else { return Err(error) };
            let wait = match asked_wait {
                Some(asked) if asked > self.retry.retry_after_max => return Err(error),
                Some(asked) => asked,
                None => backoff_wait,
            };
            earlier_attempt_unknown |= outcome_unknown;
            tokio::time::sleep(wait).await;
        }
    }
}

impl<'a, T: DeserializeOwned + Send + 'a> IntoFuture for Call<'a, T> {
    type Output = Result<T, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.reply().await.map(|reply| reply.body) })
    }
}

impl<T> Attempt<T> {
    /// The request id the server gave the attempt (`X-Request-ID`).
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_ref().and_then(|id| id.to_str().ok())
    }
}

impl<T> Reply<T> {
    /// The request id the server gave the last attempt (`X-Request-ID`).
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_ref().and_then(|id| id.to_str().ok())
    }

    /// Whether the effect of the request (money moved, a schedule made) is this call's own, rather than an
    /// earlier call's with the same key whose stored answer was replayed.
    pub fn took_effect_now(&self) -> bool {
        !self.replayed || self.earlier_attempt_unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_once_and_keep_a_path_prefix() {
        let client = Client::new("http://127.0.0.1:8080/bank/").expect("client");
        assert_eq!(client.urls().credit.as_str(), "http://127.0.0.1:8080/bank/api/v1/transactions/credit");
        let id = Uuid::nil().to_string();
        assert_eq!(
            client.urls().path(&["transactions", &id, "rollback"]).as_str(),
            "http://127.0.0.1:8080/bank/api/v1/transactions/00000000-0000-0000-0000-000000000000/rollback"
        );
        assert!(Client::new("ftp://x").is_err());
        assert!(Client::new("not a url").is_err());
        assert!(Client::new("http://127.0.0.1:8080/?x=1").is_err());
    }

    #[test]
    fn money_calls_draw_one_key_and_keep_it() {
        let client = Client::new("http://127.0.0.1:1").expect("client");
        let url = &client.urls().credit;
        let mut call = client.call::<()>(Method::POST, Cow::Borrowed(url), Safety::Keyed);
        let first = call.key().cloned().expect("a money call has a key");
        assert_eq!(call.key(), Some(&first));
        assert_eq!(Uuid::parse_str(first.as_str()).expect("a UUID").get_version_num(), 4);
        let mut read = client.call::<()>(Method::GET, Cow::Borrowed(url), Safety::Repeatable);
        assert_eq!(read.key(), None);
    }
}
