//! The orchestrator's Prometheus metrics, derived from the events of each saved
//! transition, so a metric can never disagree with the saga's own record:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ftgo_sagas_started_total` | counter | |
//! | `ftgo_sagas_finished_total` | counter | `state` (APPROVED, REJECTED), `failed_step`, `code` |
//! | `ftgo_sagas_parked_total` | counter | `step` |
//! | `ftgo_saga_step_duration_seconds` | histogram | `step`, `phase`: first send to success, retries included |
//! | `ftgo_saga_retries_total` | counter | `step` |
//! | `ftgo_saga_timeouts_total` | counter | `step` |
//! | `ftgo_saga_compensations_total` | counter | `step`: compensations that succeeded |
//! | `ftgo_sagas_in_flight` | gauge | unfinished sagas (running, compensating, parked) |
//! | `ftgo_sagas_stuck` | gauge | unfinished sagas started longer ago than the stuck threshold |
//! | `ftgo_sagas_finished_kept` | gauge | finished sagas still stored (deleted after the retention) |
//! | `ftgo_sagas_pruned_total` | counter | finished sagas deleted after the retention |
//!
//! Gauges are read from Redis by every replica's sweeper, so they count the whole
//! system, not one replica.

use saga::{EventKind, Pending, Phase, SagaDefinition, Transition};

use crate::orchestrator::OrderSaga;

/// Records what one saved transition did. `before` is the saga's pending command
/// before the transition (for step latencies).
pub fn record(
    definition: &SagaDefinition,
    before: Option<&Pending>,
    state: &OrderSaga,
    transition: &Transition,
    now_ms: i64,
) {
    for event in &transition.events {
        let step = definition.step_name(event.step);
        match event.kind {
            EventKind::SagaStarted => metrics::counter!("ftgo_sagas_started_total").increment(1),
            EventKind::StepSucceeded | EventKind::CompensationSucceeded => {
                let phase = if event.kind == EventKind::StepSucceeded { Phase::Action } else { Phase::Compensation };
                if let Some(p) = before.filter(|p| p.step == event.step && p.phase == phase && p.first_sent_at_ms > 0) {
                    let seconds = (now_ms - p.first_sent_at_ms).max(0) as f64 / 1000.0;
                    metrics::histogram!("ftgo_saga_step_duration_seconds", "step" => step, "phase" => phase.as_str())
                        .record(seconds);
                }
                if phase == Phase::Compensation {
                    metrics::counter!("ftgo_saga_compensations_total", "step" => step).increment(1);
                }
            }
            EventKind::RetryScheduled => metrics::counter!("ftgo_saga_retries_total", "step" => step).increment(1),
            EventKind::StepTimedOut => metrics::counter!("ftgo_saga_timeouts_total", "step" => step).increment(1),
            EventKind::SagaApproved | EventKind::SagaRejected => {
                let (failed_step, code) =
                    state.failure.as_ref().map(|f| (f.step.clone(), f.code.clone())).unwrap_or_default();
                let label = if event.kind == EventKind::SagaApproved { "APPROVED" } else { "REJECTED" };
                metrics::counter!("ftgo_sagas_finished_total", "state" => label, "failed_step" => failed_step, "code" => code)
                    .increment(1);
            }
            EventKind::SagaParked => metrics::counter!("ftgo_sagas_parked_total", "step" => step).increment(1),
            EventKind::CommandSent
            | EventKind::StepFailed
            | EventKind::CompensationStarted
            | EventKind::CompensationSent
            | EventKind::CompensationFailed
            | EventKind::OperatorAction => {}
        }
    }
}

/// Describes the orchestrator's metrics to the installed recorder (the `# HELP`
/// lines of `/metrics`).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("ftgo_sagas_started_total", "CreateOrderSagas started");
    describe_counter!("ftgo_sagas_finished_total", "Sagas that ended APPROVED or REJECTED, by failed step and code");
    describe_counter!("ftgo_sagas_parked_total", "Sagas parked as COMPENSATION_FAILED, by step");
    describe_histogram!(
        "ftgo_saga_step_duration_seconds",
        metrics::Unit::Seconds,
        "From a step's first command to its success, retries included, by step and phase"
    );
    describe_counter!("ftgo_saga_retries_total", "Commands re-sent after a transient failure or a timeout, by step");
    describe_counter!("ftgo_saga_timeouts_total", "Steps whose reply did not come in time, by step");
    describe_counter!("ftgo_saga_compensations_total", "Compensations that succeeded, by step");
    describe_gauge!("ftgo_sagas_in_flight", "Unfinished sagas (running, compensating, parked), whole system");
    describe_gauge!("ftgo_sagas_stuck", "Unfinished sagas started longer ago than the stuck threshold");
    describe_gauge!("ftgo_sagas_finished_kept", "Finished sagas still stored (deleted after the retention)");
    describe_counter!("ftgo_sagas_pruned_total", "Finished sagas deleted after the retention");
}

/// Sets the system-wide gauges.
pub fn set_gauges(in_flight: usize, stuck: usize, finished_kept: usize) {
    metrics::gauge!("ftgo_sagas_in_flight").set(in_flight as f64);
    metrics::gauge!("ftgo_sagas_stuck").set(stuck as f64);
    metrics::gauge!("ftgo_sagas_finished_kept").set(finished_kept as f64);
}

/// Counts finished sagas deleted after the retention.
pub fn record_pruned(count: usize) {
    if count > 0 {
        metrics::counter!("ftgo_sagas_pruned_total").increment(count as u64);
    }
}
