//! The report of a run: what was offered, what came back, and (after `--baseline`)
//! how it compares with the minimal orchestrator. Written as JSON (machine-read:
//! `sagas_per_sec`, `latency_ms`, `errors`, `final_states`, `baseline_*`, `ratio`),
//! as a Markdown summary, and as a few lines on stdout.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::{
    cpu::CpuReport,
    engine::RunResult,
    stats::{LatencySummary, TimelinePoint},
};

/// What the baseline measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BaselineReport {
    pub sagas_per_sec: f64,
    pub latency_ms: LatencySummary,
    pub completed: u64,
    pub elapsed_secs: f64,
    pub errors: BTreeMap<String, u64>,
    /// With `--cpu-of`: CPU per saga during the baseline's segments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuReport>,
}

impl BaselineReport {
    /// The baseline's part of a run result.
    pub fn of(result: &RunResult) -> Self {
        Self {
            sagas_per_sec: result.sagas_per_sec(),
            latency_ms: result.recorder.latency(),
            completed: result.recorder.completed_count(),
            elapsed_secs: result.elapsed.as_secs_f64(),
            errors: result.recorder.errors().clone(),
            cpu: None,
        }
    }
}

/// One round of `--rounds`: a baseline segment and the system segment right
/// after it, compared with each other.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoundReport {
    pub baseline_sagas_per_sec: f64,
    pub baseline_p50_ms: f64,
    pub sagas_per_sec: f64,
    pub p50_ms: f64,
    /// `sagas_per_sec / baseline_sagas_per_sec` of this round.
    pub ratio: f64,
    /// `p50_ms / baseline_p50_ms` of this round.
    pub p50_ratio: f64,
}

impl RoundReport {
    pub fn of(baseline: &RunResult, system: &RunResult) -> Self {
        let (baseline_sagas_per_sec, sagas_per_sec) = (baseline.sagas_per_sec(), system.sagas_per_sec());
        let (baseline_p50_ms, p50_ms) = (baseline.recorder.latency().p50, system.recorder.latency().p50);
        Self {
            baseline_sagas_per_sec,
            baseline_p50_ms,
            sagas_per_sec,
            p50_ms,
            ratio: quotient(sagas_per_sec, baseline_sagas_per_sec).unwrap_or(0.0),
            p50_ratio: quotient(p50_ms, baseline_p50_ms).unwrap_or(0.0),
        }
    }
}

fn quotient(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// A run's report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub target: String,
    /// `closed` or `open`.
    pub mode: String,
    pub concurrency: Option<usize>,
    pub rate_per_sec: Option<f64>,
    /// `watch` or `poll`.
    pub follow: String,
    /// Scenario → percent of the sagas.
    pub mix: BTreeMap<String, f64>,
    pub seed: u64,
    /// The profile loadgen itself was built with (the services' is not known here).
    pub loadgen_build: String,
    pub sagas_started: u64,
    pub sagas_completed: u64,
    pub elapsed_secs: f64,
    /// Sagas that reached a terminal state, per second.
    pub sagas_per_sec: f64,
    pub latency_ms: LatencySummary,
    /// Errors by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// Errors by call and code.
    pub errors_by_call: BTreeMap<String, u64>,
    pub final_states: BTreeMap<String, u64>,
    /// Terminal sagas whose state is not the one their scenario ends in.
    pub unexpected_final_states: u64,
    pub timeline: Vec<TimelinePoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_sagas_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_p50_ms: Option<f64>,
    /// `sagas_per_sec / baseline_sagas_per_sec`; with `--rounds`, the median of
    /// the rounds' ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// `latency_ms.p50 / baseline_p50_ms`; with `--rounds`, the median of the
    /// rounds' p50 ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineReport>,
    /// With `--rounds`: each round's baseline and system segment, in order. The
    /// figures above are those of all segments together, but for the two ratios.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<RoundReport>,
    /// With `--cpu-of`: CPU per saga by process during the measured segments
    /// (the baseline's is under `baseline.cpu`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuReport>,
}

