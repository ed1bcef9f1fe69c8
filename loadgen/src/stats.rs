//! What a run measured: every saga's CreateOrder→terminal latency in an HDR
//! histogram (microseconds, 3 significant digits), per-second buckets for the
//! timeline chart, errors by gRPC code, and final states.
//!
//! Percentiles come from `hdrhistogram`: they are exact to 0.1 % of the value,
//! which is far below the run-to-run noise of a saga's latency.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency the histogram holds (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencySummary {
    /// The percentiles of a histogram of microseconds; zeros when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// One second of the run, by completion time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// The end of the second, from the start of the run.
    pub t_secs: f64,
    /// Sagas that reached their terminal state in that second.
    pub completed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// How one saga ended, as a runner reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaEnd {
    /// Terminal: `APPROVED`, `REJECTED` or `COMPENSATION_FAILED`.
    Terminal { state: String, expected: bool },
    /// Not terminal: CreateOrder failed, or the saga was not seen to end in time.
    Failed { state: &'static str },
}

/// An error a call returned: the call and its gRPC code name (e.g. `Unavailable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub call: &'static str,
    pub code: String,
}

/// Collects a run's measurements.
#[derive(Debug, Clone)]
pub struct Recorder {
    latency: Histogram<u64>,
    buckets: Vec<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    errors_by_call: BTreeMap<String, u64>,
    final_states: BTreeMap<String, u64>,
    unexpected: u64,
    started: u64,
    completed: u64,
    last_completion: Duration,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latency: histogram(),
            buckets: Vec::new(),
            errors: BTreeMap::new(),
            errors_by_call: BTreeMap::new(),
            final_states: BTreeMap::new(),
            unexpected: 0,
            started: 0,
            completed: 0,
            last_completion: Duration::ZERO,
        }
    }
}

impl Recorder {
    /// A saga started.
    pub fn started(&mut self) {
        self.started += 1;
    }

    /// An error of one call (a saga may see several, e.g. a broken watch stream
    /// and then a successful poll).
    pub fn error(&mut self, error: &CallError) {
        *self.errors.entry(error.code.clone()).or_default() += 1;
        *self.errors_by_call.entry(format!("{}: {}", error.call, error.code)).or_default() += 1;
    }

    /// A saga ended at `at` (from the start of the run) after `latency`.
    pub fn ended(&mut self, end: &SagaEnd, latency: Duration, at: Duration) {
        match end {
            SagaEnd::Terminal { state, expected } => {
                *self.final_states.entry(state.clone()).or_default() += 1;
                if !expected {
                    self.unexpected += 1;
                }
                let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
                // Clamped into range above, so recording cannot fail.
                let _ = self.latency.record(us);
                let second = at.as_secs() as usize;
                while self.buckets.len() <= second {
                    self.buckets.push(histogram());
                }
                let _ = self.buckets[second].record(us);
                self.completed += 1;
                self.last_completion = self.last_completion.max(at);
            }
            SagaEnd::Failed { state } => *self.final_states.entry((*state).to_owned()).or_default() += 1,
        }
    }

