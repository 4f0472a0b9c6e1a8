//! `/api/v1/scheduled-transactions` and the scheduler that runs them.

use std::sync::Arc;
use std::time::Duration;

use banksim_client::{CreateScheduleRequest, ExecutionStatus};
use banksim_core::ManualClock;
use banksim_core::currency::Currency;
use banksim_core::ledger::TransactionKind;
use banksim_core::schedule::{ScheduleKind, ScheduleStatus};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, backends};

const SCHEDULES: &str = "/api/v1/scheduled-transactions";

fn at(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Creates a schedule and asserts it was accepted.
async fn schedule(app: &TestApp, user: &TestUser, body: Value) -> Value {
    let response = app.money(SCHEDULES, user, None, &body).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    response.body
}

/// The executions of a schedule.
async fn executions(app: &TestApp, user: &TestUser, id: &Value) -> Vec<Value> {
    let path = format!("{SCHEDULES}/{}/executions", id.as_str().expect("id"));
    let response = app.get(&path, Some(&user.token)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    response.body["executions"].as_array().expect("executions").clone()
}

/// Waits (at most 10 s) until the schedule has `count` executions and no lease in flight, then returns them.
async fn wait_for_executions(app: &TestApp, user: &TestUser, id: &Value, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done = executions(app, user, id).await;
        if done.len() >= count {
            return done;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {} of {count} executions: {done:?}", done.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_schedule(app: &TestApp, user: &TestUser, id: &Value) -> Value {
    app.get(&format!("{SCHEDULES}/{}", id.as_str().expect("id")), Some(&user.token)).await.body
}

#[tokio::test]
async fn a_one_time_schedule_runs_once() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "100", "USD").await;
        let due = Utc::now() + chrono::Duration::milliseconds(300);
        let mut request = CreateScheduleRequest::once(TransactionKind::Debit, "10.00", Currency::USD, due);
        request.description = Some("rent".to_owned());
        let created = sefa.api.create_schedule(&request).reply().await.expect("created");
        assert_eq!(created.status, StatusCode::CREATED);
        let created = created.body;
        assert_eq!((created.status, created.is_active, created.current_occurrence), (ScheduleStatus::Active, true, 0));
        assert_eq!(created.schedule_type, ScheduleKind::Once);
        assert_eq!(created.amount, "10.00");
        assert!(created.next_execution_at.is_some());

        let id = json!(created.id);
        wait_for_executions(&app, &sefa, &id, 1).await;
        let runs = sefa.api.executions(created.id).await.expect("executions").executions;
        assert_eq!((runs[0].status, runs[0].occurrence), (ExecutionStatus::Success, 1));
        let transaction = sefa.api.transaction(runs[0].transaction_id.expect("a transaction")).await.expect("it");
        assert_eq!((transaction.kind, transaction.description.as_deref()), (TransactionKind::Debit, Some("rent")));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(executions(&app, &sefa, &id).await.len(), 1, "once means once");
        assert_eq!(app.balance(&sefa, "USD").await, "90.00");
        let finished = sefa.api.schedule(created.id).await.expect("the schedule");
        assert_eq!((finished.status, finished.is_active), (ScheduleStatus::Completed, false));
        assert_eq!(finished.next_execution_at, None);
        assert!(finished.last_executed_at.is_some());
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_one_time_schedule_that_keeps_failing_ends_failed_after_its_retries() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let due = Utc::now() + chrono::Duration::milliseconds(200);
        let created = schedule(
            &app,
            &sefa,
            json!({"transaction_type": "debit", "amount": "5", "currency": "USD", "schedule_type": "one-time", "execute_at": at(due)}),
        )
        .await;
        let runs = wait_for_executions(&app, &sefa, &created["id"], 1).await;
        assert_eq!(runs[0]["status"], "failed");
        assert_eq!(runs[0]["error"], "insufficient_funds");
        assert_eq!(runs[0]["transaction_id"], Value::Null);
        let failed = get_schedule(&app, &sefa, &created["id"]).await;
        assert_eq!(failed["status"], "failed");
        let metrics = app.get("/metrics/basic", None).await;
        assert_eq!(metrics.body["scheduler"]["attempts_failed"], 5, "every attempt was made: {}", metrics.text);
        assert_eq!(app.balance(&sefa, "USD").await, "0.00");
        app.stop().await;
    }
}

