//! The read replica and the primary under faults, on PostgreSQL servers of each test's own (made by `initdb` and
//! `scripts/pg-replica.sh`, see `banksim_store::testing::PgServer`), never the shared one: a replica stopped and
//! started again, a replica whose replay is paused, a primary restarted. A load of credits, transfers, balance and
//! history reads runs throughout; each test ends with the ledger's invariants, the event replay, and every
//! acknowledged movement present.
//!
//! They run where PostgreSQL is under test (`TEST_DATABASE_URL` set), as in CI; they take a few seconds each.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use banksim_store::testing::{PgServer, TEST_DATABASE_URL};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{TestApp, TestResponse, TestUser};

/// Whether PostgreSQL is under test at all; these tests need its binaries, not the shared server.
fn postgres_under_test() -> bool {
    let under_test = std::env::var(TEST_DATABASE_URL).is_ok_and(|url| !url.is_empty());
    if under_test {
        assert!(PgServer::available(), "PostgreSQL is under test but initdb/pg_ctl are not installed (set PG_BIN)");
    }
    under_test
}

/// A line on the terminal even when the test passes (the measurements CI should show).
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// One answer the load saw.
#[derive(Debug, Clone)]
struct Seen {
    /// When the answer arrived.
    at: Instant,
    /// `credit`, `transfer`, `balance`, `history`, `transactions`.
    what: &'static str,
    status: u16,
    retry_after: bool,
    error_code: String,
    /// How long the answer took.
    took: Duration,
}

impl Seen {
    fn is_write(&self) -> bool {
        matches!(self.what, "credit" | "transfer")
    }
}

/// What the load saw, all tasks together.
#[derive(Debug, Default)]
struct LoadReport {
    seen: Vec<Seen>,
    /// Ids of the movements answered 201.
    acknowledged: Vec<Uuid>,
    /// Reads of a caller's own history that lacked their last acknowledged movement.
    missed_own_writes: Vec<String>,
}

impl LoadReport {
    fn server_errors(&self) -> Vec<&Seen> {
        self.seen.iter().filter(|s| s.status >= 500).collect()
    }

    fn count(&self, what: &str, status: u16) -> usize {
        self.seen.iter().filter(|s| s.what == what && s.status == status).count()
    }
}

/// A few clients, each crediting itself, paying the next one, and reading its balance and its histories in a loop
/// until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<LoadReport>>,
}

