//! `loadgen --curve`: the open loop's latency against load, for the system and
//! the baseline side by side, and the highest load each sustains within a p99
//! objective.
//!
//! The protocol: a warm-up; the closed loop at 64 in flight against the baseline
//! in rounds, which sets each side's maximum; then, for each share of that
//! maximum (10 % to 50 % by default), the open loop at that share of the
//! baseline's maximum and then of the system's, each side at its own maximum's
//! share. The one decision to know: a side sustains a share only if that point
//! and every smaller share it ran kept the p99 within the objective with no
//! failure, so one lucky point above a failed one is not read as headroom.

use std::fmt::Write as _;

use serde::Serialize;
use thiserror::Error;

use crate::{
    report::Report,
    stats::LatencySummary,
    targets::{ClosedLoop, MAX_SCALE, Protocol, failures},
};

/// A share as a percentage to a tenth, without a trailing `.0`: `10`, `12.5`.
pub fn percent(share: f64) -> String {
    format!("{}", (share * 1000.0).round() / 10.0)
}

/// Sizes of the curve's phases and the objective its points are read against.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurveProtocol {
    /// `--targets`' warm-up and closed loop, scaled the same way.
    #[serde(flatten)]
    pub closed: ClosedLoop,
    /// The open loop's rates, as shares of each side's closed-loop maximum, ascending.
    pub shares: Vec<f64>,
    /// Seconds of open-loop starts per point.
    pub point_secs: f64,
    /// Warm-up sagas before each point.
    pub point_warmup: u64,
    /// The p99 a point must keep, in milliseconds.
    pub slo_p99_ms: f64,
}

#[derive(Debug, Error, PartialEq)]
pub enum CurveError {
    #[error("--curve-scale must be a number in (0, {MAX_SCALE}], got {0}")]
    Scale(f64),
    #[error("--curve-shares must be numbers in (0, 1], got {0:?}")]
    Share(String),
    #[error("--slo-p99-ms must be a positive number, got {0}")]
    Objective(f64),
}

/// The shares of the maximum a curve runs unless told otherwise.
pub const DEFAULT_SHARES: [f64; 5] = [0.1, 0.2, 0.3, 0.4, 0.5];

impl CurveProtocol {
    /// The standard sizes (`--targets`' warm-up and closed loop, and 20 s per
    /// point) multiplied by `scale`, each phase keeping at least one saga per
    /// round and one second per point; the shares sorted, deduplicated and each
    /// in (0, 1].
    pub fn new(scale: f64, shares: &[f64], slo_p99_ms: f64) -> Result<Self, CurveError> {
        // The same warm-up and closed loop as --targets', scaled the same way
        // and within the same bounds.
        let closed = Protocol::scaled(scale).map_err(|_| CurveError::Scale(scale))?.closed;
        if !(slo_p99_ms > 0.0 && slo_p99_ms.is_finite()) {
            return Err(CurveError::Objective(slo_p99_ms));
        }
        if shares.is_empty() || shares.iter().any(|s| !(*s > 0.0 && *s <= 1.0)) {
            return Err(CurveError::Share(format!("{shares:?}")));
        }
        let mut shares = shares.to_vec();
        shares.sort_by(f64::total_cmp);
        shares.dedup();
        let times = |n: u64, floor: u64| ((n as f64 * scale).round() as u64).max(floor);
        Ok(Self { closed, shares, point_secs: (20.0 * scale).max(1.0), point_warmup: times(100, 1), slo_p99_ms })
    }
}

/// One open-loop run at a share of a side's maximum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurvePoint {
    /// The share of the side's closed-loop maximum.
    pub share: f64,
    /// The rate asked for: the share times the maximum, rounded.
    pub rate_per_sec: f64,
    /// The rate completed.
    pub sagas_per_sec: f64,
    pub latency_ms: LatencySummary,
    /// Failed calls, sagas that did not end or ended in an unexpected state.
    pub failures: u64,
    /// CPU per saga of the `--cpu-of` processes and loadgen, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms_per_saga: Option<f64>,
    /// The share of the machine's time its hypervisor stole during the point,
    /// when CPU was measured: a point with much of it says more about the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steal_percent: Option<f64>,
    /// p99 within the objective, no failure, and at least one saga completed.
    pub within_objective: bool,
    /// The share's rate rounded to under one saga per second: not run, and so
    /// not within the objective.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

