//! The chaos runner: the four FTGO services as separate OS processes (two
//! order_service replicas sharing one reply queue and one Redis state) in a
//! private namespace, hundreds of sagas driven through the gRPC API while faults
//! are injected at seeded moments, then every invariant of design §7 checked.
//!
//! - [`processes`]: spawn, stop, kill, restart the services; wait for health.
//! - [`faults`]: the seeded fault schedule and its injectors.
//! - [`firehose`]: capture real commands and replies to republish as duplicates.
//! - [`admin`]: `rabbitmqctl`, `ss`, `CLIENT KILL`, clean-up, all namespace-scoped.
//! - [`driver`]: the saga mix, CreateOrder with idempotency keys, WatchOrder.
//! - [`checker`]: the invariants, through the participants' read calls, and DLQs.
//! - [`report`]: the summary and its machine-readable last line.
//!
//! The one decision to know: the runner shares RabbitMQ and Redis with other
//! test runs, so every fault and every clean-up is scoped to what it can prove is
//! its own (see [`admin`]), and it cleans up even when interrupted.
#![forbid(unsafe_code)]

pub mod admin;
pub mod checker;
pub mod driver;
pub mod faults;
pub mod firehose;
pub mod processes;
pub mod report;

use std::{
    collections::HashSet,
    io::IsTerminal,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use lapin::{Connection, ConnectionProperties};
use redis::aio::ConnectionManager;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    checker::Participants,
    driver::{DriverSettings, Final, OrderApi, Progress},
    faults::{FaultKind, Injector},
    firehose::Capture,
    processes::{Binaries, Fleet, FleetSettings, Service},
    report::{ProcessLine, Report},
};

/// How a run is set up; [`Config::new`] gives the defaults of the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sagas to drive.
    pub sagas: usize,
    /// Faults to inject, split evenly over the five kinds.
    pub faults: usize,
    /// Sagas in flight at once.
    pub concurrency: usize,
    /// Seeds the fault schedule and the saga mix.
    pub seed: u64,
    /// Queue and key prefix of the run; random by default.
    pub namespace: String,
    /// Keep the namespace's queues, dead letters and Redis keys afterwards.
    pub keep: bool,
    /// How long to wait, once the faults stop, for every saga to be terminal.
    pub terminal_timeout: Duration,
    /// Where the services' logs go (default: a directory in the temp dir).
    pub log_dir: Option<PathBuf>,
    /// Where the service binaries are (default: next to this executable).
    pub bin_dir: Option<PathBuf>,
    /// The minimum driving period: saga creations are paced over it, and so are
    /// the faults (default: 600 ms per fault, at least 10 s: an AMQP drop costs
    /// a few seconds of `rabbitmqctl`, and the drops must keep up).
    pub drive_period: Option<Duration>,
    pub amqp_url: String,
    pub redis_url: String,
    /// The services' `RUST_LOG`.
    pub service_log: String,
    /// SIGTERM grace period before SIGKILL.
    pub grace: Duration,
    /// A restarted process stays down for a seeded time up to this (default 0:
    /// restarted at once). Longer than a step's attempts (about 3.5 s here), it
    /// makes sagas abandon steps and compensate.
    pub max_downtime: Duration,
    /// Show progress on stderr (a bar on a terminal, plain lines otherwise).
    pub progress: bool,
}

impl Config {
    pub fn new(sagas: usize, faults: usize, concurrency: usize, seed: u64) -> Self {
        Self {
            sagas,
            faults,
            concurrency,
            seed,
            namespace: random_namespace(),
            keep: false,
            terminal_timeout: Duration::from_secs(120),
            log_dir: None,
            bin_dir: None,
            drive_period: None,
            amqp_url: std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            redis_url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            service_log: "warn".into(),
            grace: Duration::from_secs(15),
            max_downtime: Duration::ZERO,
            progress: true,
        }
    }

    fn period(&self) -> Duration {
        self.drive_period
            .unwrap_or_else(|| (Duration::from_millis(600) * self.faults as u32).max(Duration::from_secs(10)))
    }
}

/// A random seed.
pub fn random_seed() -> u64 {
    rand::random()
}

