//! The metrics routes — `/metrics` (Prometheus), `/metrics/basic` and `/api/v1/metrics/basic` (JSON), and the
//! circuit-breaker report — who may read them, and the counting of every request.
//!
//! Open by default, as suits development. With `METRICS_TOKEN` they require `Authorization: Bearer <token>`; with
//! `METRICS_ADDR` they are served on that listener only (the public one answers 404 for them).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{CONTENT_TYPE, UNMATCHED_ENDPOINT};

/// Every metrics route.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(prometheus_metrics))
        .merge(crate::http::service::basic_metrics_routes())
        .merge(crate::http::breakers::report_routes())
}

/// Every metric of this instance in the Prometheus (OpenMetrics) text format, for Prometheus to scrape (any method).
#[utoipa::path(method(get, post, put, delete, patch, head), path = "/metrics", tag = "service",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "The metrics, in the OpenMetrics text format", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "`unauthorized`: `METRICS_TOKEN` is set and the request does not carry it", body = crate::error::ErrorBody),
    ))]
pub async fn prometheus_metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(&state).await;
    ([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], text).into_response()
}

/// Lets a metrics request through when no `METRICS_TOKEN` is set or when it carries that token.
pub async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.config.metrics_token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .unwrap_or_default();
        // Compared as digests, so the time taken says nothing about how much of the token was right.
        if Sha256::digest(presented.trim().as_bytes()) != Sha256::digest(expected.expose_secret().as_bytes()) {
            return ApiError::new(ErrorCode::Unauthorized)
                .with_message("the metrics require Authorization: Bearer <METRICS_TOKEN>")
                .into_response();
        }
    }
    next.run(request).await
}

/// Counts every answered request by method, route template (never the raw path: one series per route, and one for
/// every unmatched path together) and status, and times it.
pub async fn track_requests(
    state: &AppState,
    request: Request,
    next: impl AsyncFnOnce(Request) -> Response,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let endpoint = request.extensions().get::<MatchedPath>().map_or(UNMATCHED_ENDPOINT, MatchedPath::as_str).to_owned();
    let response = next(request).await;
    state.metrics.record_request(&method, &endpoint, response.status().as_u16(), started.elapsed());
    response
}
