//! Two-phase transfers: holds (`pending: true`), posts (whole or partial), voids and expiries by the clock.

use std::sync::Arc;

use banksim_core::ManualClock;
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, backends, raw_number};

const TRANSFER: &str = "/api/v1/transactions/transfer";

async fn hold(app: &TestApp, payer: &TestUser, payee: &TestUser, amount: &str, timeout_secs: Option<u64>) -> Value {
    let mut body = json!({"to_user_id": payee.id, "amount": amount, "currency": "USD", "pending": true});
    if let Some(secs) = timeout_secs {
        body["timeout_secs"] = json!(secs);
    }
    let held = app.money(TRANSFER, payer, None, &body).await;
    assert_eq!(held.status, StatusCode::CREATED, "{}", held.text);
    held.body
}

/// (posted, pending_out, available) of the user's USD wallet.
async fn figures(app: &TestApp, user: &TestUser) -> (String, String, String) {
    let current = app.get("/api/v1/balances/current?currency=USD", Some(&user.token)).await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.text);
    assert_eq!(raw_number(&current.text, "amount"), raw_number(&current.text, "posted"));
    (
        raw_number(&current.text, "posted"),
        raw_number(&current.text, "pending_out"),
        raw_number(&current.text, "available"),
    )
}

fn settle_path(hold: &Value, action: &str) -> String {
    format!("/api/v1/transactions/{}/{action}", hold["id"].as_str().expect("id"))
}

fn owned(posted: &str, pending: &str, available: &str) -> (String, String, String) {
    (posted.to_owned(), pending.to_owned(), available.to_owned())
}

