//! `GET /metrics`: the Prometheus series that dashboards read, moving by the right amounts, with route templates
//! as labels; who may read them (`METRICS_TOKEN`, `METRICS_ADDR`).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, backends};

/// One scrape, as text.
pub(crate) async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let content_type = response.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(response.text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF");
    response.text
}

/// The value of the sample `name{labels}` (labels in any order; exactly these labels), if present.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            return None;
        }
        let mut found: Vec<(String, String)> = series_labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned())))
            .collect();
        let mut wanted: Vec<(String, String)> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        found.sort();
        wanted.sort();
        (found == wanted).then(|| value.parse().ok()).flatten()
    })
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}

#[tokio::test]
async fn counters_and_histograms_move_by_the_right_amounts_with_route_templates_as_labels() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        let credited = app.credit(&sefa, "10.00", "USD").await;
        let before = scrape(&app).await;

        let transfer = json!({"to_user_id": kerem.id, "amount": "4.00", "currency": "USD"});
        let sent = app.money("/api/v1/transactions/transfer", &sefa, None, &transfer).await;
        assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.text);
        let debit = json!({"amount": "500.00", "currency": "USD"});
        app.money("/api/v1/transactions/debit", &sefa, None, &debit).await.assert_error(400, "insufficient_funds");
        app.get("/api/v1/no/such/route", Some(&sefa.token)).await.assert_error(404, "not_found");
        let id = credited.id;
        assert_eq!(app.get(&format!("/api/v1/transactions/{id}"), Some(&sefa.token)).await.status, StatusCode::OK);
        app.login(&sefa.email).await;
        let after = scrape(&app).await;

        let moved = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
        let template = [("method", "GET"), ("endpoint", "/api/v1/transactions/{id}"), ("status_code", "200")];
        assert_eq!(moved("banking_http_requests_total", &template), 1.0, "{after}");
        assert_eq!(
            moved(
                "banking_http_request_duration_seconds_count",
                &[("method", "GET"), ("endpoint", "/api/v1/transactions/{id}")]
            ),
            1.0
        );
        let unmatched = [("method", "GET"), ("endpoint", "unmatched"), ("status_code", "404")];
        assert_eq!(moved("banking_http_requests_total", &unmatched), 1.0);
        let refused = [("method", "POST"), ("endpoint", "/api/v1/transactions/debit"), ("status_code", "400")];
        assert_eq!(moved("banking_http_requests_total", &refused), 1.0);
        assert!(!after.contains(&id.to_string()), "a raw path never becomes a label");
        assert!(!after.contains("/no/such/route"));

        assert_eq!(moved("banksim_ledger_movements_total", &[("type", "transfer"), ("outcome", "posted")]), 1.0);
        assert_eq!(moved("banksim_ledger_movements_total", &[("type", "debit"), ("outcome", "refused")]), 1.0);
        assert_eq!(moved("banksim_ledger_refusals_total", &[("error_code", "insufficient_funds")]), 1.0);
        assert_eq!(moved("banking_transactions_processed_total", &[]), 2.0);
        assert_eq!(moved("banksim_writer_batch_size_count", &[]), 2.0);
        assert_eq!(moved("banksim_writer_batch_size_sum", &[]), 2.0);
        assert_eq!(moved("banksim_writer_commit_duration_seconds_count", &[]), 2.0);
        assert_eq!(moved("banksim_auth_logins_total", &[("outcome", "success")]), 1.0);
        assert_eq!(moved("banksim_auth_logins_total", &[("outcome", "failure")]), 0.0);

        assert!(value(&after, "banking_uptime_seconds", &[]) > 0.0, "uptime moves");
        assert!(value(&after, "banking_goroutines_active", &[]) >= 1.0);
        assert_eq!(value(&after, "banking_transaction_queue_depth", &[]), 0.0);
        assert_eq!(value(&after, "banksim_writer_queue_capacity", &[]), app.state.config.write_queue_capacity as f64);
        assert!(value(&after, "banksim_db_pool_max_connections", &[]) >= 1.0);
        assert!(sample(&after, "banksim_db_pool_connections", &[("state", "in_use")]).is_some());
        assert!(value(&after, "process_resident_memory_bytes", &[]) > 1_000_000.0, "{after}");
        assert!(value(&after, "process_open_fds", &[]) > 0.0);
        assert!(sample(&after, "process_cpu_seconds_total", &[]).is_some());
        assert!(sample(&after, "banksim_scheduler_executions_total", &[("outcome", "success")]).is_some());
        assert!(sample(&after, "banksim_scheduler_due_backlog", &[]).is_some());
        assert!(
            sample(&after, "banksim_rate_limit_requests_total", &[("group", "auth"), ("decision", "limited")])
                .is_some()
        );
        assert!(sample(&after, "banksim_otel_spans_dropped_total", &[]).is_some());
        for projection in ["daily_statements", "system_totals"] {
            assert!(
                sample(&after, "banksim_projection_lag_events", &[("projection", projection)]).is_some(),
                "{projection}"
            );
        }
        app.assert_ledger_sound().await;
        assert_eq!(value(&scrape(&app).await, "banksim_ledger_balanced", &[("currency", "USD")]), 1.0);
        app.stop().await;
    }
}

