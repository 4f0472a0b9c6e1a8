//! The trace exporter: spans out over OTLP, never at a request's expense.
//!
//! Configured by the standard OpenTelemetry variables, read by the SDK itself where it reads them:
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): the collector. Unset: no export.
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`): `http/protobuf` (the default) or `grpc`.
//! - `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` (and their `_TRACES_` forms).
//! - `OTEL_SERVICE_NAME` (default `banksim`), `OTEL_RESOURCE_ATTRIBUTES`.
//! - `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`).
//! - `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`,
//!   `OTEL_BSP_EXPORT_TIMEOUT`.
//! - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: no export, whatever the endpoint.
//!
//! Finished spans go to the SDK's batch span processor, which exports from a thread of its own. Two wrappers make a
//! collector that is down or slow harmless and visible:
//! - [`Bounded`] admits a span only while fewer than `OTEL_BSP_MAX_QUEUE_SIZE` spans are held (queued or being
//!   exported); past that the span is dropped at once and counted. Holding at most the processor's own queue size,
//!   its queue can never overflow, so every span it would have dropped silently is counted here instead (the SDK
//!   counts its drops but does not tell).
//! - [`OnRuntime`] runs each export on the server's Tokio runtime (the HTTP and gRPC clients need one; the
//!   processor's thread has none), bounded by `OTEL_BSP_EXPORT_TIMEOUT`, and counts the spans of every export that
//!   failed or timed out as dropped.
//!
//! [`spans_dropped`] is the total, for the metrics (`banksim_otel_spans_dropped_total`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, OTEL_BSP_EXPORT_TIMEOUT, OTEL_BSP_EXPORT_TIMEOUT_DEFAULT,
    OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT, SdkTracerProvider, Span, SpanData, SpanExporter,
    SpanProcessor,
};
use tokio::runtime::Handle;

/// The service name when `OTEL_SERVICE_NAME` does not set one.
pub const SERVICE_NAME_DEFAULT: &str = "banksim";

/// The budget of the process's exporter, once there is one.
static BUDGET: OnceLock<Arc<SpanBudget>> = OnceLock::new();

/// Spans dropped since the process started, because the export queue was full or their export failed (the
/// collector was down, slow or refused them). Zero when traces are not exported.
pub fn spans_dropped() -> u64 {
    BUDGET.get().map_or(0, |budget| budget.dropped())
}

/// How many finished spans may be held for export at once, and how many were dropped.
#[derive(Debug)]
pub struct SpanBudget {
    capacity: usize,
    held: AtomicUsize,
    dropped: AtomicU64,
}

impl SpanBudget {
    /// A budget of `capacity` spans held at once.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self { capacity, held: AtomicUsize::new(0), dropped: AtomicU64::new(0) })
    }

    /// Spans dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Takes a place for one span; `false` (and the span counted as dropped) when every place is taken.
    fn admit(&self) -> bool {
        let admitted = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| (held < self.capacity).then_some(held + 1));
        if admitted.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        admitted.is_ok()
    }

    /// Gives back the places of `spans` whose export ended, counting them as dropped if it failed.
    fn exported(&self, spans: usize, delivered: bool) {
        self.held.fetch_sub(spans, Ordering::AcqRel);
        if !delivered {
            self.dropped.fetch_add(spans as u64, Ordering::Relaxed);
        }
    }
}

/// The tracer provider that the `OTEL_*` variables ask for, or `None` when they ask for no export. Must be called
/// inside the Tokio runtime that will run the exports.
pub fn provider_from_env() -> anyhow::Result<Option<SdkTracerProvider>> {
    if !export_requested() {
        return Ok(None);
    }
    let runtime = Handle::try_current().context("trace export needs the Tokio runtime to be running")?;
    // The gRPC client binds to the runtime it is built in.
    let _entered = runtime.enter();
    let exporter = match protocol()? {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder().with_tonic().build(),
        _ => opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build(),
    }
    .context("OTEL_EXPORTER_OTLP_*: cannot build the trace exporter")?;
    let capacity = env_number(OTEL_BSP_MAX_QUEUE_SIZE).map_or(OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT, |n| n as usize);
    let export_timeout =
        env_number(OTEL_BSP_EXPORT_TIMEOUT).map_or(OTEL_BSP_EXPORT_TIMEOUT_DEFAULT, Duration::from_millis);
    let budget = BUDGET.get_or_init(|| SpanBudget::new(capacity)).clone();
    let processor = bounded_batch_processor(exporter, runtime, budget, capacity, export_timeout);
    Ok(Some(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource()).build()))
}

/// The SDK's batch span processor over `exporter`, with the queue bounded by `budget` and each export run on
/// `runtime` for at most `export_timeout` (the other batch settings come from the `OTEL_BSP_*` variables).
pub fn bounded_batch_processor<E: SpanExporter + 'static>(
    exporter: E,
    runtime: Handle,
    budget: Arc<SpanBudget>,
    capacity: usize,
    export_timeout: Duration,
) -> Bounded<BatchSpanProcessor> {
    let exporter = OnRuntime { inner: Arc::new(exporter), runtime, timeout: export_timeout, budget: budget.clone() };
    let config = BatchConfigBuilder::default().with_max_queue_size(capacity.max(1)).build();
    Bounded { inner: BatchSpanProcessor::builder(exporter).with_batch_config(config).build(), budget }
}

/// Whether the variables ask for traces to be exported.
fn export_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
    let exporter_off = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|value| value.trim() == "none");
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) && !disabled && !exporter_off
}

/// The protocol the variables name (the traces' own variable first); `http/protobuf` when neither is set.
fn protocol() -> anyhow::Result<Protocol> {
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        let Ok(value) = std::env::var(name) else { continue };
        return match value.trim().to_ascii_lowercase().as_str() {
            "" => continue,
            "http/protobuf" => Ok(Protocol::HttpBinary),
            "grpc" => Ok(Protocol::Grpc),
            other => bail!("{name}: expected http/protobuf or grpc, not {other:?}"),
        };
    }
    Ok(Protocol::HttpBinary)
}

/// A whole number from an `OTEL_BSP_*` variable, read as the SDK reads it (anything else: the default).
fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|value| value.trim().parse().ok())
}

/// The SDK's resource (from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`), named `banksim` unless they name it.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|name| !name.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| attributes.contains("service.name="));
    let builder = Resource::builder();
    if named { builder.build() } else { builder.with_service_name(SERVICE_NAME_DEFAULT).build() }
}

