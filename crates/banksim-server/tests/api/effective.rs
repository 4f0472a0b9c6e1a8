//! Effective time: admins back-date credits, debits and transfers with `effective_at` (never in the future, at
//! most `EFFECTIVE_AT_MAX_AGE_DAYS` old); balances at a time, the history and daily statements follow when movements
//! take effect, and a back-dated movement that would take an earlier balance beyond the wallet's limits is refused.

use std::sync::Arc;

use banksim_core::{Clock, ManualClock};
use banksim_store::{Backend, Projection};
use chrono::{DateTime, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, backends};

const BATCH: &str = "/api/v1/transactions/batch";

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 3, day, hour, 0, 0).single().expect("instant")
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An admin's batch of one item for `user`, back-dated to `effective_at`.
async fn backdated(
    app: &TestApp,
    admin: &TestUser,
    atomic: bool,
    kind: &str,
    user: &TestUser,
    amount: &str,
    effective_at: DateTime<Utc>,
) -> crate::helpers::TestResponse {
    let party = if kind == "debit" { "from_user_id" } else { "to_user_id" };
    let item = json!({"type": kind, "amount": amount, "currency": "USD", party: user.id,
                      "effective_at": rfc3339(effective_at)});
    app.post(BATCH, Some(&admin.token), &json!({"atomic": atomic, "transactions": [item]})).await
}

async fn balance_at(app: &TestApp, user: &TestUser, instant: DateTime<Utc>) -> String {
    let path = format!("/api/v1/balances/at-time?currency=USD&timestamp={}", rfc3339(instant));
    let response = app.get(&path, Some(&user.token)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    crate::helpers::raw_number(&response.text, "amount")
}

async fn statement_days(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let response =
        app.get("/api/v1/balances/statements?from=2030-03-01&to=2030-03-06&currency=USD", Some(&user.token)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    response.body["statements"].as_array().expect("statements").clone()
}

#[tokio::test]
async fn only_admins_back_date_and_only_within_the_window() {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(at(20, 12)));
        let app = TestApp::spawn_on_clock(backend, |_| {}, clock.clone()).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "100", "USD").await;

        // An admin's own credit, back-dated a day: both instants are shown.
        let body = json!({"amount": "10", "currency": "USD", "effective_at": "2030-03-19T12:00:00.1234567Z"});
        let credit = app.post("/api/v1/transactions/credit", Some(&admin.token), &body).await;
        assert_eq!(credit.status, StatusCode::CREATED, "{}", credit.text);
        assert_eq!(credit.body["effective_at"], "2030-03-19T12:00:00.123456Z", "kept to the microsecond");
        assert_eq!(credit.body["created_at"], "2030-03-20T12:00:00Z");
        let id = credit.body["id"].as_str().expect("id");
        let read = app.get(&format!("/api/v1/transactions/{id}"), Some(&admin.token)).await;
        assert_eq!(read.body["effective_at"], credit.body["effective_at"]);
        // An ordinary movement takes effect when it is posted.
        let plain =
            app.money("/api/v1/transactions/debit", &sefa, None, &json!({"amount": "1", "currency": "USD"})).await;
        assert_eq!(plain.body["effective_at"], plain.body["created_at"]);

        let debit = |effective_at: &str| json!({"amount": "1", "currency": "USD", "effective_at": effective_at});
        app.post("/api/v1/transactions/debit", Some(&sefa.token), &debit("2030-03-19T12:00:00Z"))
            .await
            .assert_error(403, "insufficient_permissions");
        for refused in ["2030-03-20T12:00:01Z", "2030-02-18T11:59:59Z", "yesterday", "10000-01-01T00:00:00Z"] {
            app.post("/api/v1/transactions/debit", Some(&admin.token), &debit(refused))
                .await
                .assert_error(400, "invalid_effective_at");
        }
        // The admin's wallet held nothing before 19 March: a debit back-dated before then is refused.
        let early = app.post("/api/v1/transactions/debit", Some(&admin.token), &debit("2030-03-01T00:00:00Z")).await;
        early.assert_error(400, "invalid_effective_at");
        let oldest = app.post("/api/v1/transactions/credit", Some(&admin.token), &debit("2030-02-18T12:00:00Z")).await;
        assert_eq!(oldest.status, StatusCode::CREATED, "30 days back is allowed: {}", oldest.text);
        let hold = json!({"to_user_id": sefa.id, "amount": "1", "currency": "USD", "pending": true,
                          "effective_at": "2030-03-19T12:00:00Z"});
        app.post("/api/v1/transactions/transfer", Some(&admin.token), &hold).await.assert_error(400, "invalid_request");
        let exchange = json!({"from_currency": "USD", "to_currency": "EUR", "amount": "1",
                              "effective_at": "2030-03-19T12:00:00Z"});
        let refused = app.post("/api/v1/transactions/exchange", Some(&admin.token), &exchange).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "exchanges are never back-dated: {}", refused.text);
        // In a batch, a user naming an instant is refused whole, before anything moves.
        let item = json!({"type": "debit", "amount": "1", "currency": "USD", "effective_at": "2030-03-19T12:00:00Z"});
        app.post(BATCH, Some(&sefa.token), &json!({"atomic": false, "transactions": [item]}))
            .await
            .assert_error(403, "insufficient_permissions");
        assert_eq!(app.balance(&sefa, "USD").await, "99.00");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

