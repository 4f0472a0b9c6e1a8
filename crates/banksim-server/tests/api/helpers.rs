//! The test harness: spawn the server, talk to it, and make users and tokens quickly.
//!
//! Tests talk to the server through `banksim-client`, the typed client that `banksim simulate` uses too, so one
//! client is tested by everything: [`TestApp::api`] (no credentials) and each [`TestUser::api`] (with the user's
//! token), and the helpers that make users, log in, credit and read balances go through it. Requests a typed
//! client cannot send — malformed JSON, wrong types, unknown currencies, forged or missing tokens, odd headers,
//! hostile input — and tests of the raw envelope (headers, exact body text) use [`TestApp::request`] and
//! [`TestApp::raw`] instead, which send exactly what the test says.

use std::sync::Arc;

use axum::Router;
use banksim_client::{AmountRequest, Client, RegisterRequest, Transaction};
use banksim_core::currency::Currency;
use banksim_core::{Clock, SystemClock};
use banksim_server::config::LogFormat;
use banksim_server::{AppState, Config, router};
use banksim_store::testing::{FaultyStore, TestDatabase};
use banksim_store::{Backend, ConnectOptions};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use banksim_store::testing::backends;

/// The password every test user gets.
pub const PASSWORD: &str = "correct-horse-battery";
/// The signing key of test servers (tests forge tokens with it).
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

/// A running server on a fresh database.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// Which database it runs on.
    pub backend: Backend,
    /// The server's state (store, config, token issuer).
    pub state: AppState,
    /// The server's store, which fails on demand (every test server runs on one).
    pub faults: Arc<FaultyStore>,
    /// The typed client of this server, without credentials ([`TestUser::api`] has a user's).
    pub api: Client,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    jobs: Option<banksim_server::app::BackgroundJobs>,
    database: Option<TestDatabase>,
    _data_dir: tempfile::TempDir,
}

/// A response, read whole.
#[derive(Debug)]
pub struct TestResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body parsed as JSON (`Value::Null` when empty); every body of ours must be JSON.
    pub body: Value,
    /// The raw body text.
    pub text: String,
}

impl TestResponse {
    /// Asserts the error envelope of API.md with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, error_code: &str) {
        assert_eq!(self.status.as_u16(), status, "status of {}", self.text);
        assert_eq!(self.body["code"], status, "code field of {}", self.text);
        assert_eq!(self.body["error_code"], error_code, "error_code of {}", self.text);
        assert!(self.body["error"].as_str().is_some_and(|e| !e.is_empty()), "error text of {}", self.text);
        let request_id = self.headers.get("x-request-id").and_then(|v| v.to_str().ok());
        assert_eq!(self.body["request_id"].as_str(), request_id, "request_id of {}", self.text);
    }

    /// The field names listed in a validation error.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| errors.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }
}

/// A user made for a test, with a fresh access token.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Access token.
    pub token: String,
    /// Refresh token.
    pub refresh_token: String,
    /// The typed client acting as this user on the server they logged in on (for another server of the same
    /// database, use [`TestApp::as_user`]).
    pub api: Client,
}

impl TestUser {
    /// The user's id as a UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        self.id.parse().expect("user ids are UUIDs")
    }
}

