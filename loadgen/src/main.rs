//! The `loadgen` binary: flags to a plan, the optional baseline run, the run
//! against the system, and the reports (stdout, `--json`, `--markdown`, `--svg`);
//! or, with `--targets`, the performance targets' whole protocol and a verdict
//! per target (exit status 2 when one is not met); or, with `--curve`, the open
//! loop's latency at shares of each side's maximum.
//!
//! The system must already be running (e.g. `scripts/run-local.sh --release`);
//! the baseline needs only RabbitMQ and Redis.

// The services' allocator, so the baseline that runs in this process is measured
// on the same footing as the system (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use loadgen::{
    baseline::{Baseline, BaselineSettings},
    chart,
    cpu::{self, CpuTally, ProcessSet},
    curve::{self, CurvePoint, CurveProtocol, CurveReport, CurveSide},
    engine::{self, Plan, RunResult, SagaRunner},
    interrupt,
    mix::Mix,
    report::{BaselineReport, Report, RoundReport, RunDescription},
    schedule::{Mode, Stop},
    system::{Follow, SystemRunner, SystemSettings},
    targets::{self, ClosedLoop, Protocol, TargetsReport},
};

/// Drives CreateOrder sagas against a running FTGO system and measures
/// CreateOrder→terminal latency and completed sagas per second.
#[derive(Debug, Clone, Parser)]
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
    /// With --baseline: alternate baseline and system this many times, each
    /// segment a 1/ROUNDS share of --sagas or --duration, and report the median of
    /// the rounds' ratios, which a drift of the machine's speed moves less.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,
    /// RabbitMQ, for the baseline.
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", hide_env_values = true)]
    amqp_url: String,
    /// Redis, for the baseline.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    redis_url: String,
    /// The baseline consumers' prefetch (the services' AMQP_PREFETCH).
    #[arg(long, env = "AMQP_PREFETCH", default_value_t = 64)]
    prefetch: u16,
    /// Report CPU per saga of these processes (comma-separated kernel names, or
    /// `system` for the four services, redis-server and beam.smp) and of loadgen,
    /// and the whole machine's busy and stolen shares, over the measured
    /// segments. Linux only.
    #[arg(long, value_name = "NAMES")]
    cpu_of: Option<String>,
    /// With --cpu-of: also split each process's CPU per saga by thread name
    /// (e.g. lapin's I/O thread against the tokio workers).
    #[arg(long, requires = "cpu_of")]
    cpu_threads: bool,
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
    /// Measure the performance targets of docs/performance.md in one run (its
    /// protocol: 2000 warm-up sagas; 64 in flight and then one in flight, each
    /// against the baseline in 5 rounds; the open loop at half the closed loop's
    /// rate for 30 s) and print a verdict per target; --json and --markdown get
    /// the verdicts and every phase's report. Exits with status 2 when a target
    /// is not met.
    #[arg(long, conflicts_with_all = [
        "concurrency", "rate", "max_in_flight", "sagas", "duration", "mix", "poll",
        "poll_interval_ms", "connections", "idempotency_keys", "warmup",
        "baseline", "baseline_only", "rounds", "svg",
    ])]
    targets: bool,
    /// With --targets: multiply the protocol's saga counts and its open-loop
    /// duration by this (0 < F <= 10): below 1 for a quicker, noisier look,
    /// above 1 for a longer one.
    #[arg(long, requires = "targets", default_value_t = 1.0, value_name = "F")]
    targets_scale: f64,
    /// Measure the open loop's latency against load for the system and the
    /// baseline: 2000 warm-up sagas; 64 in flight against the baseline in 5
    /// rounds, which sets each side's maximum; then, for each of --curve-shares,
    /// the open loop for 20 s at that share of the baseline's maximum and of the
    /// system's. Prints the highest share each side sustains with its p99 within
    /// --slo-p99-ms and no failure (at that share and every smaller one).
    #[arg(long, conflicts_with_all = [
        "concurrency", "rate", "max_in_flight", "sagas", "duration", "mix", "poll",
        "poll_interval_ms", "connections", "idempotency_keys", "warmup",
        "baseline", "baseline_only", "rounds", "svg", "targets",
    ])]
    curve: bool,
    /// With --curve: the open loop's rates, as comma-separated shares (0, 1] of
    /// each side's closed-loop maximum.
    #[arg(long, requires = "curve", value_delimiter = ',', default_values_t = curve::DEFAULT_SHARES, value_name = "SHARES")]
    curve_shares: Vec<f64>,
    /// With --curve: the p99 objective in milliseconds that each point is read against.
    #[arg(long, requires = "curve", default_value_t = 25.0, value_name = "MS")]
    slo_p99_ms: f64,
    /// With --curve: multiply its saga counts and the seconds per point by this
    /// (0 < F <= 10).
    #[arg(long, requires = "curve", default_value_t = 1.0, value_name = "F")]
    curve_scale: f64,
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

    /// Round `round` (from 0) of `--rounds`: an even share of the run, the last
    /// round taking what does not divide.
    fn segment_plan(&self, label: &str, seed: u64, round: u64) -> Plan {
        let rounds = self.rounds;
        let stop = match self.stop() {
            Stop::Sagas(n) if round + 1 == rounds => Stop::Sagas(n - n / rounds * (rounds - 1)),
            Stop::Sagas(n) => Stop::Sagas(n / rounds),
            Stop::Duration(d) => Stop::Duration(d / rounds as u32),
        };
        let label = if rounds > 1 { format!("{label} {}/{rounds}", round + 1) } else { label.to_owned() };
        Plan { stop, ..self.plan(&label, seed) }
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
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be a positive number");
    }
    // Checked before anything connects; `run_targets` runs this protocol.
    let protocol = args.targets.then(|| Protocol::scaled(args.targets_scale)).transpose()?;
    let curve_protocol =
        args.curve.then(|| CurveProtocol::new(args.curve_scale, &args.curve_shares, args.slo_p99_ms)).transpose()?;
    let rounds = args.rounds;
    if rounds > 1 {
        anyhow::ensure!(args.baseline && !args.baseline_only, "--rounds compares with the baseline: add --baseline");
        if let Stop::Sagas(n) = args.stop() {
            anyhow::ensure!(n >= rounds, "--sagas must be at least --rounds");
        }
    }
    let processes =
        args.cpu_of.as_deref().map(ProcessSet::parse).transpose()?.map(|set| set.with_threads(args.cpu_threads));
    if let Some(set) = &processes {
        set.snapshot().context("--cpu-of")?;
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!("loadgen: seed {seed}, mix {}", args.mix);

    // From here a signal no longer ends loadgen by itself: what it started is
    // cleaned up first.
    let mut interrupts = interrupt::Interrupts::listen();
    let system = if args.baseline_only {
        None
    } else {
        tokio::select! {
            system = connect(&args, seed) => Some(system?),
            signal = interrupts.next() => return Ok(stopped(signal)),
        }
    };

    // The baseline starts (declaring its namespace) only once the system answered,
    // so a wrong --target leaves nothing behind.
    let baseline = if args.baseline || args.baseline_only || args.targets || args.curve {
        let settings = BaselineSettings {
            amqp_url: args.amqp_url.clone(),
            redis_url: args.redis_url.clone(),
            prefetch: args.prefetch,
            saga_timeout: Duration::from_secs(args.saga_timeout_secs),
        };
        // A start abandoned half-way (a signal, or an error once something is
        // declared) leaves what it made: it is purged by the namespace's name.
        let namespace = Baseline::new_namespace();
        let started = tokio::select! {
            started = Baseline::start(&settings, namespace.clone()) => started.map_err(Abandoned::Failed),
            signal = interrupts.next() => Err(Abandoned::Signal(signal)),
        };
        match started {
            Ok(runner) => {
                eprintln!("loadgen: baseline in namespace {}", runner.namespace());
                Some(Arc::new(runner))
            }
            Err(abandoned) => {
                bounded(Baseline::purge(&settings, &namespace), &mut interrupts, namespace.prefix()).await;
                return match abandoned {
                    Abandoned::Signal(signal) => Ok(stopped(signal)),
                    Abandoned::Failed(error) => Err(error.context("starting the baseline")),
                };
            }
        }
    } else {
        None
    };
    let processes = processes.as_ref();
    let work = async {
        match (&system, protocol, curve_protocol) {
            (Some(system), Some(protocol), _) => {
                run_targets(&args, protocol, seed, system, baseline.as_ref(), processes)
                    .await
                    .map(|r| Output::Targets(Box::new(r)))
            }
            (Some(system), None, Some(curve)) => run_curve(&args, curve, seed, system, baseline.as_ref(), processes)
                .await
                .map(|r| Output::Curve(Box::new(r))),
            _ => measure(&args, seed, system.as_ref(), baseline.as_ref(), processes)
                .await
                .map(|r| Output::One(Box::new(r))),
        }
    };
    // On a signal the run is dropped, which aborts its sagas; the baseline's
    // namespace is deleted all the same, and no report is written.
    let ended = tokio::select! {
        outcome = work => Ended::Ran(outcome),
        signal = interrupts.next() => Ended::Interrupted(signal),
    };
    if let Some(runner) = baseline {
        let namespace = runner.namespace().to_owned();
        if bounded(release(runner), &mut interrupts, &namespace).await && matches!(ended, Ended::Interrupted(_)) {
            eprintln!("loadgen: the baseline's namespace {namespace} is deleted");
        }
    }
    let outcome = match ended {
        Ended::Ran(outcome) => outcome,
        Ended::Interrupted(signal) => return Ok(stopped(signal)),
    };
    let write = |path: &Option<PathBuf>, text: String| match path {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display())),
        None => Ok(()),
    };
    match outcome? {
        Output::One(report) => {
            println!("{}", report.to_text());
            write(&args.json, report.to_json())?;
            write(&args.markdown, report.to_markdown())?;
            if let Some(path) = &args.svg {
                chart::write_svg(&report, path)?;
            }
        }
        Output::Targets(report) => {
            println!("{}", report.to_text());
            write(&args.json, report.to_json())?;
            write(&args.markdown, report.to_markdown())?;
            if !report.all_met {
                return Ok(ExitCode::from(2));
            }
        }
        Output::Curve(report) => {
            println!("{}", report.to_text());
            write(&args.json, report.to_json())?;
            write(&args.markdown, report.to_markdown())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A connection to the system as the flags describe it: by default one HTTP/2
/// connection per 100 sagas in flight, since the server caps the streams of one.
async fn connect(args: &Args, seed: u64) -> anyhow::Result<Arc<SystemRunner>> {
    let follow =
        if args.poll { Follow::Poll { interval: Duration::from_millis(args.poll_interval_ms) } } else { Follow::Watch };
    let connections =
        if args.connections > 0 { args.connections } else { args.mode().max_in_flight().min(100_000).div_ceil(100) };
    let settings = SystemSettings {
        follow,
        call_timeout: Duration::from_secs(args.call_timeout_secs),
        saga_timeout: Duration::from_secs(args.saga_timeout_secs),
        idempotency_keys: args.idempotency_keys,
        key_prefix: format!("loadgen-{seed:x}-{}", std::process::id()),
    };
    Ok(Arc::new(SystemRunner::connect(&args.target, connections, settings).await?))
}

/// Stops the baseline and deletes its namespace, once the sagas of a run
/// dropped by a signal have let go of it (their tasks are aborted, and end at
/// their next await).
async fn release(mut runner: Arc<Baseline>) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Arc::try_unwrap(runner) {
            Ok(baseline) => return baseline.cleanup().await,
            Err(shared) if std::time::Instant::now() < deadline => {
                runner = shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => anyhow::bail!("the baseline is still in use after 10 s"),
        }
    }
}

/// How long the baseline's clean-up may take before loadgen gives up on it.
const CLEANUP_CAP: Duration = Duration::from_secs(30);

/// Runs a clean-up of the baseline's namespace for at most [`CLEANUP_CAP`], and
/// not past a further signal (a stuck broker is when one presses Ctrl-C twice);
/// says what may be left when it does not finish. True once it is done.
async fn bounded(
    cleanup: impl Future<Output = anyhow::Result<()>>,
    interrupts: &mut interrupt::Interrupts,
    namespace: &str,
) -> bool {
    let failure = tokio::select! {
        done = cleanup => match done {
            Ok(()) => return true,
            Err(error) => format!("{error:#}"),
        },
        _ = tokio::time::sleep(CLEANUP_CAP) => format!("not done within {} s", CLEANUP_CAP.as_secs()),
        signal = interrupts.next() => format!("stopped by a second {}", signal.name()),
    };
    eprintln!(
        "loadgen: the baseline's namespace {namespace} may be left ({failure}); delete its queues and exchanges \
         {namespace}.* and its keys {namespace}:* by hand"
    );
    false
}

/// The exit status of a run a signal stopped, which writes no report.
fn stopped(signal: interrupt::Interrupt) -> ExitCode {
    eprintln!("loadgen: interrupted by {}; no report", signal.name());
    ExitCode::from(signal.exit_status())
}

/// Why the baseline's start was abandoned.
enum Abandoned {
    Signal(interrupt::Interrupt),
    Failed(anyhow::Error),
}

/// How the run ended: it ran to its end (or failed), or a signal stopped it.
enum Ended {
    Ran(anyhow::Result<Output>),
    Interrupted(interrupt::Interrupt),
}

/// What a run produced: one measurement, the targets' phases and verdicts, or
/// a latency curve.
enum Output {
    One(Box<Report>),
    Targets(Box<TargetsReport>),
    Curve(Box<CurveReport>),
}

/// One measurement as the flags describe it: the baseline's and the system's
/// segments, once or for every round (each side warms up before its first), and
/// their report.
async fn measure(
    args: &Args,
    seed: u64,
    system: Option<&Arc<SystemRunner>>,
    baseline: Option<&Arc<Baseline>>,
    processes: Option<&ProcessSet>,
) -> anyhow::Result<Report> {
    let rounds = args.rounds;
    let (mut baseline_result, mut system_result) = (None::<RunResult>, None::<RunResult>);
    let mut round_reports = Vec::new();
    let (mut baseline_cpu, mut system_cpu) = (CpuTally::default(), CpuTally::default());
    for round in 0..rounds {
        let b = match baseline {
            Some(runner) => {
                let cpu = processes.map(|set| (set, &mut baseline_cpu));
                Some(segment(args, "baseline", seed, round, runner.clone(), cpu).await?)
            }
            None => None,
        };
        let s = match system {
            Some(runner) => {
                let cpu = processes.map(|set| (set, &mut system_cpu));
                Some(segment(args, "system", seed, round, runner.clone(), cpu).await?)
            }
            None => None,
        };
        if let (Some(b), Some(s)) = (&b, &s)
            && rounds > 1
        {
            round_reports.push(RoundReport::of(b, s));
        }
        append(&mut baseline_result, b);
        append(&mut system_result, s);
    }
    let ticks = cpu::ticks_per_second();
    let cpu_report = |tally: &CpuTally| processes.map(|_| tally.report(ticks));
    let baseline_report = baseline_result
        .as_ref()
        .map(|result| BaselineReport { cpu: cpu_report(&baseline_cpu), ..BaselineReport::of(result) });
    if let Some(report) = &baseline_report {
        println!(
            "baseline: {} sagas in {:.2} s: {:.1} sagas/s, p50 {:.1} ms, p99 {:.1} ms",
            report.completed, report.elapsed_secs, report.sagas_per_sec, report.latency_ms.p50, report.latency_ms.p99
        );
    }

    let description = |target: String, follow: &str| RunDescription {
        target,
        mode: args.mode(),
        follow: follow.to_owned(),
        mix: args.mix.percentages(),
        seed,
    };
    Ok(match (system_result, baseline_result) {
        (Some(result), _) => {
            let follow = if args.poll { "poll" } else { "watch" };
            Report::new(description(args.target.clone(), follow), &result, baseline_report)
                .with_rounds(round_reports)
                .with_cpu(cpu_report(&system_cpu))
        }
        (None, Some(result)) => Report::new(description("in-process baseline".into(), "reply"), &result, None)
            .with_cpu(cpu_report(&baseline_cpu)),
        (None, None) => anyhow::bail!("nothing was run"),
    })
}

/// `--targets`: docs/performance.md's protocol on one system and one baseline,
/// each phase's report printed as it ends. The open loop's rate is half of what
/// this run's closed loop completed, as the targets define it; it gets its own
/// connections, as many as a `--rate` run would open. A warm-up whose sagas do
/// not all end as expected stops the run: a broken system is not measured.
async fn run_targets(
    args: &Args,
    p: Protocol,
    seed: u64,
    system: &Arc<SystemRunner>,
    baseline: Option<&Arc<Baseline>>,
    processes: Option<&ProcessSet>,
) -> anyhow::Result<TargetsReport> {
    let (closed, closed_args) = warm_up_and_close(args, &p.closed, seed, system, baseline, processes).await?;

    let one_args = Args { concurrency: 1, sagas: Some(p.one_sagas), warmup: p.one_warmup, ..closed_args };
    let one = measure(&one_args, seed.wrapping_add(20), Some(system), baseline, processes).await?;
    println!("{}", one.to_text());

    let rate = (closed.sagas_per_sec / 2.0).round();
    let open = if rate >= 1.0 {
        let open_args = Args {
            rate: Some(rate),
            sagas: None,
            duration: Some(p.open_secs),
            warmup: p.open_warmup,
            rounds: 1,
            baseline: false,
            ..args.clone()
        };
        let open_system = connect(&open_args, seed).await?;
        let open = measure(&open_args, seed.wrapping_add(30), Some(&open_system), None, processes).await?;
        println!("{}", open.to_text());
        Some(open)
    } else {
        eprintln!("loadgen: the closed loop completed {:.1} sagas/s, too few for an open loop", closed.sagas_per_sec);
        None
    };
    Ok(TargetsReport::new(p, closed, one, open))
}

/// How `--targets` and `--curve` start: the system's warm-up (not measured),
/// then the closed loop against the baseline, printed. Returns its report and
/// the closed loop's arguments. A warm-up whose sagas do not all end as expected
/// stops the run: a broken system is not measured.
async fn warm_up_and_close(
    args: &Args,
    p: &ClosedLoop,
    seed: u64,
    system: &Arc<SystemRunner>,
    baseline: Option<&Arc<Baseline>>,
    processes: Option<&ProcessSet>,
) -> anyhow::Result<(Report, Args)> {
    let warmup = Plan {
        mode: Mode::Closed { concurrency: p.closed_concurrency },
        stop: Stop::Sagas(p.warmup_sagas),
        ..args.plan("warm-up", seed.wrapping_add(1))
    };
    let warmed = engine::run(&warmup, system.clone()).await;
    let recorder = &warmed.recorder;
    anyhow::ensure!(
        recorder.completed_count() == recorder.started_count() && recorder.unexpected_count() == 0,
        "the warm-up's sagas did not all end as expected (final states {:?}, errors {:?}): is every service running?",
        recorder.final_states(),
        recorder.errors()
    );
    let closed_args = Args {
        concurrency: p.closed_concurrency,
        rate: None,
        sagas: Some(p.closed_sagas),
        duration: None,
        warmup: p.closed_warmup,
        rounds: p.rounds,
        baseline: true,
        ..args.clone()
    };
    let closed = measure(&closed_args, seed, Some(system), baseline, processes).await?;
    println!("{}", closed.to_text());
    Ok((closed, closed_args))
}

/// `--curve`: the closed loop sets each side's maximum, then each share of it is
/// run as an open loop, the baseline's point first and the system's next, so a
/// drift of the machine's speed falls on both sides of a share alike. The
/// system's open loops share their own connections, as many as a `--rate` run
/// would open.
async fn run_curve(
    args: &Args,
    p: CurveProtocol,
    seed: u64,
    system: &Arc<SystemRunner>,
    baseline: Option<&Arc<Baseline>>,
    processes: Option<&ProcessSet>,
) -> anyhow::Result<CurveReport> {
    let baseline = baseline.context("--curve runs the baseline")?;
    let (closed, _) = warm_up_and_close(args, &p.closed, seed, system, Some(baseline), processes).await?;
    let maximum = [closed.baseline_sagas_per_sec.unwrap_or_default(), closed.sagas_per_sec];
    let failed = targets::failures(&closed);
    if failed > 0 {
        eprintln!("loadgen: the closed loop had {failed} failures; the system's maximum counts the sagas that ended");
    }

    let open_system = connect(&Args { rate: Some(1.0), ..args.clone() }, seed).await?;
    let mut points: [Vec<CurvePoint>; 2] = Default::default();
    for (i, &share) in p.shares.iter().enumerate() {
        for (side, name) in ["baseline", "system"].into_iter().enumerate() {
            let rate = (share * maximum[side]).round();
            if rate < 1.0 {
                let shown = curve::percent(share);
                eprintln!("loadgen: {name}: {shown} % of {:.1}/s is under 1/s; not run", maximum[side]);
                points[side].push(CurvePoint::skipped(share));
                continue;
            }
            let point_args = Args {
                rate: Some(rate),
                sagas: None,
                duration: Some(p.point_secs),
                warmup: p.point_warmup,
                rounds: 1,
                baseline: false,
                baseline_only: side == 0,
                ..args.clone()
            };
            let point_seed = seed.wrapping_add(40 + i as u64);
            let report = if side == 0 {
                measure(&point_args, point_seed, None, Some(baseline), processes).await?
            } else {
                measure(&point_args, point_seed, Some(&open_system), None, processes).await?
            };
            let point = CurvePoint::of(share, &report, p.slo_p99_ms);
            let steal = point.steal_percent.map_or_else(String::new, |s| format!(", steal {s:.1} %"));
            println!(
                "curve: {name} at {} % ({rate:.0}/s): {:.1} sagas/s, p50 {:.1} ms, p99 {:.1} ms, failures {}{steal}",
                curve::percent(share),
                point.sagas_per_sec,
                point.latency_ms.p50,
                point.latency_ms.p99,
                point.failures
            );
            points[side].push(point);
        }
    }
    let [baseline_points, system_points] = points;
    Ok(CurveReport {
        system: CurveSide::new(maximum[1], system_points),
        baseline: CurveSide::new(maximum[0], baseline_points),
        protocol: p,
        closed_loop: closed,
    })
}

/// One measured segment: round `round` of `--rounds`, after the warm-up (if
/// any) when it is the first; with `cpu`, the processes' CPU during it (not
/// during the warm-up) is added to the tally.
async fn segment<R: SagaRunner>(
    args: &Args,
    label: &str,
    seed: u64,
    round: u64,
    runner: Arc<R>,
    cpu: Option<(&ProcessSet, &mut CpuTally)>,
) -> anyhow::Result<RunResult> {
    if round == 0 && args.warmup > 0 {
        engine::run(&args.warmup_plan(label, seed.wrapping_add(1)), runner.clone()).await;
    }
    let before = cpu.as_ref().map(|(set, _)| set.snapshot()).transpose()?;
    let result = engine::run(&args.segment_plan(label, seed, round), runner).await;
    if let (Some((set, tally)), Some(before)) = (cpu, before) {
        tally.add(set, &before, &set.snapshot()?, result.recorder.completed_count());
    }
    Ok(result)
}

fn append(total: &mut Option<RunResult>, segment: Option<RunResult>) {
    match (total.as_mut(), segment) {
        (Some(total), Some(segment)) => total.append(&segment),
        (None, segment) => *total = segment,
        (Some(_), None) => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["loadgen"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("valid arguments")
    }

    /// Why clap refuses `argv` (a panic if it accepts it).
    fn refused(argv: &[&str]) -> ErrorKind {
        match Args::try_parse_from(argv) {
            Ok(_) => panic!("accepted: {argv:?}"),
            Err(error) => error.kind(),
        }
    }

    #[test]
    fn rounds_share_the_sagas_and_the_last_takes_the_rest() {
        let a = args(&["--sagas", "10", "--rounds", "3", "--baseline"]);
        let stops: Vec<_> = (0..3).map(|r| a.segment_plan("system", 1, r).stop).collect();
        assert!(matches!(stops[..], [Stop::Sagas(3), Stop::Sagas(3), Stop::Sagas(4)]), "{stops:?}");
        assert_eq!(a.segment_plan("system", 1, 1).label, "system 2/3");
        let whole = args(&["--sagas", "10"]);
        assert!(matches!(whole.segment_plan("system", 1, 0).stop, Stop::Sagas(10)));
        assert_eq!(whole.segment_plan("system", 1, 0).label, "system");
    }

    #[test]
    fn rounds_share_a_duration_evenly() {
        let a = args(&["--duration", "30", "--rate", "100", "--rounds", "4", "--baseline"]);
        let stop = a.segment_plan("baseline", 1, 3).stop;
        assert!(matches!(stop, Stop::Duration(d) if d == Duration::from_millis(7500)), "{stop:?}");
    }

    #[test]
    fn targets_set_their_own_load_and_take_a_scale() {
        assert!(args(&["--targets"]).targets);
        assert_eq!(args(&["--targets", "--targets-scale", "0.1"]).targets_scale, 0.1);
        let load_flags = [
            &["--rate", "10"][..],
            &["--concurrency", "8"],
            &["--baseline"],
            &["--mix", "success=1"],
            &["--connections", "4"],
            &["--max-in-flight", "8"],
            &["--poll-interval-ms", "5"],
        ];
        for other in load_flags {
            let mut argv = vec!["loadgen", "--targets"];
            argv.extend_from_slice(other);
            assert_eq!(refused(&argv), ErrorKind::ArgumentConflict, "--targets with {other:?}");
        }
        assert_eq!(refused(&["loadgen", "--targets-scale", "0.5"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn threads_are_split_only_for_the_processes_of_cpu_of() {
        assert_eq!(refused(&["loadgen", "--cpu-threads"]), ErrorKind::MissingRequiredArgument, "needs --cpu-of");
        assert!(args(&["--cpu-of", "system", "--cpu-threads"]).cpu_threads);
        assert!(!args(&["--cpu-of", "system"]).cpu_threads);
    }

    #[test]
    fn a_curve_sets_its_own_load_and_takes_shares_an_objective_and_a_scale() {
        let a = args(&["--curve"]);
        assert!(a.curve);
        assert_eq!(a.curve_shares, curve::DEFAULT_SHARES);
        assert_eq!((a.slo_p99_ms, a.curve_scale), (25.0, 1.0));
        let b = args(&["--curve", "--curve-shares", "0.05,0.25", "--slo-p99-ms", "50", "--curve-scale", "0.1"]);
        assert_eq!((b.curve_shares, b.slo_p99_ms, b.curve_scale), (vec![0.05, 0.25], 50.0, 0.1));
        for other in [&["--rate", "10"][..], &["--targets"], &["--baseline"], &["--sagas", "5"]] {
            let mut argv = vec!["loadgen", "--curve"];
            argv.extend_from_slice(other);
            assert_eq!(refused(&argv), ErrorKind::ArgumentConflict, "--curve with {other:?}");
        }
        for alone in [&["--curve-shares", "0.1"][..], &["--slo-p99-ms", "10"], &["--curve-scale", "2"]] {
            let mut argv = vec!["loadgen"];
            argv.extend_from_slice(alone);
            assert_eq!(refused(&argv), ErrorKind::MissingRequiredArgument, "{alone:?} needs --curve");
        }
    }

    #[test]
    fn rounds_are_bounded() {
        assert_eq!(refused(&["loadgen", "--rounds", "0"]), ErrorKind::ValueValidation);
        assert_eq!(refused(&["loadgen", "--rounds", "101"]), ErrorKind::ValueValidation);
    }
}