/// A server on a clock at 1 March 2030, noon, with an admin and sefa, who has just received 100.00.
async fn sefa_from_the_first(backend: Backend) -> (TestApp, Arc<ManualClock>, TestUser, TestUser) {
    let clock = Arc::new(ManualClock::new(at(1, 12)));
    let app = TestApp::spawn_on_clock(backend, |_| {}, clock.clone()).await;
    let admin = app.admin("boss").await;
    let sefa = app.user("sefa").await;
    app.credit(&sefa, "100", "USD").await;
    (app, clock, admin, sefa)
}

#[tokio::test]
async fn balances_history_and_statements_follow_when_movements_take_effect() {
    for backend in backends() {
        let (app, clock, admin, sefa) = sefa_from_the_first(backend).await;
        clock.set(at(5, 12));
        app.money("/api/v1/transactions/debit", &sefa, None, &json!({"amount": "30", "currency": "USD"})).await;
        let late = backdated(&app, &admin, true, "credit", &sefa, "50", at(3, 9)).await;
        assert_eq!(late.status, StatusCode::CREATED, "{}", late.text);
        let late_tx = &late.body["results"][0]["transaction"];
        assert_eq!(
            (late_tx["effective_at"].as_str(), late_tx["created_at"].as_str()),
            (Some("2030-03-03T09:00:00Z"), Some("2030-03-05T12:00:00Z"))
        );

        for (instant, expected) in [
            (at(2, 0), "100.00"),
            (at(3, 8), "100.00"),
            (at(3, 9), "150.00"),
            (at(5, 11), "150.00"),
            (at(5, 13), "120.00"),
        ] {
            assert_eq!(balance_at(&app, &sefa, instant).await, expected, "at {instant}");
        }
        assert_eq!(app.balance(&sefa, "USD").await, "120.00");

        let history = app.get("/api/v1/balances/historical?currency=USD", Some(&sefa.token)).await;
        assert_eq!(history.status, StatusCode::OK, "{}", history.text);
        let entries: Vec<Value> = history.body["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|e| json!([e["timestamp"], e["change"], e["amount"], e["recorded_at"]]))
            .collect();
        assert_eq!(
            entries,
            vec![
                json!(["2030-03-05T12:00:00Z", -30.0, 120.0, null]),
                json!(["2030-03-03T09:00:00Z", 50.0, 150.0, "2030-03-05T12:00:00Z"]),
                json!(["2030-03-01T12:00:00Z", 100.0, 100.0, null]),
            ],
            "newest first in effective time, each with the balance in effect after it"
        );
        // A page that starts at the back-dated entry carries the balances in effect then.
        let page = app
            .get("/api/v1/balances/historical?currency=USD&until=2030-03-04T00:00:00Z&limit=1", Some(&sefa.token))
            .await;
        assert_eq!(page.body["history"][0]["amount"], json!(150.0), "{}", page.text);

        let expected = vec![
            json!({"date": "2030-03-01", "currency": "USD", "opening": 0.0, "credits": 100.0, "debits": 0.0, "closing": 100.0}),
            json!({"date": "2030-03-02", "currency": "USD", "opening": 100.0, "credits": 0.0, "debits": 0.0, "closing": 100.0}),
            json!({"date": "2030-03-03", "currency": "USD", "opening": 100.0, "credits": 50.0, "debits": 0.0, "closing": 150.0}),
            json!({"date": "2030-03-04", "currency": "USD", "opening": 150.0, "credits": 0.0, "debits": 0.0, "closing": 150.0}),
            json!({"date": "2030-03-05", "currency": "USD", "opening": 150.0, "credits": 0.0, "debits": 30.0, "closing": 120.0}),
        ];
        assert_eq!(statement_days(&app, &sefa).await, expected, "the back-dated credit revised days 3 to 5");
        // Rebuilt from the event log alone, the statements come out the same.
        app.state.store.reset_projection(Projection::DailyStatements, clock.now()).await.expect("reset");
        assert_eq!(statement_days(&app, &sefa).await, expected);
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_back_dated_movement_may_not_take_an_earlier_balance_beyond_the_limits() {
    for backend in backends() {
        let (app, clock, admin, sefa) = sefa_from_the_first(backend).await;
        clock.set(at(4, 12));
        app.money("/api/v1/transactions/debit", &sefa, None, &json!({"amount": "100", "currency": "USD"})).await;
        clock.set(at(6, 12));
        app.credit(&sefa, "500", "USD").await;
        clock.set(at(6, 14));

        // 500 now, but nothing from day 4 to day 6: a debit back-dated to day 2 would leave −50 then.
        let atomic = backdated(&app, &admin, true, "debit", &sefa, "50", at(2, 12)).await;
        atomic.assert_error(400, "batch_failed");
        assert_eq!(atomic.body["results"][0]["error"]["error_code"], "invalid_effective_at", "{}", atomic.text);
        let single = backdated(&app, &admin, false, "debit", &sefa, "50", at(2, 12)).await;
        assert_eq!(single.status, StatusCode::CREATED, "{}", single.text);
        assert_eq!(single.body["results"][0]["error"]["error_code"], "invalid_effective_at", "{}", single.text);
        assert_eq!(app.balance(&sefa, "USD").await, "500.00");
        // After the low point it is fine; and an overdraft lets the past go that far below zero, no further.
        let after = backdated(&app, &admin, true, "debit", &sefa, "50", at(6, 13)).await;
        assert_eq!(after.status, StatusCode::CREATED, "{}", after.text);
        let limits = format!("/api/v1/admin/wallets/{}/USD/limits", sefa.id);
        let set = app.put(&limits, Some(&admin.token), &json!({"overdraft": "50", "max_balance": null})).await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.text);
        let within = backdated(&app, &admin, true, "debit", &sefa, "50", at(2, 12)).await;
        assert_eq!(within.status, StatusCode::CREATED, "{}", within.text);
        let beyond = backdated(&app, &admin, true, "debit", &sefa, "0.01", at(2, 12)).await;
        assert_eq!(beyond.body["results"][0]["error"]["error_code"], "invalid_effective_at", "{}", beyond.text);
        assert_eq!(balance_at(&app, &sefa, at(5, 0)).await, "-50.00");
        // A back-dated transfer checks the payer's past: sefa paid ayse on day 3, when sefa had 100 − 50.
        let ayse = app.user("ayse").await;
        let transfer = json!({"type": "transfer", "amount": "60", "currency": "USD", "from_user_id": sefa.id,
                              "to_user_id": ayse.id, "effective_at": rfc3339(at(3, 0))});
        let refused = app.post(BATCH, Some(&admin.token), &json!({"atomic": true, "transactions": [transfer]})).await;
        assert_eq!(refused.body["results"][0]["error"]["error_code"], "invalid_effective_at", "{}", refused.text);
        assert_eq!(balance_at(&app, &ayse, at(7, 0)).await, "0.00");
        let refusals = app.get("/api/v1/audit-logs?action=transaction.debit", Some(&admin.token)).await;
        let outcomes: Vec<&str> = refusals.body["audit_logs"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["outcome"].as_str())
            .collect();
        assert!(outcomes.contains(&"invalid_effective_at"), "{outcomes:?}");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}
