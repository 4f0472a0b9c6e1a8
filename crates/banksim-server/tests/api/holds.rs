//! Two-phase transfers: holds (`pending: true`), posts (whole or partial), voids and expiries by the clock.

use std::sync::Arc;

use banksim_client::{PostTransferRequest, Transaction, TransferRequest};
use banksim_core::ManualClock;
use banksim_core::currency::Currency;
use banksim_core::ledger::TransactionStatus;
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_refused, backends, raw_number};

const TRANSFER: &str = "/api/v1/transactions/transfer";

/// A hold of `amount` USD from `payer` to `payee`, through the typed client.
async fn hold(payer: &TestUser, payee: &TestUser, amount: &str, timeout_secs: Option<u32>) -> Transaction {
    let request = TransferRequest::new(payee.uuid(), amount, Currency::USD).pending(timeout_secs);
    let held = payer.api.transfer(&request).reply().await.expect("a hold");
    assert_eq!(held.status, StatusCode::CREATED);
    held.body
}

/// (posted, pending_out, available) of the user's USD wallet, as the exact text of the answer.
async fn figures(user: &TestUser) -> (String, String, String) {
    let current = user.api.current_balance(Currency::USD).await.expect("the balance");
    assert_eq!(current.amount, current.posted);
    (current.posted.to_string(), current.pending_out.to_string(), current.available.to_string())
}

fn settle_path(id: Uuid, action: &str) -> String {
    format!("/api/v1/transactions/{id}/{action}")
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
        let held = hold(&sefa, &ayse, "30", None).await;
        assert_eq!(held.status, TransactionStatus::Pending);
        assert!(held.expires_at.is_some(), "{held:?}");
        assert_eq!(figures(&sefa).await, owned("100.00", "30.00", "70.00"));
        assert_eq!(figures(&ayse).await, owned("0.00", "0.00", "0.00"), "the payee sees nothing yet");
        let too_much = TransferRequest::new(ayse.uuid(), "70.01", Currency::USD);
        assert_refused(sefa.api.transfer(&too_much).await, 400, "insufficient_funds");

        let whole = PostTransferRequest::default();
        assert_refused(ayse.api.post_transfer(held.id, &whole).await, 403, "insufficient_permissions");
        let posted = sefa.api.post_transfer(held.id, &whole).reply().await.expect("posted");
        assert_eq!(posted.status, StatusCode::OK);
        assert_eq!((posted.body.status, posted.body.amount.as_str()), (TransactionStatus::Success, "30.00"));
        assert_eq!(figures(&sefa).await, owned("70.00", "0.00", "70.00"));
        assert_eq!(figures(&ayse).await, owned("30.00", "0.00", "30.00"));

        assert_refused(sefa.api.post_transfer(held.id, &whole).await, 409, "transfer_not_pending");
        assert_refused(sefa.api.void_transfer(held.id).await, 409, "transfer_not_pending");
        let read = ayse.api.transaction(held.id).await.expect("the payee reads it");
        assert_eq!(read.status, TransactionStatus::Success);
        // A posted two-phase transfer rolls back like any transfer.
        let rollback = sefa.api.rollback(held.id).reply().await.expect("rolled back");
        assert_eq!(rollback.status, StatusCode::CREATED);
        assert_eq!(figures(&sefa).await, owned("100.00", "0.00", "100.00"));
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
        let held = hold(&sefa, &ayse, "40", Some(60)).await;
        app.post(&settle_path(held.id, "post"), Some(&sefa.token), &json!({"amount": "40.01"}))
            .await
            .assert_error(400, "invalid_amount");
        app.post(&settle_path(held.id, "post"), Some(&sefa.token), &json!({"amount": "-1"}))
            .await
            .assert_error(400, "invalid_amount");
        // A body of the wrong shape is answered as on every money route: a field-level message, never serde's.
        let array = app.post(&settle_path(held.id, "post"), Some(&sefa.token), &json!(["40"])).await;
        array.assert_error(400, "invalid_request");
        assert!(!array.text.contains("struct") && !array.text.contains("sequence"), "{}", array.text);
        let body = json!({"amount": "25.5"});
        let first = app.money(&settle_path(held.id, "post"), &sefa, Some("post-once"), &body).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        assert_eq!(raw_number(&first.text, "amount"), "25.50");
        let again = app.money(&settle_path(held.id, "post"), &sefa, Some("post-once"), &body).await;
        assert_eq!((again.status, again.text.clone()), (StatusCode::OK, first.text.clone()), "a replay, not a 409");
        assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap_or_default()), Some("true"));
        assert_eq!(figures(&sefa).await, owned("74.50", "0.00", "74.50"));
        assert_eq!(figures(&ayse).await, owned("25.50", "0.00", "25.50"));
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
        let held = hold(&sefa, &ayse, "60", None).await;
        app.post(&settle_path(held.id, "void"), Some(&kerem.token), &json!({}))
            .await
            .assert_error(403, "insufficient_permissions");
        let voided = ayse.api.void_transfer(held.id).await.expect("the payee may void");
        assert_eq!(voided.status, TransactionStatus::Voided);
        assert_eq!(figures(&sefa).await, owned("100.00", "0.00", "100.00"));
        app.post(&settle_path(held.id, "post"), Some(&sefa.token), &json!({}))
            .await
            .assert_error(409, "transfer_not_pending");
        assert_refused(sefa.api.rollback(held.id).await, 400, "not_reversible");
        // A plain transfer is not a hold.
        let plain = sefa.api.transfer(&TransferRequest::new(ayse.uuid(), "1", Currency::USD)).await.expect("plain");
        assert_refused(
            sefa.api.post_transfer(plain.id, &PostTransferRequest::default()).await,
            409,
            "transfer_not_pending",
        );
        for body in [
            json!({"to_user_id": ayse.id, "amount": "1", "currency": "USD", "pending": true, "timeout_secs": 0}),
            json!({"to_user_id": ayse.id, "amount": "1", "currency": "USD", "pending": true, "timeout_secs": 2_592_001}),
            json!({"to_user_id": ayse.id, "amount": "1", "currency": "USD", "timeout_secs": 10}),
        ] {
            app.money(TRANSFER, &sefa, None, &body).await.assert_error(400, "invalid_request");
        }
        assert_refused(sefa.api.void_transfer(Uuid::new_v4()).await, 404, "transaction_not_found");
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
        let held: Vec<Transaction> =
            futures::future::join_all((0..5).map(|_| hold(&sefa, &ayse, "10", Some(30)))).await;
        assert_eq!(figures(&sefa).await, owned("100.00", "50.00", "50.00"));
        clock.set(Utc::now() + chrono::Duration::seconds(31));
        let mut status = held[0].status;
        for _ in 0..200 {
            status = sefa.api.transaction(held[0].id).await.expect("the hold").status;
            if status == TransactionStatus::Expired && figures(&sefa).await.1 == "0.00" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(status, TransactionStatus::Expired);
        assert_eq!(figures(&sefa).await, owned("100.00", "0.00", "100.00"));
        let post = sefa.api.post_transfer(held[1].id, &PostTransferRequest::default()).await;
        assert_refused(post, 409, "transfer_not_pending");
        let events = app.state.store.list_events(0, 1_000).await.expect("events");
        let expiries = events.iter().filter(|e| e.event_type == "TransferExpired").count();
        assert_eq!(expiries, 5, "each hold expires once");
        app.assert_ledger_sound().await;
        other.stop().await;
        app.stop().await;
    }
}

