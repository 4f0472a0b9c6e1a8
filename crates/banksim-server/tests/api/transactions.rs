//! `/api/v1/transactions`: every movement, every refusal, rollbacks, reads and history.

use banksim_client::{AmountRequest, HistoryQuery, TransactionList, TransferRequest};
use banksim_core::currency::Currency;
use banksim_core::ledger::{TransactionKind, TransactionStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_refused, backends, raw_number};

const CREDIT: &str = "/api/v1/transactions/credit";
const DEBIT: &str = "/api/v1/transactions/debit";
const TRANSFER: &str = "/api/v1/transactions/transfer";

/// A USD credit or debit body.
fn usd(amount: &str) -> AmountRequest {
    AmountRequest::new(amount, Currency::USD)
}

#[tokio::test]
async fn credit_debit_and_transfer_move_exact_amounts() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;

        let credit = app
            .money(CREDIT, &sefa, None, &json!({"amount": 500.00, "currency": "USD", "description": "salary"}))
            .await;
        assert_eq!(credit.status, StatusCode::CREATED, "{}", credit.text);
        assert_eq!(raw_number(&credit.text, "amount"), "500.00", "amounts keep the currency's decimals");
        let t = &credit.body;
        assert_eq!((t["type"].as_str(), t["status"].as_str()), (Some("credit"), Some("success")));
        assert_eq!((t["from_user_id"].clone(), t["to_user_id"].as_str()), (Value::Null, Some(sefa.id.as_str())));
        assert_eq!(t["description"], "salary");
        assert_eq!((t["reversal_of"].clone(), t["reversed_by"].clone()), (Value::Null, Value::Null));
        let read_back =
            app.get(&format!("/api/v1/transactions/{}", t["id"].as_str().expect("id")), Some(&sefa.token)).await;
        assert_eq!(read_back.text, credit.text, "a transaction reads back exactly as it was answered");

        let debit = app.money(DEBIT, &sefa, None, &json!({"amount": "0.01", "currency": "USD"})).await;
        assert_eq!(debit.status, StatusCode::CREATED, "{}", debit.text);
        assert_eq!(debit.body["from_user_id"], sefa.id.as_str());

        let transfer = json!({"to_user_id": kerem.id, "amount": "120.5", "currency": "USD"});
        let sent = app.money(TRANSFER, &sefa, None, &transfer).await;
        assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.text);
        assert_eq!(raw_number(&sent.text, "amount"), "120.50");
        assert_eq!(sent.body["to_user_id"], kerem.id.as_str());

        assert_eq!(app.balance(&sefa, "USD").await, "379.49");
        assert_eq!(app.balance(&kerem, "USD").await, "120.50");

        app.credit(&sefa, "1500", "JPY").await;
        assert_eq!(app.balance(&sefa, "JPY").await, "1500", "JPY has no decimals");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn invalid_amounts_are_refused_without_effect() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let cases = [
            (json!(0), "USD"),
            (json!("0.00"), "USD"),
            (json!(-5), "USD"),
            (json!("1.001"), "USD"),
            (json!(1.001), "USD"),
            (json!("1.5"), "JPY"),
            (json!("1000000.01"), "USD"),
            (json!("99999999999999999999"), "USD"),
            (json!("abc"), "USD"),
            (json!("1e2"), "USD"),
            (json!(true), "USD"),
            (json!(" 5"), "USD"),
        ];
        for (amount, currency) in cases {
            let body = json!({"amount": amount, "currency": currency});
            let response = app.money(CREDIT, &sefa, None, &body).await;
            response.assert_error(400, "invalid_amount");
        }
        let at_max = app.money(CREDIT, &sefa, None, &json!({"amount": "1000000.00", "currency": "USD"})).await;
        assert_eq!(at_max.status, StatusCode::CREATED, "the maximum itself is allowed: {}", at_max.text);
        assert_eq!(app.balance(&sefa, "USD").await, "1000000.00");
        app.stop().await;
    }
}