#[tokio::test]
async fn a_hold_lowers_available_and_a_post_pays_the_payee() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        app.credit(&sefa, "100", "USD").await;
        let held = hold(&app, &sefa, &ayse, "30", None).await;
        assert_eq!(held["status"], "pending");
        assert!(held["expires_at"].is_string(), "{held}");
        assert_eq!(figures(&app, &sefa).await, owned("100.00", "30.00", "70.00"));
        assert_eq!(figures(&app, &ayse).await, owned("0.00", "0.00", "0.00"), "the payee sees nothing yet");
        let too_much = json!({"to_user_id": ayse.id, "amount": "70.01", "currency": "USD"});
        app.money(TRANSFER, &sefa, None, &too_much).await.assert_error(400, "insufficient_funds");

        app.post(&settle_path(&held, "post"), Some(&ayse.token), &json!({}))
            .await
            .assert_error(403, "insufficient_permissions");
        let posted = app.post(&settle_path(&held, "post"), Some(&sefa.token), &json!({})).await;
        assert_eq!(posted.status, StatusCode::OK, "{}", posted.text);
        assert_eq!(posted.body["status"], "success");
        assert_eq!(raw_number(&posted.text, "amount"), "30.00");
        assert_eq!(figures(&app, &sefa).await, owned("70.00", "0.00", "70.00"));
        assert_eq!(figures(&app, &ayse).await, owned("30.00", "0.00", "30.00"));

        app.post(&settle_path(&held, "post"), Some(&sefa.token), &json!({}))
            .await
            .assert_error(409, "transfer_not_pending");
        app.post(&settle_path(&held, "void"), Some(&sefa.token), &json!({}))
            .await
            .assert_error(409, "transfer_not_pending");
        let read =
            app.get(&format!("/api/v1/transactions/{}", held["id"].as_str().expect("id")), Some(&ayse.token)).await;
        assert_eq!(read.body["status"], "success", "{}", read.text);
        // A posted two-phase transfer rolls back like any transfer.
        let rollback = app.post(&settle_path(&held, "rollback"), Some(&sefa.token), &json!({})).await;
        assert_eq!(rollback.status, StatusCode::CREATED, "{}", rollback.text);
        assert_eq!(figures(&app, &sefa).await, owned("100.00", "0.00", "100.00"));
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_partial_post_releases_the_rest_and_more_than_the_hold_is_refused() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        app.credit(&sefa, "100", "USD").await;
        let held = hold(&app, &sefa, &ayse, "40", Some(60)).await;
        app.post(&settle_path(&held, "post"), Some(&sefa.token), &json!({"amount": "40.01"}))
            .await
            .assert_error(400, "invalid_amount");
        app.post(&settle_path(&held, "post"), Some(&sefa.token), &json!({"amount": "-1"}))
            .await
            .assert_error(400, "invalid_amount");
        // A body of the wrong shape is answered as on every money route: a field-level message, never serde's.
        let array = app.post(&settle_path(&held, "post"), Some(&sefa.token), &json!(["40"])).await;
        array.assert_error(400, "invalid_request");
        assert!(!array.text.contains("struct") && !array.text.contains("sequence"), "{}", array.text);
        let body = json!({"amount": "25.5"});
        let first = app.money(&settle_path(&held, "post"), &sefa, Some("post-once"), &body).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        assert_eq!(raw_number(&first.text, "amount"), "25.50");
        let again = app.money(&settle_path(&held, "post"), &sefa, Some("post-once"), &body).await;
        assert_eq!((again.status, again.text.clone()), (StatusCode::OK, first.text.clone()), "a replay, not a 409");
        assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap_or_default()), Some("true"));
        assert_eq!(figures(&app, &sefa).await, owned("74.50", "0.00", "74.50"));
        assert_eq!(figures(&app, &ayse).await, owned("25.50", "0.00", "25.50"));
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn voids_release_the_hold_and_bad_holds_are_refused() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        let kerem = app.user("kerem").await;
        app.credit(&sefa, "100", "USD").await;
        let held = hold(&app, &sefa, &ayse, "60", None).await;
        app.post(&settle_path(&held, "void"), Some(&kerem.token), &json!({}))
            .await
            .assert_error(403, "insufficient_permissions");
        let voided = app.post(&settle_path(&held, "void"), Some(&ayse.token), &json!({})).await;
        assert_eq!(voided.status, StatusCode::OK, "{}", voided.text);
        assert_eq!(voided.body["status"], "voided");
        assert_eq!(figures(&app, &sefa).await, owned("100.00", "0.00", "100.00"));
        app.post(&settle_path(&held, "post"), Some(&sefa.token), &json!({}))
            .await
            .assert_error(409, "transfer_not_pending");
        app.post(&settle_path(&held, "rollback"), Some(&sefa.token), &json!({}))
            .await
            .assert_error(400, "not_reversible");
        // A plain transfer is not a hold.
        let plain =
            app.money(TRANSFER, &sefa, None, &json!({"to_user_id": ayse.id, "amount": "1", "currency": "USD"})).await;
        app.post(&settle_path(&plain.body, "post"), Some(&sefa.token), &json!({}))
            .await
            .assert_error(409, "transfer_not_pending");
        for body in [
            json!({"to_user_id": ayse.id, "amount": "1", "currency": "USD", "pending": true, "timeout_secs": 0}),
            json!({"to_user_id": ayse.id, "amount": "1", "currency": "USD", "pending": true, "timeout_secs": 2_592_001}),
            json!({"to_user_id": ayse.id, "amount": "1", "currency": "USD", "timeout_secs": 10}),
        ] {
            app.money(TRANSFER, &sefa, None, &body).await.assert_error(400, "invalid_request");
        }
        let unknown = format!("/api/v1/transactions/{}/void", uuid::Uuid::new_v4());
        app.post(&unknown, Some(&sefa.token), &json!({})).await.assert_error(404, "transaction_not_found");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn holds_expire_by_the_clock_exactly_once_with_two_instances() {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = TestApp::spawn_on_clock(backend, |_| {}, clock.clone()).await;
        let other = app.spawn_beside(|_| {}).await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        app.credit(&sefa, "100", "USD").await;
        let held: Vec<Value> =
            futures::future::join_all((0..5).map(|_| hold(&app, &sefa, &ayse, "10", Some(30)))).await;
        assert_eq!(figures(&app, &sefa).await, owned("100.00", "50.00", "50.00"));
        clock.set(Utc::now() + chrono::Duration::seconds(31));
        let id = held[0]["id"].as_str().expect("id").to_owned();
        let mut status = Value::Null;
        for _ in 0..200 {
            let read = app.get(&format!("/api/v1/transactions/{id}"), Some(&sefa.token)).await;
            status = read.body["status"].clone();
            if status == "expired" && figures(&app, &sefa).await.1 == "0.00" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(status, "expired");
        assert_eq!(figures(&app, &sefa).await, owned("100.00", "0.00", "100.00"));
        app.post(&settle_path(&held[1], "post"), Some(&sefa.token), &json!({}))
            .await
            .assert_error(409, "transfer_not_pending");
        let events = app.state.store.list_events(0, 1_000).await.expect("events");
        let expiries = events.iter().filter(|e| e.event_type == "TransferExpired").count();
        assert_eq!(expiries, 5, "each hold expires once");
        app.assert_ledger_sound().await;
        other.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn concurrent_holds_posts_voids_and_transfers_keep_the_ledger_sound() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let mut users = Vec::new();
        for n in 0..4 {
            let user = app.user_named(n).await;
            app.credit(&user, "1000", "USD").await;
            users.push(user);
        }
        let (users, shared) = (&users, &app);
        let workers = (0..4usize).map(|me| async move {
            let app = shared;
            let payer = &users[me];
            for step in 0..12usize {
                let payee = &users[(me + 1 + step % 3) % 4];
                let body =
                    json!({"to_user_id": payee.id, "amount": "7.5", "currency": "USD", "pending": step % 2 == 0});
                let held = app.money(TRANSFER, payer, None, &body).await;
                assert!(held.status == StatusCode::CREATED || held.status == StatusCode::BAD_REQUEST, "{}", held.text);
                if held.body["status"] == "pending" {
                    let (action, who, body) = match step % 3 {
                        0 => ("post", payer, json!({"amount": "5"})),
                        1 => ("void", payee, json!({})),
                        _ => ("post", payer, json!({})),
                    };
                    let settled = app.post(&settle_path(&held.body, action), Some(&who.token), &body).await;
                    assert_eq!(settled.status, StatusCode::OK, "{}", settled.text);
                }
            }
        });
        futures::future::join_all(workers).await;
        let mut posted_total = 0.0;
        for user in users {
            let (posted, pending, _) = figures(&app, user).await;
            assert_eq!(pending, "0.00");
            posted_total += posted.parse::<f64>().expect("number");
        }
        assert!((posted_total - 4000.0).abs() < 1e-9, "money is conserved: {posted_total}");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}
