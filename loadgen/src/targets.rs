//! The performance targets of docs/performance.md in one run (`loadgen
//! --targets`): that page's protocol, then a verdict per target.
//!
//! The protocol: a warm-up; the closed loop at 64 in flight and then one saga in
//! flight, each alternating with the baseline in rounds; then the open loop at
//! half the closed loop's rate. The one decision to know: every verdict reads a
//! figure that the phase's own report carries (the median of the rounds' ratios,
//! the open loop's p99 and failures), so each can be checked against the report
//! printed beside it, and a target that a run could not measure (a round in
//! which a side completed nothing, an open loop that did not run) is not met.

use std::fmt::Write as _;

use serde::Serialize;
use thiserror::Error;

use crate::report::Report;

/// How a protocol starts, `--targets`' and `--curve`'s alike: a warm-up, then
/// the closed loop against the baseline that sets each side's maximum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClosedLoop {
    /// Sagas at `closed_concurrency` before anything is measured.
    pub warmup_sagas: u64,
    /// The closed loop's sagas in flight.
    pub closed_concurrency: usize,
    /// The closed loop's measured sagas (system; the baseline runs as many).
    pub closed_sagas: u64,
    /// Warm-up of each side before its first closed-loop round.
    pub closed_warmup: u64,
    /// Baseline/system rounds of the closed loop (and of `--targets`' one in flight).
    pub rounds: u64,
}

/// Sizes of the protocol's phases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Protocol {
    #[serde(flatten)]
    pub closed: ClosedLoop,
    /// Measured sagas at one in flight.
    pub one_sagas: u64,
    /// Warm-up of each side before its first one-in-flight round.
    pub one_warmup: u64,
    /// Seconds of open-loop starts.
    pub open_secs: f64,
    /// Warm-up sagas before the open loop.
    pub open_warmup: u64,
}

#[derive(Debug, Error, PartialEq)]
pub enum TargetsError {
    #[error("--targets-scale must be a number in (0, {MAX_SCALE}], got {0}")]
    Scale(f64),
}

/// The longest run `--targets-scale` asks for: ten times the standard protocol.
pub const MAX_SCALE: f64 = 10.0;

impl Protocol {
    /// The protocol of docs/performance.md ("Reproducing the targets' runs").
    pub const STANDARD: Protocol = Protocol {
        closed: ClosedLoop {
            warmup_sagas: 2000,
            closed_concurrency: 64,
            closed_sagas: 10_000,
            closed_warmup: 200,
            rounds: 5,
        },
        one_sagas: 1500,
        one_warmup: 100,
        open_secs: 30.0,
        open_warmup: 200,
    };

    /// The standard protocol with its saga counts and duration multiplied by
    /// `scale` (at most [`MAX_SCALE`]); each phase keeps at least one saga per
    /// round and one second of open loop. Concurrency and rounds do not change.
    pub fn scaled(scale: f64) -> Result<Self, TargetsError> {
        if !(scale > 0.0 && scale <= MAX_SCALE) {
            return Err(TargetsError::Scale(scale));
        }
        let s = Self::STANDARD;
        let times = |n: u64, floor: u64| ((n as f64 * scale).round() as u64).max(floor);
        Ok(Self {
            closed: ClosedLoop {
                warmup_sagas: times(s.closed.warmup_sagas, 1),
                closed_sagas: times(s.closed.closed_sagas, s.closed.rounds),
                closed_warmup: times(s.closed.closed_warmup, 1),
                ..s.closed
            },
            one_sagas: times(s.one_sagas, s.closed.rounds),
            one_warmup: times(s.one_warmup, 1),
            open_secs: (s.open_secs * scale).max(1.0),
            open_warmup: times(s.open_warmup, 1),
        })
    }
}

/// One target, what was measured and whether it is met.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// A stable name: `closed_loop_ratio`, `one_in_flight_p50_ratio`,
    /// `open_loop_p99_ms`, `open_loop_failures`.
    pub target: &'static str,
    /// The target in words.
    pub description: &'static str,
    /// `None` when the run could not measure it (e.g. no baseline figure).
    pub measured: Option<f64>,
    /// `>=` or `<=`.
    pub comparison: &'static str,
    pub threshold: f64,
    /// `ratio`, `ms`, `count`, `bytes` or `percent`.
    pub unit: &'static str,
    pub met: bool,
}