#[tokio::test]
async fn unsupported_currencies_and_bad_bodies_are_400s() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        for currency in ["XYZ", "usd", "CHF", "US"] {
            let response = app.money(CREDIT, &sefa, None, &json!({"amount": "1", "currency": currency})).await;
            response.assert_error(400, "unsupported_currency");
        }
        let missing = app.money(CREDIT, &sefa, None, &json!({"currency": "USD"})).await;
        missing.assert_error(400, "invalid_request");
        assert_eq!(missing.error_fields(), ["amount"]);
        let unknown = app.money(CREDIT, &sefa, None, &json!({"amount": "1", "currency": "USD", "to": "me"})).await;
        unknown.assert_error(400, "invalid_request");
        let null = app.money(CREDIT, &sefa, None, &Value::Null).await;
        null.assert_error(400, "invalid_request");
        let long = "x".repeat(501);
        let too_long =
            app.money(CREDIT, &sefa, None, &json!({"amount": "1", "currency": "USD", "description": long})).await;
        too_long.assert_error(400, "invalid_request");
        let control =
            app.money(CREDIT, &sefa, None, &json!({"amount": "1", "currency": "USD", "description": "a\u{0}b"})).await;
        control.assert_error(400, "invalid_request");
        let malformed = app
            .raw(
                reqwest::Method::POST,
                CREDIT,
                &[("content-type", "application/json"), ("authorization", &format!("Bearer {}", sefa.token))],
                b"{".to_vec(),
            )
            .await;
        malformed.assert_error(400, "malformed_json");
        app.post(CREDIT, None, &json!({"amount": "1", "currency": "USD"})).await.assert_error(401, "unauthorized");
        assert_eq!(app.balance(&sefa, "USD").await, "0.00");
        app.stop().await;
    }
}

#[tokio::test]
async fn wallets_never_go_negative() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        assert_refused(sefa.api.debit(&usd("0.01")).await, 400, "insufficient_funds");
        app.credit(&sefa, "10.00", "USD").await;
        assert_refused(sefa.api.debit(&usd("10.01")).await, 400, "insufficient_funds");
        let transfer = TransferRequest::new(kerem.uuid(), "10.01", Currency::USD);
        assert_refused(sefa.api.transfer(&transfer).await, 400, "insufficient_funds");
        let other_currency = TransferRequest::new(kerem.uuid(), "1", Currency::EUR);
        assert_refused(sefa.api.transfer(&other_currency).await, 400, "insufficient_funds");
        assert_eq!(app.balance(&sefa, "USD").await, "10.00");
        assert_eq!(app.balance(&kerem, "USD").await, "0.00");
        let kerem_wallets = kerem.api.balances().await.expect("balances");
        assert!(kerem_wallets.balances.is_empty(), "a refused transfer opens no wallet");
        let exact = sefa.api.debit(&usd("10")).reply().await.expect("the whole balance may go");
        assert_eq!(exact.status, StatusCode::CREATED);
        assert_eq!(app.balance(&sefa, "USD").await, "0.00");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn transfers_need_another_active_recipient() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let gone = app.user("gone").await;
        app.credit(&sefa, "100", "USD").await;
        app.delete(&format!("/api/v1/users/{}", gone.id), Some(&admin.token)).await;

        let to = |id: &str| json!({"to_user_id": id, "amount": "1", "currency": "USD"});
        app.money(TRANSFER, &sefa, None, &to(&sefa.id)).await.assert_error(400, "self_transfer");
        app.money(TRANSFER, &sefa, None, &to(&uuid::Uuid::new_v4().to_string()))
            .await
            .assert_error(400, "recipient_not_found");
        app.money(TRANSFER, &sefa, None, &to(&gone.id)).await.assert_error(400, "recipient_not_found");
        let missing = app.money(TRANSFER, &sefa, None, &json!({"amount": "1", "currency": "USD"})).await;
        missing.assert_error(400, "invalid_request");
        let not_uuid = app.money(TRANSFER, &sefa, None, &to("nope")).await;
        not_uuid.assert_error(400, "invalid_request");
        assert_eq!(app.balance(&sefa, "USD").await, "100.00");
        app.stop().await;
    }
}

