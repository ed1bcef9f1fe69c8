//! CPU per saga by process (`--cpu-of`): the user + system CPU time that named
//! processes, and loadgen itself, spent during the measured segments, divided by
//! the sagas those segments completed.
//!
//! The decision a reader must know: processes are matched by their kernel name
//! (`/proc/<pid>/stat`'s `comm`, which the kernel cuts to 15 bytes, so
//! `consumer_service` is `consumer_servic`), and every process of a name counts.
//! On this 2-core machine throughput drifts by 20 % within minutes while CPU per
//! saga of one build stays within a few per cent, so it is the figure that A/B
//! comparisons in docs/performance.md rest on. Linux only (`/proc`).
//!
//! With `--cpu-threads` each process's figure is also split by thread name
//! (`/proc/<pid>/task/<tid>/stat`), with the digits of a name folded to `#` so
//! that a pool's threads (RabbitMQ's `1_scheduler`, `2_scheduler`) add up under
//! one name. It tells how much of a process is lapin's I/O thread
//! (`lapin-io-loop`) against its tokio workers. Only threads alive at both
//! readings of a segment are split out; the rest of the process's figure,
//! including what rounding each thread's ticks separately leaves, is shown as
//! `(other threads)`.
//!
//! Next to the processes, each report carries the whole machine's share of busy
//! and of stolen time over the same segments (`/proc/stat`): on a VM whose host
//! runs other guests on its vCPUs, steal is what makes one run slower than the
//! next, and a comparison of runs should say how much of it each had. It is an
//! addition: where `/proc/stat` cannot be read or parsed, the processes' figures
//! are still reported, without the machine's shares.

use std::collections::BTreeMap;

use serde::Serialize;

/// The processes `system` stands for: the four services, Redis and RabbitMQ's VM.
pub const SYSTEM: [&str; 6] =
    ["order_service", "consumer_service", "restaurant_service", "accounting_service", "redis-server", "beam.smp"];

/// The key loadgen's own CPU is reported under.
pub const SELF: &str = "loadgen";

/// The longest name the kernel keeps for a process.
const COMM_LEN: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("--cpu-of needs at least one process name")]
    Empty,
    #[error("cannot read process CPU times from /proc: {0}")]
    Proc(String),
}

/// The processes whose CPU is measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSet {
    /// Names as given, in order, without duplicates.
    names: Vec<String>,
    /// Whether snapshots also read every thread of the processes.
    threads: bool,
}

impl ProcessSet {
    /// `order_service,redis-server`, or `system` for [`SYSTEM`], or both.
    pub fn parse(list: &str) -> Result<Self, CpuError> {
        let mut names: Vec<String> = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let expanded: Vec<&str> = if name == "system" { SYSTEM.to_vec() } else { vec![name] };
            for name in expanded {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
        }
        if names.is_empty() {
            return Err(CpuError::Empty);
        }
        Ok(Self { names, threads: false })
    }

    /// Also split each process's CPU by thread name (`--cpu-threads`).
    pub fn with_threads(mut self, threads: bool) -> Self {
        self.threads = threads;
        self
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The name `comm` is known by, if it is one of ours.
    fn name_of(&self, comm: &str) -> Option<&str> {
        self.names.iter().map(String::as_str).find(|name| truncated(name) == comm)
    }

    /// CPU ticks of every matching process now, and of loadgen itself.
    pub fn snapshot(&self) -> Result<Snapshot, CpuError> {
        read_snapshot(self)
    }
}

fn truncated(name: &str) -> &str {
    match name.char_indices().nth(COMM_LEN) {
        Some((end, _)) => &name[..end],
        None => name,
    }
}

/// A thread's name with every run of digits folded to `#`, so that the
/// numbered threads of a pool add up under one name. The kernel cuts names at
/// 15 bytes, the more of a name the more digits its number has (`1_dirty_io_sche`,
/// `10_dirty_io_sch`), so a folded name longer than 12 bytes is cut to 12 and
/// marked `…`: the same for any number of up to four digits.
fn thread_kind(comm: &str) -> String {
    let mut kind = String::with_capacity(comm.len());
    let mut folded = false;
    for c in comm.chars() {
        if !c.is_ascii_digit() {
            kind.push(c);
        } else if !kind.ends_with('#') {
            kind.push('#');
            folded = true;
        }
    }
    if folded && kind.len() > COMM_LEN - 3 {
        let mut end = COMM_LEN - 3;
        while !kind.is_char_boundary(end) {
            end -= 1;
        }
        kind.truncate(end);
        kind.push('…');
    }
    kind
}

/// The name `(other threads)`: the rest of a process's figure, the threads not
/// alive at both readings and what rounding each thread's ticks leaves.
pub const OTHER_THREADS: &str = "(other threads)";

/// The whole machine's CPU time at one moment (`/proc/stat`'s `cpu` line), in
/// ticks summed over its CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    /// Every state, steal included (guest time is already part of user time).
    pub total: u64,
    /// Idle and waiting for I/O.
    pub idle: u64,
    /// Time the hypervisor ran something else while this guest's vCPU wanted to run.
    pub steal: u64,
}