impl CurvePoint {
    /// The point an open-loop report at `share` gives, read against `slo_p99_ms`.
    pub fn of(share: f64, report: &Report, slo_p99_ms: f64) -> Self {
        let failures = failures(report);
        Self {
            share,
            rate_per_sec: report.rate_per_sec.unwrap_or_default(),
            sagas_per_sec: report.sagas_per_sec,
            latency_ms: report.latency_ms,
            failures,
            cpu_ms_per_saga: report.cpu.as_ref().map(|cpu| cpu.total),
            steal_percent: report.cpu.as_ref().and_then(|cpu| cpu.machine).map(|m| m.steal_percent),
            within_objective: report.sagas_completed > 0 && failures == 0 && report.latency_ms.p99 <= slo_p99_ms,
            skipped: false,
        }
    }

    /// A share whose rate is under one saga per second, which is not run.
    pub fn skipped(share: f64) -> Self {
        Self {
            share,
            rate_per_sec: 0.0,
            sagas_per_sec: 0.0,
            latency_ms: LatencySummary::default(),
            failures: 0,
            cpu_ms_per_saga: None,
            steal_percent: None,
            within_objective: false,
            skipped: true,
        }
    }

    fn verdict(&self) -> &'static str {
        match (self.skipped, self.within_objective) {
            (true, _) => "not run",
            (false, true) => "met",
            (false, false) => "NOT MET",
        }
    }
}

/// One side's curve: its maximum, its points and what it sustains.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurveSide {
    /// Completed sagas/s in the closed loop, which the shares multiply.
    pub max_sagas_per_sec: f64,
    pub points: Vec<CurvePoint>,
    /// The highest share such that it and every smaller point kept the
    /// objective; `None` when the smallest did not.
    pub sustained_share: Option<f64>,
    /// The rate of that point.
    pub sustained_rate_per_sec: Option<f64>,
}

impl CurveSide {
    pub fn new(max_sagas_per_sec: f64, points: Vec<CurvePoint>) -> Self {
        let sustained = points.iter().take_while(|p| p.within_objective).last();
        Self {
            max_sagas_per_sec,
            sustained_share: sustained.map(|p| p.share),
            sustained_rate_per_sec: sustained.map(|p| p.rate_per_sec),
            points,
        }
    }

    fn summary(&self, name: &str, slo_p99_ms: f64) -> String {
        let objective = format!("p99 within {slo_p99_ms} ms and no failure");
        let highest = self.points.last().map(|p| p.share);
        match (self.sustained_share, self.sustained_rate_per_sec, self.points.first()) {
            (Some(share), Some(rate), _) => format!(
                "{name}: {objective} up to {} % of its maximum ({rate:.0}/s of {:.1}/s){}",
                percent(share),
                self.max_sagas_per_sec,
                if highest == Some(share) { ", the highest share run" } else { "" }
            ),
            (_, _, Some(first)) if first.skipped => format!(
                "{name}: the smallest share of its maximum ({:.1}/s) is under one saga per second; not run",
                self.max_sagas_per_sec
            ),
            (_, _, Some(_)) => format!(
                "{name}: {objective} not met even at the smallest share (maximum {:.1}/s)",
                self.max_sagas_per_sec
            ),
            (_, _, None) => format!("{name}: no share was run (maximum {:.1}/s)", self.max_sagas_per_sec),
        }
    }
}

/// The whole curve: the protocol, both sides, and the closed loop's report.
#[derive(Debug, Serialize)]
pub struct CurveReport {
    pub protocol: CurveProtocol,
    pub system: CurveSide,
    pub baseline: CurveSide,
    /// The closed loop that set both maximums (with the baseline's figures and rounds).
    pub closed_loop: Report,
}

