//! The load engine: offers sagas to a [`SagaRunner`] in a closed or open loop,
//! times each one, and records the result. The same engine drives the real system
//! (through gRPC) and the baseline (in-process), so both are measured alike.
//!
//! Latency is measured here, not by the runner: from the moment the saga was
//! meant to start (the open loop's schedule, or the closed loop's call) to the
//! moment the runner saw it end.

use std::{
    future::Future,
    io::IsTerminal,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Semaphore, time::Instant};

use crate::{
    mix::{Mix, Scenario},
    schedule::{Mode, Stop, scheduled_offset},
    stats::{CallError, Recorder, SagaEnd},
};

/// What one saga did, as its runner saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaOutcome {
    pub end: SagaEnd,
    /// Errors of the calls made for it (a saga can end well after a failed call).
    pub errors: Vec<CallError>,
}

/// Runs one saga from its start to its terminal state.
pub trait SagaRunner: Send + Sync + 'static {
    /// Starts saga number `index` of `scenario` and follows it to its end.
    fn run(&self, index: u64, scenario: Scenario) -> impl Future<Output = SagaOutcome> + Send;
}

/// What to offer and when to stop.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub stop: Stop,
    pub mix: Mix,
    pub seed: u64,
    /// Shown on the progress line.
    pub label: String,
    /// Progress on stderr (a bar on a terminal, plain lines otherwise).
    pub progress: bool,
}

/// The measurements of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub recorder: Recorder,
    /// From the first start to the last saga's end.
    pub elapsed: Duration,
}

impl RunResult {
    /// Sagas that reached a terminal state, per second of the run.
    pub fn sagas_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.recorder.completed_count() as f64 / secs } else { 0.0 }
    }

    /// Adds a later run as if it had followed this one without a pause: counts
    /// and latencies add up, elapsed times add up (the gap between them is not
    /// part of either), so `sagas_per_sec` is that of the runs together.
    pub fn append(&mut self, later: &RunResult) {
        self.recorder.append(&later.recorder, self.elapsed);
        self.elapsed += later.elapsed;
    }
}

struct Shared {
    recorder: Mutex<Recorder>,
    in_flight: AtomicU64,
    t0: Instant,
}

impl Shared {
    fn record(&self, outcome: &SagaOutcome, latency: Duration) {
        let at = self.t0.elapsed();
        if let Ok(mut recorder) = self.recorder.lock() {
            for error in &outcome.errors {
                recorder.error(error);
            }
            recorder.ended(&outcome.end, latency, at);
        }
    }

    fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut recorder) = self.recorder.lock() {
            recorder.started();
        }
    }
}

/// Runs `plan` against `runner` until it stops and every saga started has ended.
pub async fn run<R: SagaRunner>(plan: &Plan, runner: Arc<R>) -> RunResult {
    let shared = Arc::new(Shared {
        recorder: Mutex::new(Recorder::default()),
        in_flight: AtomicU64::new(0),
        t0: Instant::now(),
    });
    let progress = plan.progress.then(|| Progress::start(plan, shared.clone()));
    match plan.mode {
        Mode::Closed { concurrency } => closed_loop(plan, concurrency.max(1), runner, &shared).await,
        Mode::Open { rate, max_in_flight } => open_loop(plan, rate, max_in_flight.max(1), runner, &shared).await,
    }
    drop(progress);
    let recorder = shared.recorder.lock().map(|r| r.clone()).unwrap_or_default();
    let elapsed = recorder.last_completion().max(Duration::from_micros(1));
    RunResult { recorder, elapsed }
}

