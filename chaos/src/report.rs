//! The result of a chaos run: what was driven, what was injected, what the check
//! found, rendered as a human summary whose last line is machine-readable.
//!
//! The one decision to know: the last line is exactly
//! `sagas=N approved=N rejected=N faults=N lost=N violations=N duplicates_applied=N max_recovery_ms=N`
//! (nothing after it), so scripts can `tail -n1` it; a run passes only with no
//! lost saga, no violation and no duplicate applied.

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use crate::{checker::Checked, driver::Scenario, faults::FaultKind};

/// Everything a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub namespace: String,
    pub seed: u64,
    pub log_dir: PathBuf,
    /// Sagas the driver was asked to run.
    pub sagas_requested: usize,
    /// Sagas that got an order id.
    pub sagas: usize,
    pub approved: usize,
    pub rejected: usize,
    pub parked: usize,
    /// Outcomes by scenario: (scenario, APPROVED, REJECTED).
    pub by_scenario: BTreeMap<Scenario, (usize, usize)>,
    /// Faults that took effect, by kind.
    pub faults: BTreeMap<FaultKind, usize>,
    /// Faults that ran but found nothing to act on.
    pub faults_without_effect: BTreeMap<FaultKind, usize>,
    pub faults_planned: usize,
    pub messages_republished: usize,
    /// Republished commands still within their deadline.
    pub republished_in_time: usize,
    pub republished_replies: usize,
    pub amqp_connections_closed: usize,
    pub redis_clients_killed: usize,
    pub create_retries: usize,
    pub watch_resumes: usize,
    /// Why CreateOrder calls failed and watches broke, with counts.
    pub client_errors: BTreeMap<String, usize>,
    /// What the invariant check found: lost sagas, violations, duplicates applied,
    /// dead letters, leftovers. Its findings are moved into [`Report::findings`].
    pub checked: Checked,
    /// Anomalies that break no invariant: slow SIGTERMs, failed restarts,
    /// unexpected exits, unexpected dead letters, leftovers.
    pub findings: Vec<String>,
    /// Per process: starts, SIGKILLs, SIGTERMs, longest SIGTERM exit, longest start.
    pub processes: Vec<ProcessLine>,
    pub max_recovery_ms: u64,
    /// The longest exit after the final SIGTERM of the clean-up.
    pub final_stop: Duration,
    /// From the start of driving to the end of the last fault.
    pub faults_stopped_after: Duration,
    /// From the start of driving to the last CreateOrder.
    pub driving: Duration,
    pub elapsed: Duration,
}

/// One process's line of the summary (the faults' signals, not the final stop).
#[derive(Debug, Clone, Default)]
pub struct ProcessLine {
    pub name: String,
    pub starts: u32,
    pub sigkills: u32,
    pub sigterms: u32,
    pub sigterm_overruns: u32,
    pub longest_sigterm: Duration,
    pub longest_ready: Duration,
    pub unexpected_exits: usize,
    pub failed_starts: u32,
}

impl Report {
    /// Total faults that took effect.
    pub fn faults_total(&self) -> usize {
        self.faults.values().sum()
    }

    /// No saga lost, no invariant broken, no command applied twice.
    pub fn passed(&self) -> bool {
        self.checked.lost.is_empty() && self.checked.violations.is_empty() && self.checked.duplicates_applied.is_empty()
    }

    /// The machine-readable last line.
    pub fn last_line(&self) -> String {
        format!(
            "sagas={} approved={} rejected={} faults={} lost={} violations={} duplicates_applied={} max_recovery_ms={}",
            self.sagas,
            self.approved,
            self.rejected,
            self.faults_total(),
            self.checked.lost.len(),
            self.checked.violations.len(),
            self.checked.duplicates_applied.len(),
            self.max_recovery_ms
        )
    }
}

