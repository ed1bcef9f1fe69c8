//! The one `tracing` set-up of every binary: `RUST_LOG` filters (default
//! [`DEFAULT_FILTER`]), `LOG_FORMAT` picks plain or JSON lines, and when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over OTLP/gRPC
//! (plain logs otherwise). The exporter reads the standard `OTEL_*` variables.
//!
//! Spans carry W3C trace context across the broker (see `messaging::trace`), so
//! one saga is one trace in the collector, whose trace id is the order's UUID.
//!
//! The decision a reader must know: the spans of every request, command, reply
//! and transition are at `debug`, and each layer has its own filter. The logs see
//! what `RUST_LOG` enables; the exporter also sees the project's own spans at
//! `debug` ([`trace_filter`]). So a trace is complete whatever `RUST_LOG` says,
//! and without an exporter, at the default `info`, no span is created at all:
//! at ~19 spans per saga that was 5–7 % of each service's CPU
//! (docs/performance.md).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, FilterFn},
    fmt,
    layer::{Filter, SubscriberExt},
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::settings::LogFormat;

/// Without `RUST_LOG`. lapin's own dump of every returned (unroutable) message is
/// silenced: the publisher turns it into an error that says what happened.
pub const DEFAULT_FILTER: &str = "info,lapin=warn,lapin::returned_messages=error";

/// The crates whose spans the exporter takes at `debug`.
const OWN_CRATES: [&str; 7] = [
    "order_service",
    "consumer_service",
    "restaurant_service",
    "accounting_service",
    "messaging",
    "saga",
    "service_kit",
];

/// `RUST_LOG`, or [`DEFAULT_FILTER`] without it.
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// What the span exporter takes: the project's own spans at `debug` and above
/// (requests, commands, replies, transitions), and whatever `RUST_LOG` enables.
/// Decided from static metadata, so it is cached per call site.
pub fn trace_filter<S>() -> impl Filter<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let own_spans = FilterFn::new(|meta: &tracing::Metadata<'_>| {
        meta.is_span()
            && *meta.level() <= tracing::Level::DEBUG
            && OWN_CRATES.iter().any(|own| {
                meta.target().strip_prefix(own).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
    })
    .with_max_level_hint(tracing::level_filters::LevelFilter::DEBUG);
    own_spans.or(log_filter())
}

/// Keeps the span exporter alive; dropping it flushes the spans not yet sent.
#[must_use = "dropping the guard stops span export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing spans at exit failed: {error}");
        }
    }
}

/// Installs the global subscriber; call once, first thing in `main`, and keep the
/// guard until the end of `main`.
pub fn init(format: LogFormat, service_name: &'static str) -> Telemetry {
    // Colours only on a terminal: piped or collected logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = match format {
        LogFormat::Plain => fmt::layer().with_target(true).with_ansi(ansi).boxed(),
        LogFormat::Json => fmt::layer().json().flatten_event(true).with_current_span(true).boxed(),
    };
    let (provider, otel_error) = match otlp_provider(service_name) {
        Ok(provider) => (provider, None),
        Err(error) => (None, Some(error)),
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name)).with_filter(trace_filter()));
    let result = tracing_subscriber::registry().with(logs.with_filter(log_filter())).with(otel).try_init();
    if let Err(error) = result {
        eprintln!("tracing subscriber already installed: {error}");
    }
    match (&provider, otel_error) {
        (Some(_), _) => tracing::info!("exporting spans over OTLP"),
        (None, Some(error)) => tracing::warn!(%error, "OTLP export is configured but could not start; logs only"),
        (None, None) => {}
    }
    Telemetry { provider }
}

/// An OTLP/gRPC span exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
fn otlp_provider(
    service_name: &'static str,
) -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    let configured = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_ok_and(|v| !v.trim().is_empty());
    if !configured {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
    let resource = Resource::builder().with_service_name(service_name).build();
    Ok(Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build()))
}

/// For tests: logs to the test harness, silent unless `RUST_LOG` asks.
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    let _ = fmt().with_env_filter(filter).with_test_writer().try_init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::span;
    use tracing_subscriber::layer::Context;

    use super::*;

    /// Records the names of the spans it is shown.
    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Spans {
        fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
            if let Ok(mut names) = self.0.lock() {
                names.push(attrs.metadata().name().to_owned());
            }
        }
    }

    impl Spans {
        fn names(&self) -> Vec<String> {
            self.0.lock().map(|names| names.clone()).unwrap_or_default()
        }
    }

    #[test]
    fn the_exporter_gets_the_own_debug_spans_that_the_default_log_filter_skips() {
        let (logs, traces) = (Spans::default(), Spans::default());
        let subscriber = tracing_subscriber::registry()
            .with(logs.clone().with_filter(EnvFilter::new(DEFAULT_FILTER)))
            .with(traces.clone().with_filter(trace_filter()));
        tracing::subscriber::with_default(subscriber, || {
            let _own = tracing::debug_span!("saga").entered();
            let _foreign = tracing::debug_span!(target: "h2::proto", "foreign").entered();
            let _request = tracing::info_span!("request").entered();
        });
        assert_eq!(logs.names(), ["request"], "at the default filter the logs see no debug span");
        let traced = traces.names();
        assert!(traced.contains(&"saga".to_owned()) && traced.contains(&"request".to_owned()), "{traced:?}");
        if std::env::var_os("RUST_LOG").is_none() {
            assert!(!traced.contains(&"foreign".to_owned()), "other crates' debug spans stay out: {traced:?}");
        }
    }
}