    /// Adds `later`, a run that began `offset` after this one began, as if both
    /// were one run: `--rounds` measures the system in several segments and
    /// reports them together. Its timeline continues at `offset` (whole seconds).
    pub fn append(&mut self, later: &Recorder, offset: Duration) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&later.latency);
        let first = offset.as_secs() as usize;
        let end = first + later.buckets.len();
        if self.buckets.len() < end {
            self.buckets.resize_with(end, histogram);
        }
        for (mine, theirs) in self.buckets[first..end].iter_mut().zip(&later.buckets) {
            let _ = mine.add(theirs);
        }
        for (code, n) in &later.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        for (call, n) in &later.errors_by_call {
            *self.errors_by_call.entry(call.clone()).or_default() += n;
        }
        for (state, n) in &later.final_states {
            *self.final_states.entry(state.clone()).or_default() += n;
        }
        self.unexpected += later.unexpected;
        self.started += later.started;
        self.completed += later.completed;
        if later.completed > 0 {
            self.last_completion = self.last_completion.max(offset + later.last_completion);
        }
    }

    /// Sagas started.
    pub fn started_count(&self) -> u64 {
        self.started
    }

    /// Sagas that reached a terminal state.
    pub fn completed_count(&self) -> u64 {
        self.completed
    }

    /// When the last saga ended, from the start of the run.
    pub fn last_completion(&self) -> Duration {
        self.last_completion
    }

    /// Latency percentiles of every completed saga.
    pub fn latency(&self) -> LatencySummary {
        LatencySummary::of(&self.latency)
    }

    /// Errors by gRPC code.
    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    /// Errors by call and gRPC code (`CreateOrder: Unavailable`).
    pub fn errors_by_call(&self) -> &BTreeMap<String, u64> {
        &self.errors_by_call
    }

    /// Sagas by final state (terminal states, plus `CREATE_FAILED` and `UNFINISHED`).
    pub fn final_states(&self) -> &BTreeMap<String, u64> {
        &self.final_states
    }

    /// Terminal sagas whose state is not the one their scenario ends in.
    pub fn unexpected_count(&self) -> u64 {
        self.unexpected
    }

    /// Throughput and latency per second of the run.
    pub fn timeline(&self) -> Vec<TimelinePoint> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(second, h)| {
                let summary = LatencySummary::of(h);
                TimelinePoint {
                    t_secs: (second + 1) as f64,
                    completed: h.len(),
                    p50_ms: summary.p50,
                    p99_ms: summary.p99,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> SagaEnd {
        SagaEnd::Terminal { state: "APPROVED".into(), expected: true }
    }

    #[test]
    fn percentiles_of_a_uniform_run_are_where_they_should_be() {
        let mut recorder = Recorder::default();
        for ms in 1..=1000u64 {
            recorder.ended(&ok(), Duration::from_millis(ms), Duration::from_millis(ms));
        }
        let l = recorder.latency();
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 0.001;
        assert!(near(l.p50, 500.0), "p50 {}", l.p50);
        assert!(near(l.p90, 900.0), "p90 {}", l.p90);
        assert!(near(l.p99, 990.0), "p99 {}", l.p99);
        assert!(near(l.p999, 999.0), "p99.9 {}", l.p999);
        assert!(near(l.max, 1000.0), "max {}", l.max);
        assert!(near(l.mean, 500.5), "mean {}", l.mean);
        assert_eq!(recorder.completed_count(), 1000);
        assert_eq!(recorder.last_completion(), Duration::from_secs(1));
    }

    #[test]
    fn an_empty_run_has_zero_percentiles() {
        assert_eq!(Recorder::default().latency(), LatencySummary::default());
    }

    #[test]
    fn the_timeline_buckets_completions_by_second() {
        let mut recorder = Recorder::default();
        recorder.ended(&ok(), Duration::from_millis(10), Duration::from_millis(100));
        recorder.ended(&ok(), Duration::from_millis(30), Duration::from_millis(900));
        recorder.ended(&ok(), Duration::from_millis(20), Duration::from_millis(2500));
        let timeline = recorder.timeline();
        assert_eq!(timeline.iter().map(|p| p.completed).collect::<Vec<_>>(), vec![2, 0, 1]);
        assert_eq!(timeline[2].t_secs, 3.0);
        assert!((timeline[2].p50_ms - 20.0).abs() < 0.1);
    }

    #[test]
    fn an_appended_run_adds_its_counts_and_continues_the_timeline() {
        let mut first = Recorder::default();
        first.started();
        first.ended(&ok(), Duration::from_millis(10), Duration::from_millis(400));
        let mut second = Recorder::default();
        second.started();
        second.started();
        second.error(&CallError { call: "CreateOrder", code: "Unavailable".into() });
        second.ended(&ok(), Duration::from_millis(30), Duration::from_millis(200));
        second.ended(&SagaEnd::Failed { state: "CREATE_FAILED" }, Duration::ZERO, Duration::ZERO);
        first.append(&second, Duration::from_secs(2));
        assert_eq!((first.started_count(), first.completed_count()), (3, 2));
        assert_eq!(first.final_states().get("APPROVED"), Some(&2));
        assert_eq!(first.final_states().get("CREATE_FAILED"), Some(&1));
        assert_eq!(first.errors().get("Unavailable"), Some(&1));
        assert_eq!(first.last_completion(), Duration::from_millis(2200));
        let timeline = first.timeline();
        assert_eq!(timeline.iter().map(|p| p.completed).collect::<Vec<_>>(), vec![1, 0, 1]);
        assert!((first.latency().max - 30.0).abs() < 0.1);
    }

    #[test]
    fn errors_and_states_are_counted_by_code_and_name() {
        let mut recorder = Recorder::default();
        recorder.error(&CallError { call: "CreateOrder", code: "Unavailable".into() });
        recorder.error(&CallError { call: "WatchOrder", code: "Unavailable".into() });
        recorder.ended(&SagaEnd::Failed { state: "CREATE_FAILED" }, Duration::ZERO, Duration::ZERO);
        recorder.ended(
            &SagaEnd::Terminal { state: "REJECTED".into(), expected: false },
            Duration::from_millis(5),
            Duration::from_millis(5),
        );
        assert_eq!(recorder.errors().get("Unavailable"), Some(&2));
        assert_eq!(recorder.errors_by_call().get("WatchOrder: Unavailable"), Some(&1));
        assert_eq!(recorder.final_states().get("CREATE_FAILED"), Some(&1));
        assert_eq!(recorder.final_states().get("REJECTED"), Some(&1));
        assert_eq!(recorder.unexpected_count(), 1);
        assert_eq!(recorder.completed_count(), 1);
    }
}