impl MachineTicks {
    fn since(&self, before: &MachineTicks) -> MachineTicks {
        MachineTicks {
            total: self.total.saturating_sub(before.total),
            idle: self.idle.saturating_sub(before.idle),
            steal: self.steal.saturating_sub(before.steal),
        }
    }

    fn add(&mut self, other: MachineTicks) {
        self.total += other.total;
        self.idle += other.idle;
        self.steal += other.steal;
    }

    /// Running anything: neither idle nor stolen.
    fn busy(&self) -> u64 {
        self.total.saturating_sub(self.idle).saturating_sub(self.steal)
    }
}

/// CPU ticks by process at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// pid → (name, utime + stime ticks).
    processes: BTreeMap<i32, (String, u64)>,
    own: u64,
    /// With threads: (pid, tid) → (process name, thread kind, ticks); loadgen's
    /// own threads under [`SELF`].
    threads: BTreeMap<(i32, i32), (String, String, u64)>,
    /// `None` where `/proc/stat` could not be read.
    machine: Option<MachineTicks>,
}

#[cfg(target_os = "linux")]
fn read_snapshot(set: &ProcessSet) -> Result<Snapshot, CpuError> {
    use procfs::process::{Process, all_processes};
    let error = |e: procfs::ProcError| CpuError::Proc(e.to_string());
    let myself = Process::myself().map_err(error)?;
    let own_pid = myself.pid;
    let mut processes = BTreeMap::new();
    let mut threads = BTreeMap::new();
    // A thread can end between the listing and the read: it is skipped.
    let mut read_threads = |process: &Process, name: &str| {
        let Ok(tasks) = process.tasks() else { return };
        for stat in tasks.flatten().filter_map(|task| task.stat().ok()) {
            let ticks = stat.utime + stat.stime;
            threads.insert((process.pid, stat.pid), (name.to_owned(), thread_kind(&stat.comm), ticks));
        }
    };
    for process in all_processes().map_err(error)? {
        // A process can end between the listing and the read: it is skipped.
        let Ok(process) = process else { continue };
        let Ok(stat) = process.stat() else { continue };
        if stat.pid == own_pid {
            continue;
        }
        if let Some(name) = set.name_of(&stat.comm) {
            processes.insert(stat.pid, (name.to_owned(), stat.utime + stat.stime));
            if set.threads {
                read_threads(&process, name);
            }
        }
    }
    // loadgen's own figure is read next to its threads, as each process's is.
    let own = myself.stat().map_err(error)?;
    if set.threads {
        read_threads(&myself, SELF);
    }
    let machine = read_machine().ok();
    Ok(Snapshot { processes, own: own.utime + own.stime, threads, machine })
}

#[cfg(target_os = "linux")]
fn read_machine() -> procfs::ProcResult<MachineTicks> {
    use procfs::CurrentSI;
    let cpu = procfs::KernelStats::current()?.total;
    let [iowait, irq, softirq, steal] = [cpu.iowait, cpu.irq, cpu.softirq, cpu.steal].map(Option::unwrap_or_default);
    Ok(MachineTicks {
        total: cpu.user + cpu.nice + cpu.system + cpu.idle + iowait + irq + softirq + steal,
        idle: cpu.idle + iowait,
        steal,
    })
}

