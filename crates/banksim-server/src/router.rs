//! Every route of banksim, and the layers every request passes through. The one place where a route is declared.

use std::any::Any;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::AppState;
use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::http::context::{self, X_REQUEST_ID, X_TRACE_ID};
use crate::http::{
    admin, audit, auth, balances, batch, breakers, console, faults, fx, metrics, openapi, rate_limit, refusals,
    schedules, service, simulation, transactions, users,
};

/// The OpenAPI document's fixed parts; the paths come from the routes themselves.
#[derive(OpenApi)]
#[openapi(
    info(title = "banksim", description = "A banking simulation API: users, wallets, exact money movement."),
    paths(service::healthz),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Registration, login and tokens"),
        (name = "users", description = "The caller, and user administration (admin)"),
        (name = "transactions", description = "Moving money: credit, debit, transfer, exchange, rollback, batches"),
        (name = "balances", description = "The caller's wallets now, over time and at an instant"),
        (name = "fx", description = "Exchange rates"),
        (name = "scheduled-transactions", description = "One-time and recurring transactions run by the scheduler"),
        (name = "admin", description = "Operator tools (admin only)"),
        (name = "service", description = "Health and diagnostics"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme that protected routes refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The METRICS_TOKEN of the server, when it sets one"))
                    .build(),
            ),
        );
    }
}

/// The routes and their OpenAPI document, before layers and state.
pub fn routes() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .merge(auth::routes())
        .merge(users::routes())
        .merge(transactions::routes())
        .merge(batch::routes())
        .merge(balances::routes())
        .merge(fx::routes())
        .merge(schedules::routes())
        .merge(admin::routes())
        .merge(simulation::routes())
        .merge(audit::routes())
        .merge(service::routes());
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", api).merge(service::root_routes())
}

/// The OpenAPI document of every route, the metrics routes and the circuit-breaker demo routes included.
pub fn openapi() -> serde_json::Value {
    openapi::complete(&routes().merge(metrics::routes()).merge(breaker_demo_routes()).split_for_parts().1)
}

/// The demo routes of the circuit breakers, under `/api/v1` (mounted unless `TEST_BREAKER_ROUTES=false`).
fn breaker_demo_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().nest("/api/v1", breakers::test_routes())
}

/// The whole application.
pub fn build(state: AppState) -> Router {
    build_with(state, Router::new())
}

/// The whole application with `extra` routes under the same layers (tests add failing routes this way).
pub fn build_with(state: AppState, extra: Router<AppState>) -> Router {
    let (router, mut api) = routes().split_for_parts();
    let (metrics_routes, metrics_api) = metrics::routes().split_for_parts();
    api.merge(metrics_api);
    let (demo_routes, demo_api) = breaker_demo_routes().split_for_parts();
    api.merge(demo_api);
    let config = state.config.clone();
    // Without simulation mode its routes answer 404 to everyone: the served document does not offer them either.
    if !config.simulation_mode {
        api.paths.paths.retain(|path, _| !simulation::PATHS.contains(&path.as_str()));
    }
    let router = if config.test_breaker_routes { router.merge(demo_routes) } else { router };
    // The simulation console's page and assets (404 without simulation mode, like the simulation routes).
    let router = router.merge(console::routes());
    // With METRICS_ADDR the metrics have a listener of their own (`build_metrics`); here they are then unknown.
    let router = match config.metrics_addr {
        Some(_) => router,
        None => router.merge(guard_metrics(&state, metrics_routes)),
    };
    with_layers(
        state,
        router
            .route(
                "/healthz",
                get(service::healthz)
                    .head(service::healthz)
                    .post(service::healthz)
                    .put(service::healthz)
                    .delete(service::healthz)
                    .patch(service::healthz)
                    .trace(service::healthz),
            )
            .merge(extra)
            .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", openapi::complete(&api))),
    )
}