/// A span processor that drops (and counts) a finished span when its budget is spent, instead of queueing it.
#[derive(Debug)]
pub struct Bounded<P> {
    inner: P,
    budget: Arc<SpanBudget>,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.budget.admit() {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter whose exports run on a Tokio runtime, each for at most `timeout`, giving back the budget of the
/// spans it was handed and counting those it failed to deliver.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: Handle,
    timeout: Duration,
    budget: Arc<SpanBudget>,
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let spans = batch.len();
        let (inner, timeout, budget) = (self.inner.clone(), self.timeout, self.budget.clone());
        let export = self.runtime.spawn(async move { tokio::time::timeout(timeout, inner.export(batch)).await });
        async move {
            let result = match export.await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(OTelSdkError::Timeout(timeout)),
                Err(err) => Err(OTelSdkError::InternalFailure(format!("the export task ended: {err}"))),
            };
            budget.exported(spans, result.is_ok());
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // The processor sets the resource before the first export, while no export holds a clone of the exporter.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use tokio::sync::Semaphore;

    use super::*;

    /// An exporter that holds every export until the test opens its gate, then delivers.
    #[derive(Debug, Clone)]
    struct Stuck {
        gate: Arc<Semaphore>,
        received: Arc<AtomicUsize>,
    }

    impl SpanExporter for Stuck {
        fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
            let stuck = self.clone();
            async move {
                let _open = stuck.gate.acquire().await.map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
                stuck.received.fetch_add(batch.len(), Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn provider(processor: Bounded<BatchSpanProcessor>) -> SdkTracerProvider {
        SdkTracerProvider::builder().with_span_processor(processor).build()
    }

    fn finish_spans(provider: &SdkTracerProvider, count: usize) {
        let tracer = provider.tracer("test");
        for _ in 0..count {
            tracer.in_span("work", |_| {});
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spans_past_the_queue_are_dropped_at_once_and_counted() {
        let stuck = Stuck { gate: Arc::new(Semaphore::new(0)), received: Arc::default() };
        let budget = SpanBudget::new(3);
        let processor =
            bounded_batch_processor(stuck.clone(), Handle::current(), budget.clone(), 3, Duration::from_secs(60));
        let provider = provider(processor);
        // The collector does not answer: three spans wait for it, the next five are dropped without waiting.
        finish_spans(&provider, 8);
        assert_eq!(budget.dropped(), 5);

        stuck.gate.add_permits(1);
        let flushing = provider.clone();
        tokio::task::spawn_blocking(move || flushing.force_flush()).await.expect("flush").expect("flushed");
        assert_eq!(stuck.received.load(Ordering::Relaxed), 3);
        assert_eq!(budget.dropped(), 5, "delivered spans are not counted");
        finish_spans(&provider, 1);
        assert_eq!(budget.dropped(), 5, "their places are free again");
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collector_that_is_down_costs_only_the_spans() {
        // A port that was just free: nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("http://{closed}/v1/traces"))
            .build()
            .expect("exporter");
        let budget = SpanBudget::new(100);
        let processor =
            bounded_batch_processor(exporter, Handle::current(), budget.clone(), 100, Duration::from_secs(10));
        let provider = provider(processor);
        finish_spans(&provider, 4);
        assert_eq!(budget.dropped(), 0, "queued, not yet exported");
        let flushing = provider.clone();
        let flushed = tokio::task::spawn_blocking(move || flushing.force_flush()).await.expect("flush");
        assert!(flushed.is_err(), "the export failed: {flushed:?}");
        assert_eq!(budget.dropped(), 4);
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}
