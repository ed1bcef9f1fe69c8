//! The service processes of a chaos run: spawned from the built binaries, each on
//! a fixed port with a fixed environment, its output appended to a log file, and
//! stopped, killed and restarted on demand.
//!
//! The one decision to know: a restarted process gets exactly the same port and
//! environment as before, and it counts as restarted only once its
//! `grpc.health.v1` says `SERVING` (connected to RabbitMQ and Redis, consuming).
//! Each process sits behind its own async mutex, held for the whole
//! stop–start–ready sequence, so two faults never restart one process at once.

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    io::Write,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        Arc, Mutex as StdMutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::{process::Child, sync::Mutex};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// One of the four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Order,
    Consumer,
    Restaurant,
    Accounting,
}

impl Service {
    pub const ALL: [Service; 4] = [Service::Order, Service::Consumer, Service::Restaurant, Service::Accounting];

    /// The binary's (and the package's) name.
    pub fn binary(self) -> &'static str {
        match self {
            Service::Order => "order_service",
            Service::Consumer => "consumer_service",
            Service::Restaurant => "restaurant_service",
            Service::Accounting => "accounting_service",
        }
    }

    /// The base name of the queue this service consumes (from the protos' saga
    /// options; see `proto::contract`).
    pub fn queue_base(self) -> &'static str {
        use proto::{accounting::v1 as accounting, consumer::v1 as consumer, restaurant::v1 as restaurant};
        match self {
            Service::Order => proto::contract::queue_of::<consumer::VerifyConsumerReply>(),
            Service::Consumer => proto::contract::queue_of::<consumer::VerifyConsumerCommand>(),
            Service::Restaurant => proto::contract::queue_of::<restaurant::CreateTicketCommand>(),
            Service::Accounting => proto::contract::queue_of::<accounting::AuthorizeCardCommand>(),
        }
    }
}

/// The four service binaries, found next to the running executable (chaos, memory_targets).
#[derive(Debug, Clone)]
pub struct Binaries {
    paths: BTreeMap<Service, PathBuf>,
}

impl Binaries {
    /// Finds every service binary in `dir`, or says which are missing and how to
    /// build them.
    pub fn locate(dir: &Path) -> anyhow::Result<Self> {
        let mut paths = BTreeMap::new();
        let mut missing = Vec::new();
        for service in Service::ALL {
            let path = dir.join(format!("{}{}", service.binary(), std::env::consts::EXE_SUFFIX));
            if path.is_file() {
                paths.insert(service, path);
            } else {
                missing.push(path.display().to_string());
            }
        }
        if !missing.is_empty() {
            bail!(
                "service binaries not found: {}.\nBuild them first (from the workspace root): cargo build --bins \
                 (add --release if this tool is a release build)",
                missing.join(", ")
            );
        }
        Ok(Self { paths })
    }

    pub fn path(&self, service: Service) -> &Path {
        &self.paths[&service]
    }

    /// The directory the running executable is in (where cargo puts every bin).
    pub fn default_dir() -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe().context("locating the running executable")?;
        Ok(exe.parent().context("the running executable has no parent directory")?.to_path_buf())
    }
}