fn march_2030() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("instant")
}

#[tokio::test]
async fn a_monthly_schedule_clamps_to_month_ends_and_stops_at_its_maximum() {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = TestApp::spawn_on_clock(backend, |_| {}, clock.clone()).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        app.credit(&sefa, "100", "USD").await;
        clock.set(march_2030());
        let first = Utc.with_ymd_and_hms(2030, 1, 31, 9, 0, 0).single().expect("instant");
        let created = schedule(
            &app,
            &sefa,
            json!({"transaction_type": "transfer", "to_user_id": kerem.id, "amount": "1.50", "currency": "USD",
                   "schedule_type": "recurring", "execute_at": at(first), "recurrence_pattern": "monthly", "max_occurrences": 3}),
        )
        .await;
        for (step, until) in [(1, (2030, 2, 1)), (2, (2030, 3, 1)), (3, (2030, 4, 1))] {
            clock.set(Utc.with_ymd_and_hms(until.0, until.1, until.2, 0, 0, 0).single().expect("instant"));
            wait_for_executions(&app, &sefa, &created["id"], step).await;
        }
        clock.set(Utc.with_ymd_and_hms(2030, 12, 31, 0, 0, 0).single().expect("instant"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let runs = executions(&app, &sefa, &created["id"]).await;
        assert_eq!(runs.len(), 3, "max_occurrences is 3");
        let mut dates = Vec::new();
        for run in &runs {
            assert_eq!(run["status"], "success", "{run}");
            let id = run["transaction_id"].as_str().expect("tx");
            let tx = app.get(&format!("/api/v1/transactions/{id}"), Some(&sefa.token)).await;
            dates.push(tx.body["created_at"].as_str().expect("date")[..10].to_owned());
        }
        // Each ran when the clock reached the next month: after Jan 31, Feb 28 and Mar 31 came due.
        assert_eq!(dates, ["2030-02-01", "2030-03-01", "2030-04-01"]);
        let done = get_schedule(&app, &sefa, &created["id"]).await;
        assert_eq!((done["status"].as_str(), done["current_occurrence"].as_u64()), (Some("completed"), Some(3)));
        assert_eq!(app.balance(&kerem, "USD").await, "4.50");
        app.stop().await;
    }
}

#[tokio::test]
async fn missed_occurrences_run_once_each_in_order_up_to_the_end_date() {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = TestApp::spawn_on_clock(backend, |_| {}, clock.clone()).await;
        let sefa = app.user("sefa").await;
        clock.set(march_2030());
        let first = march_2030() + chrono::Duration::hours(1);
        let created = schedule(
            &app,
            &sefa,
            json!({"transaction_type": "credit", "amount": "2", "currency": "USD", "schedule_type": "recurring",
                   "execute_at": at(first), "recurrence_pattern": "daily",
                   "recurrence_end_date": at(first + chrono::Duration::days(3))}),
        )
        .await;
        clock.set(march_2030() + chrono::Duration::days(10));
        let runs = wait_for_executions(&app, &sefa, &created["id"], 4).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let runs_after = executions(&app, &sefa, &created["id"]).await;
        assert_eq!(runs_after.len(), 4, "four days up to the end date, inclusive: {runs:?}");
        let occurrences: Vec<u64> = runs_after.iter().filter_map(|r| r["occurrence"].as_u64()).collect();
        assert_eq!(occurrences, [1, 2, 3, 4]);
        assert_eq!(app.balance(&sefa, "USD").await, "8.00");
        assert_eq!(get_schedule(&app, &sefa, &created["id"]).await["status"], "completed");
        app.stop().await;
    }
}

