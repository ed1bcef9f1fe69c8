//! The `chaos` binary: flags to a [`chaos::Config`], the run, the summary on
//! stdout (its last line machine-readable), and the exit code: 0 only when no
//! saga was lost, no invariant broken and no command applied twice.
//!
//! The one decision to know: the service binaries are taken from this
//! executable's own directory, so build them together: `cargo build --bins`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;

/// Runs the FTGO services as processes in a private namespace, drives sagas
/// through the API while injecting faults, then checks every invariant.
#[derive(Debug, Parser)]
#[command(name = "chaos", version)]
struct Args {
    /// Sagas to drive (a mix of the five demo scenarios).
    #[arg(long, default_value_t = 300)]
    sagas: usize,
    /// Faults to inject, split evenly over sigkill, sigterm, drop_amqp,
    /// drop_redis and duplicates.
    #[arg(long, default_value_t = 75)]
    faults: usize,
    /// Sagas in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seed of the fault schedule and the saga mix (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Queue and Redis key prefix (default: chaos-<random>).
    #[arg(long)]
    namespace: Option<String>,
    /// Leave the namespace's queues, dead letters and Redis keys in place.
    #[arg(long)]
    keep: bool,
    /// Once the faults stop, how long every saga has to become terminal.
    #[arg(long, default_value_t = 120)]
    terminal_timeout_secs: u64,
    /// Directory for the services' logs and faults.log (default: in the temp dir).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Directory of the service binaries (default: this executable's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Minimum driving period in seconds, over which sagas and faults are paced
    /// (default: 0.6 s per fault, at least 10 s).
    #[arg(long)]
    drive_secs: Option<u64>,
    /// RUST_LOG of the services.
    #[arg(long, default_value = "warn")]
    service_log: String,
    /// Seconds a SIGTERMed process has before it is SIGKILLed.
    #[arg(long, default_value_t = 15)]
    grace_secs: u64,
    /// A killed or terminated process stays down for a seeded time up to this
    /// many milliseconds before its restart (0: restarted at once).
    #[arg(long, default_value_t = 0)]
    max_downtime_ms: u64,
    /// No progress output on stderr.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(chaos::random_seed);
    let mut config = chaos::Config::new(args.sagas, args.faults, args.concurrency, seed);
    if let Some(namespace) = args.namespace {
        // Faults and clean-up are scoped by the namespace: an empty one would aim
        // them at a development system running without a namespace.
        if !chaos::is_safe_namespace(&namespace) {
            eprintln!("chaos: --namespace must be 1-64 characters of a-z, 0-9 and '-' (got {namespace:?})");
            return ExitCode::from(2);
        }
        config.namespace = namespace;
    }
    config.keep = args.keep;
    config.terminal_timeout = Duration::from_secs(args.terminal_timeout_secs);
    config.log_dir = args.log_dir;
    config.bin_dir = args.bin_dir;
    config.drive_period = args.drive_secs.map(Duration::from_secs);
    config.service_log = args.service_log;
    config.grace = Duration::from_secs(args.grace_secs);
    config.max_downtime = Duration::from_millis(args.max_downtime_ms);
    config.progress = !args.quiet;
    eprintln!("chaos: seed {seed} (replay with --seed {seed})");
    match chaos::run(config).await {
        Ok(report) => {
            println!("{report}");
            if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(error) => {
            eprintln!("chaos: {error:#}");
            ExitCode::from(2)
        }
    }
}