/// What the run was, for the report's header.
#[derive(Debug, Clone)]
pub struct RunDescription {
    pub target: String,
    pub mode: crate::schedule::Mode,
    pub follow: String,
    pub mix: BTreeMap<String, f64>,
    pub seed: u64,
}

impl Report {
    /// The report of `result`, compared with `baseline` if there was one.
    pub fn new(description: RunDescription, result: &RunResult, baseline: Option<BaselineReport>) -> Self {
        let (concurrency, rate_per_sec) = match description.mode {
            crate::schedule::Mode::Closed { concurrency } => (Some(concurrency), None),
            crate::schedule::Mode::Open { rate, .. } => (None, Some(rate)),
        };
        let sagas_per_sec = result.sagas_per_sec();
        let latency_ms = result.recorder.latency();
        let ratio = baseline.as_ref().and_then(|b| quotient(sagas_per_sec, b.sagas_per_sec));
        let p50_ratio = baseline.as_ref().and_then(|b| quotient(latency_ms.p50, b.latency_ms.p50));
        Self {
            target: description.target,
            mode: description.mode.name().to_owned(),
            concurrency,
            rate_per_sec,
            follow: description.follow,
            mix: description.mix,
            seed: description.seed,
            loadgen_build: if cfg!(debug_assertions) { "debug" } else { "release" }.to_owned(),
            sagas_started: result.recorder.started_count(),
            sagas_completed: result.recorder.completed_count(),
            elapsed_secs: result.elapsed.as_secs_f64(),
            sagas_per_sec,
            latency_ms,
            errors: result.recorder.errors().clone(),
            errors_by_call: result.recorder.errors_by_call().clone(),
            final_states: result.recorder.final_states().clone(),
            unexpected_final_states: result.recorder.unexpected_count(),
            timeline: result.recorder.timeline(),
            baseline_sagas_per_sec: baseline.as_ref().map(|b| b.sagas_per_sec),
            baseline_p50_ms: baseline.as_ref().map(|b| b.latency_ms.p50),
            ratio,
            p50_ratio,
            baseline,
            rounds: Vec::new(),
            cpu: None,
        }
    }

    pub fn with_cpu(mut self, cpu: Option<CpuReport>) -> Self {
        self.cpu = cpu;
        self
    }

    /// The system's and the baseline's CPU reports that there are, each with the
    /// label its lines start with.
    fn cpu_reports(&self) -> impl Iterator<Item = (&'static str, &CpuReport)> {
        let baseline = self.baseline.as_ref().and_then(|b| b.cpu.as_ref());
        [("", self.cpu.as_ref()), ("baseline ", baseline)].into_iter().filter_map(|(label, cpu)| Some((label, cpu?)))
    }

    /// The report of rounds whose segments `result` and `baseline` hold together:
    /// the two ratios become the medians of the rounds' own, which a drift of the
    /// machine's speed between rounds does not move the way it moves the totals.
    pub fn with_rounds(mut self, rounds: Vec<RoundReport>) -> Self {
        if !rounds.is_empty() {
            self.ratio = median(rounds.iter().map(|r| r.ratio));
            self.p50_ratio = median(rounds.iter().map(|r| r.p50_ratio));
        }
        self.rounds = rounds;
        self
    }