#[tokio::test]
async fn rollbacks_reverse_once_for_the_payer_or_an_admin() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        let credit = app.credit(&sefa, "100", "USD").await;
        let transfer =
            sefa.api.transfer(&TransferRequest::new(kerem.uuid(), "40", Currency::USD)).await.expect("transfer");

        assert_refused(kerem.api.rollback(transfer.id).await, 403, "insufficient_permissions");
        assert_refused(sefa.api.rollback(credit.id).await, 403, "insufficient_permissions");

        let reversed = sefa.api.rollback(transfer.id).reply().await.expect("the payer may roll back");
        assert_eq!(reversed.status, StatusCode::CREATED);
        let reversed = reversed.body;
        assert_eq!(reversed.reversal_of, Some(transfer.id));
        assert_eq!((reversed.from_user_id, reversed.to_user_id), (Some(kerem.uuid()), Some(sefa.uuid())));
        assert_eq!(reversed.status, TransactionStatus::Success);
        assert_eq!(app.balance(&sefa, "USD").await, "100.00");
        assert_eq!(app.balance(&kerem, "USD").await, "0.00");

        let original = sefa.api.transaction(transfer.id).await.expect("the original");
        assert_eq!(original.status, TransactionStatus::RolledBack);
        assert_eq!(original.reversed_by, Some(reversed.id));

        assert_refused(admin.api.rollback(transfer.id).await, 409, "already_rolled_back");
        assert_refused(admin.api.rollback(reversed.id).await, 400, "not_reversible");

        admin.api.rollback(credit.id).await.expect("an admin may roll back a credit");
        assert_eq!(app.balance(&sefa, "USD").await, "0.00");

        assert_refused(admin.api.rollback(uuid::Uuid::new_v4()).await, 404, "transaction_not_found");
        // Not a UUID: only a raw request can send that.
        app.money("/api/v1/transactions/nope/rollback", &admin, None, &Value::Null)
            .await
            .assert_error(400, "invalid_parameter");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_rollback_needs_the_funds_to_return() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        app.credit(&sefa, "50", "USD").await;
        let transfer =
            sefa.api.transfer(&TransferRequest::new(kerem.uuid(), "50", Currency::USD)).await.expect("transfer");
        kerem.api.debit(&usd("30")).await.expect("debit");
        assert_refused(sefa.api.rollback(transfer.id).await, 400, "insufficient_funds");
        assert_eq!(app.balance(&kerem, "USD").await, "20.00");
        let original = sefa.api.transaction(transfer.id).await.expect("the original");
        assert_eq!(original.status, TransactionStatus::Success, "a refused rollback changes nothing");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_transaction_is_shown_to_its_parties_and_admins_only() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        let stranger = app.user("stranger").await;
        app.credit(&sefa, "10", "USD").await;
        let transfer =
            sefa.api.transfer(&TransferRequest::new(kerem.uuid(), "1", Currency::USD)).await.expect("transfer");
        for viewer in [&sefa, &kerem, &admin] {
            assert_eq!(viewer.api.transaction(transfer.id).await.expect("visible"), transfer);
        }
        assert_refused(stranger.api.transaction(transfer.id).await, 403, "insufficient_permissions");
        assert_refused(app.api.transaction(transfer.id).await, 401, "unauthorized");
        assert_refused(admin.api.transaction(uuid::Uuid::new_v4()).await, 404, "transaction_not_found");
        app.get("/api/v1/transactions/not-a-uuid", Some(&admin.token)).await.assert_error(400, "invalid_parameter");
        app.stop().await;
    }
}