#[tokio::test]
async fn paused_schedules_wait_and_cancelled_ones_never_run() {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = TestApp::spawn_on_clock(backend, |_| {}, clock.clone()).await;
        let sefa = app.user("sefa").await;
        let other = app.user("other").await;
        clock.set(march_2030());
        let body = json!({"transaction_type": "credit", "amount": "1", "currency": "USD", "schedule_type": "once",
                          "execute_at": at(march_2030() + chrono::Duration::hours(1))});
        let paused = schedule(&app, &sefa, body.clone()).await;
        let cancelled = schedule(&app, &sefa, body).await;
        let path = |s: &Value, action: &str| format!("{SCHEDULES}/{}{action}", s["id"].as_str().expect("id"));

        let response = app.money(&path(&paused, "/pause"), &sefa, None, &Value::Null).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        assert_eq!(
            (response.body["status"].as_str(), response.body["is_active"].as_bool()),
            (Some("paused"), Some(false))
        );
        app.money(&path(&paused, "/pause"), &sefa, None, &Value::Null)
            .await
            .assert_error(409, "schedule_state_conflict");
        let gone = app.delete(&path(&cancelled, ""), Some(&sefa.token)).await;
        assert_eq!(gone.body, json!({"message": "Scheduled transaction cancelled successfully"}));
        app.delete(&path(&cancelled, ""), Some(&sefa.token)).await.assert_error(409, "schedule_state_conflict");
        app.money(&path(&cancelled, "/resume"), &sefa, None, &Value::Null)
            .await
            .assert_error(409, "schedule_state_conflict");
        app.get(&path(&paused, ""), Some(&other.token)).await.assert_error(404, "schedule_not_found");
        app.delete(&path(&paused, ""), Some(&other.token)).await.assert_error(404, "schedule_not_found");

        clock.set(march_2030() + chrono::Duration::days(1));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(executions(&app, &sefa, &paused["id"]).await.is_empty(), "a paused schedule waits");
        assert!(executions(&app, &sefa, &cancelled["id"]).await.is_empty());

        let resumed = app.money(&path(&paused, "/resume"), &sefa, None, &Value::Null).await;
        assert_eq!(resumed.body["status"], "active");
        let runs = wait_for_executions(&app, &sefa, &paused["id"], 1).await;
        assert_eq!(runs[0]["status"], "success");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(executions(&app, &sefa, &cancelled["id"]).await.is_empty(), "a cancelled schedule never runs");
        assert_eq!(app.balance(&sefa, "USD").await, "1.00");

        let listed = app.get(&format!("{SCHEDULES}?status=cancelled"), Some(&sefa.token)).await;
        let ids: Vec<&Value> =
            listed.body["scheduled_transactions"].as_array().expect("list").iter().map(|s| &s["id"]).collect();
        assert_eq!(ids, [&cancelled["id"]]);
        let all = app.get(&format!("{SCHEDULES}?limit=1&offset=1"), Some(&sefa.token)).await;
        assert_eq!(all.body["scheduled_transactions"].as_array().map(Vec::len), Some(1));
        assert_eq!((all.body["limit"].as_u64(), all.body["offset"].as_u64()), (Some(1), Some(1)));
        app.get(&format!("{SCHEDULES}?status=asleep"), Some(&sefa.token)).await.assert_error(400, "invalid_parameter");
        app.stop().await;
    }
}

#[tokio::test]
async fn deactivating_the_owner_pauses_their_schedules() {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = TestApp::spawn_on_clock(backend, |_| {}, clock.clone()).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        clock.set(march_2030());
        let created = schedule(
            &app,
            &sefa,
            json!({"transaction_type": "credit", "amount": "1", "currency": "USD", "schedule_type": "recurring",
                   "execute_at": at(march_2030() + chrono::Duration::hours(1)), "recurrence_pattern": "weekly"}),
        )
        .await;
        app.delete(&format!("/api/v1/users/{}", sefa.id), Some(&admin.token)).await;
        clock.set(march_2030() + chrono::Duration::days(30));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let reactivated =
            app.put(&format!("/api/v1/users/{}", sefa.id), Some(&admin.token), &json!({"is_active": true})).await;
        assert_eq!(reactivated.status, StatusCode::OK);
        // Deactivation ended sefa's session: her old token no longer works, so the store is asked directly.
        app.get(SCHEDULES, Some(&sefa.token)).await.assert_error(401, "unauthorized");
        let id = created["id"].as_str().expect("id").parse().expect("uuid");
        assert!(app.state.store.list_executions(id).await.expect("executions").is_empty(), "nothing ran");
        let schedule = app.state.store.find_schedule(id).await.expect("find").expect("schedule");
        assert_eq!(schedule.status, banksim_core::schedule::ScheduleStatus::Paused);
        app.stop().await;
    }
}

