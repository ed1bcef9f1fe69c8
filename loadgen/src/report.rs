//! The report of a run: what was offered, what came back, and (after `--baseline`)
//! how it compares with the minimal orchestrator. Written as JSON (machine-read:
//! `sagas_per_sec`, `latency_ms`, `errors`, `final_states`, `baseline_*`, `ratio`),
//! as a Markdown summary, and as a few lines on stdout.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::{
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
        }
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
    /// `sagas_per_sec / baseline_sagas_per_sec`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineReport>,
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
        let ratio = baseline.as_ref().filter(|b| b.sagas_per_sec > 0.0).map(|b| sagas_per_sec / b.sagas_per_sec);
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
            latency_ms: result.recorder.latency(),
            errors: result.recorder.errors().clone(),
            errors_by_call: result.recorder.errors_by_call().clone(),
            final_states: result.recorder.final_states().clone(),
            unexpected_final_states: result.recorder.unexpected_count(),
            timeline: result.recorder.timeline(),
            baseline_sagas_per_sec: baseline.as_ref().map(|b| b.sagas_per_sec),
            baseline_p50_ms: baseline.as_ref().map(|b| b.latency_ms.p50),
            ratio,
            baseline,
        }
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
            let _ = writeln!(md, "| ratio (sagas/s ÷ baseline) | {ratio:.2} |");
            if p50 > 0.0 {
                let _ = writeln!(md, "| p50 ÷ baseline p50 | {:.2} |", l.p50 / p50);
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
        if let (Some(b), Some(p50), Some(ratio)) = (self.baseline_sagas_per_sec, self.baseline_p50_ms, self.ratio) {
            let _ = writeln!(text, "baseline: {b:.1} sagas/s, p50 {p50:.1} ms; ratio {ratio:.2}");
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
        assert!(last.ends_with("errors=1 ratio=0.50"), "{last}");
    }
}
