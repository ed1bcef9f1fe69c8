//! The order_service binary: settings from the environment, then the service until
//! SIGTERM or Ctrl-C.

// glibc malloc was ~20 % of the orchestrator's CPU under load (perf, docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    service_kit::threads::tokio_runtime(service_kit::threads::Workers::PerCore)?.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let settings = order_service::Settings::from_env().context("reading settings")?;
    let _telemetry = service_kit::telemetry::init(settings.common.log_format, "order_service");
    tracing::info!(?settings, "starting order_service");
    let shutdown = service_kit::shutdown::on_signal();
    let service = order_service::run(settings, shutdown.clone()).await.context("starting order_service")?;
    service
        .wait_at_most(&shutdown, service_kit::runtime::DRAIN_CAP)
        .await
        .context("order_service stopped with an error")
}
