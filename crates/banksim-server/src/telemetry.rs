//! Logs and traces.
//!
//! Logs are structured lines on stderr (JSON by default) filtered by `RUST_LOG`. Traces are exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, configured by the standard
//! OpenTelemetry variables (see [`otlp`]); without an endpoint no exporter is built and no layer records spans for
//! one: an untraced instance has the one log subscriber and its global filter, as before traces existed. A traced
//! one gives logs and traces filters of their own: `RUST_LOG=warn` quiets the logs without losing a trace, and the
//! database spans that traces want do not fill the logs.
//!
//! The trace id is one id everywhere: the `X-Trace-ID` answer header, the `trace_id` field of the request's log
//! lines, its audit entries, and the exported trace (the caller's own when it sent a W3C `traceparent`).

pub mod otlp;

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, dynamic_filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

pub use otlp::spans_dropped;

/// Whether this process exports traces (set once, by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The process's telemetry, kept until it ends: [`Telemetry::shutdown`] sends the spans still queued.
#[derive(Debug)]
#[must_use = "dropping it stops the trace export at once; call shutdown() at the end of the process"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn exports_traces(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued (waiting at most the exporter's timeout) and stops the exporter. Call it
    /// outside of the async runtime (it blocks), while the runtime still exists (the export runs on it).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "trace export did not finish cleanly");
        }
    }
}

/// Installs the global log subscriber and, when an OTLP endpoint is configured, the trace exporter. Call it once
/// per process, inside the Tokio runtime that the exporter will use. Later calls install nothing (their
/// [`Telemetry`] exports nothing). Fails on an invalid `OTEL_*` setting, naming it.
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let Some(provider) = otlp::provider_from_env()? else {
        let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
        let _ = match format {
            LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
            LogFormat::Text => logs.try_init(),
        };
        return Ok(Telemetry { provider: None });
    };
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).boxed(),
    };
    let traces = tracing_opentelemetry::layer()
        .with_tracer(opentelemetry::trace::TracerProvider::tracer(&provider, "banksim"))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_filter(
            dynamic_filter_fn(|metadata, _| is_traced(metadata))
                .with_callsite_filter(
                    |metadata| if is_traced(metadata) { Interest::sometimes() } else { Interest::never() },
                )
                .with_max_level_hint(Level::DEBUG),
        );
    let installed = tracing_subscriber::registry().with(logs.with_filter(filter)).with(traces).try_init().is_ok();
    if !installed {
        // Another subscriber was first (a test's): its layers decide, and nothing is exported from here.
        let _ = provider.shutdown();
        return Ok(Telemetry { provider: None });
    }
    EXPORTING.store(true, Ordering::Relaxed);
    tracing::info!("exporting traces over OTLP");
    Ok(Telemetry { provider: Some(provider) })
}

/// What becomes part of a trace: banksim's own spans down to debug level (requests, jobs, batches, database calls),
/// and its warnings and errors as events of the span they happen in. Nothing of other crates: the exporter's own
/// HTTP and gRPC clients must not trace themselves into the export.
///
/// Its callsites are `sometimes` interesting (never `always`), so that every span and event is filtered afresh by
/// both filters. A callsite that every filter called `always` would skip that pass and take whatever per-layer
/// filter state an earlier query left on the thread: `log_enabled!` and `tracing::enabled!` (sqlx asks on every
/// statement) set that state without a span or event to consume it, and the next request span was then silently
/// dropped from the trace.
fn is_traced(metadata: &Metadata<'_>) -> bool {
    let level = if metadata.is_span() { Level::DEBUG } else { Level::WARN };
    metadata.target().starts_with("banksim") && *metadata.level() <= level
}

/// Whether this process exports traces.
pub fn exports_traces() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Joins `span` (a request's span, not yet entered) to the caller's trace when the request carries a W3C
/// `traceparent`, and returns the span's trace id as 32 hex digits, or `None` when traces are not exported (the
/// request context then picks the id itself).
pub fn join_caller_trace(span: &tracing::Span, headers: &HeaderMap) -> Option<String> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    let caller = TraceContextPropagator::new().extract(&Headers(headers));
    if caller.span().span_context().is_valid() {
        let _ = span.set_parent(caller);
    }
    trace_id_of(span)
}

/// The trace id of the span this task is in, when traces are exported (for the audit entries of a job run).
pub fn current_trace_id() -> Option<String> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    trace_id_of(&tracing::Span::current())
}

fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// Reads propagation headers from an axum request.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_banksims_spans_and_warnings_are_traced() {
        use tracing::callsite::Identifier;
        use tracing::field::FieldSet;
        use tracing::metadata::Kind;

        struct Site;
        impl tracing::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!("not registered")
            }
        }
        static SITE: Site = Site;
        let metadata = |target: &'static str, level: Level, kind: Kind| {
            Metadata::new("x", target, level, None, None, None, FieldSet::new(&[], Identifier(&SITE)), kind)
        };
        assert!(is_traced(&metadata("banksim_server::store_layer", Level::DEBUG, Kind::SPAN)));
        assert!(is_traced(&metadata("banksim_server::writer", Level::WARN, Kind::EVENT)));
        assert!(!is_traced(&metadata("banksim_server::router", Level::INFO, Kind::EVENT)));
        assert!(!is_traced(&metadata("banksim_store", Level::TRACE, Kind::SPAN)));
        assert!(!is_traced(&metadata("h2::proto", Level::DEBUG, Kind::SPAN)));
        assert!(!is_traced(&metadata("tonic::transport", Level::ERROR, Kind::EVENT)));
    }

    #[test]
    fn without_an_exporter_no_trace_id_comes_from_the_spans() {
        let headers = HeaderMap::new();
        assert_eq!(join_caller_trace(&tracing::Span::none(), &headers), None);
        assert_eq!(current_trace_id(), None);
    }
}
