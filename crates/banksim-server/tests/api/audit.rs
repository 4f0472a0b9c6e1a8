//! `/api/v1/audit-logs` and `/api/v1/events`: what happened, in order, for admins.

use banksim_store::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, backends};

#[tokio::test]
async fn the_event_log_lists_every_money_event_in_order() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        app.credit(&sefa, "10", "USD").await;
        let sent = app
            .money(
                "/api/v1/transactions/transfer",
                &sefa,
                None,
                &json!({"to_user_id": kerem.id, "amount": "4", "currency": "USD"}),
            )
            .await;
        let path = format!("/api/v1/transactions/{}/rollback", sent.body["id"].as_str().expect("id"));
        app.money(&path, &sefa, None, &Value::Null).await;

        let all = app.get("/api/v1/events?limit=100", Some(&admin.token)).await;
        let money: Vec<&Value> = all.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["aggregate_type"] == "transaction")
            .collect();
        let types: Vec<&str> = money.iter().filter_map(|e| e["event_type"].as_str()).collect();
        assert_eq!(types, ["MoneyCredited", "MoneyTransferred", "TransactionRolledBack"]);

        let start = money[0]["sequence"].as_i64().expect("sequence") - 1;
        let page = app.get(&format!("/api/v1/events?after={start}&limit=2"), Some(&admin.token)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let first: Vec<&str> =
            page.body["events"].as_array().expect("events").iter().filter_map(|e| e["event_type"].as_str()).collect();
        assert_eq!(first, ["MoneyCredited", "MoneyTransferred"]);
        let next = page.body["next_after"].as_i64().expect("next_after");
        let rest = app.get(&format!("/api/v1/events?after={next}"), Some(&admin.token)).await;
        let events = rest.body["events"].as_array().expect("events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["event_type"], "TransactionRolledBack");
        assert_eq!(events[0]["aggregate_id"], sent.body["id"], "a rollback is the original's second event");
        assert_eq!(events[0]["version"], 2);
        assert!(events[0]["sequence"].as_i64().expect("sequence") > next);
        let empty = app.get(&format!("/api/v1/events?after={}", rest.body["next_after"]), Some(&admin.token)).await;
        assert_eq!(empty.body["events"], json!([]));

        app.get("/api/v1/events", Some(&sefa.token)).await.assert_error(403, "insufficient_permissions");
        app.get("/api/v1/events?after=-1", Some(&admin.token)).await.assert_error(400, "invalid_parameter");
        app.stop().await;
    }
}

#[tokio::test]
async fn the_audit_trail_records_movements_and_refusals_with_their_context() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "5", "USD").await;
        let refused =
            app.money("/api/v1/transactions/debit", &sefa, None, &json!({"amount": "9", "currency": "USD"})).await;
        refused.assert_error(400, "insufficient_funds");

        let mine = app.get(&format!("/api/v1/audit-logs?actor_id={}", sefa.id), Some(&admin.token)).await;
        assert_eq!(mine.status, StatusCode::OK, "{}", mine.text);
        let entries = mine.body["audit_logs"].as_array().expect("entries");
        let seen: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e["action"].as_str().expect("action"), e["outcome"].as_str().expect("outcome")))
            .collect();
        assert_eq!(
            seen,
            [("transaction.debit", "insufficient_funds"), ("transaction.credit", "success")],
            "newest first"
        );
        assert_eq!(entries[0]["request_id"], refused.body["request_id"]);
        let trace_id = refused.headers["x-trace-id"].to_str().expect("ascii");
        assert_eq!(entries[0]["trace_id"], trace_id, "the entry leads to the request's trace");
        assert_eq!(entries[0]["ip"], "127.0.0.1");
        assert!(!mine.text.contains("password"), "no secrets in the trail");

        let debits = app.get("/api/v1/audit-logs?action=transaction.debit", Some(&admin.token)).await;
        assert_eq!(debits.body["audit_logs"].as_array().map(Vec::len), Some(1));
        let first_page = app.get(&format!("/api/v1/audit-logs?actor_id={}&limit=1", sefa.id), Some(&admin.token)).await;
        let cursor = first_page.body["next_cursor"].as_str().expect("cursor").to_owned();
        let second = app
            .get(&format!("/api/v1/audit-logs?actor_id={}&limit=1&cursor={cursor}", sefa.id), Some(&admin.token))
            .await;
        assert_eq!(second.body["audit_logs"][0]["action"], "transaction.credit");

        app.get("/api/v1/audit-logs", Some(&sefa.token)).await.assert_error(403, "insufficient_permissions");
        app.get("/api/v1/audit-logs?cursor=x", Some(&admin.token)).await.assert_error(400, "invalid_parameter");
        app.get("/api/v1/audit-logs?since=then", Some(&admin.token)).await.assert_error(400, "invalid_timestamp");
        app.stop().await;
    }
}

