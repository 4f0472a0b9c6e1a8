//! The retry and idempotency rules against a tiny local stub server that answers as told (503, lost answers,
//! 4xx), recording every request it sees.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use banksim_client::{AmountRequest, Client, Error, ErrorCode, RetryPolicy};
use banksim_core::currency::Currency;

/// What the stub answers, in order; the last one repeats.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// 503 `write_queue_full`, with `Retry-After` if given.
    Unavailable { retry_after_secs: Option<u64> },
    /// Sleeps past the client's timeout: the answer is lost after the request was sent.
    Lost,
    /// 400 `insufficient_funds`.
    Refused,
    /// 429 with `Retry-After`.
    RateLimited { retry_after_secs: u64 },
    /// 201 with a transaction (replayed if a key was seen before).
    Created,
}

#[derive(Default)]
struct Seen {
    /// The `Idempotency-Key` of every request, in order (`None` when absent).
    keys: Vec<Option<String>>,
    /// The keys of requests that were carried out (answered 201 or lost after the work), which a repeat replays.
    done: Vec<String>,
}

#[derive(Clone)]
struct Stub {
    script: Arc<Vec<Script>>,
    seen: Arc<Mutex<Seen>>,
}

const TRANSACTION: &str = r#"{"id":"6f1c1c1e-8d3f-4a53-9d7e-3f6f5f0d0b11","type":"credit","status":"success",
"from_user_id":null,"to_user_id":"550e8400-e29b-41d4-a716-446655440001","amount":500.10,"currency":"USD",
"description":null,"reversal_of":null,"reversed_by":null,"created_at":"2026-03-01T12:00:00Z"}"#;

async fn answer(State(stub): State<Stub>, headers: HeaderMap) -> Response {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (step, index, replay) = {
        let mut seen = stub.seen.lock().expect("lock");
        let index = seen.keys.len();
        let step = stub.script[index.min(stub.script.len() - 1)];
        let replay = key.as_ref().is_some_and(|key| seen.done.contains(key));
        if let (Some(key), Script::Created | Script::Lost) = (&key, step) {
            seen.done.push(key.clone());
        }
        seen.keys.push(key);
        (step, index, replay)
    };
    let error = |status: StatusCode, code: &str, retry_after: Option<u64>| {
        let body = format!(
            r#"{{"error":"stub","code":{},"error_code":"{code}","request_id":"req-{index}"}}"#,
            status.as_u16()
        );
        let mut response = (status, [("content-type", "application/json")], body).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert("retry-after", seconds.into());
        }
        response
    };
    match step {
        Script::Unavailable { retry_after_secs } => {
            error(StatusCode::SERVICE_UNAVAILABLE, "write_queue_full", retry_after_secs)
        }
        Script::Lost => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            error(StatusCode::GATEWAY_TIMEOUT, "request_timeout", None)
        }
        Script::Refused => error(StatusCode::BAD_REQUEST, "insufficient_funds", None),
        Script::RateLimited { retry_after_secs } => {
            error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some(retry_after_secs))
        }
        Script::Created => {
            let mut response =
                (StatusCode::CREATED, [("content-type", "application/json")], TRANSACTION).into_response();
            if replay {
                response.headers_mut().insert("idempotent-replayed", "true".parse().expect("header"));
            }
            response
        }
    }
}

/// Starts the stub with `script`; gives a client of it (short timeout, fast backoff) and what it saw.
async fn stub(script: Vec<Script>) -> (Client, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = Stub { script: Arc::new(script), seen: Arc::clone(&seen) };
    let router = Router::new()
        .route("/api/v1/transactions/credit", post(answer))
        .route("/api/v1/me", get(answer))
        .route("/api/v1/auth/register", post(answer))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("stub server") });
    let retry = RetryPolicy {
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(5),
        ..RetryPolicy::default()
    };
    let client = Client::builder(&format!("http://{address}"))
        .timeout(Duration::from_millis(300))
        .retry(retry)
        .build()
        .expect("client")
        .with_token("test-token");
    (client, seen)
}

fn keys(seen: &Mutex<Seen>) -> Vec<Option<String>> {
    seen.lock().expect("lock").keys.clone()
}

fn credit() -> AmountRequest {
    AmountRequest::new("500.10", Currency::USD)
}

