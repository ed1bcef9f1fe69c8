//! The fault schedule, derived from the seed before anything runs, and the
//! injectors that carry each fault out: SIGKILL and SIGTERM restarts of any of the
//! five processes, dropping every AMQP and every Redis connection of the
//! namespace, and republishing captured commands and replies.
//!
//! The one decision to know: the schedule fixes, for each fault, its kind, its
//! target, a time offset from the start of driving *and* a saga count; a fault
//! fires when both are reached. So the same seed replays the same faults in the
//! same order against the same processes, spread over the driving period however
//! fast the sagas go (the time keeps them from bunching up when sagas are fast,
//! the count when sagas are slow). Faults run concurrently, but one process is
//! restarted by one fault at a time, and the two order_service replicas are never
//! down together.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use redis::aio::ConnectionManager;
use tokio::sync::watch;

use crate::{
    AbortOnDrop, admin,
    firehose::{self, Capture},
    processes::{Fleet, Service, Signal},
};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL a process, then start it again.
    Sigkill,
    /// SIGTERM a process (graceful), then start it again.
    Sigterm,
    /// Close every AMQP connection of the namespace.
    DropAmqp,
    /// Kill every Redis client connection of the namespace's processes.
    DropRedis,
    /// Republish a batch of captured commands and replies.
    Duplicates,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] =
        [FaultKind::Sigkill, FaultKind::Sigterm, FaultKind::DropAmqp, FaultKind::DropRedis, FaultKind::Duplicates];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Sigkill => "sigkill",
            FaultKind::Sigterm => "sigterm",
            FaultKind::DropAmqp => "drop_amqp",
            FaultKind::DropRedis => "drop_redis",
            FaultKind::Duplicates => "duplicates",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFault {
    /// Its position in the schedule (by time).
    pub seq: usize,
    pub kind: FaultKind,
    /// The process index (in [`Fleet::processes`]) of a restart.
    pub target: Option<usize>,
    /// Not before this long after driving started…
    pub at: Duration,
    /// …and not before this many sagas were created.
    pub at_saga: usize,
    /// How many messages a duplicate fault republishes.
    pub batch: usize,
    /// Seeds the choice of the messages of a duplicate fault.
    pub pick_seed: u64,
    /// How long a restarted process stays down before it is started again.
    pub downtime: Duration,
}

/// Builds the whole schedule from the seed: `faults` split evenly over the five
/// kinds (the remainder to kinds chosen by the seed); each kind spread evenly
/// over `period` and `sagas` (its own slots, each fault in the middle half of
/// its slot, so two faults of one kind are never closer than half a slot: an
/// AMQP drop takes seconds of `rabbitmqctl` and must not pile up); restarts
/// spread evenly over the `processes` targets, each staying down for up to
/// `max_downtime` (uniformly; the same draws whatever the maximum).
pub fn schedule(
    seed: u64,
    faults: usize,
    sagas: usize,
    period: Duration,
    processes: usize,
    max_downtime: Duration,
) -> Vec<PlannedFault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts: BTreeMap<FaultKind, usize> = FaultKind::ALL.iter().map(|k| (*k, faults / 5)).collect();
    let mut extra = FaultKind::ALL.to_vec();
    extra.shuffle(&mut rng);
    for kind in extra.into_iter().take(faults % 5) {
        *counts.entry(kind).or_default() += 1;
    }
    let mut timed: Vec<(f64, FaultKind)> = Vec::with_capacity(faults);
    for (kind, n) in &counts {
        for slot in 0..*n {
            timed.push(((slot as f64 + rng.random_range(0.25..0.75)) / *n as f64, *kind));
        }
    }
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));

    // Each restart kind cycles through every process (shuffled per round), so
    // each process, both replicas included, is hit as often as the others.
    let mut rounds: BTreeMap<FaultKind, Vec<usize>> = BTreeMap::new();
    let mut plan = Vec::with_capacity(timed.len());
    for (seq, (fraction, kind)) in timed.into_iter().enumerate() {
        let target = match kind {
            FaultKind::Sigkill | FaultKind::Sigterm if processes > 0 => {
                let round = rounds.entry(kind).or_default();
                if round.is_empty() {
                    *round = (0..processes).collect();
                    round.shuffle(&mut rng);
                }
                round.pop()
            }
            _ => None,
        };
        plan.push(PlannedFault {
            seq,
            kind,
            target,
            at: period.mul_f64(fraction),
            at_saga: ((sagas as f64) * fraction).floor() as usize,
            batch: rng.random_range(5..=20),
            pick_seed: rng.random(),
            downtime: max_downtime.mul_f64(rng.random_range(0.0..1.0)),
        });
    }
    plan
}