    /// The load offered, in words: `closed loop, 16 in flight` or `open loop, 200/s`.
    pub fn load(&self) -> String {
        match (self.concurrency, self.rate_per_sec) {
            (Some(c), _) => format!("closed loop, {c} in flight"),
            (_, Some(r)) => format!("open loop, {r}/s"),
            _ => self.mode.clone(),
        }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A Markdown summary (no timeline: that is the SVG's job).
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let l = &self.latency_ms;
        let _ = writeln!(md, "# loadgen: {}", self.load());
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "Target `{}`, followed by {}, mix {}, seed {}; loadgen built {}.",
            self.target,
            self.follow,
            mix_text(&self.mix),
            self.seed,
            self.loadgen_build
        );
        let _ = writeln!(md);
        let _ = writeln!(md, "| metric | value |");
        let _ = writeln!(md, "|---|---|");
        let _ = writeln!(md, "| sagas started / completed | {} / {} |", self.sagas_started, self.sagas_completed);
        let _ = writeln!(md, "| elapsed | {:.2} s |", self.elapsed_secs);
        let _ = writeln!(md, "| completed sagas/s | {:.1} |", self.sagas_per_sec);
        let _ = writeln!(
            md,
            "| latency p50 / p90 / p99 / p99.9 / max | {:.1} / {:.1} / {:.1} / {:.1} / {:.1} ms |",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        let _ = writeln!(md, "| errors | {} |", map_text(&self.errors));
        let _ = writeln!(md, "| final states | {} |", map_text(&self.final_states));
        let _ = writeln!(md, "| unexpected final states | {} |", self.unexpected_final_states);
        if let (Some(b), Some(p50), Some(ratio)) = (self.baseline_sagas_per_sec, self.baseline_p50_ms, self.ratio) {
            let _ = writeln!(md, "| baseline sagas/s | {b:.1} |");
            let _ = writeln!(md, "| baseline p50 | {p50:.1} ms |");
            let median = if self.rounds.is_empty() { "" } else { ", median of the rounds" };
            let _ = writeln!(md, "| ratio (sagas/s ÷ baseline{median}) | {ratio:.2} |");
            if let Some(p50_ratio) = self.p50_ratio {
                let _ = writeln!(md, "| p50 ÷ baseline p50{median} | {p50_ratio:.2} |");
            }
        }
        // Rows of the summary table: after the rounds' table they would join it.
        for (label, cpu) in self.cpu_reports() {
            let _ = writeln!(md, "| {label}CPU per saga (ms) | {} |", cpu.to_text());
            if let Some(machine) = cpu.machine_text() {
                let _ = writeln!(md, "| {label}machine (all vCPUs) | {machine} |");
            }
            for (process, threads) in cpu.thread_texts() {
                let _ = writeln!(md, "| {label}CPU per saga by thread (ms), {process} | {threads} |");
            }
        }
        if !self.rounds.is_empty() {
            let _ = writeln!(md);
            let _ = writeln!(md, "| round | baseline sagas/s | sagas/s | ratio | baseline p50 | p50 | p50 ratio |");
            let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
            for (i, r) in self.rounds.iter().enumerate() {
                let _ = writeln!(
                    md,
                    "| {} | {:.1} | {:.1} | {:.2} | {:.2} ms | {:.2} ms | {:.2} |",
                    i + 1,
                    r.baseline_sagas_per_sec,
                    r.sagas_per_sec,
                    r.ratio,
                    r.baseline_p50_ms,
                    r.p50_ms,
                    r.p50_ratio
                );
            }
        }
        if !self.errors_by_call.is_empty() {
            let _ = writeln!(md);
            let _ = writeln!(md, "Errors by call: {}.", map_text(&self.errors_by_call));
        }
        md
    }

    /// A few lines for stdout; the last one is machine-readable.
    pub fn to_text(&self) -> String {
        let l = &self.latency_ms;
        let mut text = format!(
            "{}: {} of {} sagas ended in {:.2} s: {:.1} sagas/s; latency p50 {:.1} ms, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}\nfinal states: {}; errors: {}\n",
            self.load(),
            self.sagas_completed,
            self.sagas_started,
            self.elapsed_secs,
            self.sagas_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            map_text(&self.final_states),
            map_text(&self.errors),
        );
        for (i, r) in self.rounds.iter().enumerate() {
            let _ = writeln!(
                text,
                "round {}: baseline {:.1} sagas/s, p50 {:.2} ms; system {:.1} sagas/s, p50 {:.2} ms; ratio {:.2}, p50 ratio {:.2}",
                i + 1,
                r.baseline_sagas_per_sec,
                r.baseline_p50_ms,
                r.sagas_per_sec,
                r.p50_ms,
                r.ratio,
                r.p50_ratio
            );
        }
        if let (Some(b), Some(p50), Some(ratio)) = (self.baseline_sagas_per_sec, self.baseline_p50_ms, self.ratio) {
            let median = if self.rounds.is_empty() { "" } else { " (medians of the rounds)" };
            let p50_ratio = self.p50_ratio.unwrap_or(0.0);
            let _ = writeln!(
                text,
                "baseline: {b:.1} sagas/s, p50 {p50:.1} ms; ratio {ratio:.2}, p50 ratio {p50_ratio:.2}{median}"
            );
        }
        for (label, cpu) in self.cpu_reports() {
            let _ = writeln!(text, "{label}CPU per saga (ms): {}", cpu.to_text());
            if let Some(machine) = cpu.machine_text() {
                let _ = writeln!(text, "{label}machine (all vCPUs): {machine}");
            }
            for (process, threads) in cpu.thread_texts() {
                let _ = writeln!(text, "{label}CPU per saga by thread (ms), {process}: {threads}");
            }
        }
        let _ = write!(
            text,
            "sagas_per_sec={:.1} p50_ms={:.1} p99_ms={:.1} p999_ms={:.1} max_ms={:.1} errors={}",
            self.sagas_per_sec,
            l.p50,
            l.p99,
            l.p999,
            l.max,
            self.errors.values().sum::<u64>()
        );
        if let Some(ratio) = self.ratio {
            let _ = write!(text, " ratio={ratio:.2}");
        }
        if let Some(p50_ratio) = self.p50_ratio {
            let _ = write!(text, " p50_ratio={p50_ratio:.2}");
        }
        text
    }
}

fn map_text<V: std::fmt::Display>(map: &BTreeMap<String, V>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

fn mix_text(mix: &BTreeMap<String, f64>) -> String {
    mix.iter().map(|(k, v)| format!("{k} {v:.0} %")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        cpu::MachineShare,
        schedule::Mode,
        stats::{CallError, Recorder, SagaEnd},
    };

    fn result() -> RunResult {
        let mut recorder = Recorder::default();
        for ms in 1..=100u64 {
            recorder.started();
            recorder.ended(
                &SagaEnd::Terminal { state: "APPROVED".into(), expected: true },
                Duration::from_millis(ms),
                Duration::from_millis(10 * ms),
            );
        }
        recorder.started();
        recorder.error(&CallError { call: "CreateOrder", code: "Unavailable".into() });
        recorder.ended(&SagaEnd::Failed { state: "CREATE_FAILED" }, Duration::ZERO, Duration::ZERO);
        RunResult { recorder, elapsed: Duration::from_secs(2) }
    }

    fn description() -> RunDescription {
        RunDescription {
            target: "http://127.0.0.1:50051".into(),
            mode: Mode::Closed { concurrency: 8 },
            follow: "watch".into(),
            mix: [("success".to_owned(), 100.0)].into_iter().collect(),
            seed: 1,
        }
    }

    #[test]
    fn the_json_has_the_fields_the_issue_names() {
        let baseline = BaselineReport {
            sagas_per_sec: 200.0,
            latency_ms: LatencySummary { p50: 4.0, ..Default::default() },
            completed: 100,
            elapsed_secs: 0.5,
            errors: BTreeMap::new(),
            cpu: None,
        };
        let report = Report::new(description(), &result(), Some(baseline));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
        assert_eq!(json["sagas_per_sec"], 50.0);
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(json["latency_ms"][key].is_number(), "latency_ms.{key}");
        }
        assert_eq!(json["errors"]["Unavailable"], 1);
        assert_eq!(json["final_states"]["APPROVED"], 100);
        assert_eq!(json["final_states"]["CREATE_FAILED"], 1);
        assert_eq!(json["baseline_sagas_per_sec"], 200.0);
        assert_eq!(json["baseline_p50_ms"], 4.0);
        assert_eq!(json["ratio"], 0.25);
    }

    #[test]
    fn without_a_baseline_the_json_has_no_baseline_fields() {
        let json: serde_json::Value =
            serde_json::from_str(&Report::new(description(), &result(), None).to_json()).expect("valid JSON");
        assert!(json.get("ratio").is_none() && json.get("baseline_sagas_per_sec").is_none());
    }

    #[test]
    fn the_markdown_and_text_summaries_carry_the_figures() {
        let baseline = BaselineReport {
            sagas_per_sec: 100.0,
            latency_ms: LatencySummary { p50: 10.0, ..Default::default() },
            completed: 100,
            elapsed_secs: 1.0,
            errors: BTreeMap::new(),
            cpu: None,
        };
        let report = Report::new(description(), &result(), Some(baseline));
        let md = report.to_markdown();
        assert!(md.starts_with("# loadgen: closed loop, 8 in flight\n"), "{md}");
        assert!(md.contains("| completed sagas/s | 50.0 |"), "{md}");
        assert!(md.contains("| errors | Unavailable 1 |"), "{md}");
        assert!(md.contains("| ratio (sagas/s ÷ baseline) | 0.50 |"), "{md}");
        let text = report.to_text();
        let last = text.lines().last().unwrap_or_default();
        assert!(last.starts_with("sagas_per_sec=50.0 p50_ms=50.0 "), "{last}");
        assert!(last.ends_with("errors=1 ratio=0.50 p50_ratio=5.00"), "{last}");
    }

    fn run(sagas: u64, latency_ms: u64, secs: u64) -> RunResult {
        let mut recorder = Recorder::default();
        for i in 0..sagas {
            recorder.started();
            recorder.ended(
                &SagaEnd::Terminal { state: "APPROVED".into(), expected: true },
                Duration::from_millis(latency_ms),
                Duration::from_millis(i),
            );
        }
        RunResult { recorder, elapsed: Duration::from_secs(secs) }
    }

    #[test]
    fn rounds_report_the_median_ratios_and_the_totals_of_their_segments() {
        // Three rounds whose machine speed drifts: the ratios are 0.5, 0.4, 0.6.
        let segments =
            [(run(100, 4, 1), run(50, 8, 1)), (run(200, 2, 1), run(80, 6, 1)), (run(100, 5, 1), run(60, 5, 1))];
        let rounds: Vec<RoundReport> = segments.iter().map(|(b, s)| RoundReport::of(b, s)).collect();
        assert_eq!(rounds.iter().map(|r| r.ratio).collect::<Vec<_>>(), vec![0.5, 0.4, 0.6]);
        // Percentiles come from the histogram: exact to 0.1 %.
        let near = |got: Option<f64>, want: f64| got.is_some_and(|got| (got - want).abs() < want * 0.002);
        assert!(rounds.iter().zip([2.0, 3.0, 1.0]).all(|(r, want)| near(Some(r.p50_ratio), want)));
        let (mut baseline, mut system) = segments[0].clone();
        for (b, s) in &segments[1..] {
            baseline.append(b);
            system.append(s);
        }
        let report = Report::new(description(), &system, Some(BaselineReport::of(&baseline))).with_rounds(rounds);
        assert_eq!(report.sagas_per_sec, 190.0 / 3.0, "the system's segments together");
        assert_eq!(report.baseline_sagas_per_sec, Some(400.0 / 3.0));
        assert_eq!(report.ratio, Some(0.5), "the median of the rounds");
        assert!(near(report.p50_ratio, 2.0), "the median of the rounds: {:?}", report.p50_ratio);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
        assert_eq!(json["rounds"].as_array().map(Vec::len), Some(3));
        assert_eq!(json["rounds"][1]["ratio"], 0.4);
        assert!(report.to_markdown().contains("| 2 | 200.0 | 80.0 | 0.40 | 2.00 ms | 6.00 ms | 3.00 |"));
        assert!(report.to_text().contains("round 3: baseline 100.0 sagas/s, p50 5.00 ms; system 60.0 sagas/s"));
    }

    #[test]
    fn cpu_per_saga_appears_in_every_format_for_the_system_and_the_baseline() {
        let cpu = |ms: f64| CpuReport {
            ms_per_saga: [("loadgen".to_owned(), ms), ("redis-server".to_owned(), 0.25)].into_iter().collect(),
            total: ms + 0.25,
            sagas: 100,
            by_thread: BTreeMap::new(),
            machine: Some(MachineShare { busy_percent: 87.5, steal_percent: 6.5 }),
        };
        let baseline = BaselineReport { cpu: Some(cpu(0.5)), ..BaselineReport::of(&run(100, 4, 1)) };
        let report = Report::new(description(), &result(), Some(baseline)).with_cpu(Some(cpu(0.125)));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
        assert_eq!(json["cpu"]["ms_per_saga"]["redis-server"], 0.25);
        assert_eq!(json["cpu"]["total"], 0.375);
        assert_eq!(json["baseline"]["cpu"]["ms_per_saga"]["loadgen"], 0.5);
        assert_eq!(json["cpu"]["machine"]["steal_percent"], 6.5);
        assert_eq!(json["baseline"]["cpu"]["machine"]["busy_percent"], 87.5);
        let text = report.to_text();
        assert!(
            text.contains(
                "\nCPU per saga (ms): loadgen 0.125, redis-server 0.250, total 0.375\n\
                 machine (all vCPUs): busy 87.5 %, steal 6.5 %\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nbaseline CPU per saga (ms): loadgen 0.500, redis-server 0.250, total 0.750\n"),
            "{text}"
        );
        assert!(text.contains("\nbaseline machine (all vCPUs): busy 87.5 %, steal 6.5 %\n"), "{text}");
        let md = report.to_markdown();
        assert!(md.contains("| baseline CPU per saga (ms) | loadgen 0.500, redis-server 0.250, total 0.750 |"), "{md}");
        assert!(md.contains("| baseline machine (all vCPUs) | busy 87.5 %, steal 6.5 % |"), "{md}");
        // With rounds, the CPU rows stay in the summary table, before the rounds' own.
        let rounds = vec![RoundReport::of(&run(100, 4, 1), &result())];
        let md = report.with_rounds(rounds).to_markdown();
        let cpu_row = md.find("| CPU per saga (ms) |");
        let rounds_table = md.find("| round |");
        assert!(cpu_row.is_some() && cpu_row < rounds_table, "{md}");
        assert!(!md.contains("by thread"), "no thread rows unless threads were read: {md}");
        assert!(json["cpu"].get("ms_per_saga_by_thread").is_none());
        let plain: serde_json::Value =
            serde_json::from_str(&Report::new(description(), &result(), None).to_json()).expect("valid JSON");
        assert!(plain.get("cpu").is_none());
    }

    #[test]
    fn cpu_by_thread_appears_in_every_format_busiest_thread_first() {
        let threads: BTreeMap<String, f64> =
            [("lapin-io-loop".to_owned(), 0.1), ("tokio-runtime-w".to_owned(), 0.3)].into_iter().collect();
        let cpu = CpuReport {
            ms_per_saga: [("order_service".to_owned(), 0.4)].into_iter().collect(),
            total: 0.4,
            sagas: 100,
            by_thread: [("order_service".to_owned(), threads)].into_iter().collect(),
            machine: None,
        };
        let report = Report::new(description(), &result(), None).with_cpu(Some(cpu));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
        assert_eq!(json["cpu"]["ms_per_saga_by_thread"]["order_service"]["lapin-io-loop"], 0.1);
        let text = report.to_text();
        assert!(
            text.contains("\nCPU per saga by thread (ms), order_service: tokio-runtime-w 0.300, lapin-io-loop 0.100\n"),
            "{text}"
        );
        let md = report.to_markdown();
        assert!(
            md.contains("| CPU per saga by thread (ms), order_service | tokio-runtime-w 0.300, lapin-io-loop 0.100 |"),
            "{md}"
        );
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median([0.4, 0.7, 0.5, 0.6].into_iter()), Some(0.55));
        assert_eq!(median(std::iter::empty()), None);
    }
}
