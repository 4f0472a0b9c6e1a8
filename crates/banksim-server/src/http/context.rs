//! The request context: every request gets an id (`X-Request-ID`) and a trace id (`X-Trace-ID`), known to the
//! logs and to every error body, and is served inside its span (the one span per request that logs and traces
//! share); every error answer is our JSON envelope, even those the framework makes.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};

/// The request id header, read from clients and written on every response.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The trace id header, written on every response.
pub static X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
/// W3C trace context header, honoured when a client sends one.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Longest client request id we keep; longer ones are replaced by our own.
const REQUEST_ID_CHARS_MAX: usize = 128;

/// The ids of the request being served.
#[derive(Debug, Clone)]
pub struct RequestIds {
    /// The request id.
    pub request_id: String,
    /// The 32-hex-digit trace id.
    pub trace_id: String,
}

tokio::task_local! {
    static CURRENT: RequestIds;
}

/// The id of the request this task is serving (empty outside of a request).
pub fn current_request_id() -> String {
    CURRENT.try_with(|ids| ids.request_id.clone()).unwrap_or_default()
}

/// Assigns the request's ids, serves it inside its span (which carries them), writes them on the response, and
/// turns any bare error answer (no JSON body) into the error envelope.
///
/// When traces are exported the span joins the caller's trace (W3C `traceparent`), and `X-Trace-ID` is the span's
/// trace id, so the header, the logs, the audit trail and the exported trace name one trace. Otherwise the trace id
/// is the `traceparent`'s, or a new one.
pub async fn request_context(mut request: Request, next: impl AsyncFnOnce(Request) -> Response) -> Response {
    let request_id = request_id(&request);
    let span = request_span(&request, &request_id);
    let trace_id = crate::telemetry::join_caller_trace(&span, request.headers()).unwrap_or_else(|| trace_id(&request));
    span.record("trace_id", trace_id.as_str());
    let ids = RequestIds { request_id, trace_id };
    request.extensions_mut().insert(ids.clone());
    let served = CURRENT.scope(ids.clone(), async move { envelope_bare_errors(next(request).await) });
    let mut response = served.instrument(span.clone()).await;
    record_status(&span, response.status());
    let headers = response.headers_mut();
    for (name, value) in [(&X_REQUEST_ID, &ids.request_id), (&X_TRACE_ID, &ids.trace_id)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name.clone(), value);
        }
    }
    response
}

/// The span of one request: the route template (never the raw path, whose ids would make every request a new
/// name), the method, the ids; the status and the caller (`user.id`, set by the auth extractors) are recorded as
/// they become known. Named `<method> <route>` in traces.
fn request_span(request: &Request, request_id: &str) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        http.method = %request.method(),
        http.route = route,
        http.status = Empty,
        user.id = Empty,
        request_id,
        trace_id = Empty,
        otel.name = Empty,
        otel.kind = Empty,
        otel.status_code = Empty,
    );
    if crate::telemetry::exports_traces() {
        span.record("otel.name", format!("{} {route}", request.method()));
        span.record("otel.kind", "server");
    }
    span
}

/// Records the answer's status on the request's span; a server error marks the span as failed.
fn record_status(span: &tracing::Span, status: StatusCode) {
    span.record("http.status", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// The client's request id when it is sane (printable, short, no spaces), else a new UUID.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= REQUEST_ID_CHARS_MAX
                && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        })
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned)
}

/// The trace id of an incoming W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`), else a new one.
fn trace_id(request: &Request) -> String {
    let from_header = request.headers().get(&TRACEPARENT).and_then(|value| value.to_str().ok()).and_then(|tp| {
        let mut parts = tp.split('-');
        let (_version, trace) = (parts.next()?, parts.next()?);
        let valid = trace.len() == 32
            && trace.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            && trace.chars().any(|c| c != '0');
        valid.then(|| trace.to_owned())
    });
    from_header.unwrap_or_else(|| {
        // Never all zeros (W3C: an invalid trace id).
        format!("{:032x}", rand::random::<u128>().max(1))
    })
}

/// Replaces the body of an error answer that is not JSON (the framework's 405, a length limit's 413, a timeout's
/// 503) by our envelope, keeping its status and headers (`Allow`, `Retry-After`).
fn envelope_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let (enveloped, body) = ApiError::new(ErrorCode::for_status(status)).render(status).into_parts();
    parts.headers.extend(enveloped.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}
