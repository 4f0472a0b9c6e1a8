//! Wallet balance limits (`/api/v1/admin/wallets/{user_id}/{currency}/limits`) and the posted / pending / available
//! figures of every balance object.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, backends, raw_number};

const DEBIT: &str = "/api/v1/transactions/debit";
const TRANSFER: &str = "/api/v1/transactions/transfer";
const CREDIT: &str = "/api/v1/transactions/credit";

fn limits_path(user_id: &str, currency: &str) -> String {
    format!("/api/v1/admin/wallets/{user_id}/{currency}/limits")
}

#[tokio::test]
async fn admins_set_and_read_limits_and_users_may_not() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let path = limits_path(&sefa.id, "USD");

        let none = app.get(&path, Some(&admin.token)).await;
        assert_eq!(none.status, StatusCode::OK, "{}", none.text);
        assert_eq!((none.body["overdraft"].clone(), none.body["max_balance"].clone()), (json!(null), json!(null)));

        let set = app.put(&path, Some(&admin.token), &json!({"overdraft": "100.00", "max_balance": 5000})).await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.text);
        assert_eq!(set.body["overdraft"], "100.00");
        assert_eq!(set.body["max_balance"], "5000.00");
        assert_eq!(set.body["user_id"], sefa.id.as_str());
        assert_eq!(set.body["currency"], "USD");
        let read = app.get(&path, Some(&admin.token)).await;
        assert_eq!(read.body, set.body);

        app.get(&path, Some(&sefa.token)).await.assert_error(403, "insufficient_permissions");
        app.put(&path, Some(&sefa.token), &json!({"overdraft": "1000000"}))
            .await
            .assert_error(403, "insufficient_permissions");
        app.put(&path, None, &json!({})).await.assert_error(401, "unauthorized");
        for (body, code) in [
            (json!({"overdraft": "-1"}), "invalid_amount"),
            (json!({"overdraft": "1.001"}), "invalid_amount"),
            (json!({"max_balance": "abc"}), "invalid_amount"),
            (json!({"overdraft": "1", "floor": "2"}), "invalid_request"),
        ] {
            app.put(&path, Some(&admin.token), &body).await.assert_error(400, code);
        }
        app.put(&limits_path(&sefa.id, "XYZ"), Some(&admin.token), &json!({}))
            .await
            .assert_error(400, "unsupported_currency");
        let stranger = limits_path("00000000-0000-4000-8000-000000000000", "USD");
        app.put(&stranger, Some(&admin.token), &json!({})).await.assert_error(404, "user_not_found");
        app.get(&stranger, Some(&admin.token)).await.assert_error(404, "user_not_found");

        let denied =
            app.get("/api/v1/audit-logs?action=permission.denied&entity_type=wallet", Some(&admin.token)).await;
        assert_eq!(denied.body["audit_logs"].as_array().map(Vec::len), Some(2), "{}", denied.text);
        let audit = app.get("/api/v1/audit-logs?action=wallet.limits", Some(&admin.token)).await;
        assert_eq!(audit.status, StatusCode::OK, "{}", audit.text);
        let entries = audit.body["audit_logs"].as_array().expect("entries");
        assert_eq!(entries.len(), 1, "{}", audit.text);
        assert_eq!(entries[0]["entity_type"], "wallet");
        app.stop().await;
    }
}

