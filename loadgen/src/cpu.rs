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
        Ok(Self { names })
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

/// CPU ticks by process at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// pid → (name, utime + stime ticks).
    processes: BTreeMap<i32, (String, u64)>,
    own: u64,
}

#[cfg(target_os = "linux")]
fn read_snapshot(set: &ProcessSet) -> Result<Snapshot, CpuError> {
    use procfs::process::{Process, all_processes};
    let error = |e: procfs::ProcError| CpuError::Proc(e.to_string());
    let own = Process::myself().and_then(|p| p.stat()).map_err(error)?;
    let mut processes = BTreeMap::new();
    for process in all_processes().map_err(error)? {
        // A process can end between the listing and the read: it is skipped.
        let Ok(stat) = process.and_then(|p| p.stat()) else { continue };
        if stat.pid == own.pid {
            continue;
        }
        if let Some(name) = set.name_of(&stat.comm) {
            processes.insert(stat.pid, (name.to_owned(), stat.utime + stat.stime));
        }
    }
    Ok(Snapshot { processes, own: own.utime + own.stime })
}

#[cfg(not(target_os = "linux"))]
fn read_snapshot(_set: &ProcessSet) -> Result<Snapshot, CpuError> {
    Err(CpuError::Proc("process CPU times are read from /proc, which only Linux has".into()))
}

/// CPU ticks per name added up over segments, with the sagas they completed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuTally {
    ticks: BTreeMap<String, u64>,
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
        CpuReport { total: ms_per_saga.values().sum(), ms_per_saga, sagas: self.sagas }
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
}

impl CpuReport {
    /// `order_service 0.331, …, total 1.412`.
    pub fn to_text(&self) -> String {
        let parts: Vec<String> = self.ms_per_saga.iter().map(|(name, ms)| format!("{name} {ms:.3}")).collect();
        format!("{}, total {:.3}", parts.join(", "), self.total)
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
        Snapshot { processes: processes.iter().map(|(p, n, t)| (*p, ((*n).to_owned(), *t))).collect(), own }
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
    }
}