/// The clients run in a `JoinSet`, as the open loop's sagas do, so that a run
/// dropped half-way (a signal) stops them instead of leaving them to run on.
async fn closed_loop<R: SagaRunner>(plan: &Plan, concurrency: usize, runner: Arc<R>, shared: &Arc<Shared>) {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (runner, shared, next, stop, mix, seed) =
            (runner.clone(), shared.clone(), next.clone(), plan.stop, plan.mix.clone(), plan.seed);
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let more = match stop {
                    Stop::Sagas(n) => index < n,
                    Stop::Duration(d) => shared.t0.elapsed() < d,
                };
                if !more {
                    return;
                }
                shared.started();
                let began = Instant::now();
                let outcome = runner.run(index, mix.pick(seed, index)).await;
                shared.record(&outcome, began.elapsed());
                shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

async fn open_loop<R: SagaRunner>(plan: &Plan, rate: f64, max_in_flight: usize, runner: Arc<R>, shared: &Arc<Shared>) {
    let total = plan.stop.open_loop_sagas(rate);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..total {
        let scheduled = shared.t0 + scheduled_offset(index, rate);
        tokio::time::sleep_until(scheduled).await;
        // A full window delays the start, and the delay counts in the latency.
        let Ok(permit) = slots.clone().acquire_owned().await else { break };
        let (runner, shared, scenario) = (runner.clone(), shared.clone(), plan.mix.pick(plan.seed, index));
        shared.started();
        tasks.spawn(async move {
            let outcome = runner.run(index, scenario).await;
            shared.record(&outcome, scheduled.elapsed());
            shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
        // Reap finished tasks as we go, so the set stays small on long runs.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Progress on stderr: an indicatif bar on a terminal, a plain line every five
/// seconds otherwise (CI logs, redirected output).
struct Progress {
    task: tokio::task::JoinHandle<()>,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn start(plan: &Plan, shared: Arc<Shared>) -> Self {
        let total = match (plan.stop, plan.mode) {
            (Stop::Sagas(n), _) => Some(n),
            (stop @ Stop::Duration(_), Mode::Open { rate, .. }) => Some(stop.open_loop_sagas(rate)),
            (Stop::Duration(_), Mode::Closed { .. }) => None,
        };
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::new_spinner(),
            };
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {wide_msg}")
            {
                bar.set_style(style);
            }
            bar
        });
        let label = plan.label.clone();
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let period = if shown.is_some() { Duration::from_millis(250) } else { Duration::from_secs(5) };
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let (done, started) =
                    shared.recorder.lock().map(|r| (r.completed_count(), r.started_count())).unwrap_or_default();
                let secs = shared.t0.elapsed().as_secs_f64().max(1e-9);
                let in_flight = shared.in_flight.load(Ordering::Relaxed);
                let line = format!(
                    "{label}: {done} done, {started} started, {in_flight} in flight, {:.0}/s",
                    done as f64 / secs
                );
                match &shown {
                    Some(bar) => {
                        bar.set_position(done);
                        bar.set_message(line);
                    }
                    None => eprintln!("loadgen: {line}"),
                }
            }
        });
        Self { task, bar }
    }
}

/// Also when a run is dropped half-way (a signal), so no line follows the run.
impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// For the tests of the engine and of the protocols built on it: a runner whose
/// every saga ends after `delay` (at once when zero) in its scenario's expected
/// state.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExpectedEnd {
    pub(crate) delay: std::time::Duration,
}

#[cfg(test)]
impl SagaRunner for ExpectedEnd {
    async fn run(&self, _index: u64, scenario: Scenario) -> SagaOutcome {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        SagaOutcome {
            end: SagaEnd::Terminal { state: scenario.expected_state().to_owned(), expected: true },
            errors: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: Mode, stop: Stop) -> Plan {
        Plan {
            mode,
            stop,
            mix: "success=1,card_declined=1".parse().expect("mix"),
            seed: 1,
            label: "t".into(),
            progress: false,
        }
    }

    #[tokio::test]
    async fn a_closed_loop_runs_exactly_the_sagas_asked_for() {
        let result =
            run(&plan(Mode::Closed { concurrency: 4 }, Stop::Sagas(50)), Arc::new(ExpectedEnd::default())).await;
        assert_eq!(result.recorder.started_count(), 50);
        assert_eq!(result.recorder.completed_count(), 50);
        let states = result.recorder.final_states();
        assert_eq!(states.values().sum::<u64>(), 50);
        assert!(states.contains_key("APPROVED") && states.contains_key("REJECTED"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_loop_starts_rate_times_duration_sagas() {
        let result = run(
            &plan(Mode::Open { rate: 100.0, max_in_flight: 8 }, Stop::Duration(Duration::from_secs(2))),
            Arc::new(ExpectedEnd::default()),
        )
        .await;
        assert_eq!(result.recorder.started_count(), 200);
        assert_eq!(result.recorder.completed_count(), 200);
        assert_eq!(result.recorder.unexpected_count(), 0);
    }
}