/// What one fault did.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub planned: PlannedFault,
    /// Its target's name (a process) or what it acted on.
    pub target: String,
    pub started: Duration,
    pub ended: Duration,
    pub ended_at: SystemTime,
    /// When it hit: the signal sent, the connections closed, the copies published.
    pub hit_at: SystemTime,
    /// It took effect (something was killed, closed or republished).
    pub effective: bool,
    pub detail: String,
    /// Findings about the services (a slow SIGTERM, a failed restart).
    pub findings: Vec<String>,
    /// Messages republished (duplicate faults).
    pub republished: usize,
    /// Of those, commands still within their deadline (`x-deadline-ms`): only
    /// the participants' idempotency stands between them and a second effect.
    pub republished_in_time: usize,
    /// Of those, replies.
    pub republished_replies: usize,
    /// Connections closed (drop faults).
    pub closed: usize,
}

/// Everything the injectors act with.
pub struct Injector {
    pub fleet: Arc<Fleet>,
    pub namespace: String,
    pub redis: ConnectionManager,
    pub capture: Arc<Capture>,
    pub publish: lapin::Channel,
    /// The runner's own pid: never one of the targets.
    pub own_pid: u32,
    /// One AMQP drop at a time: each runs several `rabbitmqctl` (an Erlang VM
    /// apiece); overlapping drops would starve the services of CPU on a small
    /// machine and smear the fault over seconds.
    pub amqp_gate: tokio::sync::Mutex<()>,
}

impl Injector {
    /// Runs the schedule: each fault when both its time and its saga count are
    /// reached, concurrently with the others. Returns when every fault is done.
    pub async fn run(
        self: Arc<Self>,
        plan: Vec<PlannedFault>,
        t0: Instant,
        mut created: watch::Receiver<usize>,
        done: watch::Sender<usize>,
    ) -> Vec<FaultRecord> {
        let mut tasks = Vec::with_capacity(plan.len());
        for fault in plan {
            tokio::time::sleep_until((t0 + fault.at).into()).await;
            // `created` only grows; a closed sender means driving is over.
            let _ = created.wait_for(|n| *n >= fault.at_saga).await;
            let this = self.clone();
            let done = done.clone();
            tasks.push(AbortOnDrop(tokio::spawn(async move {
                let record = this.inject(fault, t0).await;
                done.send_modify(|n| *n += 1);
                record
            })));
        }
        let mut records = Vec::new();
        for mut task in tasks {
            if let Ok(record) = (&mut task.0).await {
                records.push(record);
            }
        }
        records.sort_by_key(|r| r.planned.seq);
        records
    }

    async fn inject(&self, fault: PlannedFault, t0: Instant) -> FaultRecord {
        let started = t0.elapsed();
        let mut record = FaultRecord {
            planned: fault.clone(),
            target: String::new(),
            started,
            ended: started,
            ended_at: SystemTime::now(),
            hit_at: SystemTime::now(),
            effective: false,
            detail: String::new(),
            findings: Vec::new(),
            republished: 0,
            republished_in_time: 0,
            republished_replies: 0,
            closed: 0,
        };
        match fault.kind {
            FaultKind::Sigkill | FaultKind::Sigterm => self.restart(&fault, &mut record).await,
            FaultKind::DropAmqp => self.drop_amqp(&mut record).await,
            FaultKind::DropRedis => self.drop_redis(&mut record).await,
            FaultKind::Duplicates => self.duplicates(&fault, &mut record).await,
        }
        record.ended = t0.elapsed();
        record.ended_at = SystemTime::now();
        record
    }

