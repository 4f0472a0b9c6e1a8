//! `/console`: simulation mode's web console, a small page served by the binary itself. Plain HTML, CSS and one
//! JavaScript module, embedded at compile time (no build step, nothing fetched from elsewhere: the charts are drawn
//! by hand on `<canvas>`). The page logs in as an admin and uses the public API only.
//!
//! Without `SIMULATION_MODE` every console path answers 404, like the simulation routes. The page's answers carry
//! a strict `Content-Security-Policy`: scripts, styles and requests from this origin only, no inline code, no
//! framing.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::http::simulation::SimulationMode;

/// What the console's page may load and do: its own scripts, styles, images and API, nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page.
const INDEX_HTML: &str = include_str!("../../console/index.html");

/// The embedded assets under `/console/`: name, content type, content.
const ASSETS: [(&str, &str, &str); 3] = [
    ("console.js", "text/javascript; charset=utf-8", include_str!("../../console/console.js")),
    ("console.css", "text/css; charset=utf-8", include_str!("../../console/console.css")),
    ("favicon.svg", "image/svg+xml", include_str!("../../console/favicon.svg")),
];

/// The console's routes (not part of the API's OpenAPI document: they serve a page, not JSON).
pub fn routes() -> Router<AppState> {
    Router::new().route("/console", get(page)).route("/console/{asset}", get(asset))
}

async fn page(_mode: SimulationMode) -> Response {
    embedded("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(_mode: SimulationMode, Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, content) =
        ASSETS.iter().find(|(asset, _, _)| *asset == name).ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(embedded(content_type, content))
}

fn embedded(content_type: &'static str, content: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        content,
    )
        .into_response()
}