/// `count` distinct free ports on 127.0.0.1, found by binding port 0 that many
/// times at once and letting them all go. Held together, they cannot repeat,
/// as one port at a time could (a CI run once gave one process's HTTP port to
/// another's gRPC address). Another process could still take one in between;
/// on this machine that is rare enough.
pub fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).context("finding a free port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Everything needed to (re)start one process identically.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Unique within the run, e.g. `order_service#2`.
    pub name: String,
    pub service: Service,
    pub binary: PathBuf,
    pub grpc_port: u16,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// Whether an inherited environment variable is one of the services' settings
/// (README's Configuration table, OpenTelemetry's `OTEL_*`, mimalloc's
/// `MIMALLOC_*`): each is removed before the spec's own are set, so a process
/// runs with the services' defaults except what its spec says, whatever the
/// caller's shell holds. (A chaos run exports no spans; memory_targets measures
/// the defaults.)
pub fn is_service_setting(name: &str) -> bool {
    const PREFIXES: &[&str] =
        &["SAGA_", "WATCH_", "AMQP_", "OTEL_", "MIMALLOC_", "FIXTURE", "ORDER_", "RESTAURANT_", "TOKIO_"];
    const NAMES: &[&str] = &["FTGO_NAMESPACE", "REDIS_URL", "GRPC_ADDR", "HTTP_ADDR", "RUST_LOG", "LOG_FORMAT"];
    PREFIXES.iter().any(|prefix| name.starts_with(prefix)) || NAMES.contains(&name)
}

/// How a process was stopped.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// When the signal was sent.
    pub signalled_at: std::time::SystemTime,
    /// From the signal to the exit.
    pub took: Duration,
    /// SIGTERM was not enough within the grace period: SIGKILL followed.
    pub forced: bool,
    pub status: Option<ExitStatus>,
}

/// The signal of a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

struct Running {
    child: Child,
    pid: u32,
}

/// Counters of one process over the run.
#[derive(Debug, Clone, Default)]
pub struct ProcessStats {
    pub starts: u32,
    pub sigkills: u32,
    pub sigterms: u32,
    /// SIGTERMs that did not end the process within the grace period.
    pub sigterm_overruns: u32,
    pub longest_sigterm: Duration,
    /// Exits nobody asked for (found by [`Managed::reap_unexpected`]).
    pub unexpected_exits: Vec<String>,
    /// Starts that never became SERVING in time.
    pub failed_starts: u32,
    pub longest_ready: Duration,
}

/// One service process under the runner's control.
pub struct Managed {
    pub spec: ProcessSpec,
    state: Mutex<Option<Running>>,
    pid: AtomicU32,
    stats: StdMutex<ProcessStats>,
    ready_timeout: Duration,
}

impl Managed {
    pub fn new(spec: ProcessSpec, ready_timeout: Duration) -> Self {
        Self { spec, state: Mutex::new(None), pid: AtomicU32::new(0), stats: StdMutex::default(), ready_timeout }
    }