#[tokio::test]
async fn invalid_schedules_report_every_bad_field() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let past = at(Utc::now() - chrono::Duration::hours(1));
        let response = app
            .money(
                SCHEDULES,
                &sefa,
                None,
                &json!({"transaction_type": "credit", "amount": "1.001", "currency": "USD", "to_user_id": sefa.id,
                        "schedule_type": "once", "execute_at": past, "recurrence_pattern": "daily"}),
            )
            .await;
        response.assert_error(422, "validation_failed");
        let fields = response.error_fields();
        for field in ["amount", "execute_at", "to_user_id", "recurrence_pattern"] {
            assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
        }
        let self_transfer = app
            .money(
                SCHEDULES,
                &sefa,
                None,
                &json!({"transaction_type": "transfer", "amount": "1", "currency": "USD", "to_user_id": sefa.id,
                        "schedule_type": "recurring", "execute_at": at(Utc::now() + chrono::Duration::hours(1))}),
            )
            .await;
        self_transfer.assert_error(422, "validation_failed");
        let fields = self_transfer.error_fields();
        assert!(
            fields.iter().any(|f| f == "to_user_id") && fields.iter().any(|f| f == "recurrence_pattern"),
            "{fields:?}"
        );
        let empty = app.money(SCHEDULES, &sefa, None, &json!({})).await;
        empty.assert_error(422, "validation_failed");
        app.stop().await;
    }
}

#[tokio::test]
async fn creating_a_schedule_is_idempotent() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let body = json!({"transaction_type": "credit", "amount": "3", "currency": "USD", "schedule_type": "once",
                          "execute_at": at(Utc::now() + chrono::Duration::days(1))});
        let first = app.money(SCHEDULES, &sefa, Some("plan-1"), &body).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
        let again = app.money(SCHEDULES, &sefa, Some("plan-1"), &body).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.text, first.text);
        assert_eq!(again.headers["idempotent-replayed"], "true");
        let mut other = body.clone();
        other["amount"] = json!("4");
        app.money(SCHEDULES, &sefa, Some("plan-1"), &other).await.assert_error(409, "idempotency_key_reused");
        let listed = app.get(SCHEDULES, Some(&sefa.token)).await;
        assert_eq!(listed.body["scheduled_transactions"].as_array().map(Vec::len), Some(1));
        app.stop().await;
    }
}

