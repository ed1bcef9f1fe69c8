//! The memory targets of docs/performance.md, measured by the `memory_targets`
//! binary: what its phases read (RSS, the in-flight count, `MEMORY USAGE` per key,
//! throughput with and without many more stored sagas) and the verdicts drawn
//! from them.
//!
//! The one decision to know: a figure per saga divides by the sagas the phase
//! itself added (RSS growth by the sagas added to the in-flight count; a fresh
//! namespace's bytes by the sagas run in it), so what a process held before, or
//! what other namespaces hold, does not count; and a target whose phase measured
//! nothing is not met.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::targets::Verdict;

/// `VmRSS` of a `/proc/<pid>/status` text, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The service a key of `namespace` belongs to: keys are `<namespace>:<service>:…`
/// (`service_kit::Namespace::key_prefix`).
pub fn service_of_key<'k>(namespace: &str, key: &'k str) -> Option<&'k str> {
    let rest = key.strip_prefix(namespace)?.strip_prefix(':')?;
    rest.split_once(':').map(|(service, _)| service)
}

/// order_service's RSS while sagas pile up in flight (participants stopped, so
/// none ends).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InFlight {
    /// RSS after the warm-up sagas, before the measured ones.
    pub rss_before_kib: u64,
    /// The highest RSS sampled while the measured sagas were created and for 2 s
    /// after: what the verdict reads (it includes what the requests held while
    /// they were served, so it errs on the high side).
    pub rss_peak_kib: u64,
    /// RSS 2 s after the last saga was created.
    pub rss_after_kib: u64,
    /// Unfinished sagas in the namespace (order_service's `sagas:unfinished`
    /// index, what its `ftgo_sagas_in_flight` gauge counts) before and after.
    pub in_flight_before: u64,
    pub in_flight_after: u64,
    /// `(peak − before) / (after − before)`; `None` when no saga was added.
    pub bytes_per_saga: Option<f64>,
}

impl InFlight {
    pub fn new(
        rss_before_kib: u64,
        rss_peak_kib: u64,
        rss_after_kib: u64,
        in_flight_before: u64,
        in_flight_after: u64,
    ) -> Self {
        let rss_peak_kib = rss_peak_kib.max(rss_after_kib);
        let added = in_flight_after.saturating_sub(in_flight_before);
        let grown = rss_peak_kib.saturating_sub(rss_before_kib) as f64 * 1024.0;
        let bytes_per_saga = (added > 0).then(|| grown / added as f64);
        Self { rss_before_kib, rss_peak_kib, rss_after_kib, in_flight_before, in_flight_after, bytes_per_saga }
    }
}

/// Redis bytes (`MEMORY USAGE … SAMPLES 0`, summed per service) of finished
/// sagas, and of order_service's share once the retention has passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finished {
    /// Sagas run to their end in a fresh namespace.
    pub sagas: u64,
    /// Each service's keys: bytes in all.
    pub bytes_by_service: BTreeMap<String, u64>,
    /// Each service's keys: bytes per finished saga.
    pub bytes_per_saga_by_service: BTreeMap<String, f64>,
    /// The retention order_service ran with for the second reading.
    pub retention_secs: u64,
    /// order_service's keys of the namespace after the retention (count, bytes).
    pub order_keys_after_retention: u64,
    pub order_bytes_after_retention: u64,
    /// From order_service's restart with the retention to the reading (its
    /// sweeper prunes every 5 s; the reading is taken once none is left, or
    /// after the retention plus 30 s).
    pub prune_wait_secs: f64,
}

impl Finished {
    pub fn new(
        sagas: u64,
        bytes_by_service: BTreeMap<String, u64>,
        retention_secs: u64,
        order_keys_after_retention: u64,
        order_bytes_after_retention: u64,
        prune_wait_secs: f64,
    ) -> Self {
        let bytes_per_saga_by_service = bytes_by_service
            .iter()
            .map(|(service, bytes)| (service.clone(), *bytes as f64 / sagas.max(1) as f64))
            .collect();
        Self {
            sagas,
            bytes_by_service,
            bytes_per_saga_by_service,
            retention_secs,
            order_keys_after_retention,
            order_bytes_after_retention,
            prune_wait_secs,
        }
    }

    /// order_service's bytes per finished saga before the retention passed.
    pub fn order_bytes_per_saga(&self) -> Option<f64> {
        self.bytes_per_saga_by_service.get("order").copied()
    }
}

/// One round of the stored-sagas comparison: the same load against one namespace
/// without and with many more finished sagas stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRound {
    pub without_stored: u64,
    pub without_sagas_per_sec: f64,
    pub with_stored: u64,
    pub with_sagas_per_sec: f64,
    /// `(with − without) / without`, in percent.
    pub change_percent: f64,
}

impl StoredRound {
    pub fn new(without_stored: u64, without_sagas_per_sec: f64, with_stored: u64, with_sagas_per_sec: f64) -> Self {
        let change_percent = if without_sagas_per_sec > 0.0 {
            100.0 * (with_sagas_per_sec - without_sagas_per_sec) / without_sagas_per_sec
        } else {
            f64::INFINITY
        };
        Self { without_stored, without_sagas_per_sec, with_stored, with_sagas_per_sec, change_percent }
    }
}

