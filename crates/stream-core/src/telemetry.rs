//! Trace context across brokers (feature `otel`): every message sent carries the W3C
//! `traceparent` (and `tracestate` when there is one) of its `stream.send` span, and every
//! message consumed makes its `stream.consume` span the child of the span that sent it. The
//! headers are plain message headers, so every binder carries them (AMQP headers, RocketMQ user
//! properties) and a Java service with Micrometer Tracing reads and writes the same ones.
//!
//! The spans are `tracing` spans; the application turns them into OpenTelemetry spans with a
//! `tracing-opentelemetry` layer, e.g. from [`tracer_provider`]:
//!
//! ```
//! use opentelemetry::trace::TracerProvider as _;
//! use opentelemetry_sdk::trace::InMemorySpanExporter;
//! use stream_core::stream_config::ManagementProperties;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let management = ManagementProperties::default(); // management.tracing.* keys
//! let exporter = InMemorySpanExporter::default();
//! let provider = stream_core::telemetry::tracer_provider(&management, exporter)
//!     .expect("management.tracing.enabled is true by default");
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("my-service")));
//! let _guard = tracing::subscriber::set_default(subscriber);
//! ```

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter};
use stream_config::ManagementProperties;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::message::{HeaderValue, Headers};

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C vendor trace state header (sent only when not empty).
pub const TRACESTATE: &str = "tracestate";

/// Writes headers as the propagator asks, leaving out empty values (no `tracestate: ""`).
struct Inject<'a>(&'a mut Headers);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.insert(key.to_owned(), HeaderValue::String(value));
        }
    }
}

/// Reads text headers; a header that arrived as bytes (an AMQP byte array) is read as UTF-8.
struct Extract<'a>(&'a Headers);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.get(key)? {
            HeaderValue::String(s) => Some(s),
            HeaderValue::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k).collect()
    }
}

/// Puts the trace context of `span` into `headers`, replacing any that came with the
/// message (a function's output carries its input's headers). Nothing is written when the
/// span is not traced (no OpenTelemetry layer, or filtered out).
pub(crate) fn inject(span: &tracing::Span, headers: &mut Headers) {
    let cx = span.context();
    if !opentelemetry::trace::TraceContextExt::span(&cx)
        .span_context()
        .is_valid()
    {
        return;
    }
    headers.remove(TRACEPARENT);
    headers.remove(TRACESTATE);
    TraceContextPropagator::new().inject_context(&cx, &mut Inject(headers));
}

/// Makes `span` the child of the span whose context `headers` carry, if they carry one.
pub(crate) fn adopt(span: &tracing::Span, headers: &Headers) {
    if !headers.contains(TRACEPARENT) {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Extract(headers));
    if let Err(e) = span.set_parent(parent) {
        tracing::trace!(error = %e, "the consume span could not take the message's trace context");
    }
}

/// A tracer provider configured by `management.tracing.*`: `None` when
/// `management.tracing.enabled=false`; otherwise new traces are sampled with
/// `management.tracing.sampling.probability` and a message's incoming decision is kept
/// (parent-based sampling, as Micrometer Tracing does), finished spans going to `exporter`.
pub fn tracer_provider(
    management: &ManagementProperties,
    exporter: impl SpanExporter + 'static,
) -> Option<SdkTracerProvider> {
    if !management.tracing.enabled {
        return None;
    }
    let ratio = Sampler::TraceIdRatioBased(management.tracing.sampling.probability);
    Some(
        SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(ratio)))
            .with_simple_exporter(exporter)
            .build(),
    )
}

/// The target prefix of the runtime's own spans.
const RUNTIME_TARGET: &str = "stream_core";

/// Installs the process-wide `tracing` subscriber a service usually wants: logs on standard
/// error filtered by `RUST_LOG` (default `info`) and, unless `management.tracing.enabled=false`,
/// spans exported to `exporter` with the configured sampling. Keep the returned provider and
/// shut it down at exit so the last spans are exported.
///
/// ```no_run
/// use stream_core::stream_config::{Environment, ManagementProperties};
/// use stream_core::telemetry::{self, LogSpanExporter};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let env = Environment::standard()?;
/// let provider = telemetry::install(&ManagementProperties::from_environment(&env)?, LogSpanExporter)?;
/// // ... build and run the application ...
/// if let Some(p) = provider {
///     p.shutdown()?;
/// }
/// # Ok(()) }
/// ```
pub fn install(
    management: &ManagementProperties,
    exporter: impl SpanExporter + 'static,
) -> Result<Option<SdkTracerProvider>, tracing_subscriber::util::TryInitError> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    use tracing_subscriber::Layer as _;

    let provider = tracer_provider(management, exporter);
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("stream-rs"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|meta, cx| {
                // The runtime's spans, and whatever runs inside them (the application's own
                // spans in a function); not the clients' connection loops and the like.
                !meta.is_span()
                    || meta.target().starts_with(RUNTIME_TARGET)
                    || cx.lookup_current().is_some()
            }))
    });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(otel)
        .try_init()?;
    Ok(provider)
}

