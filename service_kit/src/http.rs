//! The operators' HTTP port of every service: `/metrics` (Prometheus text format),
//! `/healthz` (200 while the process answers: liveness) and `/readyz` (200 while
//! the service is connected and consuming, 503 otherwise: readiness), and the
//! service's AsyncAPI document ([`asyncapi_routes`]).
//!
//! The metrics recorder is global to the process (the `metrics` facade), installed
//! once: tests that run several services in one process share it, which is why
//! they assert that counters moved rather than their absolute values.

use std::sync::OnceLock;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    routing::get,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;

/// Histogram buckets (seconds) for saga step latencies: milliseconds to tens of
/// seconds, since a step spans retries and timeouts.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle;
/// `None` if another recorder was installed first.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .map_err(|e| tracing::warn!(error = %e, "metrics buckets refused"))
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    messaging::describe_metrics();
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "a metrics recorder is already installed; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

#[derive(Clone)]
struct Probe {
    ready: watch::Receiver<bool>,
    metrics: Option<PrometheusHandle>,
}

/// Serves the operators' endpoints, plus the service's own `pages`, on `listener`
/// until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    ready: watch::Receiver<bool>,
    pages: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = Probe { ready, metrics: metrics_handle() };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(pages);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn metrics(State(probe): State<Probe>) -> (StatusCode, String) {
    match &probe.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no metrics recorder in this process\n".to_owned()),
    }
}

async fn readyz(State(probe): State<Probe>) -> (StatusCode, &'static str) {
    if *probe.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: not connected or not consuming\n")
    }
}

/// The AsyncAPI document of `service` at `/asyncapi.yaml`, `/asyncapi.json` and, as
/// a readable page, `/asyncapi`. Rendered once, here: the document is a pure
/// function of the compiled-in contract, so it cannot change while the process runs.
pub fn asyncapi_routes(service: &str) -> Result<Router, asyncapi::Error> {
    let asyncapi::Rendered { yaml, json, html } = asyncapi::render(service)?;
    let page = |content_type: &'static str, body: String| {
        // Bytes: each response shares the rendered text instead of copying it.
        let body = axum::body::Bytes::from(body);
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, content_type)], body) }
        })
    };
    Ok(Router::new()
        .route("/asyncapi.yaml", page("application/yaml", yaml))
        .route("/asyncapi.json", page("application/json", json))
        .route("/asyncapi", page("text/html; charset=utf-8", html)))
}