impl Load {
    fn start(app: &Arc<TestApp>, users: &[TestUser]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let users = Arc::new(users.to_vec());
        let tasks = (0..users.len())
            .map(|me| {
                let (app, users, stop) = (app.clone(), users.clone(), stop.clone());
                tokio::spawn(async move { drive(&app, &users, me, &stop).await })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = LoadReport::default();
        for task in self.tasks {
            let one = task.await.expect("load task");
            all.seen.extend(one.seen);
            all.acknowledged.extend(one.acknowledged);
            all.missed_own_writes.extend(one.missed_own_writes);
        }
        all.seen.sort_by_key(|s| s.at);
        all
    }
}

async fn drive(app: &TestApp, users: &[TestUser], me: usize, stop: &AtomicBool) -> LoadReport {
    // Keys of this load's own: a later load of the same users must not replay this one's answers.
    let load = Uuid::new_v4().simple();
    let user = &users[me];
    let peer = &users[(me + 1) % users.len()];
    let mut report = LoadReport::default();
    let mut last_own: Option<Uuid> = None;
    let mut step = 0u64;
    while !stop.load(Ordering::SeqCst) {
        step += 1;
        let credit = json!({"amount": "1.00", "currency": "USD"});
        let key = format!("{load}-{me}-{step}-credit");
        let answer = timed(app.money("/api/v1/transactions/credit", user, Some(&key), &credit)).await;
        note(&mut report, "credit", answer, &mut last_own);
        let transfer = json!({"to_user_id": peer.id, "amount": "0.01", "currency": "USD"});
        let key = format!("{load}-{me}-{step}-transfer");
        let answer = timed(app.money("/api/v1/transactions/transfer", user, Some(&key), &transfer)).await;
        note(&mut report, "transfer", answer, &mut last_own);
        let answer = timed(app.get("/api/v1/balances/current?currency=USD", Some(&user.token))).await;
        note(&mut report, "balance", answer, &mut last_own);
        for (what, path, list, id) in [
            ("history", "/api/v1/balances/historical?currency=USD&limit=50", "history", "transaction_id"),
            ("transactions", "/api/v1/transactions/history?limit=50", "transactions", "id"),
        ] {
            let answer = note(&mut report, what, timed(app.get(path, Some(&user.token))).await, &mut last_own);
            if answer.status == StatusCode::OK
                && let Some(own) = last_own
                && !listed(&answer.body[list], id, own)
            {
                report.missed_own_writes.push(format!("{what} of {} lacks {own}", user.id));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    report
}

fn note(
    report: &mut LoadReport,
    what: &'static str,
    (answer, took): (TestResponse, Duration),
    last_own: &mut Option<Uuid>,
) -> TestResponse {
    let error_code = answer.body["error_code"].as_str().unwrap_or_default().to_owned();
    if answer.status == StatusCode::CREATED {
        let id = answer.body["id"].as_str().and_then(|id| id.parse().ok()).expect("a 201 names its transaction");
        report.acknowledged.push(id);
        *last_own = Some(id);
    }
    let retry_after = answer.headers.contains_key("retry-after");
    let status = answer.status.as_u16();
    report.seen.push(Seen { at: Instant::now(), what, status, retry_after, error_code, took });
    answer
}

/// A request's answer and how long it took.
async fn timed(request: impl std::future::Future<Output = TestResponse>) -> (TestResponse, Duration) {
    let started = Instant::now();
    let answer = request.await;
    (answer, started.elapsed())
}

fn listed(list: &Value, field: &str, id: Uuid) -> bool {
    list.as_array().is_some_and(|items| items.iter().any(|item| item[field].as_str() == Some(&id.to_string())))
}

/// Every movement the load saw acknowledged is in the ledger, which keeps every invariant and replays from its
/// events.
async fn assert_nothing_acknowledged_was_lost(app: &TestApp, load: &LoadReport) {
    assert!(!load.acknowledged.is_empty(), "the load moved money");
    for id in &load.acknowledged {
        let found = app.state.store.find_transaction(*id).await.expect("read the ledger");
        assert!(found.is_some(), "acknowledged movement {id} is not in the ledger");
    }
    app.assert_ledger_sound().await;
}

/// `users` registered, logged in and credited.
async fn funded_users(app: &TestApp, count: usize) -> Vec<TestUser> {
    let mut users = Vec::new();
    for n in 0..count {
        let user = app.user_named(n).await;
        app.credit(&user, "100.00", "USD").await;
        users.push(user);
    }
    users
}

async fn readiness(app: &TestApp) -> (String, String) {
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK, "a replica's trouble never makes the instance unready: {}", ready.text);
    let status = ready.body["status"].as_str().unwrap_or_default().to_owned();
    (status, ready.body["checks"]["replica"].as_str().unwrap_or_default().to_owned())
}

/// Waits (at most `within`) until `/readyz` says the replica is `state`; returns how long that took.
async fn wait_for_replica(app: &TestApp, state: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, replica) = readiness(app).await;
        if replica == state {
            assert_eq!(status, if state == "ok" { "ok" } else { "degraded" }, "readiness with a replica {state}");
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "the replica is {replica}, not {state}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET with these headers.
async fn get_with(app: &TestApp, path: &str, headers: &[(&str, String)]) -> TestResponse {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
    app.raw(reqwest::Method::GET, path, &headers, Vec::new()).await
}

/// `banksim_replica_reads_total{served_by,reason}` as `/metrics` shows it.
async fn reads(app: &TestApp, served_by: &str, reason: &str) -> u64 {
    let metrics = app.get("/metrics", None).await.text;
    let series = format!("banksim_replica_reads_total{{served_by=\"{served_by}\",reason=\"{reason}\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&series)).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Every non-zero `banksim_replica_reads_total` series, and the waits, for the report.
async fn read_counts(app: &TestApp) -> String {
    let metrics = app.get("/metrics", None).await.text;
    let counts: Vec<&str> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("banksim_replica_reads_total"))
        .filter(|line| !line.ends_with(" 0"))
        .chain(metrics.lines().filter(|line| {
            line.starts_with("banksim_replica_wait_seconds_count")
                || line.starts_with("banksim_replica_wait_seconds_sum")
        }))
        .collect();
    counts.join(", ")
}

/// Reads served by the replica (every reason).
async fn replica_reads(app: &TestApp) -> u64 {
    reads(app, "replica", "caught_up").await + reads(app, "replica", "waited").await
}

async fn spawn_with_replica(primary: &PgServer, replica: &PgServer, max_lag_ms: u64) -> Arc<TestApp> {
    let replica_url = replica.url();
    let app = TestApp::spawn_on_url(&primary.url(), move |config| {
        config.database_replica_url = Some(replica_url.into());
        config.replica_max_lag_ms = max_lag_ms;
        config.replica_poll_interval_ms = 50;
        // A replica back up is tried again within a second (the breaker's trial is the monitor's next poll).
        config.breaker_reset_timeout_ms = 1_000;
    })
    .await;
    Arc::new(app)
}

#[tokio::test]
async fn without_a_replica_reads_take_a_clients_lsn_and_the_spec_documents_it() {
    for backend in crate::helpers::backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let credited =
            app.money("/api/v1/transactions/credit", &sefa, None, &json!({"amount": "1.00", "currency": "USD"})).await;
        assert_eq!(credited.status, StatusCode::CREATED);
        assert!(!credited.headers.contains_key("x-banksim-min-lsn"), "no replica, no floor to tell");
        let ready = app.get("/readyz", None).await;
        assert_eq!(ready.body, json!({"status": "ok", "checks": {"database": "ok"}}));
        assert!(app.get("/metrics/basic", None).await.body.get("replica").is_none());

        let bearer = format!("Bearer {}", sefa.token);
        let history = "/api/v1/balances/historical";
        let read =
            get_with(&app, history, &[("authorization", bearer.clone()), ("x-banksim-min-lsn", "0/16B3748".into())])
                .await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text);
        for bad in ["16B3748", "0/0/0", "G/0", ""] {
            let refused =
                get_with(&app, history, &[("authorization", bearer.clone()), ("x-banksim-min-lsn", bad.into())]).await;
            refused.assert_error(400, "invalid_parameter");
        }

        let spec = app.get("/openapi.json", None).await.body;
        for path in [
            "/api/v1/balances/historical",
            "/api/v1/balances/at-time",
            "/api/v1/balances/statements",
            "/api/v1/transactions/history",
            "/api/v1/audit-logs",
            "/api/v1/events",
            "/api/v1/users",
        ] {
            let params = spec["paths"][path]["get"]["parameters"].as_array().cloned().unwrap_or_default();
            let header = params.iter().find(|p| p["name"] == "X-Banksim-Min-LSN");
            assert!(header.is_some_and(|h| h["in"] == "header"), "{path} documents X-Banksim-Min-LSN: {params:?}");
        }
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_under_load_sends_reads_to_the_primary_and_takes_them_back_when_it_returns() {
    if !postgres_under_test() {
        return;
    }
    let primary = PgServer::primary().await;
    let replica = PgServer::replica_of(&primary).await;
    let app = spawn_with_replica(&primary, &replica, 2_000).await;
    let users = funded_users(&app, 4).await;
    wait_for_replica(&app, "ok", Duration::from_secs(10)).await;

    let load = Load::start(&app, &users);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = replica_reads(&app).await;
    assert!(before > 0, "the replica serves reads that may lag");

    let stopping = Instant::now();
    replica.stop().await;
    let stop_took = stopping.elapsed();
    let noticed = wait_for_replica(&app, "unavailable", Duration::from_secs(10)).await;
    let fallback_before = reads(&app, "primary", "replica_unavailable").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let fallback = reads(&app, "primary", "replica_unavailable").await - fallback_before;
    assert!(fallback > 0, "while the replica is down, the primary serves the reads that may lag");
    let replica_while_down = replica_reads(&app).await;

    replica.start().await;
    let back_within = wait_for_replica(&app, "ok", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let load = load.finish().await;
    let after = replica_reads(&app).await;
    assert!(after > replica_while_down, "the replica serves reads again once it is back");

    report(&format!(
        "replica stop: pg_ctl stop took {:.0} ms; readyz said unavailable {:.0} ms later; back to the replica \
         {:.0} ms after it started again; {fallback} reads served by the primary in 1.5 s meanwhile; 5xx: {}; \
         reads: {}",
        stop_took.as_secs_f64() * 1000.0,
        noticed.as_secs_f64() * 1000.0,
        back_within.as_secs_f64() * 1000.0,
        load.server_errors().len(),
        read_counts(&app).await,
    ));
    assert!(load.server_errors().is_empty(), "a replica down is never a 5xx: {:?}", load.server_errors());
    assert!(load.missed_own_writes.is_empty(), "read-your-writes: {:?}", load.missed_own_writes);
    assert_nothing_acknowledged_was_lost(&app, &load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_never_hides_a_callers_own_writes_and_is_skipped_beyond_the_lag_bound() {
    if !postgres_under_test() {
        return;
    }
    let primary = PgServer::primary().await;
    let replica = PgServer::replica_of(&primary).await;
    const MAX_LAG_MS: u64 = 1_500;
    let app = spawn_with_replica(&primary, &replica, MAX_LAG_MS).await;
    let users = funded_users(&app, 4).await;
    let (payer, payee) = (app.user("payer").await, app.user("payee").await);
    app.credit(&payer, "50.00", "USD").await;
    wait_for_replica(&app, "ok", Duration::from_secs(10)).await;
    // The payee's history, read now: the replica has everything, and the payee wrote nothing lately.
    let history = "/api/v1/balances/historical?currency=USD";
    let served = replica_reads(&app).await;
    assert_eq!(app.get(history, Some(&payee.token)).await.status, StatusCode::OK);
    assert_eq!(replica_reads(&app).await, served + 1, "a caller without recent writes reads the replica");

    let load = Load::start(&app, &users);
    tokio::time::sleep(Duration::from_millis(500)).await;
    replica.execute("SELECT pg_wal_replay_pause()").await;
    let paused_at = Instant::now();

    // The payer pays; the answer tells where the primary's log stood after it.
    let body = json!({"to_user_id": payee.id, "amount": "7.00", "currency": "USD"});
    let paid = app.money("/api/v1/transactions/transfer", &payer, None, &body).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
    let transfer = paid.body["id"].as_str().expect("id").parse::<Uuid>().expect("uuid");
    let min_lsn = paid.headers.get("x-banksim-min-lsn").and_then(|v| v.to_str().ok()).expect("the write's LSN");
    assert!(min_lsn.parse::<banksim_store::Lsn>().is_ok(), "{min_lsn}");

    // The payer reads their own write at once: the paused replica lacks it, so the primary serves.
    let own = app.get(history, Some(&payer.token)).await;
    assert!(listed(&own.body["history"], "transaction_id", transfer), "{}", own.text);
    // The payee, who wrote nothing, may read the lagging replica while it is within the bound: it lacks the
    // transfer. With the payer's LSN (a client carries it across instances) the payee sees it.
    let stale = app.get(history, Some(&payee.token)).await;
    let within_bound = paused_at.elapsed() < Duration::from_millis(MAX_LAG_MS / 2);
    if within_bound {
        assert!(!listed(&stale.body["history"], "transaction_id", transfer), "served by the paused replica");
    }
    let bearer = format!("Bearer {}", payee.token);
    let with_lsn =
        |lsn: &str| [("authorization", bearer.as_str()), ("x-banksim-min-lsn", lsn)].map(|(k, v)| (k, v.to_owned()));
    let carried = get_with(&app, history, &with_lsn(min_lsn)).await;
    assert!(listed(&carried.body["history"], "transaction_id", transfer), "{}", carried.text);
    get_with(&app, history, &with_lsn("12")).await.assert_error(400, "invalid_parameter");

    // Past the bound, reads go to the primary: the payee sees the transfer without asking.
    wait_for_replica(&app, "lagging", Duration::from_secs(10)).await;
    let lagging_after = paused_at.elapsed();
    let skipped = reads(&app, "primary", "replica_lagging").await;
    let fresh = app.get(history, Some(&payee.token)).await;
    assert!(listed(&fresh.body["history"], "transaction_id", transfer), "{}", fresh.text);
    assert!(reads(&app, "primary", "replica_lagging").await > skipped, "a lagging replica is skipped");
    let lag = app.get("/metrics/basic", None).await.body["replica"].clone();
    assert_eq!(lag["status"], "lagging", "{lag}");
    assert!(lag["lag_bytes"].as_u64() > Some(0), "{lag}");
    // As of the monitor's last poll (reads add the time since): past the bound, give or take a poll interval.
    assert!(lag["lag_seconds"].as_f64() > Some(1.0), "{lag}");
    let metrics = app.get("/metrics", None).await.text;
    assert!(metrics.contains("banksim_replica_lag_bytes "), "lag in /metrics");
    assert!(metrics.contains("banksim_replica_lag_seconds "), "lag in /metrics");

    replica.execute("SELECT pg_wal_replay_resume()").await;
    let caught_up = wait_for_replica(&app, "ok", Duration::from_secs(10)).await;
    let served = replica_reads(&app).await;
    let replayed = app.get(history, Some(&payee.token)).await;
    assert!(listed(&replayed.body["history"], "transaction_id", transfer), "{}", replayed.text);
    let load = load.finish().await;
    assert!(replica_reads(&app).await > served, "the replica serves again once caught up");
    report(&format!(
        "replica lag: paused replay, skipped as lagging after {:.0} ms (bound {MAX_LAG_MS} ms); caught up {:.0} ms \
         after resuming; reads: {}",
        lagging_after.as_secs_f64() * 1000.0,
        caught_up.as_secs_f64() * 1000.0,
        read_counts(&app).await,
    ));
    assert!(load.server_errors().is_empty(), "{:?}", load.server_errors());
    assert!(load.missed_own_writes.is_empty(), "read-your-writes: {:?}", load.missed_own_writes);
    assert_nothing_acknowledged_was_lost(&app, &load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_primary_breaker_is_open_reads_that_may_lag_are_served_by_the_replica() {
    if !postgres_under_test() {
        return;
    }
    let primary = PgServer::primary().await;
    let replica = PgServer::replica_of(&primary).await;
    let replica_url = replica.url();
    let app = TestApp::spawn_on_url(&primary.url(), move |config| {
        config.database_replica_url = Some(replica_url.into());
        config.replica_poll_interval_ms = 50;
        config.breaker_reset_timeout_ms = 3_000;
        // Token checks read the user from the primary: the cache keeps this caller known while it is down.
        config.user_cache_ttl_ms = 60_000;
    })
    .await;
    let sefa = app.user("sefa").await;
    let credit = app.credit(&sefa, "10.00", "USD").await;
    wait_for_replica(&app, "ok", Duration::from_secs(10)).await;
    let history = "/api/v1/transactions/history";
    let before = app.get(history, Some(&sefa.token)).await;
    assert!(listed(&before.body["transactions"], "id", credit.id));

    // The primary goes down (every call fails): its breaker opens.
    app.faults.set_down(true);
    let breaker = app.state.breakers.get("database").expect("database breaker");
    let deadline = Instant::now() + Duration::from_secs(5);
    while breaker.state() != banksim_server::resilience::BreakerState::Open {
        assert!(Instant::now() < deadline, "the database breaker never opened");
        let _ = app.get("/api/v1/balances/current", Some(&sefa.token)).await;
    }
    // The background jobs' failures may open the breaker while a balance read lease renewed just before the outage
    // still holds (up to half a second): until it runs out the cached balance is provably current (no other
    // instance can change a wallet) and is served. After it, a balance needs the primary.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let balance = app.get("/api/v1/balances/current", Some(&sefa.token)).await;
    balance.assert_error(503, "service_unavailable");
    let one = json!({"amount": "1.00", "currency": "USD"});
    app.money("/api/v1/transactions/credit", &sefa, None, &one).await.assert_error(503, "service_unavailable");
    let served = reads(&app, "replica", "caught_up").await + reads(&app, "replica", "primary_unavailable").await;
    let during = app.get(history, Some(&sefa.token)).await;
    assert_eq!(during.status, StatusCode::OK, "the replica serves while the primary is out: {}", during.text);
    assert_eq!(during.body["transactions"], before.body["transactions"]);
    let after = reads(&app, "replica", "caught_up").await + reads(&app, "replica", "primary_unavailable").await;
    assert_eq!(after, served + 1, "{}", read_counts(&app).await);

    app.faults.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/api/v1/balances/current", Some(&sefa.token)).await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "the primary never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.assert_ledger_sound().await;
}

/// How the primary goes away and comes back.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// `pg_ctl restart -m fast`.
    Restart,
    /// `pg_ctl stop -m fast`, this long down, `pg_ctl start` (a slow restart: a long checkpoint, a recovery).
    Down(Duration),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_restarted_under_load_answers_503_for_a_bounded_window_and_loses_nothing_acknowledged() {
    if !postgres_under_test() {
        return;
    }
    let primary = PgServer::primary().await;
    let app = Arc::new(TestApp::spawn_on_url(&primary.url(), |config| config.breaker_reset_timeout_ms = 1_000).await);
    let users = funded_users(&app, 4).await;
    for outage in [Outage::Restart, Outage::Down(Duration::from_secs(7))] {
        let load = Load::start(&app, &users);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let began = Instant::now();
        match outage {
            Outage::Restart => primary.restart().await,
            Outage::Down(down) => {
                primary.stop().await;
                tokio::time::sleep(down).await;
                primary.start().await;
            }
        }
        let back = Instant::now();
        // Enough time after the restart for the pool, the breaker and the writer to come back.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let load = load.finish().await;

        let writes: Vec<&Seen> = load.seen.iter().filter(|s| s.is_write()).collect();
        let errors = load.server_errors();
        let not_503: Vec<&&Seen> = errors.iter().filter(|s| s.status != 503 || !s.retry_after).collect();
        assert!(not_503.is_empty(), "{outage:?}: every 5xx is a 503 with Retry-After: {not_503:?}");
        let first_503 = writes.iter().find(|s| s.status == 503).map(|s| s.at);
        let first_2xx_after = writes.iter().find(|s| s.at >= back && s.status == 201).map(|s| s.at);
        let first_2xx_after = first_2xx_after.expect("writes succeed again after the restart");
        let window = first_503.map(|at| first_2xx_after.saturating_duration_since(at));
        let recovery = first_2xx_after.saturating_duration_since(back);
        let slowest = load.seen.iter().filter(|s| s.at >= began).map(|s| s.took).max().unwrap_or_default();
        let codes: std::collections::BTreeMap<&str, usize> = errors.iter().fold(Default::default(), |mut codes, s| {
            *codes.entry(s.error_code.as_str()).or_default() += 1;
            codes
        });
        report(&format!(
            "primary {outage:?}: database back {:.0} ms after the outage began; 503 window {} (first 503 to first \
             2xx write after the database was back); writes back {:.0} ms after the database; slowest answer {:.0} \
             ms; 5xx {:?}; writes 201: {}",
            (back - began).as_secs_f64() * 1000.0,
            window.map_or("none".to_owned(), |w| format!("{:.0} ms", w.as_secs_f64() * 1000.0)),
            recovery.as_secs_f64() * 1000.0,
            slowest.as_secs_f64() * 1000.0,
            codes,
            load.count("credit", 201) + load.count("transfer", 201),
        ));
        assert!(
            recovery < Duration::from_secs(5),
            "{outage:?}: writes are back within 5 s of the database: {recovery:?}"
        );
        assert!(load.missed_own_writes.is_empty(), "read-your-writes: {:?}", load.missed_own_writes);
        assert_nothing_acknowledged_was_lost(&app, &load).await;
    }
}
