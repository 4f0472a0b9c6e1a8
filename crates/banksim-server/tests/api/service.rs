//! Service routes, request ids and the OpenAPI document.

use reqwest::{Method, StatusCode};

use crate::helpers::{TestApp, backends};

#[tokio::test]
async fn healthz_answers_ok_to_any_method() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            let response = app.request(method.clone(), "/healthz", None, None).await;
            assert_eq!(response.status, StatusCode::OK, "{method}");
            assert_eq!(response.body, serde_json::json!({"status": "ok"}));
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn readyz_checks_the_database() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let ready = app.get("/readyz", None).await;
        assert_eq!(ready.status, StatusCode::OK);
        assert_eq!(ready.body, serde_json::json!({"status": "ok", "checks": {"database": "ok"}}));

        app.state.store.close().await;
        let unready = app.get("/readyz", None).await;
        assert_eq!(unready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", unready.text);
        assert_eq!(unready.body["status"], "unavailable");
        assert_eq!(unready.body["checks"]["database"], "unavailable");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_dead_database_is_a_503_with_retry_after_not_a_500() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let user = app.user("sefa").await;
        app.state.store.close().await;
        let response =
            app.post("/api/v1/auth/login", None, &serde_json::json!({"email": user.email, "password": "x"})).await;
        response.assert_error(503, "service_unavailable");
        assert!(response.headers.contains_key("retry-after"));
        app.stop().await;
    }
}

#[tokio::test]
async fn ping_answers_pong() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let response = app.get("/api/v1/ping", None).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.body, serde_json::json!({"message": "pong"}));
        app.stop().await;
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_trace_id() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let plain = app.get("/api/v1/ping", None).await;
        let generated = plain.headers["x-request-id"].to_str().expect("ascii");
        assert_eq!(generated.len(), 36, "a UUID: {generated}");
        assert_eq!(plain.headers["x-trace-id"].to_str().expect("ascii").len(), 32);

        let honoured = app.raw(Method::GET, "/api/v1/ping", &[("x-request-id", "client-abc.123")], vec![]).await;
        assert_eq!(honoured.headers["x-request-id"], "client-abc.123");

        let insane = "bad id with spaces";
        let replaced = app.raw(Method::GET, "/nowhere", &[("x-request-id", insane)], vec![]).await;
        assert_ne!(replaced.headers["x-request-id"], insane);
        replaced.assert_error(404, "not_found");

        let too_long = "a".repeat(200);
        let replaced = app.raw(Method::GET, "/api/v1/ping", &[("x-request-id", &too_long)], vec![]).await;
        assert_ne!(replaced.headers["x-request-id"].to_str().expect("ascii"), too_long);

        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let traced = app.raw(Method::GET, "/api/v1/ping", &[("traceparent", traceparent)], vec![]).await;
        assert_eq!(traced.headers["x-trace-id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        app.stop().await;
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_the_docs_page_serves() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let spec = app.get("/openapi.json", None).await;
        assert_eq!(spec.status, StatusCode::OK);
        assert!(spec.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
        let expected = [
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/api/v1/ping", "get"),
            ("/api/v1/auth/register", "post"),
            ("/api/v1/auth/login", "post"),
            ("/api/v1/auth/refresh", "post"),
            ("/api/v1/auth/logout", "post"),
            ("/api/v1/me", "get"),
            ("/api/v1/users", "get"),
            ("/api/v1/users/{id}", "get"),
            ("/api/v1/users/{id}", "put"),
            ("/api/v1/users/{id}", "delete"),
            ("/api/v1/transactions/credit", "post"),
            ("/api/v1/transactions/debit", "post"),
            ("/api/v1/transactions/transfer", "post"),
            ("/api/v1/transactions/exchange", "post"),
            ("/api/v1/transactions/{id}/rollback", "post"),
            ("/api/v1/transactions/{id}", "get"),
            ("/api/v1/transactions/history", "get"),
            ("/api/v1/balances", "get"),
            ("/api/v1/balances/current", "get"),
            ("/api/v1/balances/historical", "get"),
            ("/api/v1/balances/at-time", "get"),
            ("/api/v1/fx-rates", "get"),
            ("/api/v1/fx-rates/{base}/{quote}", "put"),
            ("/metrics/basic", "get"),
            ("/metrics/basic", "post"),
            ("/api/v1/metrics/basic", "get"),
            ("/api/v1/admin/ledger/verify", "get"),
            ("/api/v1/audit-logs", "get"),
            ("/api/v1/events", "get"),
            ("/api/v1/scheduled-transactions", "post"),
            ("/api/v1/scheduled-transactions", "get"),
            ("/api/v1/scheduled-transactions/{id}", "get"),
            ("/api/v1/scheduled-transactions/{id}", "delete"),
            ("/api/v1/scheduled-transactions/{id}/pause", "post"),
            ("/api/v1/scheduled-transactions/{id}/resume", "post"),
            ("/api/v1/scheduled-transactions/{id}/executions", "get"),
        ];
        for (path, method) in expected {
            let operation = &spec.body["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is missing from the spec");
            assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
        }
        assert!(spec.body["components"]["schemas"]["ErrorBody"].is_object());
        assert!(spec.body["components"]["securitySchemes"]["bearer"].is_object());

        let page = app.client_get_text("/docs/").await;
        assert!(page.to_lowercase().contains("swagger"), "{page}");
        app.stop().await;
    }
}

impl TestApp {
    async fn client_get_text(&self, path: &str) -> String {
        reqwest::get(format!("{}{path}", self.address)).await.expect("get").text().await.expect("text")
    }
}

#[tokio::test]
async fn basic_metrics_show_the_write_path() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let user = app.user("sefa").await;
        app.credit(&user, "1", "USD").await;
        for path in ["/metrics/basic", "/api/v1/metrics/basic"] {
            for method in [Method::GET, Method::POST] {
                let metrics = app.request(method.clone(), path, None, None).await;
                assert_eq!(metrics.status, StatusCode::OK, "{method} {path}");
                assert_eq!(metrics.body["transactions_processed"], 1);
                assert_eq!(metrics.body["write_batches"]["committed"], 1);
                assert_eq!(metrics.body["write_batches"]["last_size"], 1);
                assert_eq!(metrics.body["queue_depth"], 0);
                assert!(metrics.body["uptime_seconds"].is_u64());
                assert_eq!(metrics.body["database"]["backend"], backend.name());
            }
        }
        app.stop().await;
    }
}