/// Whether `namespace` can scope faults and clean-up safely: non-empty, short,
/// and plain (no glob or queue-name punctuation).
pub fn is_safe_namespace(namespace: &str) -> bool {
    (1..=64).contains(&namespace.len())
        && namespace.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A fresh namespace, `chaos-<8 hex digits>`.
pub fn random_namespace() -> String {
    format!("chaos-{:08x}", rand::random::<u32>())
}

/// What the run holds that clean-up must release.
struct Setup {
    connection: Connection,
    channel: lapin::Channel,
    redis: ConnectionManager,
    capture: Arc<Capture>,
    vhost: String,
    /// Firehose tracing was off before the run: turn it off again.
    tracing_was_off: bool,
    log_dir: PathBuf,
}

/// Runs the whole thing: start the services, drive and inject, wait, check, clean
/// up. An `Err` means the run itself could not be carried out (a binary missing,
/// the broker down, interrupted); what the system did wrong is in the [`Report`].
pub async fn run(config: Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    let bin_dir = match &config.bin_dir {
        Some(dir) => dir.clone(),
        None => Binaries::default_dir()?,
    };
    let binaries = Binaries::locate(&bin_dir)?;
    let ns = config.namespace.clone();
    let log_dir = config.log_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("{ns}-logs")));
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    eprintln!(
        "chaos: namespace {ns}, seed {}, {} sagas, {} faults, concurrency {}; service logs in {}",
        config.seed,
        config.sagas,
        config.faults,
        config.concurrency,
        log_dir.display()
    );

    let setup = Setup::new(&config, log_dir).await?;
    let settings = FleetSettings {
        binaries: &binaries,
        namespace: &ns,
        amqp_url: &config.amqp_url,
        redis_url: &config.redis_url,
        log_dir: &setup.log_dir,
        service_log: &config.service_log,
        ready_timeout: Duration::from_secs(30),
        grace: config.grace,
    };
    let fleet = match Fleet::spawn(settings).await {
        Ok(fleet) => Arc::new(fleet),
        Err(error) => {
            let _ = setup.release(&config, None).await;
            return Err(error);
        }
    };
    let outcome = tokio::select! {
        outcome = drive_and_check(&config, &setup, fleet.clone(), started) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // The counters of the faults, before the final stop adds its own SIGTERMs.
    let processes = process_lines(&fleet);
    let (cleanup_findings, final_stop) = setup.release(&config, Some(&fleet)).await;
    let mut report = outcome?;
    report.findings.extend(cleanup_findings);
    report.processes = processes;
    report.final_stop = final_stop;
    report.elapsed = started.elapsed();
    Ok(report)
}

impl Setup {
    async fn new(config: &Config, log_dir: PathBuf) -> anyhow::Result<Self> {
        // Named without `ns=`: the runner's own connection is never a fault's target.
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("chaos runner of {}", config.namespace).into());
        let connection = Connection::connect(&config.amqp_url, properties)
            .await
            .with_context(|| format!("RabbitMQ at {} must be running", config.amqp_url))?;
        let channel = connection.create_channel().await?;
        let client = redis::Client::open(config.redis_url.as_str())?;
        let redis = ConnectionManager::new(client)
            .await
            .with_context(|| format!("Redis at {} must be running", config.redis_url))?;

        let vhost = admin::vhost_of(&config.amqp_url);
        let tracing_was_off = !admin::tracing_enabled(&vhost).await?;
        if tracing_was_off {
            admin::set_tracing(&vhost, true).await?;
        }
        let own: HashSet<u32> = [std::process::id()].into();
        let own_ports = admin::ports_of(&own, 5672).await.unwrap_or_default();
        let queues = Service::ALL.iter().map(|s| format!("{}.{}", config.namespace, s.queue_base())).collect();
        let capture = match Capture::start(&connection, queues, own_ports).await {
            Ok(capture) => capture,
            Err(error) => {
                if tracing_was_off {
                    let _ = admin::set_tracing(&vhost, false).await;
                }
                return Err(error);
            }
        };
        Ok(Self { connection, channel, redis, capture, vhost, tracing_was_off, log_dir })
    }

    /// Stops the processes and the capture, restores tracing, and (unless
    /// `--keep`) deletes the namespace's queues and keys. Returns findings and the
    /// longest exit of the final SIGTERM.
    async fn release(&self, config: &Config, fleet: Option<&Arc<Fleet>>) -> (Vec<String>, Duration) {
        let mut findings = Vec::new();
        let mut longest = Duration::ZERO;
        if let Some(fleet) = fleet {
            for (name, stopped) in fleet.stop_all().await {
                longest = longest.max(stopped.took);
                if stopped.forced {
                    findings
                        .push(format!("{name} did not exit within {:?} of the final SIGTERM; SIGKILLed", config.grace));
                }
            }
        }
        self.capture.stop();
        if self.tracing_was_off
            && let Err(error) = admin::set_tracing(&self.vhost, false).await
        {
            eprintln!("chaos: could not turn firehose tracing off again: {error:#}");
        }
        if config.keep {
            eprintln!("chaos: --keep: queues and Redis keys of {} are left in place", config.namespace);
        } else {
            let bases: Vec<&str> = Service::ALL.iter().map(|s| s.queue_base()).collect();
            for error in admin::delete_queues(&self.channel, &config.namespace, &bases).await {
                eprintln!("chaos: clean-up: {error}");
            }
            let mut redis = self.redis.clone();
            if let Err(error) = admin::delete_keys(&mut redis, &config.namespace).await {
                eprintln!("chaos: clean-up of Redis keys: {error}");
            }
        }
        let _ = self.connection.close(200, "chaos run over".into()).await;
        (findings, longest)
    }
}

