//! Redis, optional: `/readyz`'s report, and an instance that starts and serves while Redis is down. Each test runs a
//! `redis-server` of its own ([`RedisServer`]).

use std::time::{Duration, Instant};

use axum::Router;
use banksim_server::Config;
use banksim_store::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, backends};
use crate::redis_server::RedisServer;

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
