//! Trace context across processes: the W3C `traceparent` of the current span, for the bus to
//! carry in message headers, and a span made the child of a received one.
//!
//! The spans themselves are `tracing` spans; the process's subscriber (see the `orion`
//! binary's telemetry setup) turns them into OpenTelemetry spans and exports them.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The current span's trace context as a `traceparent` value; `None` outside any traced span.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Records the trace id of `span` in its `trace_id` field (declared empty), so that JSON logs
/// of everything inside it carry the id a tracing backend shows.
pub fn record_trace_id(span: &tracing::Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
    }
}

/// Makes `span` a child of the remote span `traceparent` names (when there is one).
pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}