impl Verdict {
    pub(crate) fn at_least(
        target: &'static str,
        description: &'static str,
        measured: Option<f64>,
        threshold: f64,
    ) -> Self {
        let met = measured.is_some_and(|m| m >= threshold);
        Self { target, description, measured, comparison: ">=", threshold, unit: "ratio", met }
    }

    pub(crate) fn at_most(
        target: &'static str,
        description: &'static str,
        measured: Option<f64>,
        threshold: f64,
        unit: &'static str,
    ) -> Self {
        let met = measured.is_some_and(|m| m <= threshold);
        Self { target, description, measured, comparison: "<=", threshold, unit, met }
    }

    fn measured_text(&self) -> String {
        match (self.measured, self.unit) {
            (None, _) => "none".to_owned(),
            (Some(m), "count" | "bytes") => format!("{m:.0}"),
            (Some(m), _) => format!("{m:.2}"),
        }
    }
}

/// What counts against "zero errors" in a run: its failed calls, plus its sagas
/// that never ended (`CREATE_FAILED`, `UNFINISHED`) or ended in a state their
/// scenario does not expect. (A saga whose CreateOrder failed counts twice: as
/// a failed call and as a saga that never ended.)
pub fn failures(report: &Report) -> u64 {
    let call_errors: u64 = report.errors.values().sum();
    call_errors + report.sagas_started.saturating_sub(report.sagas_completed) + report.unexpected_final_states
}

/// Whether a compared phase measured both sides: every round (or, without
/// rounds, the whole run) has a rate and a p50 on each side. A side that
/// completed nothing has a p50 of 0, which would read as a ratio of 0.
fn compared(report: &Report) -> bool {
    let whole = report.sagas_completed > 0
        && report.baseline_sagas_per_sec.is_some_and(|b| b > 0.0)
        && report.baseline_p50_ms.is_some_and(|b| b > 0.0)
        && report.latency_ms.p50 > 0.0;
    whole
        && report.rounds.iter().all(|r| {
            r.sagas_per_sec > 0.0 && r.baseline_sagas_per_sec > 0.0 && r.p50_ms > 0.0 && r.baseline_p50_ms > 0.0
        })
}

/// The verdicts of the targets from the phases' reports (`open` is `None` when
/// the open loop could not run).
pub fn verdicts(closed: &Report, one: &Report, open: Option<&Report>) -> Vec<Verdict> {
    vec![
        Verdict::at_least(
            "closed_loop_ratio",
            "closed loop: completed sagas/s at least 0.6 x the baseline's (median of the rounds)",
            closed.ratio.filter(|_| compared(closed)),
            0.6,
        ),
        Verdict::at_most(
            "one_in_flight_p50_ratio",
            "one saga in flight: p50 at most 1.5 x the baseline's (median of the rounds)",
            one.p50_ratio.filter(|_| compared(one)),
            1.5,
            "ratio",
        ),
        Verdict::at_most(
            "open_loop_p99_ms",
            "open loop at half the closed loop's rate: p99 at most 25 ms",
            open.filter(|o| o.sagas_completed > 0).map(|o| o.latency_ms.p99),
            25.0,
            "ms",
        ),
        Verdict::at_most(
            "open_loop_failures",
            "open loop: zero errors (failed calls, sagas that did not end or ended unexpectedly)",
            open.map(|o| failures(o) as f64),
            0.0,
            "count",
        ),
    ]
}

/// The verdicts, one line each under a `targets:` heading, for stdout.
pub fn verdicts_text(verdicts: &[Verdict]) -> String {
    let mut text = String::from("targets:\n");
    let width = verdicts.iter().map(|v| v.target.len()).max().unwrap_or(0).max(24);
    for v in verdicts {
        let _ = writeln!(
            text,
            "  {:<width$} {:>9} {} {:<5} {}",
            v.target,
            v.measured_text(),
            v.comparison,
            v.threshold,
            if v.met { "met" } else { "NOT MET" }
        );
    }
    text
}