#[cfg(not(target_os = "linux"))]
fn read_snapshot(_set: &ProcessSet) -> Result<Snapshot, CpuError> {
    Err(CpuError::Proc("process CPU times are read from /proc, which only Linux has".into()))
}

/// CPU ticks per name added up over segments, with the sagas they completed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuTally {
    ticks: BTreeMap<String, u64>,
    /// With threads: process name → thread kind → ticks.
    thread_ticks: BTreeMap<String, BTreeMap<String, u64>>,
    machine: MachineTicks,
    sagas: u64,
}

impl CpuTally {
    /// Adds one segment: what each process spent between `before` and `after`
    /// (a process that started or ended in between counts only if it was in both),
    /// and the sagas the segment completed.
    pub fn add(&mut self, set: &ProcessSet, before: &Snapshot, after: &Snapshot, sagas: u64) {
        for name in set.names() {
            self.ticks.entry(name.clone()).or_default();
        }
        for (pid, (name, end)) in &after.processes {
            if let Some((_, start)) = before.processes.get(pid) {
                *self.ticks.entry(name.clone()).or_default() += end.saturating_sub(*start);
            }
        }
        *self.ticks.entry(SELF.to_owned()).or_default() += after.own.saturating_sub(before.own);
        if set.threads {
            for (key, (name, kind, end)) in &after.threads {
                if let Some((_, _, start)) = before.threads.get(key) {
                    let by_kind = self.thread_ticks.entry(name.clone()).or_default();
                    *by_kind.entry(kind.clone()).or_default() += end.saturating_sub(*start);
                }
            }
        }
        // A segment counts for the machine's shares only when both readings have it.
        if let (Some(before), Some(after)) = (&before.machine, &after.machine) {
            self.machine.add(after.since(before));
        }
        self.sagas += sagas;
    }

    /// Milliseconds of CPU per completed saga by name, and their `total`.
    pub fn report(&self, ticks_per_second: u64) -> CpuReport {
        let per_saga = |ticks: u64| {
            if self.sagas == 0 || ticks_per_second == 0 {
                0.0
            } else {
                ticks as f64 * 1000.0 / ticks_per_second as f64 / self.sagas as f64
            }
        };
        let ms_per_saga: BTreeMap<String, f64> = self.ticks.iter().map(|(n, t)| (n.clone(), per_saga(*t))).collect();
        let mut by_thread = BTreeMap::new();
        for (name, kinds) in &self.thread_ticks {
            let mut threads: BTreeMap<String, f64> = kinds.iter().map(|(k, t)| (k.clone(), per_saga(*t))).collect();
            let split: u64 = kinds.values().sum();
            let other = self.ticks.get(name).copied().unwrap_or(0).saturating_sub(split);
            if other > 0 {
                threads.insert(OTHER_THREADS.to_owned(), per_saga(other));
            }
            by_thread.insert(name.clone(), threads);
        }
        let machine = (self.machine.total > 0).then(|| {
            let percent = |ticks: u64| ticks as f64 * 100.0 / self.machine.total as f64;
            MachineShare { busy_percent: percent(self.machine.busy()), steal_percent: percent(self.machine.steal) }
        });
        CpuReport { total: ms_per_saga.values().sum(), ms_per_saga, sagas: self.sagas, by_thread, machine }
    }
}

/// The clock ticks of `/proc`'s CPU times.
pub fn ticks_per_second() -> u64 {
    #[cfg(target_os = "linux")]
    {
        procfs::ticks_per_second()
    }
    #[cfg(not(target_os = "linux"))]
    {
        100
    }
}

/// CPU per saga of the measured segments, in the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CpuReport {
    /// Milliseconds of CPU (user + system) per completed saga, by process name;
    /// `loadgen` is this process (during the baseline, the baseline's orchestrator
    /// and participant run in it).
    pub ms_per_saga: BTreeMap<String, f64>,
    /// Their sum.
    pub total: f64,
    /// The sagas they were divided by.
    pub sagas: u64,
    /// With `--cpu-threads`: each process's milliseconds per saga by thread
    /// name (digits folded to `#`), with `(other threads)` for threads that
    /// started or ended during a segment.
    #[serde(rename = "ms_per_saga_by_thread", skip_serializing_if = "BTreeMap::is_empty")]
    pub by_thread: BTreeMap<String, BTreeMap<String, f64>>,
    /// The whole machine over the same segments (`None` if no time passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineShare>,
}

