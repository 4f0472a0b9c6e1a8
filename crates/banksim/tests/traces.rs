//! Traces leave the real `banksim` binary over OTLP (`http/protobuf`, the protocol's default), to a receiver run by
//! the test that decodes what a collector would: the caller's trace is joined, the request span names its route
//! template, the writer's batch is a child of the request, database calls and projector rounds are spans, and the
//! trace id is the one of `X-Trace-ID` and of the audit entry.

mod common;

use common::{Server, banksim};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use banksim_store::testing::{TestDatabase, backends};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message;
use serde_json::{Value, json};

/// A span as the receiver got it, ids in hex.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP receiver on a free port: `POST /v1/traces` with an `ExportTraceServiceRequest`.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return (StatusCode::BAD_REQUEST, Vec::new());
                };
                kept.lock().expect("spans").extend(received(request));
                (StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec())
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, spans }
    }

    /// Waits (at most 30 s) until a span matching `wanted` has arrived, and returns it.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&ReceivedSpan) -> bool) -> ReceivedSpan {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(span) = self.spans.lock().expect("spans").iter().find(|span| wanted(span)) {
                return span.clone();
            }
            assert!(Instant::now() < deadline, "no {what} arrived; got {:#?}", self.spans.lock().expect("spans"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn received(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| attributes(r.attributes)).unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    attributes: attributes(span.attributes),
                });
            }
        }
    }
    spans
}

fn attributes(list: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>) -> HashMap<String, String> {
    list.into_iter().map(|kv| (kv.key, kv.value.map(text).unwrap_or_default())).collect()
}