/// The median of the rounds' changes, without their sign; `None` when a round
/// has no change to give (a side that completed nothing). A round is two runs
/// a few seconds apart on a machine whose speed drifts by 10 % and more, so one
/// round's change is mostly that drift; the median of several is what the
/// stored sagas do (as `loadgen --rounds` takes the median of the rounds' ratios).
pub fn median_abs_change(rounds: &[StoredRound]) -> Option<f64> {
    let mut changes: Vec<f64> = rounds.iter().map(|r| r.change_percent.abs()).collect();
    if changes.is_empty() || changes.iter().any(|c| !c.is_finite()) {
        return None;
    }
    changes.sort_by(f64::total_cmp);
    let mid = changes.len() / 2;
    Some(if changes.len() % 2 == 1 { changes[mid] } else { (changes[mid - 1] + changes[mid]) / 2.0 })
}

/// The whole run: each phase's readings and a verdict per target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryReport {
    pub all_met: bool,
    pub targets: Vec<Verdict>,
    pub in_flight: InFlight,
    pub finished: Finished,
    /// Empty when the comparison was skipped (`--stored 0`): its target is then
    /// not measured, so not met.
    pub stored: Vec<StoredRound>,
}

impl MemoryReport {
    pub fn new(in_flight: InFlight, finished: Finished, stored: Vec<StoredRound>) -> Self {
        let targets = vec![
            Verdict::at_most(
                "in_flight_bytes_per_saga",
                "order_service: RSS growth per in-flight saga at most 2 KiB",
                in_flight.bytes_per_saga,
                2048.0,
                "bytes",
            ),
            Verdict::at_most(
                "finished_order_keys_after_retention",
                "Redis: order_service's keys of finished sagas left once the retention has passed (bounded: none)",
                // Nothing stored before the retention would make "none left" vacuous.
                Some(finished.order_keys_after_retention as f64)
                    .filter(|_| finished.order_bytes_per_saga().is_some_and(|b| b > 0.0)),
                0.0,
                "count",
            ),
            Verdict::at_most(
                "stored_sagas_throughput_change_percent",
                "throughput with many more stored finished sagas within 10 % of that without (median of the rounds' changes, either sign)",
                median_abs_change(&stored),
                10.0,
                "percent",
            ),
        ];
        let all_met = targets.iter().all(|v| v.met);
        Self { all_met, targets, in_flight, finished, stored }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The readings and the verdicts, for a terminal.
    pub fn to_text(&self) -> String {
        let i = &self.in_flight;
        let f = &self.finished;
        let mut text = format!(
            "in flight: order_service RSS {} KiB -> {} KiB peak ({} KiB after) while in-flight sagas went {} -> {}: \
             {} bytes per saga\n",
            i.rss_before_kib,
            i.rss_peak_kib,
            i.rss_after_kib,
            i.in_flight_before,
            i.in_flight_after,
            i.bytes_per_saga.map_or("none".to_owned(), |b| format!("{b:.0}")),
        );
        let _ = writeln!(text, "finished: {} sagas; Redis bytes per saga by service:", f.sagas);
        for (service, bytes) in &f.bytes_per_saga_by_service {
            let _ = writeln!(text, "  {service:<12} {bytes:>8.0}");
        }
        let _ = writeln!(
            text,
            "after a retention of {} s: {} order_service keys, {} bytes ({:.1} s after its restart)",
            f.retention_secs, f.order_keys_after_retention, f.order_bytes_after_retention, f.prune_wait_secs
        );
        text.push_str(&self.stored_table());
        text.push_str(&crate::targets::verdicts_text(&self.targets));
        text
    }

    /// The stored-sagas rounds as a table (Markdown, readable as text too); empty
    /// when the comparison was skipped.
    fn stored_table(&self) -> String {
        if self.stored.is_empty() {
            return String::new();
        }
        let mut table = String::from(
            "| round | stored without the copies | sagas/s | stored with them | sagas/s | change |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for (n, r) in self.stored.iter().enumerate() {
            let _ = writeln!(
                table,
                "| {} | {} | {:.1} | {} | {:.1} | {:+.1} % |",
                n + 1,
                r.without_stored,
                r.without_sagas_per_sec,
                r.with_stored,
                r.with_sagas_per_sec,
                r.change_percent
            );
        }
        table
    }

    /// A Markdown table of the verdicts and the readings.
    pub fn to_markdown(&self) -> String {
        let mut md = String::from("# memory_targets: the memory targets\n\n");
        md.push_str(&crate::targets::verdicts_markdown(&self.targets));
        let _ = writeln!(md, "\n| service | Redis bytes per finished saga |\n|---|---:|");
        for (service, bytes) in &self.finished.bytes_per_saga_by_service {
            let _ = writeln!(md, "| {service} | {bytes:.0} |");
        }
        if !self.stored.is_empty() {
            md.push('\n');
            md.push_str(&self.stored_table());
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_a_status_text() {
        let status = "Name:\torder_service\nVmPeak:\t  200000 kB\nVmRSS:\t   47324 kB\nRssAnon:\t 30000 kB\n";
        assert_eq!(vm_rss_kib(status), Some(47_324));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn keys_are_grouped_by_the_service_after_the_namespace() {
        assert_eq!(service_of_key("ns-1", "ns-1:order:saga:{abc}"), Some("order"));
        assert_eq!(service_of_key("ns-1", "ns-1:restaurant:ticket:7"), Some("restaurant"));
        assert_eq!(service_of_key("ns-1", "ns-10:order:saga:{abc}"), None);
        assert_eq!(service_of_key("ns-1", "other:order:x"), None);
    }

    #[test]
    fn rss_growth_is_divided_by_the_sagas_added() {
        let i = InFlight::new(47_324, 49_336, 49_000, 200, 10_200);
        assert_eq!(i.bytes_per_saga, Some((49_336.0 - 47_324.0) * 1024.0 / 10_000.0));
        // A reading after the samples counts if it is higher.
        assert_eq!(InFlight::new(47_324, 49_336, 50_360, 200, 10_200).rss_peak_kib, 50_360);
        // No saga added: nothing measured, and the target is not met.
        let none = InFlight::new(47_324, 49_336, 49_336, 200, 200);
        assert_eq!(none.bytes_per_saga, None);
        let report = MemoryReport::new(none, finished(0), vec![StoredRound::new(1000, 100.0, 101_000, 100.0)]);
        assert!(!report.targets[0].met);
        assert!(!report.all_met);
    }

    fn finished(order_bytes_after: u64) -> Finished {
        let bytes = BTreeMap::from([("order".to_owned(), 6_139_000), ("restaurant".to_owned(), 809_000)]);
        Finished::new(1000, bytes, 1, u64::from(order_bytes_after > 0), order_bytes_after, 5.5)
    }

    #[test]
    fn verdicts_follow_the_readings() {
        // Rounds of +3 %, -5 % and +12 %: the median of 3, 5 and 12 is 5.
        let rounds = vec![
            StoredRound::new(1000, 1000.0, 101_000, 1030.0),
            StoredRound::new(5000, 1000.0, 105_000, 950.0),
            StoredRound::new(9000, 1000.0, 109_000, 1120.0),
        ];
        let met = MemoryReport::new(InFlight::new(47_000, 49_000, 48_000, 200, 10_200), finished(0), rounds);
        assert!(met.all_met, "{:?}", met.targets);
        assert_eq!(met.finished.order_bytes_per_saga(), Some(6139.0));
        let change = &met.targets[2];
        assert_eq!(change.target, "stored_sagas_throughput_change_percent");
        assert!((change.measured.unwrap_or_default() - 5.0).abs() < 1e-9, "{change:?}");

        // 3 KiB per saga, a key left after the retention, an 11 % drop: none met.
        let unmet = MemoryReport::new(
            InFlight::new(40_000, 70_000, 70_000, 0, 10_000),
            finished(512),
            vec![StoredRound::new(1000, 1000.0, 101_000, 890.0)],
        );
        assert_eq!(unmet.targets.iter().filter(|v| v.met).count(), 0, "{:?}", unmet.targets);
        // A side that completed nothing is not a measurement.
        let nothing = MemoryReport::new(
            InFlight::new(47_000, 49_000, 49_000, 200, 10_200),
            finished(0),
            vec![StoredRound::new(1000, 0.0, 101_000, 900.0)],
        );
        assert!(!nothing.targets[2].met);
        assert_eq!(nothing.targets[2].measured, None);

        // No order_service bytes before the retention: "none left after" is not a
        // measurement. A skipped stored-sagas comparison is not one either.
        let empty = Finished::new(1000, BTreeMap::from([("restaurant".to_owned(), 809_000)]), 1, 0, 0, 5.0);
        let vacuous = MemoryReport::new(InFlight::new(47_000, 49_000, 49_000, 200, 10_200), empty, vec![]);
        assert_eq!(vacuous.targets[1].measured, None);
        assert_eq!(vacuous.targets[2].measured, None);
        assert_eq!(vacuous.targets.iter().filter(|v| v.met).count(), 1, "{:?}", vacuous.targets);
    }

    #[test]
    fn the_median_change_of_an_even_number_of_rounds_is_the_mean_of_the_middle_two() {
        let rounds = [
            StoredRound::new(1000, 100.0, 101_000, 104.0),
            StoredRound::new(1000, 100.0, 101_000, 92.0),
            StoredRound::new(1000, 100.0, 101_000, 101.0),
            StoredRound::new(1000, 100.0, 101_000, 130.0),
        ];
        let median = median_abs_change(&rounds).unwrap_or_default();
        assert!((median - 6.0).abs() < 1e-9, "{median}");
        assert_eq!(median_abs_change(&[]), None);
    }
}
