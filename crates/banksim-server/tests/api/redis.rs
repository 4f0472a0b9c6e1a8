//! Redis, optional: rate limits shared by every instance (and held by each instance alone while Redis is down),
//! user changes reaching every instance at once, and `/readyz`'s report. Each test runs a `redis-server` of its
//! own ([`RedisServer`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use banksim_server::Config;
use banksim_server::coordination::shared_limit::GCRA_SCRIPT;
use banksim_server::coordination::{Redis, SharedLimiter};
use banksim_server::http::rate_limit::Decision;
use banksim_server::resilience::{BreakerSettings, CircuitBreaker};
use banksim_store::testing::PauseAt;
use banksim_store::{Backend, UserChanges};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, TestResponse, TestUser, backends};
use crate::redis_server::RedisServer;

const LOGIN: &str = "/api/v1/auth/login";

/// The settings of the tests' instances on `redis`, then `configure`'s: clients named by `X-Forwarded-For`, a
/// breaker that opens after 2 failures and tries again after 300 ms.
fn on_redis(redis: &RedisServer, configure: impl Fn(&mut Config)) -> impl Fn(&mut Config) {
    let url = redis.url();
    move |config: &mut Config| {
        config.redis_url = Some(url.clone().into());
        config.trusted_proxies = vec!["127.0.0.1/32".parse().expect("range")];
        config.breaker_failure_threshold = 2;
        config.breaker_reset_timeout_ms = 300;
        configure(config);
    }
}

/// One instance on `redis` (see [`on_redis`]).
async fn single(backend: Backend, redis: &RedisServer, configure: impl Fn(&mut Config)) -> TestApp {
    TestApp::spawn_with(backend, on_redis(redis, configure), Router::new()).await
}

/// Two instances on one database and `redis` (see [`on_redis`]).
async fn pair(backend: Backend, redis: &RedisServer, configure: impl Fn(&mut Config)) -> (TestApp, TestApp) {
    let settings = on_redis(redis, configure);
    let first = TestApp::spawn_with(backend, &settings, Router::new()).await;
    let second = first.spawn_beside(&settings).await;
    (first, second)
}

/// A user created the way an operator would, with an access token issued directly: no request to the auth routes
/// (whose budget the tests count).
async fn quiet_user(app: &TestApp, username: &str) -> TestUser {
    let email = format!("{username}@example.com");
    let registration =
        banksim_server::service::users::Registration::parse(Some(username), Some(&email), Some(PASSWORD), None)
            .expect("valid user");
    let user = banksim_server::service::users::create(&app.state, registration, &Default::default())
        .await
        .expect("create user");
    let token = app.state.tokens.issue_access(&user, app.state.clock.now()).expect("token");
    app.user_with_token(user.id, &email, token)
}

/// A login of `email` from the client `ip` (through the trusted proxy 127.0.0.1).
async fn login_from(app: &TestApp, ip: &str, email: &str) -> TestResponse {
    let body = json!({"email": email, "password": PASSWORD}).to_string().into_bytes();
    app.raw(Method::POST, LOGIN, &[("content-type", "application/json"), ("x-forwarded-for", ip)], body).await
}