/// The metrics routes alone, for the listener of `METRICS_ADDR`, with the same layers as the public router.
pub fn build_metrics(state: AppState) -> Router {
    let (metrics_routes, _) = metrics::routes().split_for_parts();
    let router = guard_metrics(&state, metrics_routes);
    with_layers(state, router)
}

/// The metrics routes behind `METRICS_TOKEN`.
fn guard_metrics(state: &AppState, routes: Router<AppState>) -> Router<AppState> {
    routes.route_layer(middleware::from_fn_with_state(state.clone(), metrics::require_token))
}

/// The layers every request passes through, around `router`.
fn with_layers(state: AppState, router: Router<AppState>) -> Router {
    let config = state.config.clone();
    router
        .fallback(not_found)
        // Innermost, so that it sees each route's own answer, inside the request's span and ids.
        .route_layer(middleware::from_fn_with_state(state.clone(), refusals::audit_permission_refusals))
        // Where the primary's log stands after each caller's writes (with a replica only).
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::replica::http::remember_writes))
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(
            ServiceBuilder::new()
                // The request's span is made by the request context, outside: this layer logs within it.
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|_: &axum::extract::Request| tracing::Span::current())
                        .on_response(log_response),
                )
                .layer(CatchPanicLayer::custom(panic_response))
                .option_layer(cors(&config))
                .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, config.request_timeout())),
        )
        .layer(middleware::from_fn_with_state(state.clone(), request_edge))
        .with_state(state)
}

/// The outer edge of every request, in one layer (a `from_fn` layer clones everything inside it for each request, so
/// four of them cost more than four clones), from the outside in:
/// - the request context: ids and error envelopes for everything inside, the trace span included;
/// - the metrics: every answer counted, 429s and framework answers included, by route template;
/// - the rate limits;
/// - simulation mode's faults (`X-Simulate-Fault`, `/admin/faults`): inside the ids, metrics and rate limits, so a
///   faulty answer is counted and enveloped like a real one; outside the timeout, so a latency adds to it.
///
/// Every answer leaves it marked private to its caller (`Cache-Control: no-store` unless the route chose its own;
/// tokens, balances; RFC 6749 §5.1 for the token answers) and `nosniff` (it is what its Content-Type says).
async fn request_edge(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let state = &state;
    let mut response = context::request_context(request, async move |request| {
        metrics::track_requests(state, request, async move |request| {
            rate_limit::limit_requests(state, request, async move |request| {
                faults::inject_faults(state, request, next).await
            })
            .await
        })
        .await
    })
    .await;
    let headers = response.headers_mut();
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound)
}

fn log_response<B>(response: &Response<B>, latency: std::time::Duration, _span: &tracing::Span) {
    let status = response.status().as_u16();
    let duration_ms = latency.as_secs_f64() * 1000.0;
    if response.status().is_server_error() {
        tracing::warn!(http.status = status, duration_ms, "request finished");
    } else {
        tracing::info!(http.status = status, duration_ms, "request finished");
    }
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(format!("handler panicked: {message}")).into_response()
}

/// CORS for the configured origins only; none without any (a browser then refuses every cross-origin call, and
/// the other requests skip the layer, which each request would otherwise clone).
fn cors(config: &Config) -> Option<CorsLayer> {
    let origins: Vec<&String> = config.allowed_origins.iter().filter(|o| !o.is_empty()).collect();
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| *o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let layer = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            X_REQUEST_ID.clone(),
            HeaderName::from_static("idempotency-key"),
            faults::X_SIMULATE_FAULT.clone(),
            crate::replica::MIN_LSN_HEADER,
        ])
        .expose_headers([
            X_REQUEST_ID.clone(),
            X_TRACE_ID.clone(),
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
            HeaderName::from_static("idempotent-replayed"),
            crate::replica::MIN_LSN_HEADER,
        ])
        .max_age(std::time::Duration::from_secs(600));
    Some(layer)
}