#[tokio::test]
async fn an_overdraft_lets_available_go_below_zero_and_no_further() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        app.credit(&sefa, "50", "USD").await;
        let path = limits_path(&sefa.id, "USD");
        let set = app.put(&path, Some(&admin.token), &json!({"overdraft": "100", "max_balance": null})).await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.text);

        let current = app.get("/api/v1/balances/current?currency=USD", Some(&sefa.token)).await;
        assert_eq!(raw_number(&current.text, "posted"), "50.00");
        assert_eq!(raw_number(&current.text, "pending_out"), "0.00");
        assert_eq!(raw_number(&current.text, "available"), "150.00");

        app.money(DEBIT, &sefa, None, &json!({"amount": "150.01", "currency": "USD"}))
            .await
            .assert_error(400, "insufficient_funds");
        let debit = app.money(DEBIT, &sefa, None, &json!({"amount": "120", "currency": "USD"})).await;
        assert_eq!(debit.status, StatusCode::CREATED, "{}", debit.text);
        let current = app.get("/api/v1/balances/current?currency=USD", Some(&sefa.token)).await;
        assert!(current.text.contains(r#""amount":-70.00"#), "{}", current.text);
        let transfer = json!({"to_user_id": ayse.id, "amount": "30.01", "currency": "USD"});
        app.money(TRANSFER, &sefa, None, &transfer).await.assert_error(400, "insufficient_funds");
        let transfer = json!({"to_user_id": ayse.id, "amount": "30", "currency": "USD"});
        assert_eq!(app.money(TRANSFER, &sefa, None, &transfer).await.status, StatusCode::CREATED);

        let all = app.get("/api/v1/balances", Some(&sefa.token)).await;
        assert_eq!(all.status, StatusCode::OK, "{}", all.text);
        assert!(all.text.contains(r#""amount":-100.00"#), "{}", all.text);
        assert!(all.text.contains(r#""available":0.00"#), "{}", all.text);

        // A smaller overdraft than the wallet already uses is refused; the old limits stand.
        app.put(&path, Some(&admin.token), &json!({"overdraft": "99.99"}))
            .await
            .assert_error(400, "balance_limit_exceeded");
        // Money in is welcome below zero.
        let back = app.money(CREDIT, &sefa, None, &json!({"amount": "1", "currency": "USD"})).await;
        assert_eq!(back.status, StatusCode::CREATED, "{}", back.text);
        let current = app.get("/api/v1/balances/current?currency=USD", Some(&sefa.token)).await;
        assert!(current.text.contains(r#""available":1.00"#), "{}", current.text);
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_maximum_balance_refuses_money_in_beyond_it() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        app.credit(&sefa, "500", "USD").await;
        app.credit(&ayse, "100", "USD").await;
        let set = app.put(&limits_path(&ayse.id, "USD"), Some(&admin.token), &json!({"max_balance": "300"})).await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.text);

        let transfer = |amount: &str| json!({"to_user_id": ayse.id, "amount": amount, "currency": "USD"});
        app.money(TRANSFER, &sefa, None, &transfer("200.01")).await.assert_error(400, "balance_limit_exceeded");
        assert_eq!(app.balance(&sefa, "USD").await, "500.00", "a refusal moves nothing");
        assert_eq!(app.money(TRANSFER, &sefa, None, &transfer("200")).await.status, StatusCode::CREATED);
        app.money(CREDIT, &ayse, None, &json!({"amount": "0.01", "currency": "USD"}))
            .await
            .assert_error(400, "balance_limit_exceeded");
        assert_eq!(
            app.money(DEBIT, &ayse, None, &json!({"amount": "300", "currency": "USD"})).await.status,
            StatusCode::CREATED
        );
        app.put(&limits_path(&sefa.id, "USD"), Some(&admin.token), &json!({"max_balance": "299.99"}))
            .await
            .assert_error(400, "balance_limit_exceeded");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

/// On PostgreSQL a limits change announces the wallet on the change bus one version ahead, and on SQLite it moves the
/// data version other instances watch, so no instance's balance cache keeps the old limits.
#[tokio::test]
async fn new_limits_show_at_once_on_every_instance() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let other = app.spawn_beside(|_| {}).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "50", "USD").await;
        // Both instances have the wallet cached (or know it fresh) before the change.
        for instance in [&app, &other] {
            let current = instance.get("/api/v1/balances/current?currency=USD", Some(&sefa.token)).await;
            assert!(current.text.contains(r#""available":50.00"#), "{}", current.text);
        }
        let set = app.put(&limits_path(&sefa.id, "USD"), Some(&admin.token), &json!({"overdraft": "25"})).await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.text);
        for (n, instance) in [&app, &other].into_iter().enumerate() {
            let current = instance.get("/api/v1/balances/current?currency=USD", Some(&sefa.token)).await;
            assert!(current.text.contains(r#""available":75.00"#), "instance {n}: {}", current.text);
        }
        // And the other instance's ledger applies them.
        let debit = other.money(DEBIT, &sefa, None, &json!({"amount": "70", "currency": "USD"})).await;
        assert_eq!(debit.status, StatusCode::CREATED, "{}", debit.text);
        other.stop().await;
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}