#[tokio::test]
async fn two_instances_run_every_occurrence_exactly_once() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let other = app.spawn_beside(|config| config.scheduler_poll_interval_ms = 10).await;
        let users: Vec<TestUser> = futures::future::join_all((0..4).map(|i| app.user_named(i))).await;
        // Far enough ahead for twenty creations on a busy two-core machine; then both schedulers race for them.
        let due = Utc::now() + chrono::Duration::milliseconds(1_500);
        let mut ids = Vec::new();
        for user in &users {
            for _ in 0..5 {
                let body = json!({"transaction_type": "credit", "amount": "1", "currency": "USD", "schedule_type": "once", "execute_at": at(due)});
                ids.push((user.clone(), schedule(&app, user, body).await["id"].clone()));
            }
        }
        for (user, id) in &ids {
            let runs = wait_for_executions(&app, user, id, 1).await;
            assert_eq!(runs[0]["status"], "success");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (user, id) in &ids {
            assert_eq!(executions(&app, user, id).await.len(), 1);
        }
        for user in &users {
            assert_eq!(app.balance(user, "USD").await, "5.00", "each of five schedules credited once");
        }
        let history = app.get("/api/v1/transactions/history?limit=100", Some(&users[0].token)).await;
        assert_eq!(history.body["transactions"].as_array().map(Vec::len), Some(5));
        other.stop().await;
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn occurrences_missed_while_no_instance_ran_run_after_a_restart() {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = TestApp::spawn_on_clock(backend, |_| {}, clock.clone()).await;
        let sefa = app.user("sefa").await;
        clock.set(march_2030());
        let created = schedule(
            &app,
            &sefa,
            json!({"transaction_type": "credit", "amount": "1", "currency": "USD", "schedule_type": "recurring",
                   "execute_at": at(march_2030() + chrono::Duration::hours(1)), "recurrence_pattern": "daily",
                   "max_occurrences": 5}),
        )
        .await;
        let database = app.stop_keeping_database().await;
        clock.set(march_2030() + chrono::Duration::days(3) + chrono::Duration::hours(2));
        let app = TestApp::spawn_on(database, |_| {}, clock.clone()).await;
        let runs = wait_for_executions(&app, &sefa, &created["id"], 4).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let runs_after = executions(&app, &sefa, &created["id"]).await;
        assert_eq!(runs_after.len(), 4, "days 0 to 3 were due, each once: {runs:?}");
        assert_eq!(app.balance(&sefa, "USD").await, "4.00");
        assert_eq!(get_schedule(&app, &sefa, &created["id"]).await["status"], "active", "one occurrence left");
        app.stop().await;
    }
}

#[tokio::test]
async fn an_attempt_with_an_unknown_outcome_is_made_again_under_the_same_key() {
    for backend in backends() {
        let app = TestApp::spawn_with(backend, |config| config.write_queue_capacity = 1, axum::Router::new()).await;
        let sefa = app.user("sefa").await;
        let due = Utc::now() + chrono::Duration::milliseconds(300);
        let mut ids = Vec::new();
        for _ in 0..3 {
            let body = json!({"transaction_type": "credit", "amount": "1", "currency": "USD", "schedule_type": "once", "execute_at": at(due)});
            ids.push(schedule(&app, &sefa, body).await["id"].clone());
        }
        // With the writer stuck and a queue of one, some occurrences cannot be handed over: their outcome is
        // unknown to the scheduler, which must not count that as a failed attempt.
        let lock = app.lock_writes().await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        lock.release().await;
        for id in &ids {
            let runs = wait_for_executions(&app, &sefa, id, 1).await;
            assert_eq!(runs[0]["status"], "success", "{runs:?}");
        }
        let metrics = app.get("/metrics/basic", None).await;
        assert_eq!(metrics.body["scheduler"]["attempts_failed"], 0, "{}", metrics.text);
        assert_eq!(app.balance(&sefa, "USD").await, "3.00");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_retried_creation_is_replayed_even_after_its_first_execution_time_has_passed() {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = TestApp::spawn_on_clock(backend, |config| config.scheduler_enabled = false, clock.clone()).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        let admin = app.admin("boss").await;
        clock.set(march_2030());
        let body = json!({"transaction_type": "transfer", "to_user_id": kerem.id, "amount": "1", "currency": "USD",
                          "schedule_type": "once", "execute_at": at(march_2030() + chrono::Duration::minutes(1))});
        let first = app.money(SCHEDULES, &sefa, Some("plan-late"), &body).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);

        // The client timed out and retries later: the execution time has passed and the recipient has gone.
        clock.set(march_2030() + chrono::Duration::minutes(5));
        let gone =
            app.put(&format!("/api/v1/users/{}", kerem.id), Some(&admin.token), &json!({"is_active": false})).await;
        assert_eq!(gone.status, StatusCode::OK, "{}", gone.text);
        let retry = app.money(SCHEDULES, &sefa, Some("plan-late"), &body).await;
        assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.text);
        assert_eq!(retry.headers["idempotent-replayed"], "true");
        assert_eq!(retry.body["id"], first.body["id"]);
        let listed = app.get(SCHEDULES, Some(&sefa.token)).await;
        assert_eq!(listed.body["scheduled_transactions"].as_array().map(Vec::len), Some(1), "{}", listed.text);
        app.stop().await;
    }
}
