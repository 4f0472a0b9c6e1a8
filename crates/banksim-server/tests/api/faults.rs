//! Faults at exact moments, injected through the store's fault seam (`FaultyStore`): a commit whose answer is
//! lost, a scheduler that dies between moving money and recording it, a cache fill that races a change. Each
//! answer must stay true to what the database holds.

use std::sync::Arc;
use std::time::Duration;

use banksim_core::ManualClock;
use banksim_store::testing::PauseAt;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse, TestUser, backends};

const SCHEDULES: &str = "/api/v1/scheduled-transactions";

fn march_2030() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 3, 1, 8, 0, 0).single().expect("instant")
}

fn at(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Waits (at most 10 s) until `ready` holds.
async fn eventually<F, Fut>(what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ready().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_answered_503_never_refused() {
    for backend in backends() {
        let app = Arc::new(TestApp::spawn(backend).await);
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        app.credit(&sefa, "100.00", "USD").await;
        app.credit(&kerem, "40.00", "USD").await;
        let send = |user: &TestUser, path: &'static str, body: Value| {
            let (app, user) = (app.clone(), user.clone());
            tokio::spawn(async move { app.money(path, &user, None, &body).await })
        };
        // Hold the writer on a first batch so that the two debits queue and are committed together.
        let lock = app.lock_writes().await;
        let first = send(&kerem, "/api/v1/transactions/credit", json!({"amount": "1.00", "currency": "USD"}));
        eventually("the writer holds the first batch", || async { app.state.writer.queue_depth() == 0 }).await;
        let whole = send(&sefa, "/api/v1/transactions/debit", json!({"amount": "100.00", "currency": "USD"}));
        let part = send(&kerem, "/api/v1/transactions/debit", json!({"amount": "40.00", "currency": "USD"}));
        eventually("both debits wait in the queue", || async { app.state.writer.queue_depth() == 2 }).await;
        app.faults.fail_after_commit(2);
        lock.release().await;

        for pending in [first, whole, part] {
            let answer: TestResponse = pending.await.expect("task");
            answer.assert_error(503, "commit_outcome_unknown");
            assert!(answer.headers.contains_key("retry-after"), "{:?}", answer.headers);
        }
        // Both batches did commit: the money moved, although no client was told it did.
        assert_eq!(app.balance(&sefa, "USD").await, "0.00");
        assert_eq!(app.balance(&kerem, "USD").await, "1.00");
        app.assert_ledger_sound().await;

        // With a key, the retry of a lost answer gets the stored one and moves nothing again.
        app.credit(&sefa, "30.00", "USD").await;
        app.faults.fail_after_commit(1);
        let body = json!({"amount": "30.00", "currency": "USD"});
        let lost = app.money("/api/v1/transactions/debit", &sefa, Some("lost-answer"), &body).await;
        lost.assert_error(503, "commit_outcome_unknown");
        let retry = app.money("/api/v1/transactions/debit", &sefa, Some("lost-answer"), &body).await;
        assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.text);
        assert_eq!(retry.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
        assert_eq!(app.balance(&sefa, "USD").await, "0.00", "debited once");
        app.assert_ledger_sound().await;
        Arc::into_inner(app).expect("sole owner").stop().await;
    }
}

#[tokio::test]
async fn a_scheduled_payment_that_committed_before_its_record_failed_is_recorded_not_refused_or_repeated() {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = TestApp::spawn_on_clock(backend, |_| {}, clock.clone()).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        app.credit(&sefa, "100.00", "USD").await;
        clock.set(march_2030());
        let due = march_2030() + chrono::Duration::hours(1);
        let body = json!({"transaction_type": "transfer", "to_user_id": kerem.id, "amount": "10.00",
                          "currency": "USD", "schedule_type": "once", "execute_at": at(due)});
        let created = app.money(SCHEDULES, &sefa, None, &body).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let path = format!("{SCHEDULES}/{}", created.body["id"].as_str().expect("id"));

        // The transfer commits; recording the occurrence fails, as if the instance died right after the commit.
        app.faults.fail_before("record_occurrence", 1);
        clock.set(due);
        eventually("the transfer committed", || async { app.balance(&kerem, "USD").await == "10.00" }).await;
        eventually("the claim was given back", || async {
            let schedule = app.get(&path, Some(&sefa.token)).await.body;
            schedule["next_execution_at"].as_str().is_some_and(|next| next > at(due).as_str())
        })
        .await;
        // Before the attempt is made again, the recipient is deactivated.
        let deactivate =
            app.put(&format!("/api/v1/users/{}", kerem.id), Some(&admin.token), &json!({"is_active": false})).await;
        assert_eq!(deactivate.status, StatusCode::OK, "{}", deactivate.text);

        let mut runs = Vec::new();
        for minute in 1..=60 {
            clock.set(due + chrono::Duration::minutes(minute));
            tokio::time::sleep(Duration::from_millis(60)).await;
            runs = app.get(&format!("{path}/executions"), Some(&sefa.token)).await.body["executions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !runs.is_empty() {
                break;
            }
        }
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0]["status"], "success", "the money moved: {runs:?}");
        let transfers = app.get("/api/v1/transactions/history?type=transfer", Some(&sefa.token)).await;
        let listed = transfers.body["transactions"].as_array().expect("transactions").clone();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(runs[0]["transaction_id"], listed[0]["id"]);

        // The recipient comes back: the occurrence is done and never pays again.
        let reactivate =
            app.put(&format!("/api/v1/users/{}", kerem.id), Some(&admin.token), &json!({"is_active": true})).await;
        assert_eq!(reactivate.status, StatusCode::OK, "{}", reactivate.text);
        clock.set(due + chrono::Duration::days(2));
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Deactivation ended kerem's session (and a login now would carry the virtual clock's future instants).
        let wallets = app.state.store.wallets(kerem.id.parse().expect("uuid"), None).await.expect("wallets");
        assert_eq!(wallets.iter().map(|w| w.balance_minor).collect::<Vec<_>>(), [1_000], "paid once");
        assert_eq!(app.balance(&sefa, "USD").await, "90.00");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn resuming_a_schedule_never_reruns_an_occurrence_recorded_meanwhile() {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = TestApp::spawn_on_clock(backend, |_| {}, clock.clone()).await;
        let sefa = app.user("sefa").await;
        clock.set(march_2030());
        let first = march_2030() + chrono::Duration::hours(1);
        let body = json!({"transaction_type": "credit", "amount": "5.00", "currency": "USD",
                          "schedule_type": "recurring", "execute_at": at(first), "recurrence_pattern": "daily"});
        let created = app.money(SCHEDULES, &sefa, None, &body).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let path = format!("{SCHEDULES}/{}", created.body["id"].as_str().expect("id"));

        // The scheduler has moved the money of occurrence 1 and is about to record it...
        let recording = app.faults.pause("record_occurrence", PauseAt::Before);
        clock.set(first + chrono::Duration::seconds(1));
        recording.reached().await;
        // ...when the owner pauses the schedule, then resumes it: the resume reads the schedule...
        let paused = app.money(&format!("{path}/pause"), &sefa, None, &Value::Null).await;
        assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
        let reading = app.faults.pause("find_schedule", PauseAt::After);
        let resume = {
            let (client, url, token) =
                (reqwest::Client::new(), format!("{}{path}/resume", app.address), sefa.token.clone());
            tokio::spawn(async move { client.post(url).bearer_auth(token).send().await.expect("resume").status() })
        };
        reading.reached().await;
        // ...and the occurrence is recorded before the resume goes on.
        recording.resume();
        eventually("occurrence 1 is recorded", || async {
            app.get(&path, Some(&sefa.token)).await.body["current_occurrence"] == 1
        })
        .await;
        reading.resume();
        assert_eq!(resume.await.expect("task"), StatusCode::OK);

        let resumed = app.get(&path, Some(&sefa.token)).await.body;
        assert_eq!(resumed["status"], "active");
        let next: DateTime<Utc> = resumed["next_execution_at"].as_str().expect("next").parse().expect("instant");
        assert_eq!(next, first + chrono::Duration::days(1), "{resumed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let runs = app.get(&format!("{path}/executions"), Some(&sefa.token)).await.body["executions"].clone();
        assert_eq!(runs.as_array().map(Vec::len), Some(1), "occurrence 2 is not due yet: {runs}");
        assert_eq!(app.balance(&sefa, "USD").await, "5.00");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_cache_fill_that_read_a_user_before_a_change_never_outlives_the_change() {
    for backend in backends() {
        let app = TestApp::spawn_with(backend, |config| config.user_cache_ttl_ms = 60_000, axum::Router::new()).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let id = sefa.id.parse().expect("uuid");
        app.state.users.forget(id);

        // A request of sefa's reads her (active) while an admin deactivates her.
        let reading = app.faults.pause("find_user", PauseAt::After);
        let request = {
            let (client, url, token) =
                (reqwest::Client::new(), format!("{}/api/v1/me", app.address), sefa.token.clone());
            tokio::spawn(async move { client.get(url).bearer_auth(token).send().await.expect("me").status() })
        };
        reading.reached().await;
        let deactivate =
            app.put(&format!("/api/v1/users/{}", sefa.id), Some(&admin.token), &json!({"is_active": false})).await;
        assert_eq!(deactivate.status, StatusCode::OK, "{}", deactivate.text);
        reading.resume();
        let _ = request.await.expect("task");

        // The slow fill must not have put the active user back into the cache.
        app.get("/api/v1/me", Some(&sefa.token)).await.assert_error(401, "unauthorized");
        app.stop().await;
    }
}
