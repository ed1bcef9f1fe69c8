//! memory_targets: the memory targets of docs/performance.md in one command, each
//! phase in a fresh namespace that is deleted when the phase ends:
//!
//! 1. **in flight**: order_service alone (no participant, so no saga ends; a
//!    10-minute step timeout, so none is retried), warm-up sagas, then the
//!    measured ones while its `VmRSS` is sampled;
//! 2. **finished**: the four services, sagas run to their end, `MEMORY USAGE` of
//!    every key of the namespace by service; then order_service restarted with a
//!    short retention, and its keys read again once the sweeper pruned;
//! 3. **stored**: throughput at 64 in flight in one namespace without and with
//!    100,000 more finished sagas (copies added and deleted between the sides),
//!    in rounds, each side after a restart, the side that goes first alternating.
//!
//! The one decision to know: the services run as the separate processes a
//! deployment runs (the binaries next to this one), with their defaults (none of
//! the caller's service settings is passed on), because the RSS measured must be
//! order_service's alone and the figures those of the defaults.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use chaos::{
    admin::escape_glob,
    processes::{Binaries, Managed, ProcessSpec, Service, Signal, free_ports},
};
use clap::Parser;
use futures::StreamExt as _;
use lapin::{Channel, Connection, ConnectionProperties};
use loadgen::{
    engine::{self, Plan},
    memory::{self, Finished, InFlight, MemoryReport, StoredRound},
    mix::{Mix, Scenario},
    schedule::{Mode, Stop},
    system::{Follow, SystemRunner, SystemSettings, order_clients},
};
use proto::order::v1::order_service_client::OrderServiceClient;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Copies one finished saga under fresh ids, and deletes such copies (both also
/// runnable with `redis-cli --eval`).
const SEED_SCRIPT: &str = include_str!("../seed-finished-sagas.lua");
const UNSEED_SCRIPT: &str = include_str!("../unseed-finished-sagas.lua");

/// Copies per script call: Redis serves nothing else while one runs.
const SEED_BATCH: u64 = 1000;

/// How long one CreateOrder may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Sagas in flight while sagas are created or run.
const CONCURRENCY: usize = 64;

#[derive(Debug, Parser)]
#[command(
    name = "memory_targets",
    about = "Measures the memory targets of docs/performance.md: order_service's RSS per in-flight saga, Redis's \
             bytes per finished saga and after the retention, and throughput without and with 100,000 more stored sagas. Starts \
             the service binaries itself; needs RabbitMQ and Redis. Exits with status 2 when a target is not met."
)]
struct Args {
    /// Where the four service binaries are (default: the directory of this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", hide_env_values = true)]
    amqp_url: String,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    redis_url: String,
    /// Sagas left in flight for the RSS reading (the target's 10,000).
    #[arg(long, default_value_t = 10_000)]
    in_flight: u64,
    /// Sagas before anything is measured: created before the first RSS reading
    /// (connections, caches, pools), run before each stored-sagas measurement.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// Sagas run to their end for Redis's bytes per finished saga; also the
    /// finished sagas the stored-sagas comparison's namespace starts with.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    finished: u64,
    /// The retention (seconds) order_service is restarted with before the second reading.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    retention_secs: u64,
    /// Finished sagas added for the "with" side of the stored-sagas comparison
    /// (0 skips it, and its target is then not met).
    #[arg(long, default_value_t = 100_000)]
    stored: u64,
    /// Sagas measured per side and round of the stored-sagas comparison.
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1..))]
    stored_sagas: u64,
    /// Rounds of the stored-sagas comparison (each side after a restart, the first
    /// side alternating); the verdict reads the median of the rounds' changes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a Markdown summary here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Where the services' logs go (default: a new directory under the temp dir).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Leave each phase's queues and keys in place.
    #[arg(long)]
    keep: bool,
    /// No progress output on stderr.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let run = Run::new(&args).await?;
    // On a signal the phase's future is dropped, which kills its services
    // (`kill_on_drop`); the namespaces are deleted all the same.
    let result = tokio::select! {
        result = run.all(&args) => result,
        signal = loadgen::interrupt::interrupted() => Err(anyhow::anyhow!("interrupted by {}", signal.name())),
    };
    run.cleanup(args.keep).await;
    run.close().await;
    let report = result?;
    println!("{}", report.to_text());
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json()).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.to_markdown()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.all_met { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// What every phase needs: the binaries, the broker and Redis (for readings and
/// clean-up), and the namespaces made so far.
struct Run {
    binaries: Binaries,
    log_dir: PathBuf,
    amqp_url: String,
    redis_url: String,
    redis: ConnectionManager,
    amqp: Connection,
    channel: Channel,
    tag: String,
    namespaces: std::sync::Mutex<Vec<String>>,
    quiet: bool,
}

/// The services of one phase, started in one namespace.
struct System {
    processes: Vec<Arc<Managed>>,
}

impl System {
    fn order(&self) -> anyhow::Result<&Arc<Managed>> {
        self.processes.iter().find(|p| p.spec.service == Service::Order).context("order_service is not running")
    }

    fn target(&self) -> anyhow::Result<String> {
        Ok(format!("http://{}", self.order()?.grpc_addr()))
    }

    async fn stop(&self) {
        for process in &self.processes {
            process.stop(Signal::Term, Duration::from_secs(10)).await;
        }
    }
}

impl Run {
    async fn new(args: &Args) -> anyhow::Result<Self> {
        let dir = match &args.bin_dir {
            Some(dir) => dir.clone(),
            None => Binaries::default_dir()?,
        };
        let binaries = Binaries::locate(&dir)?;
        let tag = format!("memt-{:x}-{:x}", std::process::id(), rand::random::<u32>());
        let log_dir = args.log_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(&tag));
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let client = redis::Client::open(args.redis_url.as_str()).context("REDIS_URL")?;
        // A seeding call holds Redis for a while: more than redis-rs' default 500 ms
        // on a slow or busy machine.
        let config = ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
        let redis = ConnectionManager::new_with_config(client, config)
            .await
            .with_context(|| format!("connecting to {}", args.redis_url))?;
        let amqp = Connection::connect(&args.amqp_url, ConnectionProperties::default())
            .await
            .context("connecting to RabbitMQ")?;
        let channel = amqp.create_channel().await.context("opening an AMQP channel")?;
        Ok(Self {
            binaries,
            log_dir,
            amqp_url: args.amqp_url.clone(),
            redis_url: args.redis_url.clone(),
            redis,
            amqp,
            channel,
            tag,
            namespaces: std::sync::Mutex::new(Vec::new()),
            quiet: args.quiet,
        })
    }

    fn say(&self, line: &str) {
        if !self.quiet {
            eprintln!("memory_targets: {line}");
        }
    }

    /// A fresh namespace, remembered for the clean-up.
    fn namespace(&self, phase: &str) -> String {
        let namespace = format!("{}-{phase}", self.tag);
        if let Ok(mut all) = self.namespaces.lock() {
            all.push(namespace.clone());
        }
        namespace
    }

    /// Runs the phases; each one's namespace is deleted as it ends (unless
    /// `--keep`), so that it weighs on no later phase.
    async fn all(&self, args: &Args) -> anyhow::Result<MemoryReport> {
        self.say(&format!("service logs in {}", self.log_dir.display()));
        let in_flight = self.in_flight(args).await.context("the in-flight phase")?;
        self.cleanup(args.keep).await;
        let finished = self.finished(args).await.context("the finished phase")?;
        self.cleanup(args.keep).await;
        let stored = if args.stored > 0 {
            let stored = self.stored(args).await.context("the stored phase")?;
            self.cleanup(args.keep).await;
            stored
        } else {
            self.say("--stored 0: the stored-sagas comparison is skipped, so its target is not met");
            Vec::new()
        };
        Ok(MemoryReport::new(in_flight, finished, stored))
    }

    /// Starts `services` in `namespace` (participants first: they declare their
    /// queues), each SERVING before this returns.
    async fn start(&self, namespace: &str, services: &[Service], extra: &[(&str, String)]) -> anyhow::Result<System> {
        let mut ordered: Vec<Service> = services.iter().copied().filter(|s| *s != Service::Order).collect();
        if services.contains(&Service::Order) {
            ordered.push(Service::Order);
        }
        let mut processes = Vec::new();
        let ports = free_ports(2 * ordered.len())?;
        for (service, pair) in ordered.into_iter().zip(ports.chunks(2)) {
            let (grpc_port, http_port) = (pair[0], pair[1]);
            let mut env = vec![
                ("FTGO_NAMESPACE".to_owned(), namespace.to_owned()),
                ("GRPC_ADDR".to_owned(), format!("127.0.0.1:{grpc_port}")),
                ("HTTP_ADDR".to_owned(), format!("127.0.0.1:{http_port}")),
                ("AMQP_URL".to_owned(), self.amqp_url.clone()),
                ("REDIS_URL".to_owned(), self.redis_url.clone()),
                ("RUST_LOG".to_owned(), "warn".to_owned()),
                ("LOG_FORMAT".to_owned(), "plain".to_owned()),
            ];
            if service == Service::Order {
                env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            }
            let spec = ProcessSpec {
                name: service.binary().to_owned(),
                service,
                binary: self.binaries.path(service).to_path_buf(),
                grpc_port,
                env,
                log: self.log_dir.join(format!("{namespace}-{}.log", service.binary())),
            };
            let process = Arc::new(Managed::new(spec, Duration::from_secs(30)));
            let started = process.start().await;
            processes.push(process);
            if let Err(error) = started {
                System { processes }.stop().await;
                return Err(error);
            }
        }
        Ok(System { processes })
    }

    /// Phase 1: order_service's RSS per in-flight saga.
    async fn in_flight(&self, args: &Args) -> anyhow::Result<InFlight> {
        let namespace = self.namespace("inflight");
        let system =
            self.start(&namespace, &[Service::Order], &[("SAGA_STEP_TIMEOUT_MS", "600000".to_owned())]).await?;
        let result = async {
            let order = system.order()?;
            let pid = order.pid().context("order_service has no pid")?;
            let clients = order_clients(&system.target()?, 4).await?;
            let unfinished = format!("{namespace}:order:sagas:unfinished");
            self.say(&format!("in flight: {} warm-up sagas, order_service alone (pid {pid})", args.warmup));
            create(&clients, args.warmup).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let count_before = self.zcard(&unfinished).await?;
            let rss_before = rss_kib(pid)?;
            let peak = Arc::new(AtomicU64::new(rss_before));
            let sampler = tokio::spawn({
                let peak = peak.clone();
                async move {
                    loop {
                        if let Ok(rss) = rss_kib(pid) {
                            peak.fetch_max(rss, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            });
            self.say(&format!("in flight: {} sagas that stay in flight, VmRSS sampled every 100 ms", args.in_flight));
            let created = create(&clients, args.in_flight).await;
            // What the last requests left behind settles; the sampler keeps reading.
            tokio::time::sleep(Duration::from_secs(2)).await;
            sampler.abort();
            created?;
            let rss_after = rss_kib(pid)?;
            let count_after = self.zcard(&unfinished).await?;
            Ok(InFlight::new(rss_before, peak.load(Ordering::Relaxed), rss_after, count_before, count_after))
        }
        .await;
        system.stop().await;
        result
    }

    /// Phase 2: Redis's bytes per finished saga, and order_service's once the
    /// retention has passed.
    async fn finished(&self, args: &Args) -> anyhow::Result<Finished> {
        let namespace = self.namespace("finished");
        let system = self.start(&namespace, &Service::ALL, &[]).await?;
        let result = async {
            self.say(&format!("finished: {} sagas to their end, then MEMORY USAGE of every key", args.finished));
            let sps = run_sagas(&system, args.finished, "finished", self.quiet).await?;
            self.say(&format!("finished: {sps:.1} sagas/s"));
            let bytes = self.bytes_by_service(&namespace).await?;
            let order = system.order()?.clone();
            order.stop(Signal::Term, Duration::from_secs(10)).await;
            let restarted = Instant::now();
            let pruned = self
                .start(&namespace, &[Service::Order], &[("SAGA_RETENTION_SECS", args.retention_secs.to_string())])
                .await?;
            // The sweeper prunes every 5 s (order_service's gauge interval). Every
            // key of order_service's counts: once all its sagas are pruned, none
            // should be left (the indexes go when they empty).
            let deadline = restarted + Duration::from_secs(args.retention_secs + 30);
            let pattern = format!("{}*", escape_glob(&format!("{namespace}:order:")));
            let left = loop {
                let left = self.keys(&pattern).await?;
                if left.is_empty() || Instant::now() >= deadline {
                    break left;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            let waited = restarted.elapsed().as_secs_f64();
            pruned.stop().await;
            let mut left_bytes = 0;
            for key in &left {
                left_bytes += self.memory_usage(key).await?;
            }
            self.say(&format!(
                "finished: after a retention of {} s, {} order_service keys left ({waited:.1} s after its restart)",
                args.retention_secs,
                left.len()
            ));
            Ok(Finished::new(args.finished, bytes, args.retention_secs, left.len() as u64, left_bytes, waited))
        }
        .await;
        system.stop().await;
        result
    }

    /// Phase 3: throughput in one namespace without and with `--stored` more
    /// finished sagas. The copies are added before the "with" side and deleted
    /// after it, so the two sides differ in nothing else; each side restarts the
    /// services, and which goes first alternates from round to round, so that a
    /// drift of the machine within a round does not always favour the same side.
    async fn stored(&self, args: &Args) -> anyhow::Result<Vec<StoredRound>> {
        let namespace = self.namespace("stored");
        let prefix = format!("{namespace}:order:");
        let system = self.start(&namespace, &Service::ALL, &[]).await?;
        let ran = run_sagas(&system, args.finished, "stored: first sagas", self.quiet).await;
        system.stop().await;
        ran?;
        let template = self.first_finished(&prefix).await?;
        let mut rounds = Vec::new();
        for round in 1..=args.rounds {
            let sides = if round % 2 == 1 { [false, true] } else { [true, false] };
            let mut measured = BTreeMap::new();
            for with_copies in sides {
                let before_copies = self.index_sizes(&prefix).await?;
                if with_copies {
                    self.say(&format!("stored: adding {} finished sagas", args.stored));
                    let added = self.copies(SEED_SCRIPT, &prefix, &template, args.stored).await?;
                    ensure!(added == args.stored, "{added} copies made, not {}", args.stored);
                    let with = self.index_sizes(&prefix).await?;
                    ensure!(
                        with.iter().zip(&before_copies).all(|(w, b)| *w == b + args.stored),
                        "the indexes did not grow by the copies: {before_copies:?} -> {with:?}"
                    );
                }
                let stored = self.zcard(&format!("{prefix}sagas:all")).await?;
                let system = self.start(&namespace, &Service::ALL, &[]).await?;
                let result = async {
                    run_sagas(&system, args.warmup.max(1), "stored: warm-up", self.quiet).await?;
                    run_sagas(&system, args.stored_sagas, "stored", self.quiet).await
                }
                .await;
                system.stop().await;
                if with_copies {
                    let unseeded = self.copies(UNSEED_SCRIPT, &prefix, &template, args.stored).await;
                    match (&result, unseeded) {
                        (_, Ok(deleted)) => ensure!(
                            deleted == 2 * args.stored,
                            "the copies' hashes and event streams: {deleted} keys deleted, not {}",
                            2 * args.stored
                        ),
                        (Ok(_), Err(error)) => return Err(error.context("deleting the copies")),
                        (Err(side), Err(error)) => bail!("{side:#}; then deleting the copies: {error:#}"),
                    }
                    // The first and the last copy are gone, with their events.
                    let mut keys = Vec::new();
                    for index in [0, args.stored - 1] {
                        let key = format!("{prefix}saga:{{{}}}", copy_id(index));
                        keys.push(format!("{key}:events"));
                        keys.push(key);
                    }
                    let mut redis = self.redis.clone();
                    let left: u64 = redis::cmd("EXISTS").arg(&keys).query_async(&mut redis).await?;
                    ensure!(left == 0, "{left} of the keys {keys:?} are left once the copies are deleted");
                    // What is left is what was there plus the side's own sagas.
                    let ran = args.warmup.max(1) + args.stored_sagas;
                    let after = self.index_sizes(&prefix).await?;
                    ensure!(
                        after.iter().zip(&before_copies).all(|(a, b)| *a == b + ran),
                        "the indexes hold more than the side's {ran} sagas once the copies are deleted: \
                         {before_copies:?} -> {after:?}"
                    );
                }
                let sps = result?;
                self.say(&format!("stored, round {round}: {stored} stored, {sps:.1} sagas/s"));
                measured.insert(with_copies, (stored, sps));
            }
            let (without, without_sps) = measured.get(&false).copied().unwrap_or_default();
            let (with, with_sps) = measured.get(&true).copied().unwrap_or_default();
            rounds.push(StoredRound::new(without, without_sps, with, with_sps));
        }
        Ok(rounds)
    }

    /// The id of the namespace's first finished saga: the one copied.
    async fn first_finished(&self, prefix: &str) -> anyhow::Result<String> {
        let mut redis = self.redis.clone();
        let first: Vec<String> =
            redis::cmd("ZRANGE").arg(format!("{prefix}sagas:finished")).arg(0).arg(0).query_async(&mut redis).await?;
        first.into_iter().next().context("no finished saga to copy")
    }

    /// Runs the seeding or unseeding script for `count` copies of `template`, a
    /// batch per call so that Redis is never held for long; the sum of what the
    /// calls return (copies made, or keys deleted).
    async fn copies(&self, script: &str, prefix: &str, template: &str, count: u64) -> anyhow::Result<u64> {
        let mut redis = self.redis.clone();
        let script = redis::Script::new(script);
        let (mut start, mut total) = (0, 0);
        while start < count {
            let batch = (count - start).min(SEED_BATCH);
            let done: u64 = script.arg(prefix).arg(template).arg(batch).arg(start).invoke_async(&mut redis).await?;
            total += done;
            start += batch;
        }
        Ok(total)
    }

    /// The sizes of order_service's listing and finished indexes, which every
    /// copy enters and leaves.
    async fn index_sizes(&self, prefix: &str) -> anyhow::Result<[u64; 2]> {
        Ok([self.zcard(&format!("{prefix}sagas:all")).await?, self.zcard(&format!("{prefix}sagas:finished")).await?])
    }

    async fn zcard(&self, key: &str) -> anyhow::Result<u64> {
        let mut redis = self.redis.clone();
        Ok(redis::cmd("ZCARD").arg(key).query_async(&mut redis).await?)
    }

    /// Every key of `pattern`'s (a glob) match.
    async fn keys(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
        let mut redis = self.redis.clone();
        Ok(chaos::admin::scan_keys(&mut redis, pattern).await?)
    }

    async fn memory_usage(&self, key: &str) -> anyhow::Result<u64> {
        let mut redis = self.redis.clone();
        let bytes: Option<u64> =
            redis::cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0).query_async(&mut redis).await?;
        Ok(bytes.unwrap_or(0))
    }

    /// `MEMORY USAGE … SAMPLES 0` of every key of the namespace, summed by service.
    async fn bytes_by_service(&self, namespace: &str) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut bytes = BTreeMap::new();
        for key in self.keys(&format!("{}:*", escape_glob(namespace))).await? {
            if let Some(service) = memory::service_of_key(namespace, &key) {
                let used = self.memory_usage(&key).await?;
                *bytes.entry(service.to_owned()).or_insert(0) += used;
            }
        }
        Ok(bytes)
    }

    /// Deletes the queues, dead-letter exchanges and keys of every namespace made
    /// since the last call (with `keep`, only says which are left).
    async fn cleanup(&self, keep: bool) {
        let namespaces = self.namespaces.lock().map(|n| n.clone()).unwrap_or_default();
        if namespaces.is_empty() {
            return;
        }
        if keep {
            self.say(&format!("--keep: left namespace(s) {}", namespaces.join(", ")));
            self.forget(&namespaces);
            return;
        }
        let bases: Vec<&str> = Service::ALL.iter().map(|s| s.queue_base()).collect();
        for namespace in &namespaces {
            for error in chaos::admin::delete_queues(&self.channel, namespace, &bases).await {
                eprintln!("memory_targets: clean-up: {error}");
            }
            let mut redis = self.redis.clone();
            if let Err(error) = chaos::admin::delete_keys(&mut redis, namespace).await {
                eprintln!("memory_targets: clean-up of {namespace}'s keys: {error}");
            }
            // Forgotten only once deleted: a signal in the middle of this leaves
            // it listed for main's final clean-up.
            self.forget(std::slice::from_ref(namespace));
        }
    }

    fn forget(&self, done: &[String]) {
        if let Ok(mut namespaces) = self.namespaces.lock() {
            namespaces.retain(|n| !done.contains(n));
        }
    }

    async fn close(&self) {
        let _ = self.amqp.close(200, "memory_targets done".into()).await;
    }
}

/// The id of copy `index`, as the seeding script makes it.
fn copy_id(index: u64) -> String {
    format!("00000000-0000-7000-8000-{index:012x}")
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path} (Linux only)"))?;
    memory::vm_rss_kib(&status).with_context(|| format!("no VmRSS in {path}"))
}

/// `count` CreateOrder calls of the success scenario, 64 at a time; the sagas
/// are not followed. Fails when any call failed.
async fn create(clients: &[OrderServiceClient<tonic::transport::Channel>], count: u64) -> anyhow::Result<()> {
    let failures = futures::stream::iter(0..count)
        .map(|i| {
            let mut client = clients[(i % clients.len() as u64) as usize].clone();
            async move {
                match tokio::time::timeout(CALL_TIMEOUT, client.create_order(Scenario::Success.request(String::new())))
                    .await
                {
                    Ok(result) => result.err(),
                    Err(_) => Some(tonic::Status::deadline_exceeded(format!("no answer within {CALL_TIMEOUT:?}"))),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|failed| async move { failed })
        .collect::<Vec<_>>()
        .await;
    if let Some(first) = failures.first() {
        bail!("{} of {count} CreateOrder calls failed; the first: {first}", failures.len());
    }
    Ok(())
}

/// `sagas` success sagas at 64 in flight, each watched to its end; their rate.
/// Fails unless every one ended APPROVED.
async fn run_sagas(system: &System, sagas: u64, label: &str, quiet: bool) -> anyhow::Result<f64> {
    let settings = SystemSettings {
        follow: Follow::Watch,
        call_timeout: Duration::from_secs(30),
        saga_timeout: Duration::from_secs(60),
        idempotency_keys: false,
        key_prefix: String::new(),
    };
    let runner = Arc::new(SystemRunner::connect(&system.target()?, 1, settings).await?);
    let plan = Plan {
        mode: Mode::Closed { concurrency: CONCURRENCY },
        stop: Stop::Sagas(sagas),
        mix: Mix::only(Scenario::Success),
        seed: rand::random(),
        label: label.to_owned(),
        progress: !quiet,
    };
    let result = engine::run(&plan, runner).await;
    let recorder = &result.recorder;
    ensure!(
        recorder.completed_count() == sagas && recorder.unexpected_count() == 0 && recorder.errors().is_empty(),
        "{label}: not every saga ended APPROVED (final states {:?}, errors {:?})",
        recorder.final_states(),
        recorder.errors()
    );
    Ok(result.sagas_per_sec())
}
