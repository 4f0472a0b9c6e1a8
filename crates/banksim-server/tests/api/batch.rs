//! `POST /api/v1/transactions/batch`: atomic and non-atomic batches, who may name whom, limits, idempotency, and
//! batches racing plain transfers.

use reqwest::StatusCode;
use serde_json::{Value, json};

use banksim_client::{BatchItem, BatchRequest, HistoryQuery};
use banksim_core::currency::Currency;

use crate::helpers::{TestApp, TestUser, assert_refused, backends};

const BATCH: &str = "/api/v1/transactions/batch";

fn transfer(to: &TestUser, amount: &str) -> Value {
    json!({"type": "transfer", "to_user_id": to.id, "amount": amount, "currency": "USD"})
}

fn statuses(body: &Value) -> Vec<String> {
    let results = body["results"].as_array().unwrap_or_else(|| panic!("results in {body}"));
    results.iter().map(|r| r["status"].as_str().unwrap_or_default().to_owned()).collect()
}

fn error_codes(body: &Value) -> Vec<String> {
    let results = body["results"].as_array().unwrap_or_else(|| panic!("results in {body}"));
    results.iter().map(|r| r["error"]["error_code"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn an_atomic_batch_posts_every_item_in_order() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        let omer = app.user("omer").await;
        app.credit(&sefa, "100", "USD").await;
        let body = json!({"atomic": true, "transactions": [
            transfer(&ayse, "30"),
            transfer(&omer, "20.50"),
            {"type": "debit", "amount": "9.50", "currency": "USD", "description": "fee"},
            {"type": "credit", "amount": "1", "currency": "USD"},
        ]});
        let answer = app.money(BATCH, &sefa, None, &body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        assert_eq!(statuses(&answer.body), ["success"; 4]);
        let results = answer.body["results"].as_array().expect("results");
        for (index, result) in results.iter().enumerate() {
            assert_eq!(result["index"], index);
            assert_eq!(result["transaction"]["status"], "success", "{result}");
        }
        assert_eq!(results[0]["transaction"]["type"], "transfer");
        assert_eq!(results[1]["transaction"]["to_user_id"], omer.id.as_str());
        assert_eq!(results[2]["transaction"]["description"], "fee");
        assert_eq!(app.balance(&sefa, "USD").await, "41.00");
        assert_eq!(app.balance(&ayse, "USD").await, "30.00");
        assert_eq!(app.balance(&omer, "USD").await, "20.50");
        // Each item is a transaction of its own, readable like any other.
        let id = results[1]["transaction"]["id"].as_str().expect("id");
        let read = app.get(&format!("/api/v1/transactions/{id}"), Some(&omer.token)).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text);
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn one_refused_item_refuses_an_atomic_batch_whole() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        app.credit(&sefa, "50", "USD").await;
        // Well formed, so sent by the typed client: the refusal's results come with its error.
        let to = |user: &TestUser, amount: &str| BatchItem::transfer(user.uuid(), amount, Currency::USD);
        let batch = BatchRequest {
            atomic: true,
            transactions: vec![to(&ayse, "30"), to(&ayse, "30"), to(&sefa, "1"), to(&ayse, "1")],
        };
        let refused = assert_refused(sefa.api.batch(&batch).await, 400, "batch_failed");
        let results = &refused.batch_results;
        assert!(results.iter().all(|r| r.status == "failed" && r.transaction.is_none()), "{results:?}");
        let codes: Vec<&str> = results.iter().filter_map(|r| r.error.as_ref()).map(|e| e.error_code.as_str()).collect();
        assert_eq!(codes, ["batch_failed", "insufficient_funds", "self_transfer", "batch_failed"]);
        assert!(refused.message.contains("item 1"), "{refused:?}");
        assert_eq!(app.balance(&sefa, "USD").await, "50.00");
        assert!(ayse.api.balances().await.expect("balances").balances.is_empty(), "no wallet opened");
        let history = sefa.api.history(&HistoryQuery::default()).await.expect("history");
        assert_eq!(history.transactions.len(), 1, "{history:?}");

        // The refusal is audited once, naming the refused items; none of the items is.
        let audit = app.get("/api/v1/audit-logs?action=transaction.batch", Some(&admin.token)).await;
        let entries = audit.body["audit_logs"].as_array().expect("entries");
        assert_eq!(entries.len(), 1, "{}", audit.text);
        assert_eq!(entries[0]["outcome"], "batch_failed");
        let transfers = app.get("/api/v1/audit-logs?action=transaction.transfer", Some(&admin.token)).await;
        assert_eq!(transfers.body["audit_logs"], json!([]), "{}", transfers.text);
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn each_item_of_a_non_atomic_batch_stands_alone() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        let gone = app.user("gone").await;
        let path = format!("/api/v1/users/{}", gone.id);
        let deactivated = app.put(&path, Some(&admin.token), &json!({"is_active": false})).await;
        assert_eq!(deactivated.status, StatusCode::OK, "{}", deactivated.text);
        app.credit(&sefa, "50", "USD").await;
        let body = json!({"atomic": false, "transactions": [
            transfer(&ayse, "30"),
            transfer(&ayse, "30"),
            transfer(&gone, "5"),
            transfer(&ayse, "20"),
        ]});
        let answer = app.money(BATCH, &sefa, None, &body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        assert_eq!(statuses(&answer.body), ["success", "failed", "failed", "success"]);
        assert_eq!(error_codes(&answer.body), ["", "insufficient_funds", "recipient_not_found", ""]);
        assert_eq!(app.balance(&sefa, "USD").await, "0.00");
        assert_eq!(app.balance(&ayse, "USD").await, "50.00");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn admins_name_payers_and_payees_and_users_may_not() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("payroll").await;
        let company = app.user("company").await;
        let staff: Vec<TestUser> = [app.user("ana").await, app.user("bob").await, app.user("cem").await].into();
        let mut items = vec![json!({"type": "credit", "to_user_id": company.id, "amount": "1000", "currency": "USD"})];
        for person in &staff {
            items.push(json!({"type": "transfer", "from_user_id": company.id, "to_user_id": person.id,
                "amount": "250", "currency": "USD", "description": "Salary"}));
        }
        let payroll = app.money(BATCH, &admin, None, &json!({"atomic": true, "transactions": items})).await;
        assert_eq!(payroll.status, StatusCode::CREATED, "{}", payroll.text);
        assert_eq!(app.balance(&company, "USD").await, "250.00");
        for person in &staff {
            assert_eq!(app.balance(person, "USD").await, "250.00");
        }

        let ana = &staff[0];
        for item in [
            json!({"type": "transfer", "from_user_id": company.id, "to_user_id": ana.id, "amount": "1", "currency": "USD"}),
            json!({"type": "credit", "to_user_id": company.id, "amount": "1", "currency": "USD"}),
            json!({"type": "debit", "from_user_id": company.id, "amount": "1", "currency": "USD"}),
        ] {
            let body = json!({"atomic": false, "transactions": [item]});
            app.money(BATCH, ana, None, &body).await.assert_error(403, "insufficient_permissions");
        }
        assert_eq!(app.balance(&company, "USD").await, "250.00");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_malformed_batch_is_refused_before_anything_moves() {
    for backend in backends() {
        let app = TestApp::spawn_with(backend, |config| config.batch_max = 3, axum::Router::new()).await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        app.credit(&sefa, "50", "USD").await;
        let good = transfer(&ayse, "1");
        for (body, code, field) in [
            (json!({"transactions": [good]}), "invalid_request", "atomic"),
            (json!({"atomic": true}), "invalid_request", "transactions"),
            (json!({"atomic": true, "transactions": []}), "invalid_request", "transactions"),
            (json!({"atomic": true, "transactions": [good, good, good, good]}), "invalid_request", "transactions"),
            (
                json!({"atomic": false, "transactions": [good, {"type": "refund", "amount": "1", "currency": "USD"}]}),
                "invalid_request",
                "",
            ),
            (
                json!({"atomic": false, "transactions": [good, {"type": "debit", "amount": "1.001", "currency": "USD"}]}),
                "invalid_amount",
                "",
            ),
            (
                json!({"atomic": false, "transactions": [good, {"type": "debit", "currency": "USD"}]}),
                "invalid_request",
                "transactions[1].amount",
            ),
            (
                json!({"atomic": false, "transactions": [{"type": "debit", "amount": "1", "currency": "XYZ"}]}),
                "unsupported_currency",
                "",
            ),
            (
                json!({"atomic": false, "transactions": [{"type": "transfer", "amount": "1", "currency": "USD"}]}),
                "invalid_request",
                "transactions[0].to_user_id",
            ),
            (
                json!({"atomic": false, "transactions": [{"type": "credit", "from_user_id": ayse.id, "amount": "1", "currency": "USD"}]}),
                "invalid_request",
                "transactions[0].from_user_id",
            ),
            (
                json!({"atomic": false, "transactions": [{"type": "debit", "amount": "1", "currency": "USD", "effective_after": "x"}]}),
                "invalid_request",
                "",
            ),
            (json!([good]), "invalid_request", ""),
        ] {
            let refused = app.money(BATCH, &sefa, None, &body).await;
            refused.assert_error(400, code);
            if !field.is_empty() {
                assert_eq!(refused.error_fields(), [field], "{body}: {}", refused.text);
            }
            assert!(refused.body.get("results").is_none(), "{}", refused.text);
        }
        app.money(BATCH, &sefa, None, &json!("x")).await.assert_error(400, "invalid_request");
        let unauthenticated = app.post(BATCH, None, &json!({"atomic": true, "transactions": [good]})).await;
        unauthenticated.assert_error(401, "unauthorized");
        assert_eq!(app.balance(&sefa, "USD").await, "50.00");
        app.stop().await;
    }
}

#[tokio::test]
async fn one_key_covers_the_whole_batch() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        app.credit(&sefa, "10", "USD").await;
        let body = json!({"atomic": true, "transactions": [transfer(&ayse, "3"), transfer(&ayse, "4")]});
        let first = app.money(BATCH, &sefa, Some("payroll-1"), &body).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
        let again = app.money(BATCH, &sefa, Some("payroll-1"), &body).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.body, first.body);
        assert_eq!(again.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
        assert_eq!(app.balance(&sefa, "USD").await, "3.00");

        let other = json!({"atomic": true, "transactions": [transfer(&ayse, "3")]});
        app.money(BATCH, &sefa, Some("payroll-1"), &other).await.assert_error(409, "idempotency_key_reused");

        // A refused atomic batch is answered the same way again: its refusal is stored too.
        let too_much = json!({"atomic": true, "transactions": [transfer(&ayse, "2"), transfer(&ayse, "2")]});
        let refused = app.money(BATCH, &sefa, Some("payroll-2"), &too_much).await;
        refused.assert_error(400, "batch_failed");
        app.credit(&sefa, "10", "USD").await;
        let replayed = app.money(BATCH, &sefa, Some("payroll-2"), &too_much).await;
        assert_eq!((replayed.status, &replayed.body["results"]), (refused.status, &refused.body["results"]));
        assert_eq!(app.balance(&sefa, "USD").await, "13.00");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn limits_hold_for_every_item_of_a_batch() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let ayse = app.user("ayse").await;
        let limits = format!("/api/v1/admin/wallets/{}/USD/limits", ayse.id);
        let set = app.put(&limits, Some(&admin.token), &json!({"overdraft": null, "max_balance": "15"})).await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.text);
        app.credit(&sefa, "100", "USD").await;
        let body = json!({"atomic": true, "transactions": [transfer(&ayse, "10"), transfer(&ayse, "10")]});
        let refused = app.money(BATCH, &sefa, None, &body).await;
        refused.assert_error(400, "batch_failed");
        assert_eq!(error_codes(&refused.body), ["batch_failed", "balance_limit_exceeded"]);
        let body = json!({"atomic": false, "transactions": [transfer(&ayse, "10"), transfer(&ayse, "10")]});
        let answer = app.money(BATCH, &sefa, None, &body).await;
        assert_eq!(statuses(&answer.body), ["success", "failed"], "{}", answer.text);
        assert_eq!(app.balance(&ayse, "USD").await, "10.00");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn batches_holds_and_transfers_racing_on_a_few_accounts_never_lose_a_cent() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let users: Vec<TestUser> = futures::future::join_all((0..4).map(|i| app.user_named(i))).await;
        for user in &users {
            app.credit(user, "100", "USD").await;
        }
        let tasks = (0..30).map(|round| {
            let (app, users) = (&app, &users);
            async move {
                let payer = &users[round % 4];
                let payee = &users[(round + 1) % 4];
                let transfer_path = "/api/v1/transactions/transfer";
                match round % 5 {
                    0 | 4 => {
                        let items: Vec<Value> = (0..10).map(|_| transfer(payee, "7")).collect();
                        let body = json!({"atomic": round % 5 == 0, "transactions": items});
                        vec![app.money(BATCH, payer, None, &body).await.status.as_u16()]
                    }
                    1 => vec![app.money(transfer_path, payer, None, &transfer(payee, "9")).await.status.as_u16()],
                    settle => {
                        let hold = json!({"to_user_id": payee.id, "amount": "6", "currency": "USD", "pending": true});
                        let held = app.money(transfer_path, payer, None, &hold).await;
                        let mut statuses = vec![held.status.as_u16()];
                        if let Some(id) = held.body["id"].as_str().filter(|_| held.status == StatusCode::CREATED) {
                            let (action, body) =
                                if settle == 2 { ("post", json!({"amount": "4"})) } else { ("void", json!({})) };
                            let path = format!("/api/v1/transactions/{id}/{action}");
                            statuses.push(app.money(&path, payer, None, &body).await.status.as_u16());
                        }
                        statuses
                    }
                }
            }
        });
        for status in futures::future::join_all(tasks).await.into_iter().flatten() {
            assert!([200, 201, 400].contains(&status), "unexpected status {status}");
        }
        let mut total = 0_i64;
        for user in &users {
            total += app.balance_via_store(user).await;
        }
        assert_eq!(total, 40_000, "money was created or lost");
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_batch_may_be_larger_than_other_bodies_but_not_without_bound() {
    let app = TestApp::spawn_with(
        banksim_store::Backend::Sqlite,
        |config| {
            config.body_limit_bytes = 1_024;
            config.batch_max = 40;
        },
        axum::Router::new(),
    )
    .await;
    let sefa = app.user("sefa").await;
    let ayse = app.user("ayse").await;
    app.credit(&sefa, "100", "USD").await;
    let items: Vec<Value> = (0..40).map(|_| transfer(&ayse, "0.25")).collect();
    let body = json!({"atomic": true, "transactions": items});
    assert!(body.to_string().len() > 1_024);
    let answer = app.money(BATCH, &sefa, None, &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    assert_eq!(app.balance(&ayse, "USD").await, "10.00");
    // More items than BATCH_MAX is said so, whatever the body's size.
    let items: Vec<Value> = (0..8_191).map(|_| transfer(&ayse, "0.25")).collect();
    let too_many = app.money(BATCH, &sefa, None, &json!({"atomic": true, "transactions": items})).await;
    too_many.assert_error(400, "invalid_request");
    assert_eq!(too_many.error_fields(), ["transactions"]);

    let padded = json!({"atomic": true, "transactions": [transfer(&ayse, "1")], "pad": "x".repeat(8_190 * 512)});
    app.money(BATCH, &sefa, None, &padded).await.assert_error(413, "payload_too_large");
    let other = json!({"amount": "1", "currency": "USD", "description": "x".repeat(2_000)});
    app.money("/api/v1/transactions/credit", &sefa, None, &other).await.assert_error(413, "payload_too_large");
    app.stop().await;
}