fn text(value: AnyValue) -> String {
    match value.value {
        Some(any_value::Value::StringValue(s)) => s,
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new W3C trace id or span id of `bytes` random bytes, in hex.
fn random_id(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// The banksim API at `address`, as one client.
struct Api {
    client: reqwest::Client,
    address: String,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        traceparent: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        request.send().await.expect("request sent")
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Value {
        let response = self.send(reqwest::Method::POST, path, token, Some(body), None).await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// Registers and logs in a user; returns (id, access token).
    async fn user(&self, name: &str) -> (String, String) {
        let email = format!("{name}@example.com");
        let registered = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({"username": name, "email": email, "password": "a-long-password"}),
            )
            .await;
        let login = self.post("/api/v1/auth/login", None, json!({"email": email, "password": "a-long-password"})).await;
        let token = login["access_token"].as_str().expect("token").to_owned();
        (registered["id"].as_str().expect("id").to_owned(), token)
    }
}

#[tokio::test]
async fn traces_leave_over_otlp_joined_to_the_callers_trace() {
    for backend in backends() {
        let receiver = Receiver::start().await;
        let db = TestDatabase::create(backend).await;
        let data = tempfile::tempdir().expect("tempdir");
        let mut command = banksim(data.path());
        command
            .env("DATABASE_URL", &db.url)
            .env("BANKSIM_ADMIN_EMAIL", "root@example.com")
            .env("BANKSIM_ADMIN_PASSWORD", "root-password")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("SCHEDULER_POLL_INTERVAL_MS", "100");
        let server = Server::start(command);
        let api = Api { client: reqwest::Client::new(), address: server.address.clone() };

        let (_, alice) = api.user("alice").await;
        let (bob_id, _) = api.user("bob").await;
        api.post("/api/v1/transactions/credit", Some(&alice), json!({"amount": "100.00", "currency": "USD"})).await;
        let (trace_id, caller_span_id) = (random_id(16), random_id(8));
        let traceparent = format!("00-{trace_id}-{caller_span_id}-01");
        let transfer = json!({"to_user_id": bob_id, "amount": "25.00", "currency": "USD"});
        let response = api
            .send(
                reqwest::Method::POST,
                "/api/v1/transactions/transfer",
                Some(&alice),
                Some(transfer),
                Some(&traceparent),
            )
            .await;
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["x-trace-id"], trace_id.as_str(), "X-Trace-ID is the caller's trace");

        let request = receiver
            .wait_for("transfer request span", |s| s.trace_id == trace_id && s.attributes.contains_key("http.route"))
            .await;
        assert_eq!(request.service, "banksim", "the default service name");
        assert_eq!(request.name, "POST /api/v1/transactions/transfer");
        assert_eq!(request.attributes["http.route"], "/api/v1/transactions/transfer", "the template, not the path");
        assert_eq!(request.attributes["http.status"], "201");
        assert!(request.attributes.contains_key("user.id"), "{request:?}");
        assert_eq!(request.parent_span_id, caller_span_id, "a child of the caller's span");

        let batch =
            receiver.wait_for("batch commit span", |s| s.trace_id == trace_id && s.name == "ledger.batch.commit").await;
        assert_eq!(batch.parent_span_id, request.span_id, "the batch the request waited on is its child");
        assert!(batch.attributes["batch.size"].parse::<u64>().is_ok_and(|size| size >= 1), "{batch:?}");
        assert!(batch.attributes.contains_key("batch.commit_ms"), "{batch:?}");

        // The audit entry of the transfer carries the trace id.
        let admin = api
            .post("/api/v1/auth/login", None, json!({"email": "root@example.com", "password": "root-password"}))
            .await;
        let admin = admin["access_token"].as_str().expect("token").to_owned();
        let (audit_trace_id, audit_span_id) = (random_id(16), random_id(8));
        let audit = api
            .send(
                reqwest::Method::GET,
                "/api/v1/audit-logs?action=transaction.transfer",
                Some(&admin),
                None,
                Some(&format!("00-{audit_trace_id}-{audit_span_id}-01")),
            )
            .await;
        assert_eq!(audit.status(), 200);
        let audit: Value = audit.json().await.expect("json");
        assert_eq!(audit["audit_logs"][0]["trace_id"], trace_id.as_str(), "{audit}");

        // Database calls are spans of the request that makes them.
        let listing = receiver
            .wait_for("audit listing request span", |s| {
                s.trace_id == audit_trace_id && s.parent_span_id == audit_span_id
            })
            .await;
        let query = receiver
            .wait_for("store.list_audit span", |s| s.name == "store.list_audit" && s.trace_id == audit_trace_id)
            .await;
        assert_eq!(query.parent_span_id, listing.span_id);
        assert_eq!(
            query.attributes["db.system.name"],
            if backend.name() == "postgres" { "postgresql" } else { "sqlite" }
        );

        // Projector rounds and scheduler runs are traces of their own.
        receiver.wait_for("projector round span", |s| s.name == "projector.round").await;
        let due = (chrono::Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
        let schedule = json!({"transaction_type": "debit", "amount": "1.00", "currency": "USD", "schedule_type": "once",
                              "execute_at": due});
        api.post("/api/v1/scheduled-transactions", Some(&alice), schedule).await;
        let poll = receiver.wait_for("scheduler poll span", |s| s.name == "scheduler.poll").await;
        receiver
            .wait_for("scheduled batch span", |s| s.name == "ledger.batch.commit" && s.parent_span_id == poll.span_id)
            .await;

        drop(server);
        db.remove().await;
    }
}

#[tokio::test]
async fn a_collector_that_is_down_fails_no_request() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    for protocol in ["http/protobuf", "grpc"] {
        let data = tempfile::tempdir().expect("tempdir");
        let mut command = banksim(data.path());
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}"))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("OTEL_BSP_SCHEDULE_DELAY", "10");
        let mut server = Server::start(command);
        let api = Api { client: reqwest::Client::new(), address: server.address.clone() };
        for name in ["carol", "dave"] {
            let (_, token) = api.user(name).await;
            api.post("/api/v1/transactions/credit", Some(&token), json!({"amount": "5.00", "currency": "USD"})).await;
        }
        assert!(server.terminate().success(), "{protocol}: stops cleanly with spans it could not send");
    }
}

#[test]
fn an_unknown_otlp_protocol_stops_the_start_naming_its_variable() {
    let data = tempfile::tempdir().expect("tempdir");
    let output = banksim(data.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .arg("migrate")
        .output()
        .expect("banksim runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(common::stderr(&output).contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{}", common::stderr(&output));
}