/// The verdicts as a Markdown table.
pub fn verdicts_markdown(verdicts: &[Verdict]) -> String {
    let mut md = String::from("| target | measured | required | met |\n|---|---:|---|---|\n");
    for v in verdicts {
        let _ = writeln!(
            md,
            "| {} | {} | {} {} | {} |",
            v.description,
            v.measured_text(),
            v.comparison,
            v.threshold,
            if v.met { "yes" } else { "**no**" }
        );
    }
    md
}

/// The whole run: the protocol, the verdicts and each phase's full report.
#[derive(Debug, Serialize)]
pub struct TargetsReport {
    pub protocol: Protocol,
    /// Every target met.
    pub all_met: bool,
    pub targets: Vec<Verdict>,
    pub closed_loop: Report,
    pub one_in_flight: Report,
    /// `None` when the closed loop completed too few sagas to set a rate.
    pub open_loop: Option<Report>,
}

impl TargetsReport {
    pub fn new(protocol: Protocol, closed_loop: Report, one_in_flight: Report, open_loop: Option<Report>) -> Self {
        let targets = verdicts(&closed_loop, &one_in_flight, open_loop.as_ref());
        let all_met = targets.iter().all(|v| v.met);
        Self { protocol, all_met, targets, closed_loop, one_in_flight, open_loop }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The verdicts, one line each, for stdout.
    pub fn to_text(&self) -> String {
        let mut text = verdicts_text(&self.targets);
        let open = match self.open_loop.as_ref().and_then(|o| o.rate_per_sec) {
            Some(rate) => format!("open loop at {rate:.1}/s"),
            None => "no open loop".to_owned(),
        };
        let _ = write!(
            text,
            "closed loop {:.1} sagas/s, {open}; {} of {} targets met",
            self.closed_loop.sagas_per_sec,
            self.targets.iter().filter(|v| v.met).count(),
            self.targets.len()
        );
        text
    }

    /// A Markdown page: the verdicts' table, then each phase's summary.
    pub fn to_markdown(&self) -> String {
        let mut md = String::from("# loadgen: the performance targets\n\n");
        md.push_str(&verdicts_markdown(&self.targets));
        let phases = [
            ("Closed loop", Some(&self.closed_loop)),
            ("One in flight", Some(&self.one_in_flight)),
            ("Open loop", self.open_loop.as_ref()),
        ];
        for (title, report) in phases.into_iter().filter_map(|(title, report)| Some((title, report?))) {
            let _ = writeln!(md);
            let _ = writeln!(md, "## {title}");
            let _ = writeln!(md);
            // Each phase's page starts with its own title: one level down here.
            md.push_str(&report.to_markdown().replacen("# loadgen: ", "### ", 1));
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{
        engine::{self, Plan},
        mix::Mix,
        report::{BaselineReport, RoundReport, RunDescription},
        schedule::{Mode, Stop},
    };

    async fn run(mode: Mode, sagas: u64, delay_ms: u64) -> engine::RunResult {
        let plan = Plan {
            mode,
            stop: Stop::Sagas(sagas),
            mix: "success=100".parse::<Mix>().expect("a valid mix"),
            seed: 7,
            label: "test".to_owned(),
            progress: false,
        };
        engine::run(&plan, Arc::new(engine::ExpectedEnd { delay: Duration::from_millis(delay_ms) })).await
    }

    fn description(mode: Mode) -> RunDescription {
        RunDescription { target: "t".into(), mode, follow: "watch".into(), mix: Default::default(), seed: 7 }
    }

    /// A phase of `sagas` sagas at `delay_ms` each against a baseline of `base_ms`.
    async fn against_baseline(mode: Mode, sagas: u64, delay_ms: u64, base_ms: u64) -> Report {
        let system = run(mode, sagas, delay_ms).await;
        let baseline = run(mode, sagas, base_ms).await;
        Report::new(description(mode), &system, Some(BaselineReport::of(&baseline)))
            .with_rounds(vec![RoundReport::of(&baseline, &system)])
    }

    #[tokio::test(start_paused = true)]
    async fn each_verdict_reads_its_phase_report() {
        let closed = against_baseline(Mode::Closed { concurrency: 4 }, 40, 20, 10).await;
        let one = against_baseline(Mode::Closed { concurrency: 1 }, 10, 12, 10).await;
        let open_mode = Mode::Open { rate: 100.0, max_in_flight: 64 };
        let open = Report::new(description(open_mode), &run(open_mode, 50, 30).await, None);
        let report = TargetsReport::new(Protocol::STANDARD, closed, one, Some(open));

        let v = &report.targets;
        assert_eq!(
            v.iter().map(|v| v.target).collect::<Vec<_>>(),
            ["closed_loop_ratio", "one_in_flight_p50_ratio", "open_loop_p99_ms", "open_loop_failures"]
        );
        // Twice the baseline's time per saga: half its rate.
        let ratio = v[0].measured.expect("a ratio");
        assert!((ratio - 0.5).abs() < 0.05, "{ratio}");
        assert!(!v[0].met);
        let p50_ratio = v[1].measured.expect("a p50 ratio");
        assert!((p50_ratio - 1.2).abs() < 0.05, "{p50_ratio}");
        assert!(v[1].met);
        let p99 = v[2].measured.expect("a p99");
        assert!((29.0..=31.0).contains(&p99), "{p99}");
        assert!(!v[2].met);
        assert_eq!((v[3].measured, v[3].met), (Some(0.0), true));
        assert!(!report.all_met);

        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
        assert_eq!(json["targets"][1]["met"], true);
        assert_eq!(json["closed_loop"]["ratio"].as_f64(), Some(ratio));
        assert_eq!(json["protocol"]["closed_concurrency"], 64);
        assert!(report.to_text().contains("NOT MET"));
        assert!(report.to_markdown().contains("## One in flight"));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_baseline_or_a_completed_saga_nothing_is_met() {
        let mode = Mode::Closed { concurrency: 2 };
        let alone = Report::new(description(mode), &run(mode, 4, 5).await, None);
        let mut open = Report::new(description(mode), &run(mode, 4, 5).await, None);
        open.sagas_completed = 0;
        open.errors.insert("UNAVAILABLE".into(), 3);
        let v = verdicts(&alone, &alone, Some(&open));
        assert!(v.iter().all(|v| !v.met), "{v:?}");
        assert_eq!(v[0].measured, None);
        assert_eq!(v[2].measured, None);
        // 3 failed calls and 4 sagas that did not end.
        assert_eq!(v[3].measured, Some(7.0));
        assert_eq!(v[3].measured_text(), "7");

        let no_open = verdicts(&alone, &alone, None);
        assert_eq!((no_open[2].measured, no_open[3].measured), (None, None));
        assert!(!no_open[3].met, "an open loop that did not run has not shown zero errors");
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_in_which_the_system_completed_nothing_is_not_a_ratio_of_zero() {
        let mut one = against_baseline(Mode::Closed { concurrency: 1 }, 10, 12, 10).await;
        assert!(verdicts(&one, &one, None)[1].met);
        // The system's segment of one round ended no saga: its p50 and rate are 0,
        // so its ratios are 0, which must not pass for "fast".
        let silent =
            RoundReport { sagas_per_sec: 0.0, p50_ms: 0.0, ratio: 0.0, p50_ratio: 0.0, ..one.rounds[0].clone() };
        one = one.with_rounds(vec![silent.clone(), silent.clone(), silent]);
        assert_eq!(one.p50_ratio, Some(0.0));
        let v = verdicts(&one, &one, None);
        assert_eq!((v[0].measured, v[0].met), (None, false));
        assert_eq!((v[1].measured, v[1].met), (None, false));
    }

    #[test]
    fn a_scaled_protocol_keeps_a_saga_per_round() {
        let p = Protocol::scaled(0.0001).expect("in range");
        assert_eq!((p.closed.closed_sagas, p.one_sagas, p.closed.warmup_sagas), (5, 5, 1));
        assert_eq!((p.closed.closed_concurrency, p.closed.rounds), (64, 5));
        assert_eq!(p.open_secs, 1.0);
        assert_eq!(Protocol::scaled(1.0), Ok(Protocol::STANDARD));
        assert_eq!(Protocol::scaled(0.1).map(|p| p.closed.closed_sagas), Ok(1000));
        assert_eq!(Protocol::scaled(2.0).map(|p| (p.closed.closed_sagas, p.open_secs)), Ok((20_000, 60.0)));
        assert_eq!(Protocol::scaled(0.0), Err(TargetsError::Scale(0.0)));
        assert!(Protocol::scaled(f64::NAN).is_err());
        assert!(Protocol::scaled(10.5).is_err());
    }
}
