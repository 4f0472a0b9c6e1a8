//! Service routes: liveness, readiness and ping.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

/// Routes under `/api/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ping))
}

/// Routes at the root.
pub fn root_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(readyz))
}

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process is up and answering (any method).
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness and the state of each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok` when every dependency answers, `unavailable` when the database does not.
    #[schema(example = "ok")]
    status: &'static str,
    /// One entry per dependency: `ok` or `unavailable`.
    checks: Checks,
}

/// The checked dependencies.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    /// The primary database.
    #[schema(example = "ok")]
    database: &'static str,
}

/// Readiness: 200 when the database answers, 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "service", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "A required dependency is unavailable", body = Readiness),
))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = match state.store.ping().await {
        Ok(()) => "ok",
        Err(err) => {
            tracing::warn!(error = %err, "readiness: database unavailable");
            "unavailable"
        }
    };
    let ready = database == "ok";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: if ready { "ok" } else { "unavailable" }, checks: Checks { database } }))
}

/// `{"message": "pong"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pong {
    /// Always `pong`.
    #[schema(example = "pong")]
    message: &'static str,
}

/// Answers `pong`.
#[utoipa::path(get, path = "/ping", tag = "service", responses((status = 200, body = Pong)))]
pub async fn ping() -> Json<Pong> {
    Json(Pong { message: "pong" })
}
