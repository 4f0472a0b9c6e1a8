//! Circuit breakers and transient database errors: the database's breaker opens on failures and refuses at once,
//! lets one trial through after its timeout and closes on success; a read that meets a broken connection is tried
//! again; the demo routes and the report of API.md.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, backends};

const REPORT: &str = "/api/v1/metrics/circuit-breakers";

async fn breaker_state(app: &TestApp, name: &str) -> String {
    let report = app.get(REPORT, None).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text);
    report.body["circuit_breakers"][name]["state"].as_str().unwrap_or_default().to_owned()
}

/// Waits (at most 5 s) until the breaker `name` reads `state`.
async fn wait_for_state(app: &TestApp, name: &str, state: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while breaker_state(app, name).await != state {
        assert!(tokio::time::Instant::now() < deadline, "{name} never became {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_database_breaker_opens_on_failures_refuses_at_once_and_closes_after_a_good_trial() {
    for backend in backends() {
        let app = TestApp::spawn_with(
            backend,
            |config| {
                config.breaker_failure_threshold = 3;
                config.breaker_reset_timeout_ms = 1_500;
            },
            axum::Router::new(),
        )
        .await;
        let sefa = app.user("sefa").await;
        let credit = json!({"amount": "1.00", "currency": "USD"});
        // The database goes down: every call fails, the requests' and the background jobs' alike.
        app.faults.set_down(true);
        for _ in 0..3 {
            let refused = app.money("/api/v1/transactions/credit", &sefa, None, &credit).await;
            refused.assert_error(503, "service_unavailable");
        }
        let report = app.get(REPORT, None).await.body["circuit_breakers"]["database"].clone();
        assert_eq!(report["state"], "open", "{report}");
        app.faults.set_down(false);
        // Open: refused at once, without a call to the database (which would succeed now).
        let fast = app.money("/api/v1/transactions/credit", &sefa, None, &credit).await;
        fast.assert_error(503, "service_unavailable");
        assert!(fast.headers.contains_key("retry-after"));
        assert!(fast.text.contains("circuit"), "{}", fast.text);
        assert_eq!(app.balance_via_store(&sefa).await, 0, "nothing was posted");

        // After the reset timeout one trial goes through (the scheduler's poll may be the one that makes it, and
        // while it runs others are still refused): a client retrying after Retry-After gets through.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let retry = app.money("/api/v1/transactions/credit", &sefa, None, &credit).await;
            if retry.status == StatusCode::CREATED {
                break;
            }
            retry.assert_error(503, "service_unavailable");
            assert!(tokio::time::Instant::now() < deadline, "the breaker never closed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(breaker_state(&app, "database").await, "closed");
        assert_eq!(app.balance(&sefa, "USD").await, "1.00");
        let report = app.get(REPORT, None).await.body["circuit_breakers"]["database"].clone();
        assert!(report["opens"].as_u64() >= Some(1), "{report}");
        assert!(report["total_failures"].as_u64() >= Some(3), "{report}");
        assert!(report["last_failure_at"].is_string(), "{report}");
        let metrics = app.get("/metrics", None).await.text;
        let opens = metrics
            .lines()
            .find_map(|line| line.strip_prefix("banksim_circuit_breaker_opens_total{breaker=\"database\"} "))
            .and_then(|value| value.parse::<u64>().ok());
        assert!(opens >= Some(1), "{metrics}");
        assert!(metrics.contains("banksim_circuit_breaker_state{breaker=\"database\"} 0"), "closed: {metrics}");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_read_that_meets_a_broken_connection_is_tried_once_more_then_answers_503() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "5.00", "USD").await;
        app.faults.fail_before("wallets", 1);
        let retried = app.get("/api/v1/balances", Some(&sefa.token)).await;
        assert_eq!(retried.status, StatusCode::OK, "one broken connection is retried: {}", retried.text);
        app.faults.fail_before("wallets", 2);
        let refused = app.get("/api/v1/balances", Some(&sefa.token)).await;
        refused.assert_error(503, "service_unavailable");
        assert!(refused.headers.contains_key("retry-after"));
        app.stop().await;
    }
}

#[tokio::test]
async fn the_demo_routes_fail_open_and_recover_as_api_md_says() {
    for backend in backends() {
        let app = TestApp::spawn_with(
            backend,
            |config| {
                config.test_breaker_reset_timeout_ms = 300;
                config.test_breaker_call_timeout_ms = 100;
            },
            axum::Router::new(),
        )
        .await;
        let ok = app.get("/api/v1/test/circuit-breaker/success", None).await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.body, json!({"message": "Circuit breaker test - success", "status": "ok"}));

        for _ in 0..2 {
            let failed = app.get("/api/v1/test/circuit-breaker/failure", None).await;
            failed.assert_error(500, "simulated_failure");
            assert_eq!(failed.body["error"], "Circuit breaker test - simulated failure");
        }
        let open = app.get("/api/v1/test/circuit-breaker/failure", None).await;
        open.assert_error(503, "circuit_open");
        assert_eq!(open.body["error"], "Service temporarily unavailable");
        assert_eq!(open.body["service"], "test-failure-service");
        assert!(open.headers.contains_key("retry-after"));
        wait_for_state(&app, "test-failure-service", "half-open").await;
        let trial = app.get("/api/v1/test/circuit-breaker/failure", None).await;
        trial.assert_error(500, "simulated_failure");
        assert_eq!(breaker_state(&app, "test-failure-service").await, "open", "a failed trial opens it again");

        let cut = app.get("/api/v1/test/circuit-breaker/timeout", None).await;
        cut.assert_error(504, "request_timeout");
        let report = app.get(REPORT, None).await.body["circuit_breakers"]["test-timeout-service"].clone();
        assert_eq!(report["total_failures"], 1, "a timeout counts as a failure: {report}");
        let all = app.get(REPORT, None).await.body["circuit_breakers"].clone();
        assert!(all["database"]["state"].is_string(), "the real breakers are reported: {all}");
        app.stop().await;
    }
}

#[tokio::test]
async fn the_demo_routes_can_be_switched_off() {
    for backend in backends() {
        let app = TestApp::spawn_with(backend, |config| config.test_breaker_routes = false, axum::Router::new()).await;
        app.get("/api/v1/test/circuit-breaker/success", None).await.assert_error(404, "not_found");
        let all = app.get(REPORT, None).await.body["circuit_breakers"].clone();
        assert!(all.get("test-failure-service").is_none(), "{all}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_movement_queued_while_the_breaker_opens_is_answered_503_not_500() {
    for backend in backends() {
        let app = std::sync::Arc::new(
            TestApp::spawn_with(
                backend,
                |config| {
                    config.breaker_failure_threshold = 1;
                    config.breaker_reset_timeout_ms = 60_000;
                    // No background call may open or close the breaker behind the test's back.
                    config.scheduler_enabled = false;
                    config.projector_enabled = false;
                },
                axum::Router::new(),
            )
            .await,
        );
        let sefa = app.user("sefa").await;
        let credit = |key: &'static str| {
            let (app, sefa) = (app.clone(), sefa.clone());
            tokio::spawn(async move {
                app.money(
                    "/api/v1/transactions/credit",
                    &sefa,
                    Some(key),
                    &json!({"amount": "1.00", "currency": "USD"}),
                )
                .await
            })
        };
        // The writer holds a first batch (its call already let through by the breaker); a second movement queues.
        let held = app.faults.pause("post_batch", banksim_store::testing::PauseAt::Before);
        let first = credit("first");
        held.reached().await;
        let second = credit("second");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while app.state.writer.queue_depth() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the second movement never queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Meanwhile the database fails elsewhere: the breaker opens before the second batch is tried.
        let breaker = app.state.breakers.get("database").expect("the database breaker");
        breaker.permit().expect("closed").failed();
        held.resume();
        assert_eq!(first.await.expect("first").status, StatusCode::CREATED);
        let refused = second.await.expect("second");
        refused.assert_error(503, "service_unavailable");
        assert!(refused.headers.contains_key("retry-after"), "{:?}", refused.headers);
        assert!(refused.text.contains("circuit"), "{}", refused.text);
        let app = std::sync::Arc::into_inner(app).expect("sole owner");
        app.stop().await;
    }
}