#[tokio::test]
async fn a_503_is_retried_with_the_same_idempotency_key() {
    let (client, seen) = stub(vec![Script::Unavailable { retry_after_secs: None }, Script::Created]).await;
    let reply = client.credit(&credit()).reply().await.expect("created on the second attempt");
    assert_eq!(reply.status, 201);
    assert_eq!(reply.attempts, 2);
    assert_eq!(reply.body.amount, "500.10");
    let keys = keys(&seen);
    assert_eq!(keys.len(), 2);
    let key = keys[0].clone().expect("a money request carries a key");
    assert_eq!(uuid::Uuid::parse_str(&key).expect("a UUID").get_version_num(), 4);
    assert_eq!(keys[1].as_deref(), Some(key.as_str()), "the retry reuses the key");
    assert_eq!(reply.idempotency_key.as_ref().map(|k| k.as_str()), Some(key.as_str()));
    assert!(!reply.earlier_attempt_unknown, "a 503 write_queue_full did nothing");
    assert!(reply.took_effect_now());
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_long_one_ends_the_call() {
    let (client, seen) = stub(vec![Script::Unavailable { retry_after_secs: Some(1) }, Script::Created]).await;
    let started = std::time::Instant::now();
    client.credit(&credit()).await.expect("created after the wait");
    assert!(started.elapsed() >= Duration::from_secs(1), "waited as Retry-After asked");
    assert_eq!(keys(&seen).len(), 2);

    let (client, seen) = stub(vec![Script::Unavailable { retry_after_secs: Some(3_600) }, Script::Created]).await;
    let error = client.credit(&credit()).await.expect_err("an hour is beyond the policy");
    assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(error.error_code(), Some(&ErrorCode::WriteQueueFull));
    assert_eq!(keys(&seen).len(), 1, "gave up at once instead of waiting an hour");
}

#[tokio::test]
async fn a_lost_answer_is_retried_with_the_same_key_and_reported() {
    // The stub does the work of the lost attempt (as a server that committed and then lost the connection would),
    // so the retry gets the stored answer.
    let (client, seen) = stub(vec![Script::Lost, Script::Created]).await;
    let key = "caller-chosen-key";
    let reply = client
        .credit(&credit())
        .idempotency_key(banksim_client::IdempotencyKey::try_from(key).expect("key"))
        .reply()
        .await
        .expect("answered on the second attempt");
    assert_eq!(keys(&seen), vec![Some(key.to_owned()); 2]);
    assert!(reply.replayed);
    assert!(reply.earlier_attempt_unknown, "the timed-out attempt may have committed");
    assert!(reply.took_effect_now(), "a replay of our own lost attempt is our money moving");
}

#[tokio::test]
async fn client_errors_are_typed_and_never_retried() {
    let (client, seen) = stub(vec![Script::Refused, Script::Created]).await;
    let error = client.credit(&credit()).await.expect_err("refused");
    let Error::Api(api) = &error else { panic!("an API error: {error:?}") };
    assert_eq!(api.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.error_code, ErrorCode::InsufficientFunds);
    assert_eq!(api.request_id.as_deref(), Some("req-0"));
    assert_eq!(api.message, "stub");
    assert!(!error.outcome_unknown());
    assert_eq!(keys(&seen).len(), 1);
}

#[tokio::test]
async fn rate_limits_are_waited_out_on_reads() {
    let (client, seen) = stub(vec![Script::RateLimited { retry_after_secs: 1 }, Script::Refused]).await;
    let error = client.me().await.expect_err("the stub refuses the second time");
    assert_eq!(error.error_code(), Some(&ErrorCode::InsufficientFunds), "the 429 was retried");
    assert_eq!(keys(&seen), vec![None, None], "reads carry no key");
}

#[tokio::test]
async fn writes_that_are_not_idempotent_are_not_repeated_after_a_lost_answer() {
    let (client, seen) = stub(vec![Script::Lost, Script::Created]).await;
    let request = banksim_client::RegisterRequest::new("someone", "someone@example.com", "password123");
    let error = client.register(&request).await.expect_err("the answer was lost");
    assert!(matches!(&error, Error::Transport(transport) if transport.is_timeout()), "{error:?}");
    assert!(error.outcome_unknown());
    assert_eq!(keys(&seen).len(), 1);
}

#[tokio::test]
async fn a_single_attempt_can_be_repeated_by_the_caller_with_the_same_key() {
    let (client, seen) = stub(vec![Script::Unavailable { retry_after_secs: None }, Script::Created]).await;
    let request = credit();
    let mut call = client.credit(&request).retry(RetryPolicy::none());
    let first = call.attempt().await.expect("an answer");
    assert_eq!(first.status, 503);
    assert_eq!(first.result.expect_err("a 503").error_code(), Some(&ErrorCode::WriteQueueFull));
    let second = call.attempt().await.expect("an answer");
    assert_eq!(second.result.expect("created").id.to_string(), "6f1c1c1e-8d3f-4a53-9d7e-3f6f5f0d0b11");
    let keys = keys(&seen);
    assert_eq!(keys[0], keys[1]);
}
