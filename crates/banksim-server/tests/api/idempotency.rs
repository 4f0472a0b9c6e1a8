//! Idempotency keys: a retry replays the stored answer and changes nothing, even when retries race.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, backends};

const CREDIT: &str = "/api/v1/transactions/credit";
const DEBIT: &str = "/api/v1/transactions/debit";

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_replays_the_answer() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let body = json!({"amount": "25.00", "currency": "USD"});
        let first = app.money(CREDIT, &sefa, Some("order-1"), &body).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
        assert!(first.headers.get("idempotent-replayed").is_none());
        let again = app.money(CREDIT, &sefa, Some("order-1"), &body).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.text, first.text, "the same body, byte for byte");
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert_eq!(app.balance(&sefa, "USD").await, "25.00", "one effect");

        let different = app.money(CREDIT, &sefa, Some("order-1"), &json!({"amount": "26.00", "currency": "USD"})).await;
        different.assert_error(409, "idempotency_key_reused");
        let other_route = app.money(DEBIT, &sefa, Some("order-1"), &body).await;
        other_route.assert_error(409, "idempotency_key_reused");
        assert_eq!(app.balance(&sefa, "USD").await, "25.00");
        app.stop().await;
    }
}

#[tokio::test]
async fn refusals_are_replayed_too_and_keys_belong_to_their_user() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        let body = json!({"amount": "5", "currency": "USD"});
        let refused = app.money(DEBIT, &sefa, Some("k"), &body).await;
        refused.assert_error(400, "insufficient_funds");
        app.credit(&sefa, "10", "USD").await;
        let replayed = app.money(DEBIT, &sefa, Some("k"), &body).await;
        assert_eq!(replayed.status, StatusCode::BAD_REQUEST, "the stored refusal, not a new attempt");
        assert_eq!(replayed.text, refused.text);
        assert_eq!(replayed.headers["idempotent-replayed"], "true");
        assert_eq!(app.balance(&sefa, "USD").await, "10.00");

        app.credit(&kerem, "10", "USD").await;
        let theirs = app.money(DEBIT, &kerem, Some("k"), &body).await;
        assert_eq!(theirs.status, StatusCode::CREATED, "another user's same key is another key: {}", theirs.text);
        app.stop().await;
    }
}

#[tokio::test]
async fn keys_must_be_1_to_255_characters() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let body = json!({"amount": "1", "currency": "USD"});
        let too_long = "k".repeat(256);
        app.money(CREDIT, &sefa, Some(&too_long), &body).await.assert_error(400, "invalid_idempotency_key");
        app.money(CREDIT, &sefa, Some(""), &body).await.assert_error(400, "invalid_idempotency_key");
        let reserved = "schedule:0190c7a2-0000-7000-8000-000000000000:1:0";
        app.money(CREDIT, &sefa, Some(reserved), &body).await.assert_error(400, "invalid_idempotency_key");
        let longest = "k".repeat(255);
        assert_eq!(app.money(CREDIT, &sefa, Some(&longest), &body).await.status, StatusCode::CREATED);
        app.stop().await;
    }
}

#[tokio::test]
async fn concurrent_retries_with_one_key_move_money_once() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "100", "USD").await;
        let body = json!({"amount": "7.00", "currency": "USD"});
        let attempts = (0..16).map(|_| app.money(DEBIT, &sefa, Some("pay-once"), &body));
        let responses = futures::future::join_all(attempts).await;
        let ids: std::collections::HashSet<String> = responses
            .iter()
            .map(|r| {
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
                r.body["id"].as_str().expect("id").to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 1, "every retry answers with the one transaction");
        assert_eq!(app.balance(&sefa, "USD").await, "93.00");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_stored_answer_wins_over_checks_that_no_longer_pass() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        app.credit(&sefa, "10", "USD").await;
        let transfer = json!({"to_user_id": kerem.id, "amount": "4", "currency": "USD"});
        let first = app.money("/api/v1/transactions/transfer", &sefa, Some("t-1"), &transfer).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
        app.delete(&format!("/api/v1/users/{}", kerem.id), Some(&admin.token)).await;

        let retry = app.money("/api/v1/transactions/transfer", &sefa, Some("t-1"), &transfer).await;
        assert_eq!(retry.status, StatusCode::CREATED, "the retry replays, not recipient_not_found: {}", retry.text);
        assert_eq!(retry.text, first.text);
        assert_eq!(retry.headers["idempotent-replayed"], "true");
        let fresh = app.money("/api/v1/transactions/transfer", &sefa, Some("t-2"), &transfer).await;
        fresh.assert_error(400, "recipient_not_found");
        let other_body = app.money(DEBIT, &sefa, Some("t-1"), &json!({"amount": "abc", "currency": "USD"})).await;
        other_body.assert_error(409, "idempotency_key_reused");
        assert_eq!(app.balance(&sefa, "USD").await, "6.00");
        app.stop().await;
    }
}