fn process_lines(fleet: &Fleet) -> Vec<ProcessLine> {
    fleet
        .processes
        .iter()
        .map(|p| {
            let s = p.stats();
            ProcessLine {
                name: p.spec.name.clone(),
                starts: s.starts,
                sigkills: s.sigkills,
                sigterms: s.sigterms,
                sigterm_overruns: s.sigterm_overruns,
                longest_sigterm: s.longest_sigterm,
                longest_ready: s.longest_ready,
                unexpected_exits: s.unexpected_exits.len(),
                failed_starts: s.failed_starts,
            }
        })
        .collect()
}

async fn drive_and_check(
    config: &Config,
    setup: &Setup,
    fleet: Arc<Fleet>,
    started: Instant,
) -> anyhow::Result<Report> {
    let period = config.period();
    let plan =
        faults::schedule(config.seed, config.faults, config.sagas, period, fleet.processes.len(), config.max_downtime);
    let scenarios = driver::scenarios(config.seed, config.sagas);
    let replicas: Vec<_> = fleet.of(Service::Order).iter().map(|p| p.grpc_addr()).collect();
    let api = OrderApi::new(&replicas)?;
    let progress = Arc::new(Progress::default());
    let (created_tx, created_rx) = watch::channel(0usize);
    let (faults_done_tx, faults_done_rx) = watch::channel(0usize);
    let injector = Arc::new(Injector {
        fleet: fleet.clone(),
        namespace: config.namespace.clone(),
        redis: setup.redis.clone(),
        capture: setup.capture.clone(),
        publish: firehose::publish_channel(&setup.connection).await?,
        own_pid: std::process::id(),
        amqp_gate: tokio::sync::Mutex::new(()),
    });
    let settings = DriverSettings {
        namespace: config.namespace.clone(),
        concurrency: config.concurrency,
        period,
        follow_limit: Duration::from_secs(60),
    };

    let t0 = Instant::now();
    let display = Display::start(config, progress.clone(), faults_done_rx, plan.len(), t0);
    let unexpected = Arc::new(Mutex::new(Vec::new()));
    let reaper = {
        let (fleet, unexpected) = (fleet.clone(), unexpected.clone());
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let found = fleet.reap_unexpected().await;
                if let Ok(mut all) = unexpected.lock() {
                    all.extend(found);
                }
            }
        }))
    };
    let faults_planned = plan.len();
    let (mut records, fault_records) = tokio::join!(
        driver::drive(api.clone(), settings, scenarios, t0, created_tx, progress.clone()),
        injector.run(plan, t0, created_rx, faults_done_tx),
    );
    let faults_stopped_after = fault_records.iter().map(|r| r.ended).max().unwrap_or_default();
    let last_hit = fault_records.iter().filter(|r| r.effective).map(|r| r.hit_at).max();
    display.note("faults stopped; waiting for every saga to be terminal");
    driver::wait_terminal(&api, &mut records, config.terminal_timeout, &progress).await;
    drop(reaper);
    display.note("checking invariants");

    let restaurant = fleet.one(Service::Restaurant).grpc_addr();
    let accounting = fleet.one(Service::Accounting).grpc_addr();
    let participants = Participants::new(restaurant, accounting)?;
    let mut checked =
        checker::check(&records, &api, &participants, &setup.connection, &config.namespace, config.keep).await?;
    display.finish();

    let mut report = Report {
        namespace: config.namespace.clone(),
        seed: config.seed,
        log_dir: setup.log_dir.clone(),
        sagas_requested: config.sagas,
        faults_planned,
        create_retries: progress.create_retries.load(std::sync::atomic::Ordering::Relaxed),
        watch_resumes: progress.watch_resumes.load(std::sync::atomic::Ordering::Relaxed),
        client_errors: progress.causes.lock().map(|c| c.clone()).unwrap_or_default(),
        ..Report::default()
    };
    for record in &records {
        if record.order_id.is_none() {
            continue;
        }
        report.sagas += 1;
        let entry = report.by_scenario.entry(record.scenario).or_default();
        match record.terminal.map(|t| t.state) {
            Some(Final::Approved) => {
                report.approved += 1;
                entry.0 += 1;
            }
            Some(Final::Rejected) => {
                report.rejected += 1;
                entry.1 += 1;
            }
            Some(Final::Parked) => report.parked += 1,
            None => {}
        }
    }
    report.driving = records.iter().map(|r| r.create_done).max().unwrap_or_default();
    report.faults_stopped_after = faults_stopped_after;
    report.max_recovery_ms = max_recovery(&records, last_hit);
    for record in &fault_records {
        let kind = record.planned.kind;
        if record.effective {
            *report.faults.entry(kind).or_default() += 1;
        } else {
            *report.faults_without_effect.entry(kind).or_default() += 1;
            report.findings.push(format!(
                "fault #{} {kind} on {} had no effect: {}",
                record.planned.seq, record.target, record.detail
            ));
        }
        report.findings.extend(record.findings.iter().cloned());
        match kind {
            FaultKind::Duplicates => {
                report.messages_republished += record.republished;
                report.republished_in_time += record.republished_in_time;
                report.republished_replies += record.republished_replies;
            }
            FaultKind::DropAmqp => report.amqp_connections_closed += record.closed,
            FaultKind::DropRedis => report.redis_clients_killed += record.closed,
            FaultKind::Sigkill | FaultKind::Sigterm => {}
        }
    }
    for kind in FaultKind::ALL {
        report.faults.entry(kind).or_default();
    }
    if let Ok(found) = unexpected.lock() {
        report.findings.extend(found.iter().cloned());
    }
    write_fault_log(&setup.log_dir, &fault_records);
    write_saga_log(&setup.log_dir, &records);
    report.findings.append(&mut checked.findings);
    for (queue, ready) in &checked.leftovers {
        report.findings.push(format!("{ready} message(s) still ready in {queue} after every saga ended"));
    }
    report.checked = checked;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The longest time from the last fault's hit (the signal sent, the connections
