//! The W3C trace context (`traceparent`) that follows a job through the log and the queue.
//!
//! A job's trace starts at the request that submits it; its `traceparent` rides in the event
//! metadata of `JobSubmitted`, then of each `TaskEnqueued` (written under the orchestrator's
//! enqueue span), then in the queue message's `traceparent` field, and the worker's span for
//! the task becomes a child of the enqueue. A retry's message carries the failed attempt's
//! context in `previous_attempt_traceparent`: the new attempt's span is linked to it.
//!
//! Without an OpenTelemetry layer installed (the default), spans have no valid context:
//! [`current_traceparent`] answers `None` and nothing is written.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::eventlog::AppendBatch;

/// The metadata key of the context an event was written under.
pub const TRACEPARENT: &str = "traceparent";
/// The metadata key of a worker's attempt span (what a retry links to).
pub const ATTEMPT_TRACEPARENT: &str = "attempt_traceparent";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Says that an OpenTelemetry layer is installed, so that work done only for traces (a read
/// of the submission's context before an expansion) is worth doing.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether traces are exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Writes `traceparent` under `key` into the metadata of every event of `batch` (nothing
/// when `None`).
pub fn stamp(batch: &mut AppendBatch, key: &str, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    for stream in &mut batch.streams {
        for event in &mut stream.events {
            if let Some(map) = event.metadata.as_object_mut() {
                map.insert(key.to_owned(), traceparent.into());
            }
        }
    }
}

/// The value of `key` in an event's stored metadata (JSON text), if any.
pub fn from_metadata(metadata: &str, key: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(metadata)
        .ok()?
        .get(key)?
        .as_str()
        .map(str::to_owned)
}

/// The `traceparent` of the current span, if it has a valid OpenTelemetry context.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The `traceparent` of `span`, if it has a valid OpenTelemetry context.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    span_context
        .is_valid()
        .then(|| format_traceparent(span_context))
}

/// `00-<trace id>-<span id>-<flags>`.
pub fn format_traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// A remote span context from a `traceparent` header value; `None` when it is not one
/// (version `ff`, wrong lengths, non-hex, all-zero ids).
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || u8::from_str_radix(version, 16).is_err() {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace_id.len() != 32 || span_id.len() != 16 || flags.len() != 2 {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// Makes `span` a child of the remote context `traceparent` (when it parses).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(remote) = traceparent.and_then(parse_traceparent) {
        let context = opentelemetry::Context::new().with_remote_span_context(remote);
        if let Err(error) = span.set_parent(context) {
            tracing::debug!(?error, "could not set a span's remote parent");
        }
    }
}

/// Links `span` to the span `traceparent` names (when it parses): for a retry, the attempt
/// before it.
pub fn add_link(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(remote) = traceparent.and_then(parse_traceparent) {
        span.add_link(remote);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse_traceparent(value).expect("valid");
        assert!(context.is_remote());
        assert!(context.is_sampled());
        assert_eq!(format_traceparent(&context), value);
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for value in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(value).is_none(), "{value:?}");
        }
    }

    #[test]
    fn without_an_opentelemetry_layer_there_is_no_context() {
        let span = tracing::info_span!("plain");
        assert_eq!(traceparent_of(&span), None);
    }
}