/// An exporter that writes each finished span as one line on standard error (trace id, span
/// id, parent, name, kind, duration): for examples and for following a message through
/// services without a tracing backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSpanExporter;

impl SpanExporter for LogSpanExporter {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        for span in batch {
            let took = span
                .end_time
                .duration_since(span.start_time)
                .unwrap_or_default();
            eprintln!(
                "span trace_id={} span_id={} parent_span_id={} kind={:?} name=\"{}\" duration_us={}",
                span.span_context.trace_id(),
                span.span_context.span_id(),
                span.parent_span_id,
                span.span_kind,
                span.name,
                took.as_micros()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanKind, TracerProvider as _};
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn always() -> ManagementProperties {
        let mut m = ManagementProperties::default();
        m.tracing.sampling.probability = 1.0;
        m
    }

    #[test]
    fn a_consume_span_is_the_child_of_the_send_span() {
        let exporter = InMemorySpanExporter::default();
        let provider = tracer_provider(&always(), exporter.clone()).expect("enabled");
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let mut headers = Headers::new();
        tracing::subscriber::with_default(subscriber, || {
            let send = tracing::info_span!("stream.send", otel.kind = "producer");
            inject(&send, &mut headers);
            drop(send);
            let consume = tracing::info_span!("stream.consume", otel.kind = "consumer");
            adopt(&consume, &headers);
            consume.in_scope(|| {});
        });
        assert!(headers.get_str(TRACEPARENT).is_some(), "{headers:?}");
        assert!(
            !headers.contains(TRACESTATE),
            "empty tracestate is not sent"
        );
        provider.force_flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("spans");
        let send = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Producer)
            .expect("send");
        let consume = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Consumer)
            .expect("consume");
        assert_eq!(
            send.span_context.trace_id(),
            consume.span_context.trace_id()
        );
        assert_eq!(consume.parent_span_id, send.span_context.span_id());
    }

    #[test]
    fn an_incoming_java_context_is_kept_with_its_sampling_decision() {
        let exporter = InMemorySpanExporter::default();
        let provider =
            tracer_provider(&ManagementProperties::default(), exporter.clone()).expect("enabled");
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let mut incoming = Headers::new();
        incoming.insert(
            TRACEPARENT,
            HeaderValue::Bytes("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        );
        incoming.insert(TRACESTATE, "congo=t61rcWkgMzE");
        let mut outgoing = incoming.clone();
        tracing::subscriber::with_default(subscriber, || {
            let consume = tracing::info_span!("stream.consume", otel.kind = "consumer");
            adopt(&consume, &incoming);
            consume.in_scope(|| {
                let send = tracing::info_span!("stream.send", otel.kind = "producer");
                inject(&send, &mut outgoing);
            });
        });
        let out = outgoing.get_str(TRACEPARENT).expect("traceparent");
        assert!(
            out.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{out}"
        );
        assert!(out.ends_with("-01"), "sampled by the parent: {out}");
        assert!(
            !out.contains("b7ad6b7169203331"),
            "a new parent span: {out}"
        );
        assert_eq!(outgoing.get_str(TRACESTATE), Some("congo=t61rcWkgMzE"));
        provider.force_flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("spans");
        let consume = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Consumer)
            .expect("consume");
        assert_eq!(consume.parent_span_id.to_string(), "b7ad6b7169203331");
    }

    #[test]
    fn tracing_off_gives_no_provider() {
        let mut m = ManagementProperties::default();
        m.tracing.enabled = false;
        assert!(tracer_provider(&m, InMemorySpanExporter::default()).is_none());
    }

    #[test]
    fn without_a_layer_nothing_is_injected() {
        let mut headers = Headers::new();
        inject(&tracing::info_span!("stream.send"), &mut headers);
        assert!(headers.is_empty());
    }
}