/// closed, the copies published) to a saga's terminal event, as the service
/// recorded it (0 when every saga ended before it). A restarted process's way
/// back to SERVING is part of the recovery.
fn max_recovery(records: &[driver::SagaRecord], last_hit: Option<SystemTime>) -> u64 {
    let Some(last) = last_hit else { return 0 };
    records
        .iter()
        .filter_map(|r| r.terminal)
        .filter_map(|t| t.at.duration_since(last).ok())
        .map(|d| d.as_millis() as u64)
        .max()
        .unwrap_or(0)
}

/// A background task that ends with its handle, even when the run is dropped
/// half-way (interrupted): no fault restarts a process after the clean-up.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One line per fault in `<log dir>/faults.log`, to line up with the services' logs.
fn write_fault_log(dir: &std::path::Path, records: &[faults::FaultRecord]) {
    let lines: Vec<String> = records
        .iter()
        .map(|r| {
            let unix_ms = r.hit_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
            format!(
                "#{:<3} {:<10} planned {:>7.3}s (saga {:>4}) started {:>7.3}s ended {:>7.3}s (hit at unix_ms {unix_ms}) {:<28} {}",
                r.planned.seq,
                r.planned.kind.as_str(),
                r.planned.at.as_secs_f64(),
                r.planned.at_saga,
                r.started.as_secs_f64(),
                r.ended.as_secs_f64(),
                r.target,
                r.detail
            )
        })
        .collect();
    if let Err(error) = std::fs::write(dir.join("faults.log"), lines.join("\n") + "\n") {
        eprintln!("chaos: writing faults.log: {error}");
    }
}