fn header(response: &TestResponse, name: &str) -> String {
    response.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// The value of one series of `/metrics`, 0 when absent.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics", None).await.text;
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

/// Waits (at most 5 s) until `app`'s `/readyz` reports Redis as `state`.
async fn wait_for_redis(app: &TestApp, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = app.get("/readyz", None).await;
        if ready.body["checks"]["redis"] == state {
            return;
        }
        assert!(Instant::now() < deadline, "Redis never became {state}: {}", ready.text);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Logs `email` in five times from `ip`, alternating between `first` and `second`, and checks that the budget is
/// one: the remaining count goes down across both instances, and the sixth login is refused on either.
async fn assert_shared_auth_budget(first: &TestApp, second: &TestApp, ip: &str, email: &str) {
    let instances = [first, second];
    for n in 0..5 {
        let login = login_from(instances[n % 2], ip, email).await;
        assert_eq!(login.status, StatusCode::OK, "login {n}: {}", login.text);
        assert_eq!(header(&login, "ratelimit-limit"), "5");
        assert_eq!(header(&login, "ratelimit-remaining"), (4 - n).to_string(), "one budget for both instances");
    }
    for instance in [second, first] {
        let refused = login_from(instance, ip, email).await;
        refused.assert_error(429, "rate_limited");
        let retry_after: u64 = header(&refused, "retry-after").parse().expect("seconds");
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_eq!(refused.body["retry_after"], retry_after);
        assert_eq!(header(&refused, "ratelimit-remaining"), "0");
    }
}

#[tokio::test]
async fn a_clients_sixth_login_in_a_minute_is_refused_whichever_instance_it_reaches() {
    for backend in backends() {
        let redis = RedisServer::start().await;
        let (first, second) = pair(backend, &redis, |config| config.auth_rate_limit_per_minute = 5).await;
        let sefa = quiet_user(&first, "sefa").await;
        assert_shared_auth_budget(&first, &second, "203.0.113.10", &sefa.email).await;
        let other = login_from(&second, "203.0.113.11", &sefa.email).await;
        assert_eq!(other.status, StatusCode::OK, "another client has a budget of its own");
        assert_eq!(header(&other, "ratelimit-remaining"), "4");
        for app in [&first, &second] {
            let limited = r#"banksim_rate_limit_requests_total{group="auth",decision="limited"}"#;
            assert!(metric(app, limited).await >= 1.0);
            assert_eq!(metric(app, r#"banksim_rate_limit_fallbacks_total{group="auth"}"#).await, 0.0);
        }
        second.stop().await;
        first.stop().await;
    }
}

/// What the load saw.
#[derive(Debug, Default)]
struct LoadReport {
    requests: u64,
    server_errors: Vec<String>,
}

/// A steady mix of logins (each from a client of its own), credits and balance reads, alternating between the
/// instances, until `stop` is set (at most 4,000 requests or 60 s).
async fn steady_load(
    first: &TestApp,
    second: &TestApp,
    user: &TestUser,
    stop: tokio::sync::watch::Receiver<bool>,
) -> LoadReport {
    let mut report = LoadReport::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let credit = json!({"amount": "1.00", "currency": "USD"});
    for round in 0u32..1_000 {
        if *stop.borrow() || Instant::now() > deadline {
            break;
        }
        let app = if round % 2 == 0 { first } else { second };
        let client = format!("198.18.{}.{}", round / 200, round % 200 + 1);
        let answers = [
            login_from(app, &client, &user.email).await,
            app.money("/api/v1/transactions/credit", user, None, &credit).await,
            app.get("/api/v1/balances/current?currency=USD", Some(&user.token)).await,
            app.get("/api/v1/me", Some(&user.token)).await,
        ];
        for answer in answers {
            report.requests += 1;
            if answer.status.is_server_error() {
                report.server_errors.push(format!("{} {}", answer.status, answer.text));
            }
        }
    }
    report
}

#[tokio::test]
async fn redis_going_down_under_load_costs_no_5xx_limits_hold_in_process_and_are_shared_again_after() {
    for backend in backends() {
        let mut redis = RedisServer::start().await;
        let (first, second) = pair(backend, &redis, |config| {
            config.auth_rate_limit_per_minute = 5;
            config.money_rate_limit_per_minute = 100_000;
            config.read_rate_limit_per_minute = 100_000;
        })
        .await;
        let sefa = quiet_user(&first, "sefa").await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let scenario = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.stop().await;
            let outage = Instant::now();
            // Redis is down: each instance counts alone, and still refuses the sixth login in a minute.
            for n in 0..5 {
                let login = login_from(&first, "203.0.113.20", &sefa.email).await;
                assert_eq!(login.status, StatusCode::OK, "login {n} during the outage: {}", login.text);
            }
            login_from(&first, "203.0.113.20", &sefa.email).await.assert_error(429, "rate_limited");
            let ready = first.get("/readyz", None).await;
            assert_eq!(ready.status, StatusCode::OK, "banksim works without Redis: {}", ready.text);
            assert_eq!(ready.body, json!({"status": "degraded", "checks": {"database": "ok", "redis": "unavailable"}}));
            let report = first.get("/api/v1/metrics/circuit-breakers", None).await;
            assert_eq!(report.body["circuit_breakers"]["redis"]["state"], "open", "{}", report.text);
            // Let the load run on a while without Redis, through the breaker's trials.
            tokio::time::sleep(Duration::from_millis(800).saturating_sub(outage.elapsed())).await;

            redis.restart().await;
            wait_for_redis(&first, "ok").await;
            wait_for_redis(&second, "ok").await;
            // Redis is back (empty: it kept nothing): the instances count together again.
            assert_shared_auth_budget(&first, &second, "203.0.113.21", &sefa.email).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = stop.send(true);
        };
        let (report, ()) = tokio::join!(steady_load(&first, &second, &sefa, stopped), scenario);
        assert!(report.server_errors.is_empty(), "5xx answers: {:#?}", report.server_errors);
        assert!(report.requests >= 40, "the load ran: {report:?}");
        for group in ["auth", "money", "read"] {
            let fallbacks = metric(&first, &format!(r#"banksim_rate_limit_fallbacks_total{{group="{group}"}}"#)).await;
            assert!(fallbacks >= 1.0, "{group} was decided in-process during the outage");
        }
        second.stop().await;
        first.stop().await;
    }
}

#[tokio::test]
async fn a_redis_that_hangs_is_cut_off_after_its_timeout_and_never_fails_a_request() {
    for backend in backends() {
        let redis = RedisServer::start().await;
        let app = single(backend, &redis, |config| {
            config.read_rate_limit_per_minute = 3;
            config.redis_timeout_ms = 100;
            config.breaker_failure_threshold = 100;
        })
        .await;
        let sefa = quiet_user(&app, "sefa").await;
        let read = app.get("/api/v1/balances", Some(&sefa.token)).await;
        assert_eq!((read.status, header(&read, "ratelimit-remaining")), (StatusCode::OK, "2".to_owned()));
        redis.pause();
        // Every call now waits for its timeout (the breaker is kept closed): each answer still comes, in time.
        for n in 0..2 {
            let started = Instant::now();
            let read = app.get("/api/v1/balances", Some(&sefa.token)).await;
            assert_eq!(read.status, StatusCode::OK, "read {n}: {}", read.text);
            assert!(started.elapsed() < Duration::from_millis(900), "answered after {:?}", started.elapsed());
        }
        // The in-process count had seen the first read (allowed by Redis), so the budget of 3 is spent.
        app.get("/api/v1/balances", Some(&sefa.token)).await.assert_error(429, "rate_limited");
        let ready = app.get("/readyz", None).await;
        assert_eq!((ready.status, ready.body["status"].clone()), (StatusCode::OK, json!("degraded")));
        redis.resume();
        wait_for_redis(&app, "ok").await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_user_deactivated_on_one_instance_is_refused_on_the_other_within_a_second() {
    for backend in backends() {
        let redis = RedisServer::start().await;
        // A minute of cache: only the message through Redis can explain a refusal within a second.
        let (first, second) = pair(backend, &redis, |config| config.user_cache_ttl_ms = 60_000).await;
        let admin = first.admin("boss").await;
        let sefa = first.user("sefa").await;
        let kerem = first.user("kerem").await;
        wait_for_subscribers(&redis, 2).await;
        for user in [&sefa, &kerem] {
            assert_eq!(second.get("/api/v1/me", Some(&user.token)).await.status, StatusCode::OK, "cached there");
        }

        deactivate(&first, &admin, &sefa).await;
        let took = refused_within(&second, &sefa, Duration::from_secs(1)).await;
        assert!(took < Duration::from_secs(1), "refused after {took:?}");

        // Logging out ends the session's access tokens on every instance as quickly.
        let logout = json!({"refresh_token": kerem.refresh_token});
        assert_eq!(first.post("/api/v1/auth/logout", Some(&kerem.token), &logout).await.status, StatusCode::NO_CONTENT);
        let took = refused_within(&second, &kerem, Duration::from_secs(1)).await;
        assert!(took < Duration::from_secs(1), "refused after {took:?}");
        second.stop().await;
        first.stop().await;
    }
}

#[tokio::test]
async fn without_redis_another_instance_sees_a_user_change_only_when_its_cache_expires() {
    let backend = backends()[0];
    let first = TestApp::spawn_with(backend, |config| config.user_cache_ttl_ms = 60_000, Router::new()).await;
    let second = first.spawn_beside(|config| config.user_cache_ttl_ms = 60_000).await;
    let admin = first.admin("boss").await;
    let sefa = first.user("sefa").await;
    assert_eq!(second.get("/api/v1/me", Some(&sefa.token)).await.status, StatusCode::OK);
    deactivate(&first, &admin, &sefa).await;
    first.get("/api/v1/me", Some(&sefa.token)).await.assert_error(401, "unauthorized");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stale = second.get("/api/v1/me", Some(&sefa.token)).await;
    assert_eq!(stale.status, StatusCode::OK, "the other instance still has the user cached: {}", stale.text);
    second.stop().await;
    first.stop().await;
}

/// Has `admin` deactivate `user` through `app`.
async fn deactivate(app: &TestApp, admin: &TestUser, user: &TestUser) {
    let path = format!("/api/v1/users/{}", user.id);
    let deactivated = app.put(&path, Some(&admin.token), &json!({"is_active": false})).await;
    assert_eq!(deactivated.status, StatusCode::OK, "{}", deactivated.text);
}

#[tokio::test]
async fn an_instance_that_missed_user_changes_while_redis_was_down_reads_every_user_again() {
    for backend in backends() {
        let mut redis = RedisServer::start().await;
        let (first, second) = pair(backend, &redis, |config| config.user_cache_ttl_ms = 60_000).await;
        let admin = first.admin("boss").await;
        let sefa = first.user("sefa").await;
        wait_for_subscribers(&redis, 2).await;
        assert_eq!(second.get("/api/v1/me", Some(&sefa.token)).await.status, StatusCode::OK, "cached there");
        redis.stop().await;
        // The change's message is lost with Redis down: the other instance goes on with what it cached.
        deactivate(&first, &admin, &sefa).await;
        assert_eq!(second.get("/api/v1/me", Some(&sefa.token)).await.status, StatusCode::OK, "stale, for now");
        redis.restart().await;
        // Once it follows the channel again, it reads every user afresh (its reconnection backoff is short
        // after a short outage).
        let took = refused_within(&second, &sefa, Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(5), "refused after {took:?}");
        second.stop().await;
        first.stop().await;
    }
}

#[tokio::test]
async fn a_cache_fill_that_raced_forgetting_every_user_never_outlives_it() {
    for backend in backends() {
        let app = TestApp::spawn_with(backend, |config| config.user_cache_ttl_ms = 60_000, Router::new()).await;
        let sefa = quiet_user(&app, "sefa").await;
        // A request of sefa's reads her (active)...
        let reading = app.faults.pause("find_user", PauseAt::After);
        let request = {
            let (client, url, token) =
                (reqwest::Client::new(), format!("{}/api/v1/me", app.address), sefa.token.clone());
            tokio::spawn(async move { client.get(url).bearer_auth(token).send().await.expect("me").status() })
        };
        reading.reached().await;
        // ...while another instance deactivates her unheard, and this one subscribes again and forgets everyone.
        let id = sefa.id.parse().expect("uuid");
        let changes = UserChanges { is_active: Some(false), ..UserChanges::default() };
        app.state.store.update_user(id, changes, app.state.clock.now(), &Default::default()).await.expect("update");
        app.state.users.forget_all_locally();
        reading.resume();
        let _ = request.await.expect("task");
        // The slow fill must not have put the active user back into the cache.
        app.get("/api/v1/me", Some(&sefa.token)).await.assert_error(401, "unauthorized");
        app.stop().await;
    }
}

/// Waits (at most 5 s) until `count` connections follow the user changes.
async fn wait_for_subscribers(redis: &RedisServer, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let expected = format!(":{count}\r\n");
    while !redis.command(&["PUBSUB", "NUMSUB", "banksim:user-changes"]).await.ends_with(&expected) {
        assert!(Instant::now() < deadline, "the instances never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long until `app` refuses `user`'s access token (polling every 10 ms, giving up after twice `limit`).
async fn refused_within(app: &TestApp, user: &TestUser, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let me = app.get("/api/v1/me", Some(&user.token)).await;
        if me.status == StatusCode::UNAUTHORIZED {
            return started.elapsed();
        }
        assert_eq!(me.status, StatusCode::OK, "{}", me.text);
        assert!(started.elapsed() < limit * 2, "still accepted after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn money_and_read_limits_are_off_by_default() {
    let redis = RedisServer::start().await;
    let app = single(backends()[0], &redis, |_| {}).await;
    let sefa = quiet_user(&app, "sefa").await;
    for _ in 0..8 {
        let read = app.get("/api/v1/balances", Some(&sefa.token)).await;
        assert_eq!(read.status, StatusCode::OK);
        assert!(!read.headers.contains_key("ratelimit-limit"), "no read limit: {:?}", read.headers);
        let credit =
            app.money("/api/v1/transactions/credit", &sefa, None, &json!({"amount": 1, "currency": "USD"})).await;
        assert_eq!(credit.status, StatusCode::CREATED);
        assert!(!credit.headers.contains_key("ratelimit-limit"), "no money limit");
    }
    let text = app.get("/metrics", None).await.text;
    assert!(text.contains(r#"banksim_rate_limit_requests_total{group="auth",decision="allowed"}"#));
    assert!(
        !text.contains(r#"group="read""#) && !text.contains(r#"group="money""#),
        "no series for groups that are off"
    );
    app.stop().await;
}

/// Spends `user`'s budgets of 3 reads and 2 money movements across `instances` (one alone: in-process), with the
/// headers and the 429 of API.md, and checks that another user and other requests are not touched.
async fn assert_user_budgets(instances: [&TestApp; 2], sefa: &TestUser, kerem: &TestUser) {
    for n in 0..3 {
        let read = instances[n % 2].get("/api/v1/balances", Some(&sefa.token)).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text);
        assert_eq!(header(&read, "ratelimit-limit"), "3");
        assert_eq!(header(&read, "ratelimit-remaining"), (2 - n).to_string());
        assert!(header(&read, "ratelimit-reset").parse::<u64>().is_ok_and(|s| s <= 60));
    }
    let refused = instances[1].get("/api/v1/transactions/history", Some(&sefa.token)).await;
    refused.assert_error(429, "rate_limited");
    assert!(header(&refused, "retry-after").parse::<u64>().is_ok_and(|s| (1..=60).contains(&s)));
    let other = instances[0].get("/api/v1/balances", Some(&kerem.token)).await;
    assert_eq!((other.status, header(&other, "ratelimit-remaining")), (StatusCode::OK, "2".to_owned()), "per user");
    assert_eq!(instances[0].get("/api/v1/ping", None).await.status, StatusCode::OK, "service routes are not counted");
    let anonymous = instances[0].get("/api/v1/balances", None).await;
    anonymous.assert_error(401, "unauthorized");

    let credit = json!({"amount": "1.00", "currency": "USD"});
    for n in 0..2 {
        let moved = instances[n % 2].money("/api/v1/transactions/credit", sefa, None, &credit).await;
        assert_eq!(moved.status, StatusCode::CREATED, "{}", moved.text);
        assert_eq!(header(&moved, "ratelimit-limit"), "2");
        assert_eq!(header(&moved, "ratelimit-remaining"), (1 - n).to_string());
    }
    let schedule = json!({"transaction_type": "credit", "amount": "1.00", "currency": "USD", "schedule_type": "once",
        "execute_at": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339()});
    let refused = instances[0].money("/api/v1/scheduled-transactions", sefa, None, &schedule).await;
    refused.assert_error(429, "rate_limited");
    assert_eq!(
        instances[1].money("/api/v1/transactions/credit", kerem, None, &credit).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn money_and_read_limits_count_per_user_across_instances() {
    for backend in backends() {
        let redis = RedisServer::start().await;
        let (first, second) = pair(backend, &redis, |config| {
            config.money_rate_limit_per_minute = 2;
            config.read_rate_limit_per_minute = 3;
        })
        .await;
        let sefa = quiet_user(&first, "sefa").await;
        let kerem = quiet_user(&first, "kerem").await;
        assert_user_budgets([&first, &second], &sefa, &kerem).await;
        for group in ["money", "read"] {
            let series = format!(r#"banksim_rate_limit_requests_total{{group="{group}",decision="limited"}}"#);
            let limited = metric(&first, &series).await + metric(&second, &series).await;
            assert_eq!(limited, 1.0, "{group}: one refusal, counted by the instance that refused");
        }
        second.stop().await;
        first.stop().await;
    }
}

#[tokio::test]
async fn money_and_read_limits_hold_without_redis_too() {
    let app = TestApp::spawn_with(
        backends()[0],
        |config| {
            config.money_rate_limit_per_minute = 2;
            config.read_rate_limit_per_minute = 3;
        },
        Router::new(),
    )
    .await;
    let sefa = quiet_user(&app, "sefa").await;
    let kerem = quiet_user(&app, "kerem").await;
    assert_user_budgets([&app, &app], &sefa, &kerem).await;
    app.stop().await;
}

#[tokio::test]
async fn readyz_reports_redis_and_an_instance_starts_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    redis.stop().await;
    let app = single(backends()[0], &redis, |_| {}).await;
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body, json!({"status": "degraded", "checks": {"database": "ok", "redis": "unavailable"}}));
    redis.restart().await;
    wait_for_redis(&app, "ok").await;
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.body, json!({"status": "ok", "checks": {"database": "ok", "redis": "ok"}}));
    let report = app.get("/api/v1/metrics/circuit-breakers", None).await;
    assert_eq!(report.body["circuit_breakers"]["redis"]["state"], "closed", "{}", report.text);
    app.stop().await;
}

#[tokio::test]
async fn the_gcra_script_counts_in_redis_expires_its_keys_and_survives_a_script_flush() {
    let redis = RedisServer::start().await;
    let breaker = Arc::new(CircuitBreaker::new("redis", BreakerSettings::default()));
    let connection = Arc::new(Redis::connect(&redis.url(), Duration::from_millis(500), breaker).expect("redis"));
    let limiter = SharedLimiter::new(connection);
    let period = Duration::from_millis(900);
    let check = || limiter.check("banksim:rate:test:ip:192.0.2.1", 3, period);
    for remaining in [2, 1, 0] {
        assert!(
            matches!(check().await.expect("answered"), Decision::Allowed { remaining: r, reset_secs: 1 } if r == remaining)
        );
    }
    assert_eq!(check().await.expect("answered"), Decision::Limited { retry_after_secs: 1 });
    let ttl: i64 = redis
        .command(&["PTTL", "banksim:rate:test:ip:192.0.2.1"])
        .await
        .trim_start_matches(':')
        .trim()
        .parse()
        .expect("ms");
    assert!((1..=900).contains(&ttl), "the key lives until the budget is whole again: {ttl} ms");
    // One interval (300 ms) later, one more request is allowed, and no more.
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert!(matches!(check().await.expect("answered"), Decision::Allowed { remaining: 0, .. }));
    assert!(matches!(check().await.expect("answered"), Decision::Limited { .. }));
    // A Redis that forgot the script (restarted, flushed) is sent it again.
    assert!(redis.command(&["SCRIPT", "FLUSH"]).await.starts_with("+OK"));
    assert!(matches!(check().await.expect("answered"), Decision::Limited { .. }));
    let sha = ::redis::Script::new(GCRA_SCRIPT).get_hash().to_owned();
    assert_eq!(redis.command(&["SCRIPT", "EXISTS", &sha]).await, "*1\r\n:1\r\n", "EVAL cached it again");
    // An idle client costs nothing: its key is gone once its budget is whole.
    tokio::time::sleep(Duration::from_millis(950)).await;
    assert_eq!(redis.command(&["EXISTS", "banksim:rate:test:ip:192.0.2.1"]).await, ":0\r\n");
    assert!(matches!(check().await.expect("answered"), Decision::Allowed { remaining: 2, .. }));
}