/// An admin's non-atomic batches of credits and debits on every wallet, back-dated to `at`, racing the other
/// movements: returns what the posted ones added to the users' money, in minor units.
async fn back_dated_batches(app: &TestApp, admin: &TestUser, users: &[TestUser], at: chrono::DateTime<Utc>) -> i64 {
    let mut net = 0;
    for round in 0..6 {
        let items: Vec<serde_json::Value> = users
            .iter()
            .map(|user| {
                let (kind, party) = if round % 2 == 0 { ("debit", "from_user_id") } else { ("credit", "to_user_id") };
                json!({"type": kind, "amount": "3", "currency": "USD", party: user.id, "effective_at": at.to_rfc3339()})
            })
            .collect();
        let batch = app
            .post("/api/v1/transactions/batch", Some(&admin.token), &json!({"atomic": false, "transactions": items}))
            .await;
        assert_eq!(batch.status, StatusCode::CREATED, "{}", batch.text);
        for result in batch.body["results"].as_array().expect("results") {
            match result["status"].as_str() {
                Some("success") => net += if round % 2 == 0 { -300 } else { 300 },
                _ => assert!(
                    ["invalid_effective_at", "insufficient_funds"]
                        .contains(&result["error"]["error_code"].as_str().unwrap_or("")),
                    "{result}"
                ),
            }
        }
    }
    net
}

#[tokio::test]
async fn concurrent_holds_posts_voids_transfers_and_back_dated_batches_keep_the_ledger_sound() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let mut users = Vec::new();
        for n in 0..4 {
            let user = app.user_named(n).await;
            app.credit(&user, "1000", "USD").await;
            users.push(user);
        }
        let start = Utc::now();
        let users = &users;
        let workers = (0..4usize).map(|me| async move {
            let payer = &users[me];
            for step in 0..12usize {
                let payee = &users[(me + 1 + step % 3) % 4];
                let mut request = TransferRequest::new(payee.uuid(), "7.5", Currency::USD);
                request.pending = Some(step % 2 == 0);
                let held = match payer.api.transfer(&request).await {
                    Ok(held) => held,
                    Err(err) => {
                        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST), "{err}");
                        continue;
                    }
                };
                if held.status == TransactionStatus::Pending {
                    let settled = match step % 3 {
                        0 => payer.api.post_transfer(held.id, &PostTransferRequest { amount: Some("5".into()) }).await,
                        1 => payee.api.void_transfer(held.id).await,
                        _ => payer.api.post_transfer(held.id, &PostTransferRequest::default()).await,
                    };
                    settled.expect("settled");
                }
            }
        });
        let (_, back_dated) =
            futures::future::join(futures::future::join_all(workers), back_dated_batches(&app, &admin, users, start))
                .await;
        let mut posted_total = 0;
        for user in users {
            let current = user.api.current_balance(Currency::USD).await.expect("balance");
            assert_eq!(current.pending_out, "0.00");
            posted_total += current.posted.to_minor(Currency::USD).expect("exact");
        }
        assert_eq!(
            posted_total,
            400_000 + back_dated,
            "money is conserved, to the cent (4,000.00 USD and the batches)"
        );
        // Every balance each wallet had, in effective time, stayed within its limits (none: never below zero).
        for user in users {
            let history = app.get("/api/v1/balances/historical?currency=USD&limit=100", Some(&user.token)).await;
            let entries = history.body["history"].as_array().expect("history");
            assert!(entries.iter().all(|e| e["amount"].as_f64().is_some_and(|a| a >= 0.0)), "{}", history.text);
        }
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}