    /// Its pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.spec.grpc_port))
    }

    pub fn stats(&self) -> ProcessStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut ProcessStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            f(&mut stats);
        }
    }

    /// Starts it and waits until it is SERVING.
    pub async fn start(&self) -> anyhow::Result<Duration> {
        let mut state = self.state.lock().await;
        self.start_locked(&mut state).await
    }

    async fn start_locked(&self, state: &mut Option<Running>) -> anyhow::Result<Duration> {
        let began = Instant::now();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .with_context(|| format!("opening {}", self.spec.log.display()))?;
        writeln!(log, "=== chaos: starting {} at unix_ms={}", self.spec.name, unix_ms())?;
        let stderr = log.try_clone()?;
        let mut command = tokio::process::Command::new(&self.spec.binary);
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(is_service_setting) {
                command.env_remove(name);
            }
        }
        command
            .envs(self.spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            // Its own process group: a Ctrl-C at the terminal reaches the runner
            // only, which then stops its children itself (and no crash reaper
            // mistakes them for crashed processes).
            .process_group(0)
            // A safety net: if the runner's handle goes away, so does the child.
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("spawning {}", self.spec.binary.display()))?;
        let pid = child.id().context("the child has no pid")?;
        self.pid.store(pid, Ordering::SeqCst);
        *state = Some(Running { child, pid });
        self.update(|s| s.starts += 1);
        match wait_serving(self.grpc_addr(), self.ready_timeout).await {
            Ok(()) => {
                let took = began.elapsed();
                self.update(|s| s.longest_ready = s.longest_ready.max(took));
                Ok(took)
            }
            Err(error) => {
                self.update(|s| s.failed_starts += 1);
                // Whatever it is doing, it is not a working replica: take it down so
                // the next start begins clean.
                if let Some(mut running) = state.take() {
                    let _ = running.child.start_kill();
                    let _ = running.child.wait().await;
                }
                self.pid.store(0, Ordering::SeqCst);
                Err(error.context(format!("{} (pid {pid}) did not become SERVING", self.spec.name)))
            }
        }
    }

    async fn stop_locked(&self, state: &mut Option<Running>, signal: Signal, grace: Duration) -> Option<Stopped> {
        let mut running = state.take()?;
        let began = Instant::now();
        let signalled_at = std::time::SystemTime::now();
        let mut forced = false;
        let status = match signal {
            Signal::Kill => {
                let _ = running.child.start_kill();
                running.child.wait().await.ok()
            }
            Signal::Term => {
                send_sigterm(running.pid).await;
                match tokio::time::timeout(grace, running.child.wait()).await {
                    Ok(status) => status.ok(),
                    Err(_) => {
                        forced = true;
                        let _ = running.child.start_kill();
                        running.child.wait().await.ok()
                    }
                }
            }
        };
        self.pid.store(0, Ordering::SeqCst);
        let took = began.elapsed();
        self.update(|s| match signal {
            Signal::Kill => s.sigkills += 1,
            Signal::Term => {
                s.sigterms += 1;
                s.longest_sigterm = s.longest_sigterm.max(took);
                if forced {
                    s.sigterm_overruns += 1;
                }
            }
        });
        Some(Stopped { signalled_at, took, forced, status })
    }

    /// Stops it (SIGTERM with a grace period, then SIGKILL; or SIGKILL at once).
    pub async fn stop(&self, signal: Signal, grace: Duration) -> Option<Stopped> {
        let mut state = self.state.lock().await;
        self.stop_locked(&mut state, signal, grace).await
    }

    /// Stops it with `signal`, leaves it down for `downtime`, starts it again
    /// with the same port and environment, and waits until it is SERVING (trying
    /// a few times).
    pub async fn restart(
        &self,
        signal: Signal,
        grace: Duration,
        downtime: Duration,
    ) -> anyhow::Result<(Option<Stopped>, Duration)> {
        let mut state = self.state.lock().await;
        let stopped = self.stop_locked(&mut state, signal, grace).await;
        tokio::time::sleep(downtime).await;
        let mut last = None;
        for _ in 0..3 {
            match self.start_locked(&mut state).await {
                Ok(ready) => return Ok((stopped, ready)),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no start attempted")))
    }

    /// If it exited without being asked to (a crash), records it and starts it
    /// again. Skipped while a fault holds the process.
    pub async fn reap_unexpected(&self) -> Option<String> {
        let mut state = self.state.try_lock().ok()?;
        let running = state.as_mut()?;
        let status = running.child.try_wait().ok()??;
        let what = format!("{} (pid {}) exited on its own: {status}", self.spec.name, running.pid);
        *state = None;
        self.pid.store(0, Ordering::SeqCst);
        self.update(|s| s.unexpected_exits.push(what.clone()));
        let restarted = self.start_locked(&mut state).await;
        Some(match restarted {
            Ok(_) => format!("{what}; restarted"),
            Err(error) => format!("{what}; restart failed: {error:#}"),
        })
    }

    /// Whether it has a live child right now (without waiting for a fault).
    pub async fn is_running(&self) -> bool {
        self.state.lock().await.is_some()
    }
}

/// Sends SIGTERM with the system's `kill` (the workspace forbids `unsafe`, so no
/// direct `libc::kill`; this is not on a hot path).
async fn send_sigterm(pid: u32) {
    let result = tokio::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(error) = result {
        eprintln!("chaos: kill -TERM {pid}: {error}");
    }
}

/// Waits until the gRPC health of `addr` says the whole server (`""`) is SERVING.
pub async fn wait_serving(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match health(addr).await {
            Ok(ServingStatus::Serving) => return Ok(()),
            Ok(status) => format!("health is {status:?}"),
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() >= deadline {
            bail!("{addr} not SERVING within {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health(addr: SocketAddr) -> anyhow::Result<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await?;
    let request = HealthCheckRequest { service: String::new() };
    let response = tokio::time::timeout(Duration::from_secs(2), HealthClient::new(channel).check(request))
        .await
        .context("health check timed out")??;
    Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// The five processes of a run: three participants and two order_service
/// replicas sharing one reply queue and one Redis state.
pub struct Fleet {
    pub processes: Vec<Arc<Managed>>,
    /// Held by any fault that takes an order_service replica down, so the two
    /// replicas are never down at the same time: the API always has one.
    pub order_gate: Mutex<()>,
    pub grace: Duration,
}

/// What [`Fleet::spawn`] needs.
pub struct FleetSettings<'a> {
    pub binaries: &'a Binaries,
    pub namespace: &'a str,
    pub amqp_url: &'a str,
    pub redis_url: &'a str,
    pub log_dir: &'a Path,
    pub service_log: &'a str,
    pub ready_timeout: Duration,
    pub grace: Duration,
}

impl Fleet {
    /// Starts the participants, then the two order_service replicas, and waits
    /// until every one is SERVING.
    pub async fn spawn(settings: FleetSettings<'_>) -> anyhow::Result<Self> {
        let layout = [
            (Service::Consumer, "consumer_service"),
            (Service::Restaurant, "restaurant_service"),
            (Service::Accounting, "accounting_service"),
            (Service::Order, "order_service#1"),
            (Service::Order, "order_service#2"),
        ];
        let mut processes = Vec::new();
        let ports = free_ports(2 * layout.len())?;
        for ((service, name), pair) in layout.into_iter().zip(ports.chunks(2)) {
            let (grpc_port, http_port) = (pair[0], pair[1]);
            let env = vec![
                ("FTGO_NAMESPACE".to_owned(), settings.namespace.to_owned()),
                ("GRPC_ADDR".to_owned(), format!("127.0.0.1:{grpc_port}")),
                // The operators' HTTP port (/metrics): two replicas on one machine
                // must not share the default one.
                ("HTTP_ADDR".to_owned(), format!("127.0.0.1:{http_port}")),
                ("AMQP_URL".to_owned(), settings.amqp_url.to_owned()),
                ("REDIS_URL".to_owned(), settings.redis_url.to_owned()),
                ("RUST_LOG".to_owned(), settings.service_log.to_owned()),
                ("LOG_FORMAT".to_owned(), "plain".to_owned()),
                // Short saga timings so that recovery is fast; compensations retry
                // (almost) forever so no saga parks during the run.
                ("SAGA_STEP_TIMEOUT_MS".to_owned(), "1000".to_owned()),
                ("SAGA_MAX_ATTEMPTS".to_owned(), "3".to_owned()),
                ("SAGA_BACKOFF_INITIAL_MS".to_owned(), "100".to_owned()),
                ("SAGA_BACKOFF_MAX_MS".to_owned(), "1000".to_owned()),
                ("SAGA_SWEEP_INTERVAL_MS".to_owned(), "100".to_owned()),
                ("SAGA_COMPENSATION_MAX_ATTEMPTS".to_owned(), "1000".to_owned()),
                // The scenarios rely on these two defaults: say them explicitly.
                ("ORDER_MAX_TOTAL_MINOR".to_owned(), "50000".to_owned()),
                ("RESTAURANT_FAULT_INJECTION".to_owned(), "true".to_owned()),
            ];
            let file = name.replace('#', "-");
            let spec = ProcessSpec {
                name: name.to_owned(),
                service,
                binary: settings.binaries.path(service).to_path_buf(),
                grpc_port,
                env,
                log: settings.log_dir.join(format!("{file}.log")),
            };
            processes.push(Arc::new(Managed::new(spec, settings.ready_timeout)));
        }
        let fleet = Self { processes, order_gate: Mutex::new(()), grace: settings.grace };
        // Participants first (they declare their queues), then the replicas; all
        // at once within each group.
        let (participants, replicas): (Vec<_>, Vec<_>) =
            fleet.processes.iter().partition(|p| p.spec.service != Service::Order);
        for group in [participants, replicas] {
            let started = futures::future::join_all(group.iter().map(|p| p.start())).await;
            for (process, result) in group.iter().zip(started) {
                if let Err(error) = result {
                    fleet.stop_all().await;
                    return Err(error.context(format!(
                        "starting {}; its log is {}",
                        process.spec.name,
                        process.spec.log.display()
                    )));
                }
            }
        }
        Ok(fleet)
    }

    /// The processes of one service.
    pub fn of(&self, service: Service) -> Vec<&Arc<Managed>> {
        self.processes.iter().filter(|p| p.spec.service == service).collect()
    }

    /// The first process of a service (participants have exactly one).
    pub fn one(&self, service: Service) -> &Arc<Managed> {
        self.processes.iter().find(|p| p.spec.service == service).unwrap_or(&self.processes[0])
    }

    /// The pids of every live process.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().filter_map(|p| p.pid()).collect()
    }

    /// SIGTERM to all at once, SIGKILL to any still there after the grace period.
    pub async fn stop_all(&self) -> Vec<(String, Stopped)> {
        let stops = futures::future::join_all(self.processes.iter().map(|p| async move {
            let stopped = p.stop(Signal::Term, self.grace).await;
            stopped.map(|s| (p.spec.name.clone(), s))
        }))
        .await;
        stops.into_iter().flatten().collect()
    }

    /// Restarts every process that exited on its own; what was found.
    pub async fn reap_unexpected(&self) -> Vec<String> {
        let mut found = Vec::new();
        for process in &self.processes {
            if let Some(what) = process.reap_unexpected().await {
                found.push(what);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::{free_ports, is_service_setting};

    #[test]
    fn free_ports_asked_for_together_are_distinct() {
        let ports = free_ports(64).expect("ports");
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!((ports.len(), distinct.len()), (64, 64));
        assert!(!ports.contains(&0));
    }

    #[test]
    fn every_service_setting_is_kept_from_the_caller_and_nothing_else() {
        // README's Configuration table, plus the trace-only OTLP endpoint and mimalloc's.
        let settings = "AMQP_URL REDIS_URL GRPC_ADDR HTTP_ADDR FTGO_NAMESPACE AMQP_PREFETCH AMQP_ACK_DELAY_MS \
            AMQP_QUEUE_TYPE TOKIO_WORKER_THREADS LOG_FORMAT RUST_LOG OTEL_EXPORTER_OTLP_ENDPOINT \
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT FIXTURES_PATH FIXTURE_CACHE_MS RESTAURANT_FAULT_INJECTION \
            SAGA_STEP_TIMEOUT_MS SAGA_MAX_ATTEMPTS SAGA_COMPENSATION_MAX_ATTEMPTS SAGA_BACKOFF_INITIAL_MS \
            SAGA_BACKOFF_MAX_MS SAGA_SWEEP_INTERVAL_MS SAGA_STUCK_THRESHOLD_SECS SAGA_RETENTION_SECS \
            ORDER_MAX_TOTAL_MINOR WATCH_MAX_STREAMS WATCH_RECHECK_MS SAGA_STATE_CACHE_ENTRIES MIMALLOC_ARENA_EAGER_COMMIT";
        for name in settings.split_whitespace() {
            assert!(is_service_setting(name), "{name} would leak into the services");
        }
        for name in ["PATH", "HOME", "LANG", "TMPDIR", "RUST_BACKTRACE", "CARGO_TARGET_DIR", "HOSTNAME"] {
            assert!(!is_service_setting(name), "{name} is not a service setting");
        }
    }
}
