//! The W3C trace context (`traceparent`) of a span, to carry in an event's metadata, and back:
//! with the feature `opentelemetry` and a `tracing-opentelemetry` layer installed, the span of a
//! handler, projection or saga that takes an event continues the trace of the dispatch that
//! stored it. Without the feature (or without the layer) there is no trace context: nothing is
//! written, nothing is read.

/// The metadata entry that carries the trace context (the W3C header's name).
pub(crate) const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of `span` (`00-<trace id>-<span id>-<flags>`), when it belongs to an
/// OpenTelemetry trace.
#[cfg(feature = "opentelemetry")]
pub(crate) fn traceparent(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let context = span.context();
    let otel = context.span();
    let span_context = otel.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Makes `span` a child of the remote span `traceparent` names (a malformed one is ignored).
#[cfg(feature = "opentelemetry")]
pub(crate) fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let mut parts = traceparent.split('-');
    let (Some("00"), Some(trace_id), Some(span_id), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return;
    };
    let (Ok(trace_id), Ok(span_id), Ok(flags)) = (
        TraceId::from_hex(trace_id),
        SpanId::from_hex(span_id),
        u8::from_str_radix(flags, 16),
    ) else {
        return;
    };
    let remote = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    if remote.is_valid() {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// Without the feature `opentelemetry`: nothing to continue.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn continue_trace(_span: &tracing::Span, _traceparent: &str) {}