    async fn restart(&self, fault: &PlannedFault, record: &mut FaultRecord) {
        let Some(process) = fault.target.and_then(|i| self.fleet.processes.get(i)) else {
            record.detail = "no target".into();
            return;
        };
        record.target = process.spec.name.clone();
        let signal = if fault.kind == FaultKind::Sigkill { Signal::Kill } else { Signal::Term };
        // Never both replicas down: a replica restarts only while holding the gate,
        // and the gate is released only once it is SERVING again.
        let _gate = if process.spec.service == Service::Order {
            let gate = self.fleet.order_gate.lock().await;
            for other in self.fleet.of(Service::Order) {
                if !Arc::ptr_eq(other, process) && !other.is_running().await {
                    record
                        .findings
                        .push(format!("{} was not running when {} was restarted", other.spec.name, record.target));
                }
            }
            Some(gate)
        } else {
            None
        };
        let old_pid = process.pid();
        match process.restart(signal, self.fleet.grace, fault.downtime).await {
            Ok((stopped, ready)) => {
                record.effective = stopped.is_some();
                if let Some(stopped) = &stopped {
                    record.hit_at = stopped.signalled_at;
                }
                let stopped_text = match &stopped {
                    Some(s) => {
                        if s.forced {
                            record.findings.push(format!(
                                "{} (pid {}) did not exit within {:?} of SIGTERM; SIGKILLed",
                                record.target,
                                old_pid.unwrap_or_default(),
                                self.fleet.grace
                            ));
                        }
                        format!("exited in {} ms ({})", s.took.as_millis(), status_text(s.status))
                    }
                    None => "was not running".to_owned(),
                };
                record.detail = format!(
                    "pid {} {}; down {} ms; pid {} SERVING after {} ms",
                    old_pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    stopped_text,
                    fault.downtime.as_millis(),
                    process.pid().map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    ready.as_millis()
                );
            }
            Err(error) => {
                record.effective = true;
                record.detail = format!("restart failed: {error:#}");
                record.findings.push(format!("{} did not restart: {error:#}", record.target));
            }
        }
    }

    fn child_pids(&self) -> HashSet<u32> {
        self.fleet.pids().into_iter().filter(|pid| *pid != self.own_pid).collect()
    }

    async fn drop_amqp(&self, record: &mut FaultRecord) {
        record.target = format!("AMQP connections of ns={}", self.namespace);
        let _gate = self.amqp_gate.lock().await;
        let pids = self.child_pids();
        let ports = admin::ports_of(&pids, 5672).await.unwrap_or_default();
        let connections = match admin::list_amqp_connections().await {
            Ok(connections) => connections,
            Err(error) => {
                record.detail = format!("listing connections: {error:#}");
                return;
            }
        };
        let mut by_name = 0;
        let mut by_port_only = 0;
        let ours: Vec<_> = connections
            .into_iter()
            .filter(|c| {
                let named = c.name.as_deref().is_some_and(|n| admin::name_in_namespace(n, &self.namespace));
                let owned = ports.contains(&c.peer_port);
                by_name += usize::from(named);
                by_port_only += usize::from(owned && !named);
                named || owned
            })
            .collect();
        let closes = futures::future::join_all(ours.iter().map(|c| admin::close_amqp_connection(&c.pid))).await;
        record.hit_at = SystemTime::now();
        let errors: Vec<String> = closes.into_iter().filter_map(|r| r.err().map(|e| format!("{e:#}"))).collect();
        record.closed = ours.len() - errors.len();
        record.effective = record.closed > 0;
        record.detail = format!(
            "closed {} of {} connections ({} matched by name, {} only by a child's client port){}",
            record.closed,
            ours.len(),
            by_name,
            by_port_only,
            if errors.is_empty() { String::new() } else { format!("; errors: {}", errors.join("; ")) }
        );
    }