#[tokio::test]
async fn user_changes_and_failed_logins_are_in_the_trail_and_the_log() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let wrong = app
            .post("/api/v1/auth/login", None, &json!({"email": "sefa@example.com", "password": "wrong-guess"}))
            .await;
        wrong.assert_error(401, "invalid_credentials");
        app.post("/api/v1/auth/login", None, &json!({"email": "ghost@example.com", "password": "whatever1"})).await;
        app.put(&format!("/api/v1/users/{}", sefa.id), Some(&admin.token), &json!({"username": "sefa_2"})).await;
        app.delete(&format!("/api/v1/users/{}", sefa.id), Some(&admin.token)).await;

        let trail =
            app.get(&format!("/api/v1/audit-logs?entity_type=user&entity_id={}", sefa.id), Some(&admin.token)).await;
        let entries = trail.body["audit_logs"].as_array().expect("entries");
        let actions: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e["action"].as_str().expect("action"), e["outcome"].as_str().expect("outcome")))
            .collect();
        assert_eq!(
            actions,
            [
                ("user.deactivate", "success"),
                ("user.update", "success"),
                ("auth.login", "invalid_credentials"),
                ("user.register", "success")
            ]
        );
        assert_eq!(entries[0]["actor_id"], admin.id.as_str());
        assert_eq!(entries[1]["details"]["before"]["username"], "sefa");
        assert_eq!(entries[1]["details"]["after"]["username"], "sefa_2");
        assert_eq!(entries[2]["request_id"], wrong.body["request_id"]);
        let unknown = app.get("/api/v1/audit-logs?action=auth.login", Some(&admin.token)).await;
        assert_eq!(
            unknown.body["audit_logs"].as_array().map(Vec::len),
            Some(2),
            "unknown emails are refused on the record too"
        );
        let everything = app.get("/api/v1/audit-logs?limit=100", Some(&admin.token)).await;
        for secret in ["wrong-guess", "whatever1", "argon2", crate::helpers::PASSWORD] {
            assert!(!everything.text.contains(secret), "{secret} leaked into the audit trail");
        }

        let events = app.get("/api/v1/events?limit=100", Some(&admin.token)).await;
        let mine: Vec<(&str, i64)> = events.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["aggregate_id"] == sefa.id.as_str())
            .map(|e| (e["event_type"].as_str().expect("type"), e["version"].as_i64().expect("version")))
            .collect();
        assert_eq!(mine, [("UserRegistered", 1), ("UserUpdated", 2), ("UserDeactivated", 3)]);
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

/// The `permission.denied` entries of `user`, newest first, as an admin reads them.
async fn permission_refusals(app: &TestApp, admin: &TestUser, user: &TestUser) -> Vec<Value> {
    let path = format!("/api/v1/audit-logs?actor_id={}&action=permission.denied", user.id);
    let trail = app.get(&path, Some(&admin.token)).await;
    assert_eq!(trail.status, StatusCode::OK, "{}", trail.text);
    trail.body["audit_logs"].as_array().expect("entries").clone()
}

