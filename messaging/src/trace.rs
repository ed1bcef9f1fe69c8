//! W3C trace context across the broker. A saga is one trace whose trace id is the
//! saga's UUID, so every service, replica and retry joins the same trace without
//! storing any context: the orchestrator's spans descend from [`saga_context`], a
//! command carries its sender span in `traceparent`, and the receiver's span is its
//! child ([`context_from_traceparent`]). With no OpenTelemetry layer installed the
//! spans have no ids and [`traceparent_of`] returns `None`; senders then fall back
//! to [`crate::envelope::traceparent_for`], which keeps the trace id.

use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

fn hex32(saga_id: &str) -> Option<String> {
    let hex: String = saga_id.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_lowercase();
    (hex.len() == 32).then_some(hex)
}

/// The remote parent of a saga's orchestrator spans: trace id = the saga's UUID.
pub fn saga_context(saga_id: &str) -> Option<Context> {
    let hex = hex32(saga_id)?;
    let trace_id = TraceId::from_hex(&hex).ok().filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(&hex[16..]).ok().filter(|s| *s != SpanId::INVALID)?;
    let span = SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, true, TraceState::default());
    Some(Context::new().with_remote_span_context(span))
}

/// The remote parent named by a `traceparent` header (`00-<trace>-<span>-<flags>`).
pub fn context_from_traceparent(traceparent: &str) -> Option<Context> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
    let span = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    Some(Context::new().with_remote_span_context(span))
}

/// Makes `span` a child of `parent` (no effect without an OpenTelemetry layer).
pub fn set_parent(span: &tracing::Span, parent: Option<Context>) {
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to `from` (e.g. a saga's first span to the request that started
/// it, which is its own trace). No effect without OpenTelemetry ids.
pub fn add_link(span: &tracing::Span, from: &tracing::Span) {
    let context = from.context();
    let from_span = context.span();
    let sc = from_span.span_context();
    if sc.is_valid() {
        span.add_link(sc.clone());
    }
}

/// The `traceparent` of `span`, if OpenTelemetry gave it ids.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let otel_span = context.span();
    let sc = otel_span.span_context();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_header_round_trips_into_a_remote_parent() {
        let cx = context_from_traceparent("00-0190b5c26c4e7a1b8f00000000000001-00f067aa0ba902b7-01").expect("valid");
        let sc = cx.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), "0190b5c26c4e7a1b8f00000000000001");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote() && sc.is_sampled());
        assert!(context_from_traceparent("01-00-00-00").is_none());
        assert!(context_from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
    }

    #[test]
    fn a_sagas_trace_id_is_its_uuid() {
        let cx = saga_context("0190b5c2-6c4e-7a1b-8f00-000000000001").expect("uuid");
        assert_eq!(cx.span().span_context().trace_id().to_string(), "0190b5c26c4e7a1b8f00000000000001");
        assert!(saga_context("not a uuid").is_none());
    }
}