impl TestApp {
    /// A server with the test configuration on a fresh database of `backend`.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}, Router::new()).await
    }

    /// A server with the test configuration changed by `configure`, with `extra` routes.
    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Config), extra: Router<AppState>) -> Self {
        let database = TestDatabase::create(backend).await;
        let mut app = Self::start(backend, &database.url, configure, extra, Arc::new(SystemClock)).await;
        app.database = Some(database);
        app
    }

    /// A server whose "now" is `clock` (a `ManualClock` lets a test move time forward).
    pub async fn spawn_on_clock(backend: Backend, configure: impl FnOnce(&mut Config), clock: Arc<dyn Clock>) -> Self {
        let database = TestDatabase::create(backend).await;
        let mut app = Self::start(backend, &database.url, configure, Router::new(), clock).await;
        app.database = Some(database);
        app
    }

    /// Another server on the same database as `self` (as a second instance behind a load balancer would be). In
    /// simulation mode it keeps a reading of the shared clock of its own, as a separate process would.
    pub async fn spawn_beside(&self, configure: impl FnOnce(&mut Config)) -> Self {
        let clock = self.state.simulation.as_ref().map_or_else(|| self.state.clock.clone(), |shared| shared.base());
        Self::start(self.backend, &self.state.config.database_url(), configure, Router::new(), clock).await
    }

    /// A simulation-mode server with `runner` behind its scenario routes, on a fresh database of `backend`.
    pub async fn spawn_with_runner(
        backend: Backend,
        runner: Arc<dyn banksim_server::service::scenarios::ScenarioRunner>,
    ) -> Self {
        let database = TestDatabase::create(backend).await;
        let simulating = |config: &mut Config| config.simulation_mode = true;
        let clock = Arc::new(SystemClock);
        let mut app =
            Self::start_with_runner(backend, &database.url, simulating, Router::new(), clock, Some(runner)).await;
        app.database = Some(database);
        app
    }

    async fn start(
        backend: Backend,
        url: &str,
        configure: impl FnOnce(&mut Config),
        extra: Router<AppState>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::start_with_runner(backend, url, configure, extra, clock, None).await
    }

    async fn start_with_runner(
        backend: Backend,
        url: &str,
        configure: impl FnOnce(&mut Config),
        extra: Router<AppState>,
        clock: Arc<dyn Clock>,
        runner: Option<Arc<dyn banksim_server::service::scenarios::ScenarioRunner>>,
    ) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = banksim_server::telemetry::init(LogFormat::Text);
        }
        let data_dir = tempfile::tempdir().expect("data dir");
        let mut config = test_config(url, data_dir.path());
        configure(&mut config);
        let options = ConnectOptions { pool_size: config.database_pool_size, ..ConnectOptions::default() };
        let store = banksim_store::connect(url, options).await.expect("connect");
        store.migrate().await.expect("migrate");
        let faults = FaultyStore::new(store);
        let state = AppState::new(config, faults.clone(), clock).expect("state");
        let state = match runner {
            Some(runner) => state.with_scenario_runner(runner),
            None => state,
        };
        banksim_server::service::simulation::load(&state).await.expect("read the shared clock");
        let jobs = banksim_server::app::BackgroundJobs::start(&state);
        banksim_server::service::users::bootstrap_admin(&state).await.expect("bootstrap admin");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let client = reqwest::Client::new();
        // Tests want to see every answer, so the typed client retries only what a test would otherwise flake on
        // (a lost answer, a 503 from a busy writer); a test that wants no retry says so on the call.
        let api = Client::builder(&address).http_client(client.clone()).build().expect("client");
        let (shutdown, stop) = oneshot::channel::<()>();
        let router = router::build_with(state.clone(), extra);
        let server = tokio::spawn(async move {
            axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await
                .expect("server");
        });
        let app = Self {
            address,
            backend,
            state,
            faults,
            api,
            client,
            shutdown: Some(shutdown),
            server: Some(server),
            jobs: Some(jobs),
            database: None,
            _data_dir: data_dir,
        };
        app.wait_until_ready().await;
        app
    }

    async fn wait_until_ready(&self) {
        for _ in 0..100 {
            if self.get("/readyz", None).await.status == StatusCode::OK {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("server did not become ready");
    }

    /// Blocks every ledger write of this server's database until the lock is released.
    pub async fn lock_writes(&self) -> banksim_store::testing::WriteLock {
        self.database.as_ref().expect("a database of its own").lock_writes().await
    }

    /// Runs raw SQL on this server's database behind its back.
    pub async fn tamper(&self, sql: &str) {
        self.database.as_ref().expect("a database of its own").execute(sql).await;
    }

    /// Stops the server gracefully and removes its database.
    pub async fn stop(mut self) {
        self.halt().await;
        if let Some(database) = self.database.take() {
            database.remove().await;
        }
    }

    /// Stops the server (its jobs first) but keeps its database, for a later server to start on.
    pub async fn stop_keeping_database(mut self) -> TestDatabase {
        self.halt().await;
        self.database.take().expect("a database of its own")
    }

    /// A server on the PostgreSQL database at `url` (a server of the test's own), which it migrates; the database
    /// is the caller's to remove.
    pub async fn spawn_on_url(url: &str, configure: impl FnOnce(&mut Config)) -> Self {
        Self::start(Backend::Postgres, url, configure, Router::new(), Arc::new(SystemClock)).await
    }

    /// A server on a database that an earlier, stopped server left.
    pub async fn spawn_on(database: TestDatabase, configure: impl FnOnce(&mut Config), clock: Arc<dyn Clock>) -> Self {
        let mut app = Self::start(database.backend(), &database.url, configure, Router::new(), clock).await;
        app.database = Some(database);
        app
    }

    async fn halt(&mut self) {
        if let Some(jobs) = self.jobs.take() {
            jobs.stop().await;
        }
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
        self.state.store.close().await;
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> TestResponse {
        let mut request = self.client.request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// Sends a raw request: any body bytes and headers.
    pub async fn raw(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> TestResponse {
        let mut request = self.client.request(method, format!("{}{path}", self.address)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// Sends a request with an optional bearer token, extra headers and an optional JSON body, on a connection of
    /// its own; `Err` when no answer came (the connection closed first).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<TestResponse, reqwest::Error> {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        let mut request = client.request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        Ok(read(request.send().await?).await)
    }

    /// GET.
    pub async fn get(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.request(Method::GET, path, token, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// PUT with a JSON body.
    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.request(Method::DELETE, path, token, None).await
    }

    /// Registers `username` (`<username>@example.com`, [`PASSWORD`]) and logs in.
    pub async fn user(&self, username: &str) -> TestUser {
        let email = format!("{username}@example.com");
        let registration = RegisterRequest::new(username, email.as_str(), PASSWORD);
        let user = self.api.register(&registration).await.unwrap_or_else(|e| panic!("registering {username}: {e}"));
        assert_eq!(user.email, email);
        self.login(&email).await
    }

    /// A user named `user<n>`, registered and logged in.
    pub async fn user_named(&self, n: usize) -> TestUser {
        self.user(&format!("user{n}")).await
    }

    /// An admin, created the way an operator would (`banksim admin create`), logged in.
    pub async fn admin(&self, username: &str) -> TestUser {
        let email = format!("{username}@example.com");
        let registration = banksim_server::service::users::Registration::parse(
            Some(username),
            Some(&email),
            Some(PASSWORD),
            Some("admin"),
        )
        .expect("valid admin");
        let operator = banksim_store::AuditContext::default();
        banksim_server::service::users::create(&self.state, registration, &operator).await.expect("create admin");
        self.login(&email).await
    }

    /// Sends a money POST with an optional idempotency key.
    pub async fn money(&self, path: &str, user: &TestUser, key: Option<&str>, body: &Value) -> TestResponse {
        let mut request = self.client.post(format!("{}{path}", self.address)).bearer_auth(&user.token).json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// The typed client of this server acting as `user` (whichever server they logged in on).
    pub fn as_user(&self, user: &TestUser) -> Client {
        self.api.with_token(&user.token)
    }

    /// Credits `amount` (decimal text) of `currency` to `user` on this server and asserts it was posted.
    pub async fn credit(&self, user: &TestUser, amount: &str, currency: &str) -> Transaction {
        let request = AmountRequest::new(amount, currency_of(currency));
        self.as_user(user).credit(&request).await.unwrap_or_else(|e| panic!("crediting {amount} {currency}: {e}"))
    }

    /// The user's balance in `currency` on this server, as the exact decimal text of the JSON number.
    pub async fn balance(&self, user: &TestUser, currency: &str) -> String {
        let balance = self.as_user(user).current_balance(currency_of(currency)).await.expect("the current balance");
        balance.amount.to_string()
    }

    /// The user's USD balance in minor units, read from the store behind the server (not through its API).
    pub async fn balance_via_store(&self, user: &TestUser) -> i64 {
        let id = user.id.parse().expect("uuid");
        let store: &dyn banksim_store::Store = self.faults.as_ref();
        let wallets = store.wallets(id, Some(banksim_core::currency::Currency::USD)).await.expect("wallets");
        wallets.first().map_or(0, |w| w.balance_minor)
    }

    /// Checks every ledger invariant of the server's database, and that the event log alone rebuilds every
    /// balance.
    pub async fn assert_ledger_sound(&self) {
        let report = self.state.store.verify_ledger().await.expect("verify");
        assert!(report.is_sound(), "ledger invariants broken: {:#?}", report.violations);
        let mut events = Vec::new();
        loop {
            let after = events.last().map_or(0, |e: &banksim_store::EventRecord| e.sequence);
            let page = self.state.store.list_events(after, 1_000).await.expect("events");
            if page.is_empty() {
                break;
            }
            events.extend(page);
        }
        let replayed = banksim_store::replay_balances(&events).expect("replay");
        let balances = self.state.store.account_balances().await.expect("balances");
        for &(account, balance) in &balances {
            assert_eq!(replayed.get(&account).copied().unwrap_or(0), balance, "account {account} replays differently");
        }
        self.assert_system_totals_match(&balances).await;
    }

    /// Brings the system totals projection up to the log and checks it against the ledger's system accounts: the
    /// FX accounts hold `fx`, the world account `money_out − money_in`, and the users the rest.
    async fn assert_system_totals_match(&self, balances: &[(uuid::Uuid, i64)]) {
        use banksim_core::ledger::AccountKey;
        let caught_up = banksim_server::jobs::projector::catch_up(
            &self.state,
            banksim_store::Projection::SystemTotals,
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("catch up");
        assert!(caught_up, "the system totals projection did not catch up");
        let balance = |key: AccountKey| balances.iter().find(|(id, _)| *id == key.id()).map_or(0, |(_, b)| *b);
        for total in self.state.store.system_totals().await.expect("totals") {
            let currency = total.currency;
            assert!(total.is_balanced(), "{total:?}");
            assert_eq!(total.fx_minor, balance(AccountKey::Fx { currency }), "{currency} FX holdings");
            let world = balance(AccountKey::World { currency });
            assert_eq!(total.money_out_minor - total.money_in_minor, world, "{currency} money in and out");
        }
    }

    /// Logs in with [`PASSWORD`].
    pub async fn login(&self, email: &str) -> TestUser {
        let login = self.api.login(email, PASSWORD).await.unwrap_or_else(|e| panic!("logging in {email}: {e}"));
        TestUser {
            id: login.user.id.to_string(),
            email: email.to_owned(),
            api: self.api.with_token(&login.access_token),
            token: login.access_token,
            refresh_token: login.refresh_token,
        }
    }

    /// A [`TestUser`] for an access token issued some other way (no refresh token).
    pub fn user_with_token(&self, id: impl ToString, email: &str, token: String) -> TestUser {
        let api = self.api.with_token(&token);
        TestUser { id: id.to_string(), email: email.to_owned(), token, refresh_token: String::new(), api }
    }
}

/// Asserts that a typed call was refused with `status` and `error_code`, in API.md's envelope (a message and a
/// request id), and gives the error.
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, banksim_client::Error>,
    status: u16,
    error_code: &str,
) -> banksim_client::ApiError {
    let error = result.expect_err("the call should have been refused");
    let banksim_client::Error::Api(api) = error else { panic!("an API error, not {error:?}") };
    assert_eq!((api.status.as_u16(), api.error_code.as_str()), (status, error_code), "{api:?}");
    assert!(!api.message.is_empty() && api.request_id.is_some(), "{api:?}");
    *api
}

/// The currency of a code the tests spell out (`"USD"`).
#[track_caller]
pub fn currency_of(code: &str) -> Currency {
    Currency::parse(code).unwrap_or_else(|e| panic!("{code}: {e}"))
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The exact text of a top-level JSON number field, as the server wrote it (`"amount":500.00` gives `500.00`).
pub fn raw_number(text: &str, field: &str) -> String {
    let raw: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(text).expect("a JSON object");
    raw.get(field).unwrap_or_else(|| panic!("no {field} in {text}")).get().to_owned()
}

async fn read(response: reqwest::Response) -> TestResponse {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    // Every body of ours is JSON, except the Prometheus exposition of /metrics and the simulation console's page.
    let not_json = ["application/openmetrics-text", "text/", "image/"];
    let body = if text.is_empty() || not_json.iter().any(|kind| content_type.starts_with(kind)) {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"))
    };
    TestResponse { status, headers, body, text }
}

fn test_config(url: &str, data_dir: &std::path::Path) -> Config {
    let mut config = Config::defaults();
    config.host = [127, 0, 0, 1].into();
    config.port = 0;
    config.database_url = Some(url.to_owned().into());
    config.database_pool_size = 8;
    config.data_dir = data_dir.to_path_buf();
    config.jwt_secret = Some(JWT_SECRET.to_owned().into());
    // Cheap hashing: the cost parameters are not under test here.
    config.argon2_memory_kib = 64;
    config.argon2_iterations = 1;
    config.log_format = LogFormat::Text;
    // Tests log many users in from one address; the limit has tests of its own.
    config.auth_rate_limit_per_minute = 0;
    // Schedules in tests are due within moments, and retried within milliseconds.
    config.scheduler_poll_interval_ms = 25;
    config.scheduler_retry_base_ms = 10;
    // A claim lost to an error comes back within seconds, inside the tests' waits.
    config.scheduler_lease_secs = 2;
    // Projections follow the log within moments.
    config.projector_poll_interval_ms = 20;
    config
}