#[tokio::test]
async fn history_filters_and_pages_newest_first() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        let mut ids = Vec::new();
        ids.push(app.credit(&sefa, "100", "USD").await.id);
        let middle = chrono::Utc::now();
        for amount in ["1", "2", "3"] {
            let sent = sefa.api.transfer(&TransferRequest::new(kerem.uuid(), amount, Currency::USD)).await;
            ids.push(sent.expect("transfer").id);
        }
        ids.push(app.credit(&sefa, "5", "EUR").await.id);
        ids.reverse();

        let history = |user: &TestUser, query: HistoryQuery| {
            let api = user.api.clone();
            async move { api.history(&query).await.expect("history") }
        };
        let ids_of = |page: &TransactionList| page.transactions.iter().map(|t| t.id).collect::<Vec<_>>();
        let all = history(&sefa, HistoryQuery { limit: Some(100), ..Default::default() }).await;
        assert_eq!(ids_of(&all), ids, "newest first");
        assert_eq!(all.next_cursor, None);

        let kerem_sees = history(&kerem, HistoryQuery::default()).await;
        assert_eq!(ids_of(&kerem_sees).len(), 3, "the payee sees incoming transfers");
        let transfers = history(&sefa, HistoryQuery { kind: Some(TransactionKind::Transfer), ..Default::default() });
        assert_eq!(ids_of(&transfers.await), ids[1..4]);
        let euros = history(&sefa, HistoryQuery { currency: Some(Currency::EUR), ..Default::default() }).await;
        assert_eq!(ids_of(&euros), ids[..1]);
        let since = history(&sefa, HistoryQuery { since: Some(middle), ..Default::default() }).await;
        assert_eq!(ids_of(&since), ids[..4]);
        let until = history(&sefa, HistoryQuery { until: Some(middle), ..Default::default() }).await;
        assert_eq!(ids_of(&until), ids[4..]);
        let rolled = history(&sefa, HistoryQuery { status: Some(TransactionStatus::RolledBack), ..Default::default() });
        assert!(ids_of(&rolled.await).is_empty());
        let offset = history(&sefa, HistoryQuery { limit: Some(2), offset: Some(2), ..Default::default() }).await;
        assert_eq!(ids_of(&offset), ids[2..4]);
        assert_eq!((offset.limit, offset.offset), (2, 2));

        let mut seen = Vec::new();
        let mut query = HistoryQuery { limit: Some(2), ..Default::default() };
        loop {
            let page = history(&sefa, query.clone()).await;
            seen.extend(ids_of(&page));
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(seen, ids, "the cursor visits every transaction once");

        // What a typed client cannot send, the server refuses.
        for bad in ["type=gift", "status=done", "limit=0", "limit=101", "cursor=zzz", "offset=x", "bogus=1"] {
            app.get(&format!("/api/v1/transactions/history?{bad}"), Some(&sefa.token))
                .await
                .assert_error(400, "invalid_parameter");
        }
        app.get("/api/v1/transactions/history?since=yesterday", Some(&sefa.token))
            .await
            .assert_error(400, "invalid_timestamp");
        app.get("/api/v1/transactions/history?currency=XYZ", Some(&sefa.token))
            .await
            .assert_error(400, "unsupported_currency");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_full_write_queue_answers_503_with_retry_after_at_once() {
    for backend in backends() {
        let app = std::sync::Arc::new(
            TestApp::spawn_with(backend, |config| config.write_queue_capacity = 1, axum::Router::new()).await,
        );
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "1", "USD").await;
        let lock = app.lock_writes().await;
        let send = |amount: &'static str| {
            let (app, sefa) = (app.clone(), sefa.clone());
            tokio::spawn(
                async move { app.money(CREDIT, &sefa, None, &json!({"amount": amount, "currency": "USD"})).await },
            )
        };
        // The first is taken by the writer (which then waits for the lock), the second fills the queue.
        let taken = send("2");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let queued = send("3");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let refused = app.money(CREDIT, &sefa, None, &json!({"amount": "4", "currency": "USD"})).await;
        refused.assert_error(503, "write_queue_full");
        assert!(refused.headers.contains_key("retry-after"));

        lock.release().await;
        for pending in [taken, queued] {
            let response = pending.await.expect("task");
            assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
        }
        assert_eq!(app.balance(&sefa, "USD").await, "6.00", "the refused one moved nothing");
        std::sync::Arc::into_inner(app).expect("sole owner").stop().await;
    }
}

#[tokio::test]
async fn admins_can_check_the_ledger_over_http() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "5", "USD").await;
        let path = "/api/v1/admin/ledger/verify";
        app.get(path, Some(&sefa.token)).await.assert_error(403, "insufficient_permissions");
        app.get(path, None).await.assert_error(401, "unauthorized");
        let sound = app.get(path, Some(&admin.token)).await;
        assert_eq!(sound.status, StatusCode::OK, "{}", sound.text);
        assert_eq!(sound.body["ok"], true);
        assert_eq!((sound.body["transactions"].as_u64(), sound.body["postings"].as_u64()), (Some(1), Some(2)));

        app.tamper("UPDATE accounts SET balance_minor = balance_minor + 1 WHERE kind = 'user'").await;
        let broken = app.get(path, Some(&admin.token)).await;
        assert_eq!(broken.body["ok"], false);
        assert!(broken.body["violations"].as_array().is_some_and(|v| !v.is_empty()), "{}", broken.text);
        app.stop().await;
    }
}