/// One line per saga in `<log dir>/sagas.log`: its order, scenario, how its
/// creation went and when it ended.
fn write_saga_log(dir: &std::path::Path, records: &[driver::SagaRecord]) {
    let lines: Vec<String> = records
        .iter()
        .map(|r| {
            let (state, unix_ms) = match r.terminal {
                Some(t) => (
                    format!("{:?}", t.state),
                    t.at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default(),
                ),
                None => ("NOT_TERMINAL".to_owned(), 0),
            };
            format!(
                "saga {:>4} {:<18} order {:<36} created at {:>7.3}s after {} attempt(s) {:<12} terminal at unix_ms {unix_ms} watch resumes {}{}",
                r.index,
                r.scenario.as_str(),
                r.order_id.as_deref().unwrap_or("-"),
                r.create_done.as_secs_f64(),
                r.create_attempts,
                state,
                r.watch_resumes,
                r.create_error.as_deref().map(|e| format!(" create error: {e}")).unwrap_or_default()
            )
        })
        .collect();
    if let Err(error) = std::fs::write(dir.join("sagas.log"), lines.join("\n") + "\n") {
        eprintln!("chaos: writing sagas.log: {error}");
    }
}

/// Progress on stderr: an indicatif bar on a terminal, a plain line every five
/// seconds otherwise (CI logs stay readable).
struct Display {
    bar: Option<indicatif::ProgressBar>,
    task: Option<JoinHandle<()>>,
    t0: Instant,
}

impl Display {
    fn start(
        config: &Config,
        progress: Arc<Progress>,
        faults_done: watch::Receiver<usize>,
        faults_planned: usize,
        t0: Instant,
    ) -> Self {
        if !config.progress {
            return Self { bar: None, task: None, t0 };
        }
        let sagas = config.sagas;
        let line = move |progress: &Progress, faults: usize| {
            use std::sync::atomic::Ordering::Relaxed;
            format!(
                "created {}/{sagas} terminal {} faults {faults}/{faults_planned} retries {} resumes {}",
                progress.created.load(Relaxed),
                progress.terminal.load(Relaxed),
                progress.create_retries.load(Relaxed),
                progress.watch_resumes.load(Relaxed),
            )
        };
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(sagas as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {wide_msg}") {
                bar.set_style(style.progress_chars("=> "));
            }
            let ticking = bar.clone();
            let task = tokio::spawn(async move {
                loop {
                    let faults = *faults_done.borrow();
                    ticking.set_position(progress.terminal.load(std::sync::atomic::Ordering::Relaxed) as u64);
                    ticking.set_message(line(&progress, faults));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            Self { bar: Some(bar), task: Some(task), t0 }
        } else {
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let faults = *faults_done.borrow();
                    eprintln!("chaos: {:>6.1}s {}", t0.elapsed().as_secs_f64(), line(&progress, faults));
                }
            });
            Self { bar: None, task: Some(task), t0 }
        }
    }

    fn note(&self, what: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("chaos: {:>6.1}s {what}", self.t0.elapsed().as_secs_f64())),
            None if self.task.is_some() => eprintln!("chaos: {:>6.1}s {what}", self.t0.elapsed().as_secs_f64()),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{SagaRecord, Scenario, Terminal};

    fn ended_at(at: SystemTime) -> SagaRecord {
        SagaRecord {
            index: 0,
            scenario: Scenario::Success,
            idempotency_key: String::new(),
            order_id: Some("o".into()),
            create_attempts: 1,
            create_error: None,
            created_true: 1,
            other_ids: Vec::new(),
            terminal: Some(Terminal { state: Final::Approved, at }),
            watch_resumes: 0,
            create_done: Duration::ZERO,
        }
    }

    #[test]
    fn recovery_is_the_longest_time_from_the_last_hit_to_a_terminal_event() {
        let hit = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let records = vec![
            ended_at(hit - Duration::from_millis(500)),
            ended_at(hit + Duration::from_millis(1_200)),
            ended_at(hit + Duration::from_millis(300)),
        ];
        assert_eq!(max_recovery(&records, Some(hit)), 1_200);
        assert_eq!(max_recovery(&records[..1], Some(hit)), 0, "all ended before the last fault");
        assert_eq!(max_recovery(&records, None), 0, "no fault");
    }
}

#[cfg(test)]
mod namespace_tests {
    use super::*;

    #[test]
    fn only_plain_non_empty_namespaces_scope_the_faults() {
        assert!(is_safe_namespace(&random_namespace()));
        assert!(is_safe_namespace("chaos-1"));
        for unsafe_ns in ["", "*", "a.b", "A", "a:b", &"x".repeat(65)] {
            assert!(!is_safe_namespace(unsafe_ns), "{unsafe_ns:?}");
        }
    }
}