/// The whole machine's time over the measured segments, as shares of all its
/// CPUs' time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MachineShare {
    /// Running anything (user, system, interrupts), steal not included.
    pub busy_percent: f64,
    /// Stolen by the hypervisor.
    pub steal_percent: f64,
}

impl CpuReport {
    /// `order_service 0.331, …, total 1.412`.
    pub fn to_text(&self) -> String {
        let parts: Vec<String> = self.ms_per_saga.iter().map(|(name, ms)| format!("{name} {ms:.3}")).collect();
        format!("{}, total {:.3}", parts.join(", "), self.total)
    }

    /// `busy 82.7 %, steal 6.6 %`: the whole machine over the same segments.
    pub fn machine_text(&self) -> Option<String> {
        self.machine.map(|m| format!("busy {:.1} %, steal {:.1} %", m.busy_percent, m.steal_percent))
    }

    /// With threads: one `(process, "tokio-runtime-w 0.412, lapin-io-loop
    /// 0.150")` per process, its threads from the busiest down. Threads and
    /// processes that spent less than 0.0005 ms per saga (they round to 0.000)
    /// are left out; the JSON has them all.
    pub fn thread_texts(&self) -> Vec<(&str, String)> {
        const SHOWN: f64 = 0.0005;
        self.by_thread
            .iter()
            .filter_map(|(name, threads)| {
                let mut threads: Vec<(&String, &f64)> = threads.iter().filter(|(_, ms)| **ms >= SHOWN).collect();
                if threads.is_empty() {
                    return None;
                }
                threads.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
                let parts: Vec<String> = threads.iter().map(|(kind, ms)| format!("{kind} {ms:.3}")).collect();
                Some((name.as_str(), parts.join(", ")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_stands_for_the_services_redis_and_rabbitmq() {
        let set = ProcessSet::parse("system, order_service ,extra").expect("valid list");
        assert_eq!(set.names().len(), 7, "no duplicate for order_service: {:?}", set.names());
        assert_eq!(set.names()[6], "extra");
        assert!(matches!(ProcessSet::parse(" , "), Err(CpuError::Empty)));
    }

    #[test]
    fn names_match_the_kernels_fifteen_byte_comm() {
        let set = ProcessSet::parse("system").expect("valid list");
        assert_eq!(set.name_of("consumer_servic"), Some("consumer_service"));
        assert_eq!(set.name_of("order_service"), Some("order_service"));
        assert_eq!(set.name_of("beam.smp"), Some("beam.smp"));
        assert_eq!(set.name_of("consumer_service"), None, "the kernel never reports more than 15 bytes");
        assert_eq!(set.name_of("order"), None);
    }

    fn snapshot(processes: &[(i32, &str, u64)], own: u64) -> Snapshot {
        Snapshot {
            processes: processes.iter().map(|(p, n, t)| (*p, ((*n).to_owned(), *t))).collect(),
            own,
            threads: BTreeMap::new(),
            machine: None,
        }
    }

    #[test]
    fn the_machine_shares_add_up_over_segments_and_say_what_was_stolen() {
        let set = ProcessSet::parse("order_service").expect("valid list");
        let at = |total: u64, idle: u64, steal: u64| Snapshot {
            machine: Some(MachineTicks { total, idle, steal }),
            ..snapshot(&[(10, "order_service", 0)], 0)
        };
        let mut tally = CpuTally::default();
        // 200 ticks: 50 idle, 10 stolen; then 200 more: 30 idle, 30 stolen.
        tally.add(&set, &at(1000, 400, 5), &at(1200, 450, 15), 10);
        tally.add(&set, &at(2000, 500, 20), &at(2200, 530, 50), 10);
        let machine = tally.report(100).machine.expect("time passed");
        assert_eq!(machine.steal_percent, 10.0, "40 of 400 ticks");
        assert_eq!(machine.busy_percent, 70.0, "400 - 80 idle - 40 stolen");
        assert_eq!(tally.report(100).machine_text().as_deref(), Some("busy 70.0 %, steal 10.0 %"));
        let nothing = CpuTally::default().report(100);
        assert_eq!(nothing.machine, None, "no time passed: no shares");
        assert_eq!(nothing.machine_text(), None);
        // A segment with a reading of /proc/stat missing: the processes still count,
        // the machine's shares only where both readings had them.
        let unread = Snapshot { machine: None, ..snapshot(&[(10, "order_service", 50)], 0) };
        tally.add(&set, &at(3000, 600, 60), &unread, 10);
        tally.add(&set, &unread, &at(4000, 700, 100), 10);
        let report = tally.report(100);
        assert_eq!(report.ms_per_saga["order_service"], 50.0 * 10.0 / 40.0, "50 ticks of 10 ms over 40 sagas");
        assert_eq!(report.machine.map(|m| m.steal_percent), Some(10.0), "the two full segments only");
        let mut unread_only = CpuTally::default();
        unread_only.add(&set, &unread, &unread, 10);
        assert_eq!(unread_only.report(100).machine, None);
    }

    #[test]
    fn numbered_threads_of_a_pool_fold_into_one_name() {
        assert_eq!(thread_kind("1_scheduler"), "#_scheduler");
        assert_eq!(thread_kind("1_dirty_io_sche"), "#_dirty_io_s…");
        assert_eq!(thread_kind("12_dirty_io_sch"), "#_dirty_io_s…", "cut the same as one digit");
        assert_eq!(thread_kind("123_dirty_io_sc"), "#_dirty_io_s…");
        // A pool whose names cross 15 bytes at ten stays one pool.
        assert_eq!(thread_kind("9_sched_thread"), thread_kind("10_sched_thread"));
        assert_eq!(thread_kind("worker-nm-9"), "worker-nm-#", "12 bytes or fewer: not cut");
        assert_eq!(thread_kind("tokio-runtime-w"), "tokio-runtime-w");
        assert_eq!(thread_kind("bio_lazy_free"), "bio_lazy_free");
        assert_eq!(thread_kind("io_thd_10x2"), "io_thd_#x#");
    }

    #[test]
    fn a_tally_splits_a_process_by_thread_and_shows_the_rest_as_other_threads() {
        let set = ProcessSet::parse("order_service").expect("valid list").with_threads(true);
        let threads = |entries: &[(i32, &str, u64)]| -> BTreeMap<(i32, i32), (String, String, u64)> {
            entries
                .iter()
                .map(|(tid, comm, t)| ((10, *tid), ("order_service".to_owned(), thread_kind(comm), *t)))
                .collect()
        };
        // Thread 13 ran only after the first reading; thread 14 (lapin's) ran throughout.
        let before = Snapshot {
            threads: threads(&[
                (10, "order_service", 5),
                (11, "tokio-runtime-w", 20),
                (12, "tokio-runtime-w", 30),
                (14, "lapin-io-loop", 40),
            ]),
            ..snapshot(&[(10, "order_service", 100)], 0)
        };
        let after = Snapshot {
            threads: threads(&[
                (10, "order_service", 5),
                (11, "tokio-runtime-w", 50),
                (12, "tokio-runtime-w", 50),
                (13, "tokio-runtime-w", 7),
                (14, "lapin-io-loop", 60),
            ]),
            ..snapshot(&[(10, "order_service", 177)], 0)
        };
        let mut tally = CpuTally::default();
        tally.add(&set, &before, &after, 10);
        let report = tally.report(100);
        let split = &report.by_thread["order_service"];
        // 77 ticks of 10 ms over 10 sagas: the workers 30 + 20, lapin 20, and 7 of a
        // thread seen once.
        assert_eq!(split["tokio-runtime-w"], 50.0);
        assert_eq!(split["lapin-io-loop"], 20.0);
        assert_eq!(split["order_service"], 0.0);
        assert_eq!(split[OTHER_THREADS], 7.0);
        assert_eq!(report.ms_per_saga["order_service"], 77.0);
        let text = report.thread_texts();
        assert_eq!(text[0].0, "order_service");
        assert_eq!(
            text[0].1, "tokio-runtime-w 50.000, lapin-io-loop 20.000, (other threads) 7.000",
            "a thread that spent nothing is left out of the text"
        );
        assert_eq!(split.len(), 4, "but not out of the report: {split:?}");
        let without = ProcessSet::parse("order_service").expect("valid list");
        let mut tally = CpuTally::default();
        tally.add(&without, &before, &after, 10);
        assert!(tally.report(100).by_thread.is_empty(), "threads only when asked for");
    }

    #[test]
    fn a_tally_adds_each_process_over_segments_and_divides_by_their_sagas() {
        let set = ProcessSet::parse("order_service,redis-server,beam.smp").expect("valid list");
        let mut tally = CpuTally::default();
        // Two order_service processes; one Redis that restarted (pid 30 only after).
        tally.add(
            &set,
            &snapshot(&[(10, "order_service", 100), (11, "order_service", 50), (20, "redis-server", 7)], 1000),
            &snapshot(&[(10, "order_service", 140), (11, "order_service", 60), (30, "redis-server", 5)], 1030),
            100,
        );
        tally.add(
            &set,
            &snapshot(&[(10, "order_service", 140)], 1030),
            &snapshot(&[(10, "order_service", 190)], 1050),
            100,
        );
        let report = tally.report(100);
        assert_eq!(report.sagas, 200);
        // (40 + 10 + 50) ticks of 10 ms over 200 sagas.
        assert_eq!(report.ms_per_saga["order_service"], 5.0);
        assert_eq!(report.ms_per_saga["redis-server"], 0.0, "a pid seen only once does not count");
        assert_eq!(report.ms_per_saga["beam.smp"], 0.0, "named but never found: shown as 0");
        assert_eq!(report.ms_per_saga[SELF], 2.5);
        assert_eq!(report.total, 7.5);
        assert_eq!(
            report.to_text(),
            "beam.smp 0.000, loadgen 2.500, order_service 5.000, redis-server 0.000, total 7.500"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_snapshot_sees_this_process_spend_cpu() {
        let set = ProcessSet::parse("no-such-process-here").expect("valid list");
        let before = set.snapshot().expect("/proc is readable");
        assert!(before.processes.is_empty());
        // Spin until the kernel has charged at least one tick to this process
        // (bounded, so a broken reading fails instead of hanging).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let after = loop {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
            }
            let now = set.snapshot().expect("/proc is readable");
            if now.own > before.own || std::time::Instant::now() > deadline {
                break now;
            }
        };
        std::hint::black_box(x);
        assert!(after.own > before.own, "no CPU charged to this process in 20 s of spinning");
        // This process ran, so the machine was busy for some of the time between.
        let (Some(after_machine), Some(before_machine)) = (&after.machine, &before.machine) else {
            panic!("/proc/stat is readable on Linux")
        };
        let machine = after_machine.since(before_machine);
        assert!(machine.busy() > 0, "{machine:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_snapshot_with_threads_sees_a_named_thread_of_this_process_spend_cpu() {
        let set = ProcessSet::parse("no-such-process-here").expect("valid list").with_threads(true);
        let spent = |snapshot: &Snapshot| -> Option<u64> {
            snapshot
                .threads
                .values()
                .find(|(process, kind, _)| process == SELF && kind == "cpu-spin#")
                .map(|(_, _, ticks)| *ticks)
        };
        let (started, stop) = (
            std::sync::Arc::new(std::sync::Barrier::new(2)),
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
        let spinner = {
            let (started, stop) = (started.clone(), stop.clone());
            std::thread::Builder::new()
                .name("cpu-spin1".into())
                .spawn(move || {
                    started.wait();
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(1));
                    }
                    x
                })
                .expect("a thread starts")
        };
        started.wait();
        let before = set.snapshot().expect("/proc is readable");
        let first = spent(&before).expect("the spinning thread is listed under loadgen, its digits folded");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut last = first;
        while last == first && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            last = spent(&set.snapshot().expect("/proc is readable")).unwrap_or(first);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = spinner.join();
        assert!(last > first, "no CPU charged to the spinning thread in 20 s");
    }
}
