//! What the typed client costs on `banksim simulate`'s hot path, against the hand-rolled requests it replaced:
//! the same money request (prebuilt URL, bearer and key headers, a body serialized once, the answer read to the
//! end and only its `id` parsed) sent by raw `reqwest` and by `Call::attempt`, to a local stub that answers a
//! fixed 201 at once, so that nearly all the time is the client's. Rounds alternate to spread the machine's noise.
//!
//! Ignored by default (it is a measurement, not a check); run it in release:
//!
//! ```sh
//! cargo test --release -p banksim-client --test hot_path -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use banksim_client::{AmountRequest, Client, IdempotencyKey, RetryPolicy};
use banksim_core::currency::Currency;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

const ANSWER: &str = r#"{"id":"6f1c1c1e-8d3f-4a53-9d7e-3f6f5f0d0b11","type":"credit","status":"success",
"from_user_id":null,"to_user_id":"550e8400-e29b-41d4-a716-446655440001","amount":500.10,"currency":"USD",
"description":null,"reversal_of":null,"reversed_by":null,"created_at":"2026-03-01T12:00:00Z"}"#;

/// Requests per round and task.
const REQUESTS: usize = 2_000;
/// Tasks sending at once, each one request at a time (as simulate's connections do).
const TASKS: usize = 8;
/// Rounds of each.
const ROUNDS: usize = 5;

#[derive(Deserialize)]
struct Created {
    #[expect(dead_code, reason = "parsed as simulate parses it; the value is not needed here")]
    id: uuid::Uuid,
}

async fn stub() -> String {
    let router = Router::new().route(
        "/api/v1/transactions/credit",
        post(|| async { (StatusCode::CREATED, [("content-type", "application/json")], ANSWER) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("stub") });
    format!("http://{address}")
}

/// The old path: simulate's `Api::send` as it was before the typed client.
async fn raw(http: reqwest::Client, url: reqwest::Url, authorization: HeaderValue) {
    for _ in 0..REQUESTS {
        // simulate built and serialized each request's body (its amount differs from request to request).
        let body = Bytes::from(serde_json::to_vec(&AmountRequest::new("500.10", Currency::USD)).expect("json"));
        let key = IdempotencyKey::random();
        let response = http
            .post(url.clone())
            .header(AUTHORIZATION, authorization.clone())
            .header("idempotency-key", key.as_str())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await
            .expect("answer");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        assert!(status.is_success() && serde_json::from_slice::<Created>(&bytes).is_ok());
    }
}

/// The new path: what simulate's traffic phase does now.
async fn typed(client: Client) {
    let request = AmountRequest::new("500.10", Currency::USD);
    for _ in 0..REQUESTS {
        let mut call = client.credit(&request).retry(RetryPolicy::none()).parse_as::<Created>();
        let attempt = call.attempt().await.expect("answer");
        assert!(attempt.result.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it in release with --ignored --nocapture"]
async fn the_typed_client_costs_no_more_than_hand_rolled_requests() {
    let base = stub().await;
    let client = Client::builder(&base).build().expect("client").with_token("a-token-of-typical-length");
    let http = reqwest::Client::builder().tcp_nodelay(true).no_proxy().build().expect("http");
    let url: reqwest::Url = format!("{base}/api/v1/transactions/credit").parse().expect("url");
    let authorization = HeaderValue::from_static("Bearer a-token-of-typical-length");
    let (mut raw_times, mut typed_times) = (Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        let started = Instant::now();
        let tasks: Vec<_> =
            (0..TASKS).map(|_| tokio::spawn(raw(http.clone(), url.clone(), authorization.clone()))).collect();
        for task in tasks {
            task.await.expect("raw task");
        }
        let raw_time = started.elapsed();
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS).map(|_| tokio::spawn(typed(client.clone()))).collect();
        for task in tasks {
            task.await.expect("typed task");
        }
        let typed_time = started.elapsed();
        // Round 0 warms both pools up.
        if round > 0 {
            raw_times.push(raw_time);
            typed_times.push(typed_time);
        }
    }
    let per_request = |times: &[Duration]| {
        let total: Duration = times.iter().sum();
        total.as_secs_f64() * 1e6 / (times.len() * REQUESTS * TASKS) as f64
    };
    let (raw_us, typed_us) = (per_request(&raw_times), per_request(&typed_times));
    println!(
        "raw reqwest: {raw_us:.1} µs a request; typed client: {typed_us:.1} µs; typed / raw = {:.3}",
        typed_us / raw_us
    );
    println!("rounds raw {raw_times:?}\nrounds typed {typed_times:?}");
}
