//! The `loadgen` binary: flags to a plan, the optional baseline run, the run
//! against the system, and the reports (stdout, `--json`, `--markdown`, `--svg`).
//!
//! The system must already be running (e.g. `scripts/run-local.sh --release`);
//! the baseline needs only RabbitMQ and Redis.

// The services' allocator, so the baseline that runs in this process is measured
// on the same footing as the system (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use loadgen::{
    baseline::{Baseline, BaselineSettings},
    chart,
    engine::{self, Plan, SagaRunner},
    mix::Mix,
    report::{BaselineReport, Report, RunDescription},
    schedule::{Mode, Stop},
    system::{Follow, SystemRunner, SystemSettings},
};

/// Drives CreateOrder sagas against a running FTGO system and measures
/// CreateOrder→terminal latency and completed sagas per second.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Args {
    /// order_service's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// Closed loop: sagas in flight at once (ignored with --rate).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Open loop: sagas started per second, whatever the system does.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: the most sagas in flight at once; a start beyond it waits, and
    /// the wait counts in its latency.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Sagas to run (default 1000 unless --duration is given).
    #[arg(long, conflicts_with = "duration")]
    sagas: Option<u64>,
    /// Seconds to start sagas for (the ones in flight then are followed to the end).
    #[arg(long)]
    duration: Option<f64>,
    /// Scenario mix, name=weight: success, consumer_rejected, card_declined,
    /// over_limit, flaky_kitchen.
    #[arg(long, default_value = "success=100")]
    mix: Mix,
    /// Seed of the scenario sequence (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Follow sagas by polling GetOrder instead of WatchOrder.
    #[arg(long)]
    poll: bool,
    /// Milliseconds between GetOrder polls.
    #[arg(long, default_value_t = 20)]
    poll_interval_ms: u64,
    /// gRPC connections to order_service (0: one per 100 sagas in flight).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// A saga not seen to end within this many seconds is UNFINISHED.
    #[arg(long, default_value_t = 60)]
    saga_timeout_secs: u64,
    /// Seconds one unary call (or opening a watch) may take.
    #[arg(long, default_value_t = 10)]
    call_timeout_secs: u64,
    /// Send an idempotency key with every CreateOrder.
    #[arg(long)]
    idempotency_keys: bool,
    /// Sagas run (closed loop, same concurrency) before measuring, not recorded.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// First run the minimal-orchestrator baseline on the same broker and Redis,
    /// with the same concurrency/rate/sagas, and report the ratio.
    #[arg(long)]
    baseline: bool,
    /// Run only the baseline (no system needed).
    #[arg(long)]
    baseline_only: bool,
    /// RabbitMQ, for the baseline.
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", hide_env_values = true)]
    amqp_url: String,
    /// Redis, for the baseline.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    redis_url: String,
    /// The baseline consumers' prefetch (the services' AMQP_PREFETCH).
    #[arg(long, env = "AMQP_PREFETCH", default_value_t = 64)]
    prefetch: u16,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a Markdown summary here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write an SVG chart of throughput and latency over time here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No progress output on stderr.
    #[arg(long)]
    quiet: bool,
}

impl Args {
    fn mode(&self) -> Mode {
        match self.rate {
            Some(rate) => Mode::Open { rate, max_in_flight: self.max_in_flight },
            None => Mode::Closed { concurrency: self.concurrency.max(1) },
        }
    }

    fn stop(&self) -> Stop {
        match (self.sagas, self.duration) {
            (Some(n), _) => Stop::Sagas(n),
            (None, Some(secs)) => Stop::Duration(Duration::from_secs_f64(secs.max(0.0))),
            (None, None) => Stop::Sagas(1000),
        }
    }

    fn plan(&self, label: &str, seed: u64) -> Plan {
        Plan {
            mode: self.mode(),
            stop: self.stop(),
            mix: self.mix.clone(),
            seed,
            label: label.to_owned(),
            progress: !self.quiet,
        }
    }

    fn warmup_plan(&self, label: &str, seed: u64) -> Plan {
        Plan {
            mode: Mode::Closed { concurrency: self.mode().max_in_flight().min(self.concurrency.max(1)) },
            stop: Stop::Sagas(self.warmup),
            ..self.plan(&format!("{label} warm-up"), seed)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be a positive number");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!("loadgen: seed {seed}, mix {}", args.mix);

    let baseline = if args.baseline || args.baseline_only {
        let settings = BaselineSettings {
            amqp_url: args.amqp_url.clone(),
            redis_url: args.redis_url.clone(),
            prefetch: args.prefetch,
            saga_timeout: Duration::from_secs(args.saga_timeout_secs),
        };
        let runner = Arc::new(Baseline::start(&settings).await.context("starting the baseline")?);
        eprintln!("loadgen: baseline in namespace {}", runner.namespace());
        let result = measure(&args, "baseline", seed, runner.clone()).await;
        let Ok(runner) = Arc::try_unwrap(runner) else { anyhow::bail!("the baseline is still in use") };
        if let Err(error) = runner.cleanup().await {
            eprintln!("loadgen: cleaning up the baseline's namespace: {error:#}");
        }
        let report = BaselineReport::of(&result);
        println!(
            "baseline: {} sagas in {:.2} s: {:.1} sagas/s, p50 {:.1} ms, p99 {:.1} ms",
            report.completed, report.elapsed_secs, report.sagas_per_sec, report.latency_ms.p50, report.latency_ms.p99
        );
        Some((report, result))
    } else {
        None
    };

    let description = |target: String, follow: &str| RunDescription {
        target,
        mode: args.mode(),
        follow: follow.to_owned(),
        mix: args.mix.percentages(),
        seed,
    };
    let report = match (args.baseline_only, baseline) {
        (true, Some((_, result))) => Report::new(description("in-process baseline".into(), "reply"), &result, None),
        (_, baseline) => {
            let follow = if args.poll {
                Follow::Poll { interval: Duration::from_millis(args.poll_interval_ms) }
            } else {
                Follow::Watch
            };
            let connections = if args.connections > 0 {
                args.connections
            } else {
                args.mode().max_in_flight().min(100_000).div_ceil(100)
            };
            let settings = SystemSettings {
                follow,
                call_timeout: Duration::from_secs(args.call_timeout_secs),
                saga_timeout: Duration::from_secs(args.saga_timeout_secs),
                idempotency_keys: args.idempotency_keys,
                key_prefix: format!("loadgen-{seed:x}-{}", std::process::id()),
            };
            let runner = Arc::new(SystemRunner::connect(&args.target, connections, settings).await?);
            let result = measure(&args, "system", seed, runner).await;
            let follow = if args.poll { "poll" } else { "watch" };
            Report::new(description(args.target.clone(), follow), &result, baseline.map(|(report, _)| report))
        }
    };

    println!("{}", report.to_text());
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json()).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.to_markdown()).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        chart::write_svg(&report, path)?;
    }
    Ok(())
}

/// The warm-up (if any), then the measured run.
async fn measure<R: SagaRunner>(args: &Args, label: &str, seed: u64, runner: Arc<R>) -> engine::RunResult {
    if args.warmup > 0 {
        engine::run(&args.warmup_plan(label, seed.wrapping_add(1)), runner.clone()).await;
    }
    engine::run(&args.plan(label, seed), runner).await
}
