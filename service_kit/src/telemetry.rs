//! The one `tracing` set-up of every binary: `RUST_LOG` filters (default
//! [`DEFAULT_FILTER`]), `LOG_FORMAT` picks plain or JSON lines, and when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over OTLP/gRPC
//! (plain logs otherwise). The exporter reads the standard `OTEL_*` variables.
//!
//! Spans carry W3C trace context across the broker (see `messaging::trace`), so
//! one saga is one trace in the collector, whose trace id is the order's UUID.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::LogFormat;

/// Without `RUST_LOG`. lapin's own dump of every returned (unroutable) message is
/// silenced: the publisher turns it into an error that says what happened.
pub const DEFAULT_FILTER: &str = "info,lapin=warn,lapin::returned_messages=error";

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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
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
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name)));
    let result = tracing_subscriber::registry().with(filter).with(logs).with(otel).try_init();
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