fn list(f: &mut fmt::Formatter<'_>, title: &str, items: &[String]) -> fmt::Result {
    writeln!(f, "{title}: {}", items.len())?;
    for item in items {
        writeln!(f, "  - {item}")?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "=== chaos summary: namespace {} seed {} ===", self.namespace, self.seed)?;
        writeln!(f, "logs: {}", self.log_dir.display())?;
        writeln!(
            f,
            "sagas started: {} of {} (CreateOrder retries {}, watch resumes {})",
            self.sagas, self.sagas_requested, self.create_retries, self.watch_resumes
        )?;
        if !self.client_errors.is_empty() {
            let causes: Vec<String> = self.client_errors.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
            writeln!(f, "  client-side errors: {}", causes.join(", "))?;
        }
        writeln!(
            f,
            "final states: APPROVED {}, REJECTED {} (of which {} after an abandoned step, TIMEOUT), parked {}, never terminal {}",
            self.approved,
            self.rejected,
            self.checked.rejected_by_timeout,
            self.parked,
            self.checked.lost.len()
        )?;
        for (scenario, (approved, rejected)) in &self.by_scenario {
            writeln!(f, "  {:<18} APPROVED {approved:>4}  REJECTED {rejected:>4}", scenario.as_str())?;
        }
        let kinds: Vec<String> = FaultKind::ALL
            .iter()
            .map(|k| {
                let none = self.faults_without_effect.get(k).copied().unwrap_or_default();
                let done = self.faults.get(k).copied().unwrap_or_default();
                if none > 0 { format!("{k}={done} (+{none} without effect)") } else { format!("{k}={done}") }
            })
            .collect();
        writeln!(
            f,
            "faults injected: {} of {} planned: {}",
            self.faults_total(),
            self.faults_planned,
            kinds.join(" ")
        )?;
        writeln!(
            f,
            "  AMQP connections closed {}, Redis clients killed {}, messages republished {} ({} replies, {} commands \
             of which {} still within their deadline)",
            self.amqp_connections_closed,
            self.redis_clients_killed,
            self.messages_republished,
            self.republished_replies,
            self.messages_republished.saturating_sub(self.republished_replies),
            self.republished_in_time
        )?;
        writeln!(f, "processes:")?;
        for p in &self.processes {
            writeln!(
                f,
                "  {:<20} starts {:>2}  SIGKILL {:>2}  SIGTERM {:>2} (longest exit {} ms, over grace {})  longest start-to-SERVING {} ms  unexpected exits {}  failed starts {}",
                p.name,
                p.starts,
                p.sigkills,
                p.sigterms,
                p.longest_sigterm.as_millis(),
                p.sigterm_overruns,
                p.longest_ready.as_millis(),
                p.unexpected_exits,
                p.failed_starts
            )?;
        }
        writeln!(f, "  final SIGTERM of all: longest exit {} ms", self.final_stop.as_millis())?;
        writeln!(
            f,
            "tickets scanned: {}, orders listed: {}",
            self.checked.tickets_scanned, self.checked.orders_listed
        )?;
        if self.checked.dead_letters.is_empty() {
            writeln!(f, "dead letters: none")?;
        } else {
            writeln!(f, "dead letters:")?;
            for (queue, reasons) in &self.checked.dead_letters {
                let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
                writeln!(f, "  {queue}: {}", reasons.join(", "))?;
            }
        }
        if !self.checked.leftovers.is_empty() {
            let left: Vec<String> = self.checked.leftovers.iter().map(|(q, n)| format!("{q}={n}")).collect();
            writeln!(f, "messages left in queues: {}", left.join(", "))?;
        }
        writeln!(
            f,
            "timing: driving {:.1} s, faults stopped at {:.1} s, total {:.1} s",
            self.driving.as_secs_f64(),
            self.faults_stopped_after.as_secs_f64(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "longest time to terminal after the last fault hit: {} ms", self.max_recovery_ms)?;
        list(f, "findings", &self.findings)?;
        list(f, "sagas lost", &self.checked.lost)?;
        list(f, "invariant violations", &self.checked.violations)?;
        list(f, "duplicates applied", &self.checked.duplicates_applied)?;
        writeln!(f, "result: {}", if self.passed() { "PASS" } else { "FAIL" })?;
        write!(f, "{}", self.last_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_is_the_machine_readable_one() {
        let mut report =
            Report { sagas: 300, approved: 120, rejected: 180, max_recovery_ms: 2345, ..Report::default() };
        report.faults.insert(FaultKind::Sigkill, 15);
        report.faults.insert(FaultKind::Duplicates, 15);
        report.checked.violations.push("x".into());
        let text = report.to_string();
        assert_eq!(
            text.lines().last(),
            Some(
                "sagas=300 approved=120 rejected=180 faults=30 lost=0 violations=1 duplicates_applied=0 max_recovery_ms=2345"
            )
        );
        assert!(!report.passed());
    }
}