#[tokio::test]
async fn permission_refusals_on_money_routes_are_audited_with_their_context() {
    for backend in backends() {
        // The test client is a trusted proxy here, so the client IP of the trail follows X-Forwarded-For.
        let trust_local =
            |config: &mut banksim_server::Config| config.trusted_proxies = vec!["127.0.0.1/32".parse().expect("range")];
        let app = TestApp::spawn_with(backend, trust_local, axum::Router::new()).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        let theirs = app.credit(&kerem, "7", "USD").await;
        let theirs_id = theirs.id.to_string();
        let theirs_id = theirs_id.as_str();

        let bearer = format!("Bearer {}", sefa.token);
        let headers = [
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
            ("user-agent", "audit-probe/1.0"),
            ("x-request-id", "refused-fx-rate-1"),
            ("x-forwarded-for", "203.0.113.7"),
        ];
        let fx =
            app.raw(Method::PUT, "/api/v1/fx-rates/USD/EUR", &headers, br#"{"rate": "body-marker"}"#.to_vec()).await;
        fx.assert_error(403, "insufficient_permissions");
        let peek = app.get(&format!("/api/v1/transactions/{theirs_id}"), Some(&sefa.token)).await;
        peek.assert_error(403, "insufficient_permissions");
        let verify = app.get("/api/v1/admin/ledger/verify", Some(&sefa.token)).await;
        verify.assert_error(403, "insufficient_permissions");
        // Not a money route: refusals there are not recorded (see `http::refusals`).
        app.get("/api/v1/users", Some(&sefa.token)).await.assert_error(403, "insufficient_permissions");

        let entries = permission_refusals(&app, &admin, &sefa).await;
        let seen: Vec<(&str, Option<&str>, &str)> = entries
            .iter()
            .map(|e| {
                let entity = (e["entity_type"].as_str().expect("entity_type"), e["entity_id"].as_str());
                (entity.0, entity.1, e["outcome"].as_str().expect("outcome"))
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("ledger", None, "insufficient_permissions"),
                ("transaction", Some(theirs_id), "insufficient_permissions"),
                ("fx_rate", Some("USD/EUR"), "insufficient_permissions"),
            ],
            "newest first, one entry per refusal on a money route and none for /users"
        );
        let request_id = |response: &crate::helpers::TestResponse| {
            response.headers.get("x-request-id").and_then(|v| v.to_str().ok()).expect("x-request-id").to_owned()
        };
        for (entry, response, method, route) in [
            (&entries[0], &verify, "GET", "/api/v1/admin/ledger/verify"),
            (&entries[1], &peek, "GET", "/api/v1/transactions/{id}"),
            (&entries[2], &fx, "PUT", "/api/v1/fx-rates/{base}/{quote}"),
        ] {
            assert_eq!(entry["actor_id"], sefa.id.as_str());
            assert_eq!(entry["action"], "permission.denied");
            assert_eq!(entry["details"], json!({"method": method, "route": route}));
            assert_eq!(entry["request_id"], request_id(response));
        }
        assert_eq!(entries[2]["request_id"], "refused-fx-rate-1", "the client's own request id is kept");
        assert_eq!(entries[2]["ip"], "203.0.113.7", "the client behind the trusted proxy");
        assert_eq!(entries[1]["ip"], "127.0.0.1");

        assert_eq!(entries[2]["user_agent"], "audit-probe/1.0");

        let everything = app.get("/api/v1/audit-logs?limit=100", Some(&admin.token)).await;
        assert!(!everything.text.contains(&sefa.token), "no tokens in the trail");
        assert!(!everything.text.contains("body-marker"), "no request bodies in the trail");
        let sound = app.get("/api/v1/admin/ledger/verify", Some(&admin.token)).await;
        assert_eq!(sound.status, StatusCode::OK, "{}", sound.text);
        assert_eq!(sound.body["ok"], true, "the audit chain still links: {}", sound.text);
        assert!(permission_refusals(&app, &admin, &admin).await.is_empty(), "an allowed call is no refusal");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_refused_rollback_is_audited_once_by_the_ledger() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        let credit = app.credit(&sefa, "5", "USD").await;
        let path = format!("/api/v1/transactions/{}/rollback", credit.id);
        let refused = app.money(&path, &kerem, Some("undo-1"), &Value::Null).await;
        refused.assert_error(403, "insufficient_permissions");
        let replayed = app.money(&path, &kerem, Some("undo-1"), &Value::Null).await;
        assert_eq!(replayed.status, StatusCode::FORBIDDEN, "{}", replayed.text);
        assert_eq!(replayed.headers.get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));

        let trail = app.get(&format!("/api/v1/audit-logs?actor_id={}", kerem.id), Some(&admin.token)).await;
        let entries = trail.body["audit_logs"].as_array().expect("entries");
        let seen: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e["action"].as_str().expect("action"), e["outcome"].as_str().expect("outcome")))
            .collect();
        assert_eq!(seen, [("transaction.rollback", "insufficient_permissions")], "one entry, the ledger's");
        assert_eq!(entries[0]["entity_id"], credit.id.to_string());
        assert_eq!(entries[0]["request_id"], refused.body["request_id"]);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_permission_refusal_is_still_a_403_when_its_audit_entry_cannot_be_written() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        match backend {
            Backend::Sqlite => {
                app.tamper("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'read-only'); END")
                    .await;
            }
            Backend::Postgres => {
                app.tamper(
                    "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql \
                     AS $$ BEGIN RAISE EXCEPTION 'read-only'; END $$",
                )
                .await;
                app.tamper("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()")
                    .await;
            }
        }
        let refused = app.put("/api/v1/fx-rates/USD/EUR", Some(&sefa.token), &json!({"rate": "0.5"})).await;
        refused.assert_error(403, "insufficient_permissions");
        assert!(permission_refusals(&app, &admin, &sefa).await.is_empty());
        app.stop().await;
    }
}
