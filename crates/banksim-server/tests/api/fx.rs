//! `/api/v1/fx-rates` and exchanges: exact rates, rounding down, conservation in every currency.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, backends, raw_number};

const EXCHANGE: &str = "/api/v1/transactions/exchange";

#[tokio::test]
async fn rates_are_read_by_users_and_set_by_admins() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let rates = app.get("/api/v1/fx-rates", Some(&sefa.token)).await;
        assert_eq!(rates.status, StatusCode::OK);
        let usd_eur =
            rates.body["rates"].as_array().expect("rates").iter().find(|r| r["base"] == "USD" && r["quote"] == "EUR");
        assert!(usd_eur.is_some_and(|r| r["rate"].is_number()), "{}", rates.text);
        app.get("/api/v1/fx-rates", None).await.assert_error(401, "unauthorized");

        let path = "/api/v1/fx-rates/USD/JPY";
        app.put(path, Some(&sefa.token), &json!({"rate": "150"})).await.assert_error(403, "insufficient_permissions");
        let set = app.put(path, Some(&admin.token), &json!({"rate": "150.25"})).await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.text);
        assert_eq!(raw_number(&set.text, "rate"), "150.25");
        let set_number = app.put("/api/v1/fx-rates/CAD/JPY", Some(&admin.token), &json!({"rate": 110.5})).await;
        assert_eq!(set_number.status, StatusCode::OK, "{}", set_number.text);

        for (path, body, code) in [
            ("/api/v1/fx-rates/USD/JPY", json!({"rate": "0"}), "invalid_request"),
            ("/api/v1/fx-rates/USD/JPY", json!({"rate": "-1"}), "invalid_request"),
            ("/api/v1/fx-rates/USD/JPY", json!({"rate": "abc"}), "invalid_request"),
            ("/api/v1/fx-rates/USD/JPY", json!({}), "invalid_request"),
            ("/api/v1/fx-rates/USD/USD", json!({"rate": "1"}), "same_currency"),
            ("/api/v1/fx-rates/USD/GBP", json!({"rate": "0.80"}), "invalid_request"),
            ("/api/v1/fx-rates/USD/XYZ", json!({"rate": "1"}), "unsupported_currency"),
        ] {
            app.put(path, Some(&admin.token), &body).await.assert_error(400, code);
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn an_exchange_converts_at_the_current_rate_rounding_down() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        app.put("/api/v1/fx-rates/USD/JPY", Some(&admin.token), &json!({"rate": "149.567"})).await;
        app.credit(&sefa, "100", "USD").await;

        let exchange = app
            .money(EXCHANGE, &sefa, None, &json!({"from_currency": "USD", "to_currency": "JPY", "amount": "10.01"}))
            .await;
        assert_eq!(exchange.status, StatusCode::CREATED, "{}", exchange.text);
        assert_eq!(exchange.body["type"], "exchange");
        assert_eq!(raw_number(&exchange.text, "to_amount"), "1497", "10.01 × 149.567 = 1497.16 rounds down");
        assert_eq!(exchange.body["to_currency"], "JPY");
        assert_eq!(raw_number(&exchange.text, "rate"), "149.567");
        assert_eq!(app.balance(&sefa, "USD").await, "89.99");
        assert_eq!(app.balance(&sefa, "JPY").await, "1497");

        let back = app
            .money(EXCHANGE, &sefa, None, &json!({"from_currency": "JPY", "to_currency": "USD", "amount": "1"}))
            .await;
        back.assert_error(400, "invalid_amount");
        app.money(EXCHANGE, &sefa, None, &json!({"from_currency": "USD", "to_currency": "USD", "amount": "1"}))
            .await
            .assert_error(400, "same_currency");
        app.money(EXCHANGE, &sefa, None, &json!({"from_currency": "AUD", "to_currency": "JPY", "amount": "1"}))
            .await
            .assert_error(400, "rate_not_found");
        app.money(EXCHANGE, &sefa, None, &json!({"from_currency": "USD", "to_currency": "EUR", "amount": "1000"}))
            .await
            .assert_error(400, "insufficient_funds");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn an_exchange_rolls_back_through_the_fx_accounts_exactly() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "50", "USD").await;
        let exchange = app
            .money(EXCHANGE, &sefa, None, &json!({"from_currency": "USD", "to_currency": "EUR", "amount": "20.00"}))
            .await;
        assert_eq!(exchange.status, StatusCode::CREATED, "{}", exchange.text);
        assert_eq!(app.balance(&sefa, "EUR").await, "18.40", "20.00 × 0.92");
        let path = format!("/api/v1/transactions/{}/rollback", exchange.body["id"].as_str().expect("id"));
        app.money(&path, &sefa, None, &serde_json::Value::Null).await.assert_error(403, "insufficient_permissions");
        let reversal = app.money(&path, &admin, None, &serde_json::Value::Null).await;
        assert_eq!(reversal.status, StatusCode::CREATED, "{}", reversal.text);
        assert_eq!(
            (raw_number(&reversal.text, "amount"), reversal.body["currency"].as_str()),
            ("18.40".to_owned(), Some("EUR"))
        );
        assert_eq!(raw_number(&reversal.text, "to_amount"), "20.00");
        assert!(reversal.body.get("rate").is_none(), "no rate applies to a reversal");
        assert_eq!(app.balance(&sefa, "USD").await, "50.00");
        assert_eq!(app.balance(&sefa, "EUR").await, "0.00");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_rate_that_lets_any_cycle_of_exchanges_make_money_is_refused() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        // USD → GBP (0.79) → EUR (1.175) → USD (1.08) would turn 1,000,000 into 1,002,510.
        let refused = app.put("/api/v1/fx-rates/GBP/EUR", Some(&admin.token), &json!({"rate": "1.175"})).await;
        refused.assert_error(400, "invalid_request");
        assert!(refused.text.contains("USD"), "names the cycle: {}", refused.text);
        let kept = app.get("/api/v1/fx-rates", Some(&admin.token)).await;
        let gbp_eur = kept.body["rates"]
            .as_array()
            .expect("rates")
            .iter()
            .find(|r| r["base"] == "GBP" && r["quote"] == "EUR")
            .cloned();
        assert_eq!(gbp_eur.map(|r| r["rate"].to_string()), Some("1.16".to_owned()), "nothing changed");
        // A rate that keeps every cycle at a loss is taken.
        let taken = app.put("/api/v1/fx-rates/GBP/EUR", Some(&admin.token), &json!({"rate": "1.17"})).await;
        assert_eq!(taken.status, StatusCode::OK, "{}", taken.text);

        // Going round with the rates in force loses money, as it must.
        app.credit(&sefa, "1000000", "USD").await;
        for (from, to) in [("USD", "GBP"), ("GBP", "EUR"), ("EUR", "USD")] {
            let amount = app.balance(&sefa, from).await;
            let body = json!({"from_currency": from, "to_currency": to, "amount": amount});
            let exchanged = app.money(EXCHANGE, &sefa, None, &body).await;
            assert_eq!(exchanged.status, StatusCode::CREATED, "{}", exchanged.text);
        }
        let back: f64 = app.balance(&sefa, "USD").await.parse().expect("number");
        assert!(back < 1_000_000.0, "a cycle made money: {back}");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn seeded_rates_show_when_they_were_seeded_on_every_backend() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let rates = app.get("/api/v1/fx-rates", Some(&sefa.token)).await;
        for rate in rates.body["rates"].as_array().expect("rates") {
            let updated = rate["updated_at"].as_str().expect("updated_at");
            assert!(updated >= "2024-01-01", "{} {updated}", backend.name());
        }
        app.stop().await;
    }
}