#[tokio::test]
async fn with_a_metrics_token_every_metrics_route_wants_it() {
    for backend in backends() {
        let token = "metrics-token-0123456789";
        let app = TestApp::spawn_with(
            backend,
            |config| config.metrics_token = Some(token.to_owned().into()),
            axum::Router::new(),
        )
        .await;
        for path in ["/metrics", "/metrics/basic", "/api/v1/metrics/basic"] {
            app.get(path, None).await.assert_error(401, "unauthorized");
            let wrong =
                app.raw(Method::GET, path, &[("authorization", "Bearer not-the-token-at-all")], Vec::new()).await;
            wrong.assert_error(401, "unauthorized");
            let right = app.raw(Method::GET, path, &[("authorization", &format!("Bearer {token}"))], Vec::new()).await;
            assert_eq!(right.status, StatusCode::OK, "{path}: {}", right.text);
        }
        assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK, "other routes stay open");
        app.stop().await;
    }
}

#[tokio::test]
async fn with_a_metrics_address_the_metrics_leave_the_public_listener() {
    for backend in backends() {
        let private: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let app = TestApp::spawn_with(backend, |config| config.metrics_addr = Some(private), axum::Router::new()).await;
        for path in ["/metrics", "/metrics/basic", "/api/v1/metrics/basic"] {
            app.get(path, None).await.assert_error(404, "not_found");
        }
        let listener = tokio::net::TcpListener::bind(private).await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let served =
            tokio::spawn(banksim_server::app::serve_metrics(app.state.clone(), listener, std::future::pending()));
        let client = reqwest::Client::new();
        for path in ["/metrics", "/metrics/basic", "/api/v1/metrics/basic"] {
            let answer = client.get(format!("http://{address}{path}")).send().await.expect("scrape");
            assert_eq!(answer.status(), StatusCode::OK, "{path}");
        }
        let other = client.get(format!("http://{address}/api/v1/me")).send().await.expect("request");
        assert_eq!(other.status(), StatusCode::NOT_FOUND, "only the metrics live there");
        served.abort();
        app.stop().await;
    }
}

#[tokio::test]
async fn the_json_summary_has_the_old_services_fields() {
    for backend in backends() {
        let app =
            TestApp::spawn_with(backend, |config| config.auth_rate_limit_per_minute = 2, axum::Router::new()).await;
        for _ in 0..3 {
            app.post("/api/v1/auth/login", None, &json!({"email": "nobody@example.com", "password": "wrong-password"}))
                .await;
        }
        let basic = app.get("/metrics/basic", None).await;
        assert_eq!(basic.status, StatusCode::OK, "{}", basic.text);
        let body = &basic.body;
        assert!(body["active_tasks"].as_u64().is_some_and(|tasks| tasks > 0), "{body}");
        assert_eq!(
            (body["rate_limit"]["allowed"].as_u64(), body["rate_limit"]["rejected"].as_u64()),
            (Some(2), Some(1))
        );
        let pool = &body["database"];
        let (open, idle, in_use) = (pool["open"].as_u64(), pool["idle"].as_u64(), pool["in_use"].as_u64());
        assert!(open.is_some() && idle.is_some() && in_use.is_some(), "{pool}");
        assert_eq!(open, idle.zip(in_use).map(|(idle, in_use)| idle + in_use), "{pool}");
        app.stop().await;
    }
}