impl CurveReport {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A line per point and side, then what each side sustains, for stdout.
    pub fn to_text(&self) -> String {
        let slo = self.protocol.slo_p99_ms;
        let mut text = format!(
            "curve (open loop at shares of each side's closed-loop maximum; objective: p99 <= {slo} ms, no failure):\n"
        );
        for (name, side) in [("baseline", &self.baseline), ("system", &self.system)] {
            for p in &side.points {
                let _ = writeln!(
                    text,
                    "  {name:<8} {:>4} %  {:>7.1}/s  p50 {:>7.1} ms  p99 {:>7.1} ms  failures {}  {}",
                    percent(p.share),
                    p.rate_per_sec,
                    p.latency_ms.p50,
                    p.latency_ms.p99,
                    p.failures,
                    p.verdict()
                );
            }
        }
        let _ = writeln!(text, "{}", self.baseline.summary("baseline", slo));
        let _ = write!(text, "{}", self.system.summary("system", slo));
        text
    }

    /// A Markdown page: what each side sustains, then a table of the points.
    pub fn to_markdown(&self) -> String {
        let slo = self.protocol.slo_p99_ms;
        let mut md = String::from("# loadgen: latency against load\n\n");
        let _ = writeln!(md, "- {}", self.baseline.summary("baseline", slo));
        let _ = writeln!(md, "- {}", self.system.summary("system", slo));
        let _ = writeln!(md);
        md.push_str(
            "| side | share | rate | completed/s | p50 ms | p99 ms | p99.9 ms | failures | CPU ms per saga | steal | objective met |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for (name, side) in [("baseline", &self.baseline), ("system", &self.system)] {
            for p in &side.points {
                let cpu = p.cpu_ms_per_saga.map_or_else(|| "–".to_owned(), |c| format!("{c:.2}"));
                let steal = p.steal_percent.map_or_else(|| "–".to_owned(), |s| format!("{s:.1} %"));
                let _ = writeln!(
                    md,
                    "| {name} | {} % | {:.0}/s | {:.1} | {:.1} | {:.1} | {:.1} | {} | {cpu} | {steal} | {} |",
                    percent(p.share),
                    p.rate_per_sec,
                    p.sagas_per_sec,
                    p.latency_ms.p50,
                    p.latency_ms.p99,
                    p.latency_ms.p999,
                    p.failures,
                    match p.verdict() {
                        "met" => format!("yes (p99 ≤ {slo} ms, no failure)"),
                        "not run" => "not run (under 1/s)".to_owned(),
                        _ => "**no**".to_owned(),
                    }
                );
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        engine::{self, Plan},
        mix::Mix,
        report::RunDescription,
        schedule::{Mode, Stop},
    };

    fn point(share: f64, within: bool) -> CurvePoint {
        CurvePoint {
            share,
            rate_per_sec: share * 1000.0,
            sagas_per_sec: share * 1000.0,
            latency_ms: LatencySummary::default(),
            failures: 0,
            cpu_ms_per_saga: None,
            steal_percent: None,
            within_objective: within,
            skipped: false,
        }
    }

    #[test]
    fn a_side_sustains_the_highest_share_below_which_every_point_kept_the_objective() {
        let side =
            CurveSide::new(1000.0, vec![point(0.1, true), point(0.2, true), point(0.3, false), point(0.4, true)]);
        assert_eq!(side.sustained_share, Some(0.2), "the lucky 40 % above a failed 30 % does not count");
        assert_eq!(side.sustained_rate_per_sec, Some(200.0));
        let none = CurveSide::new(1000.0, vec![point(0.1, false), point(0.2, true)]);
        assert_eq!(none.sustained_share, None);
        let text = none.summary("system", 25.0);
        assert!(text.contains("p99 within 25 ms and no failure not met even at the smallest share"), "{text}");
        let all = CurveSide::new(1000.0, vec![point(0.1, true), point(0.5, true)]);
        assert_eq!(all.sustained_share, Some(0.5));
        let text = all.summary("baseline", 25.0);
        assert!(text.contains("up to 50 % of its maximum (500/s of 1000.0/s), the highest share run"), "{text}");
        let some = CurveSide::new(1000.0, vec![point(0.1, true), point(0.5, false)]).summary("system", 25.0);
        assert!(some.ends_with("(100/s of 1000.0/s)"), "{some}");
        // A share too small to run is not sustained, and neither is any above it.
        let skipped = CurveSide::new(5.0, vec![CurvePoint::skipped(0.1), point(0.5, true)]);
        assert_eq!(skipped.sustained_share, None);
        let text = skipped.summary("system", 25.0);
        assert!(text.contains("under one saga per second; not run"), "{text}");
        assert_eq!(CurveSide::new(5.0, Vec::new()).summary("system", 25.0), "system: no share was run (maximum 5.0/s)");
    }

    #[test]
    fn shares_print_as_percentages_to_a_tenth() {
        let printed: Vec<String> = [0.1, 0.125, 0.3, 0.05, 1.0, 0.333].into_iter().map(percent).collect();
        assert_eq!(printed, ["10", "12.5", "30", "5", "100", "33.3"]);
    }

    #[test]
    fn the_protocol_scales_sorts_its_shares_and_refuses_nonsense() {
        let p = CurveProtocol::new(1.0, &[0.3, 0.1, 0.3], 25.0).expect("valid");
        assert_eq!(p.shares, vec![0.1, 0.3]);
        assert_eq!((p.closed.warmup_sagas, p.closed.closed_sagas, p.point_secs), (2000, 10_000, 20.0));
        let targets = Protocol::STANDARD;
        assert_eq!(
            (p.closed.closed_concurrency, p.closed.closed_warmup, p.closed.rounds),
            (targets.closed.closed_concurrency, targets.closed.closed_warmup, targets.closed.rounds),
            "--targets' closed loop"
        );
        let tiny = CurveProtocol::new(0.0001, &DEFAULT_SHARES, 25.0).expect("valid");
        assert_eq!(
            (tiny.closed.warmup_sagas, tiny.closed.closed_sagas, tiny.point_secs, tiny.point_warmup),
            (1, 5, 1.0, 1)
        );
        assert_eq!(CurveProtocol::new(0.0, &DEFAULT_SHARES, 25.0), Err(CurveError::Scale(0.0)));
        assert_eq!(CurveProtocol::new(11.0, &DEFAULT_SHARES, 25.0), Err(CurveError::Scale(11.0)));
        assert!(matches!(CurveProtocol::new(1.0, &[0.1, 1.5], 25.0), Err(CurveError::Share(_))));
        assert!(matches!(CurveProtocol::new(1.0, &[], 25.0), Err(CurveError::Share(_))));
        assert!(matches!(CurveProtocol::new(1.0, &[f64::NAN], 25.0), Err(CurveError::Share(_))));
        assert_eq!(CurveProtocol::new(1.0, &DEFAULT_SHARES, 0.0), Err(CurveError::Objective(0.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_point_is_within_the_objective_only_with_sagas_no_failure_and_the_p99_inside() {
        let mode = Mode::Open { rate: 100.0, max_in_flight: 64 };
        let plan = Plan {
            mode,
            stop: Stop::Sagas(20),
            mix: "success=100".parse::<Mix>().expect("a valid mix"),
            seed: 7,
            label: "test".to_owned(),
            progress: false,
        };
        let result = engine::run(&plan, Arc::new(engine::ExpectedEnd::default())).await;
        let description =
            RunDescription { target: "t".into(), mode, follow: "watch".into(), mix: Default::default(), seed: 7 };
        let mut report = Report::new(description, &result, None);
        report.latency_ms.p99 = 20.0;
        let point = CurvePoint::of(0.1, &report, 25.0);
        assert!(point.within_objective, "{point:?}");
        assert_eq!((point.rate_per_sec, point.failures), (100.0, 0));
        assert!(!CurvePoint::of(0.1, &report, 19.0).within_objective, "p99 20 ms over a 19 ms objective");

        let mut unexpected = report.clone();
        unexpected.unexpected_final_states = 1;
        assert_eq!(CurvePoint::of(0.1, &unexpected, 25.0).failures, 1);
        assert!(!CurvePoint::of(0.1, &unexpected, 25.0).within_objective);
        let mut unfinished = report.clone();
        unfinished.sagas_completed -= 2;
        assert_eq!(CurvePoint::of(0.1, &unfinished, 25.0).failures, 2, "two sagas did not end");
        let mut empty = report;
        (empty.sagas_started, empty.sagas_completed, empty.latency_ms) = (0, 0, LatencySummary::default());
        assert!(!CurvePoint::of(0.1, &empty, 25.0).within_objective, "nothing completed is not a measurement");
    }
}
