//! The restaurant_service binary: settings from the environment, telemetry, and
//! the service until SIGTERM or Ctrl-C. Everything else is in the library.

// glibc malloc was ~20 % of the orchestrator's CPU under load (perf, docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    service_kit::threads::tokio_runtime(service_kit::threads::Workers::One)?.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let settings = restaurant_service::Settings::from_env()?;
    let _telemetry = service_kit::telemetry::init(settings.common.log_format, "restaurant_service");
    let shutdown = service_kit::shutdown::on_signal();
    let service = restaurant_service::run(settings, shutdown.clone()).await?;
    service.wait_at_most(&shutdown, service_kit::runtime::DRAIN_CAP).await?;
    Ok(())
}