    async fn drop_redis(&self, record: &mut FaultRecord) {
        record.target = format!("Redis clients of ns={}", self.namespace);
        let pids = self.child_pids();
        let ports = match admin::ports_of(&pids, 6379).await {
            Ok(ports) => ports,
            Err(error) => {
                record.detail = format!("listing sockets: {error:#}");
                return;
            }
        };
        let mut redis = self.redis.clone();
        let killed = admin::kill_redis_clients(&mut redis, &ports).await;
        record.hit_at = SystemTime::now();
        record.closed = killed;
        record.effective = killed > 0;
        record.detail = format!("killed {killed} of {} client sockets of {} processes", ports.len(), pids.len());
    }

    async fn duplicates(&self, fault: &PlannedFault, record: &mut FaultRecord) {
        record.target = "captured commands and replies".into();
        // Early in the run the capture may still be filling up.
        let waited = Instant::now();
        while self.capture.seen() < fault.batch && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let picked = self.capture.pick(fault.batch, fault.pick_seed);
        let replies = picked.iter().filter(|m| m.is_reply()).count();
        let now = crate::processes::unix_ms();
        let in_time = picked.iter().filter(|m| !m.is_reply() && m.deadline_ms().is_some_and(|d| d > now)).count();
        let republished = firehose::republish(&self.publish, &picked).await;
        record.hit_at = SystemTime::now();
        match republished {
            Ok(confirmed) => {
                record.republished = confirmed;
                record.republished_in_time = in_time;
                record.republished_replies = replies;
                record.effective = confirmed > 0;
                record.detail = format!(
                    "republished {confirmed} of {} ({} commands, {in_time} of them within their deadline; {replies} replies)",
                    picked.len(),
                    picked.len() - replies
                );
            }
            Err(error) => record.detail = format!("republishing: {error:#}"),
        }
    }
}

fn status_text(status: Option<std::process::ExitStatus>) -> String {
    match status {
        Some(status) => status.to_string(),
        None => "status unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let a = schedule(7, 75, 300, Duration::from_secs(30), 5, Duration::ZERO);
        assert_eq!(a, schedule(7, 75, 300, Duration::from_secs(30), 5, Duration::ZERO));
        assert_ne!(a, schedule(8, 75, 300, Duration::from_secs(30), 5, Duration::ZERO));
    }

    #[test]
    fn faults_are_split_evenly_over_kinds_and_restarts_over_processes() {
        let plan = schedule(42, 75, 300, Duration::from_secs(30), 5, Duration::ZERO);
        assert_eq!(plan.len(), 75);
        for kind in FaultKind::ALL {
            assert_eq!(plan.iter().filter(|f| f.kind == kind).count(), 15, "{kind}");
        }
        for kind in [FaultKind::Sigkill, FaultKind::Sigterm] {
            for target in 0..5 {
                let hits = plan.iter().filter(|f| f.kind == kind && f.target == Some(target)).count();
                assert_eq!(hits, 3, "{kind} of process {target}");
            }
        }
        let uneven = schedule(42, 27, 300, Duration::from_secs(30), 5, Duration::ZERO);
        for kind in FaultKind::ALL {
            assert!(uneven.iter().filter(|f| f.kind == kind).count() >= 5);
        }
    }

    #[test]
    fn faults_are_spread_over_the_period_and_the_sagas_in_order() {
        let period = Duration::from_secs(30);
        let plan = schedule(1, 75, 300, period, 5, Duration::from_secs(2));
        assert!(plan.windows(2).all(|w| w[0].at <= w[1].at && w[0].at_saga <= w[1].at_saga));
        assert!(plan.iter().all(|f| f.at < period && f.at_saga < 300));
        assert!(plan[0].at < period / 10 && plan[74].at > period * 9 / 10);
        for kind in FaultKind::ALL {
            let times: Vec<Duration> = plan.iter().filter(|f| f.kind == kind).map(|f| f.at).collect();
            assert!(times.windows(2).all(|w| w[1] - w[0] >= period / 15 / 2), "{kind} faults bunch up");
        }
        assert!(plan.iter().all(|f| (5..=20).contains(&f.batch)));
        assert!(plan.iter().all(|f| f.downtime < Duration::from_secs(2)));
        let calm = schedule(1, 75, 300, period, 5, Duration::ZERO);
        assert!(calm.iter().zip(&plan).all(|(a, b)| (a.kind, a.target, a.at) == (b.kind, b.target, b.at)));
    }
}
