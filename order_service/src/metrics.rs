//! The orchestrator's Prometheus metrics, derived from the events of each saved
//! transition, so a metric can never disagree with the saga's own record:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ftgo_sagas_started_total` | counter | |
//! | `ftgo_sagas_finished_total` | counter | `state` (APPROVED, REJECTED), `failed_step`, `code` (a code the step's reply lists in the proto contract, `TIMEOUT`, `CANCELLED`, `ORDER_TOTAL_LIMIT_EXCEEDED`, or `OTHER`) |
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

use std::sync::OnceLock;

use metrics::{Counter, Histogram};
use saga::{EventKind, Pending, Phase, SagaDefinition, Transition};

use crate::{create_order_saga::known_failure_code, orchestrator::OrderSaga};

/// The `code` (or `failed_step`) label of a rejection whose code (or step) is not
/// one the saga knows.
pub const OTHER_LABEL: &str = "OTHER";

/// The orchestrator's saga metrics, kept as handles per step of the definition.
///
/// The decision a reader must know: every label but a rejection's `failed_step`
/// and `code` is known at start (the step names, the phases, `APPROVED`), so a
/// transition's events pick handles by step index instead of looking each metric
/// up in the registry (a key built and hashed) per event. A handle is registered
/// the first time its series counts, so `/metrics` shows a series once it has
/// happened, as it did before, and no series for what a step cannot do (a
/// compensation of a step that has none). A rejection is still looked up when it
/// happens, with its code bounded to those the proto contract lists for the step.
pub struct SagaMetrics {
    started: OnceLock<Counter>,
    approved: OnceLock<Counter>,
    /// One per step of the definition, then one for `DONE` (past the last step).
    steps: Vec<StepMetrics>,
}

#[derive(Default)]
struct StepMetrics {
    step: &'static str,
    action_duration: OnceLock<Histogram>,
    compensation_duration: OnceLock<Histogram>,
    compensations: OnceLock<Counter>,
    retries: OnceLock<Counter>,
    timeouts: OnceLock<Counter>,
    parked: OnceLock<Counter>,
}

impl StepMetrics {
    fn new(step: &'static str) -> Self {
        Self { step, ..Self::default() }
    }

    fn duration(&self, phase: Phase) -> &Histogram {
        let cell = match phase {
            Phase::Action => &self.action_duration,
            Phase::Compensation => &self.compensation_duration,
        };
        cell.get_or_init(
            || metrics::histogram!("ftgo_saga_step_duration_seconds", "step" => self.step, "phase" => phase.as_str()),
        )
    }

    fn counter<'a>(&self, cell: &'a OnceLock<Counter>, name: &'static str) -> &'a Counter {
        cell.get_or_init(|| metrics::counter!(name, "step" => self.step))
    }
}

impl SagaMetrics {
    pub fn new(definition: &SagaDefinition) -> Self {
        Self {
            started: OnceLock::new(),
            approved: OnceLock::new(),
            steps: (0..=definition.len()).map(|index| StepMetrics::new(definition.step_name(index))).collect(),
        }
    }

    fn step(&self, index: usize) -> &StepMetrics {
        // `steps` is never empty: it ends with `DONE`.
        let last = self.steps.len() - 1;
        &self.steps[index.min(last)]
    }

    /// A rejection's `failed_step` and `code` labels. The code is one the failed
    /// step can fail with ([`known_failure_code`]), or `OTHER`: a participant that
    /// sends codes its reply does not list must not add series to `/metrics`.
    fn rejection_labels(&self, state: &OrderSaga) -> (&'static str, &'static str) {
        let Some(failure) = state.failure.as_ref() else {
            return ("", "");
        };
        let Some(index) = self.steps.iter().position(|s| s.step == failure.step) else {
            return (OTHER_LABEL, OTHER_LABEL);
        };
        let code = known_failure_code(index, &failure.code).unwrap_or_else(|| {
            tracing::warn!(
                order_id = %state.saga_id,
                step = %failure.step,
                code = %failure.code,
                "the saga failed with a code its step's reply does not list in the proto contract; counted as {OTHER_LABEL}"
            );
            OTHER_LABEL
        });
        (self.steps[index].step, code)
    }

    /// Records what one saved transition did. `before` is the saga's pending
    /// command before the transition (for step latencies).
    pub fn record(&self, before: Option<&Pending>, state: &OrderSaga, transition: &Transition, now_ms: i64) {
        for event in &transition.events {
            match event.kind {
                EventKind::SagaStarted => {
                    self.started.get_or_init(|| metrics::counter!("ftgo_sagas_started_total")).increment(1)
                }
                EventKind::StepSucceeded | EventKind::CompensationSucceeded => {
                    let step = self.step(event.step);
                    let phase =
                        if event.kind == EventKind::StepSucceeded { Phase::Action } else { Phase::Compensation };
                    if let Some(p) =
                        before.filter(|p| p.step == event.step && p.phase == phase && p.first_sent_at_ms > 0)
                    {
                        step.duration(phase).record((now_ms - p.first_sent_at_ms).max(0) as f64 / 1000.0);
                    }
                    if phase == Phase::Compensation {
                        step.counter(&step.compensations, "ftgo_saga_compensations_total").increment(1);
                    }
                }
                EventKind::RetryScheduled => {
                    let step = self.step(event.step);
                    step.counter(&step.retries, "ftgo_saga_retries_total").increment(1)
                }
                EventKind::StepTimedOut => {
                    let step = self.step(event.step);
                    step.counter(&step.timeouts, "ftgo_saga_timeouts_total").increment(1)
                }
                EventKind::SagaApproved => self
                    .approved
                    .get_or_init(|| {
                        metrics::counter!("ftgo_sagas_finished_total", "state" => "APPROVED", "failed_step" => "", "code" => "")
                    })
                    .increment(1),
                EventKind::SagaRejected => {
                    let (failed_step, code) = self.rejection_labels(state);
                    metrics::counter!("ftgo_sagas_finished_total", "state" => "REJECTED", "failed_step" => failed_step, "code" => code)
                        .increment(1);
                }
                EventKind::SagaParked => {
                    let step = self.step(event.step);
                    step.counter(&step.parked, "ftgo_sagas_parked_total").increment(1)
                }
                EventKind::CommandSent
                | EventKind::StepFailed
                | EventKind::CompensationStarted
                | EventKind::CompensationSent
                | EventKind::CompensationFailed
                | EventKind::OperatorAction => {}
            }
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

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use saga::{Clock, Outcome, SagaMachine, StepFailure};

    use super::*;
    use crate::create_order_saga::{self, Item, OrderData, OrderDomain, ReplyPayload, SagaPolicy};

    /// Starts a saga and feeds it `replies`, each answering the command the previous
    /// transition sent, recording every transition as the orchestrator does.
    fn run(metrics: &SagaMetrics, definition: &SagaDefinition, id: &str, replies: Vec<Outcome<ReplyPayload>>) {
        let domain = OrderDomain { max_total_minor: 50_000 };
        let machine = SagaMachine::new(definition, &domain);
        let mut clock = Clock { now_ms: 1_700_000_000_000, jitter: 0.5 };
        let data = OrderData::new(1, 1, vec![Item { menu_item_id: "naan".into(), quantity: 1 }], None);
        let (mut state, mut transition) = machine.start(id.to_owned(), data, clock);
        metrics.record(None, &state, &transition, clock.now_ms);
        for reply in replies {
            let command = transition.send.take().expect("a command awaits this reply");
            let before = state.pending.clone();
            clock.now_ms += 250;
            transition = machine.on_reply(&mut state, &command.message_id, reply, clock).expect("the reply applies");
            metrics.record(before.as_ref(), &state, &transition, clock.now_ms);
        }
        assert!(!state.status.is_active(), "the saga ended: {:?}", state.status);
    }

    /// Every series the recorder holds: name, labels as `key=value`, value; sorted.
    fn snapshot(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<(String, Vec<String>, String)> {
        let mut seen: Vec<(String, Vec<String>, String)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let labels = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
                let value = match value {
                    DebugValue::Counter(n) => n.to_string(),
                    DebugValue::Histogram(samples) => format!("{} samples", samples.len()),
                    DebugValue::Gauge(g) => g.to_string(),
                };
                (key.key().name().to_owned(), labels, value)
            })
            .collect();
        seen.sort();
        seen
    }

    #[test]
    fn prepared_handles_count_what_the_transitions_did() {
        let definition = create_order_saga::definition(SagaPolicy::default()).expect("definition");
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let metrics = SagaMetrics::new(&definition);
            run(
                &metrics,
                &definition,
                "saga-approved",
                vec![
                    Outcome::Success(ReplyPayload::ConsumerVerified),
                    Outcome::Success(ReplyPayload::TicketCreated { ticket_id: 7, total_minor: 700 }),
                    Outcome::Success(ReplyPayload::CardAuthorized { authorization_id: "auth-1".into() }),
                    Outcome::Success(ReplyPayload::TicketApproved),
                ],
            );
            run(
                &metrics,
                &definition,
                "saga-declined",
                vec![
                    Outcome::Success(ReplyPayload::ConsumerVerified),
                    Outcome::Success(ReplyPayload::TicketCreated { ticket_id: 8, total_minor: 700 }),
                    Outcome::Failure(StepFailure::business("CARD_DECLINED", "over the limit")),
                    Outcome::Success(ReplyPayload::Compensated),
                ],
            );
            // A VerifyConsumer that gets no reply: its deadline passes.
            let domain = OrderDomain { max_total_minor: 50_000 };
            let machine = SagaMachine::new(&definition, &domain);
            let clock = Clock { now_ms: 1_700_000_000_000, jitter: 0.5 };
            let data = OrderData::new(1, 1, vec![Item { menu_item_id: "naan".into(), quantity: 1 }], None);
            let (mut state, transition) = machine.start("saga-silent".to_owned(), data, clock);
            metrics.record(None, &state, &transition, clock.now_ms);
            let late = Clock { now_ms: clock.now_ms + 600_000, ..clock };
            let before = state.pending.clone();
            let transition = machine.on_wake(&mut state, late).expect("the deadline has passed");
            metrics.record(before.as_ref(), &state, &transition, late.now_ms);
        });
        let seen = snapshot(&snapshotter);
        let find = |name: &str, labels: &[&str]| {
            seen.iter()
                .find(|(n, l, _)| n == name && l.iter().map(String::as_str).eq(labels.iter().copied()))
                .map(|(.., v)| v.as_str())
        };
        assert_eq!(find("ftgo_sagas_started_total", &[]), Some("3"), "{seen:#?}");
        assert_eq!(find("ftgo_saga_timeouts_total", &["step=VERIFY_CONSUMER"]), Some("1"), "{seen:#?}");
        assert_eq!(find("ftgo_saga_retries_total", &["step=VERIFY_CONSUMER"]), Some("1"), "{seen:#?}");
        assert_eq!(find("ftgo_sagas_finished_total", &["state=APPROVED", "failed_step=", "code="]), Some("1"));
        assert_eq!(
            find("ftgo_sagas_finished_total", &["state=REJECTED", "failed_step=AUTHORIZE_CARD", "code=CARD_DECLINED"]),
            Some("1")
        );
        // Both sagas verified the consumer and created a ticket; one approved it.
        for (step, samples) in
            [("VERIFY_CONSUMER", 2), ("CREATE_TICKET", 2), ("AUTHORIZE_CARD", 1), ("APPROVE_TICKET", 1)]
        {
            let labels = [format!("step={step}"), "phase=action".to_owned()];
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            assert_eq!(
                find("ftgo_saga_step_duration_seconds", &labels),
                Some(format!("{samples} samples").as_str()),
                "{step}"
            );
        }
        assert_eq!(
            find("ftgo_saga_step_duration_seconds", &["step=CREATE_TICKET", "phase=compensation"]),
            Some("1 samples")
        );
        assert_eq!(find("ftgo_saga_compensations_total", &["step=CREATE_TICKET"]), Some("1"));
        // A series exists once it has counted: no other step timed out, and no step
        // without a compensation shows one.
        assert_eq!(find("ftgo_saga_timeouts_total", &["step=APPROVE_TICKET"]), None);
        assert_eq!(find("ftgo_saga_step_duration_seconds", &["step=VERIFY_CONSUMER", "phase=compensation"]), None);
    }

    #[test]
    fn a_rejection_is_labelled_only_by_codes_its_step_can_fail_with() {
        let definition = create_order_saga::definition(SagaPolicy::default()).expect("definition");
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let verified = || Outcome::Success(ReplyPayload::ConsumerVerified);
        let failed = |code: &str| Outcome::Failure(StepFailure::business(code, "no"));
        metrics::with_local_recorder(&recorder, || {
            let metrics = SagaMetrics::new(&definition);
            // Listed in CreateTicketReply's failure_codes.
            run(&metrics, &definition, "listed", vec![verified(), failed("RESTAURANT_NOT_FOUND")]);
            // A real code, but of another reply; and one no reply lists.
            run(&metrics, &definition, "other-reply", vec![failed("CARD_DECLINED")]);
            run(&metrics, &definition, "made-up", vec![failed("X-1234 made up")]);
            // The orchestrator's own: the priced total is over the limit (50,000).
            let over = Outcome::Success(ReplyPayload::TicketCreated { ticket_id: 9, total_minor: 60_000 });
            run(&metrics, &definition, "over", vec![verified(), over, Outcome::Success(ReplyPayload::Compensated)]);
        });
        let rejected: Vec<(Vec<String>, String)> = snapshot(&snapshotter)
            .into_iter()
            .filter(|(name, labels, _)| {
                name == "ftgo_sagas_finished_total" && labels.first().is_some_and(|l| l == "state=REJECTED")
            })
            .map(|(_, labels, value)| (labels[1..].to_vec(), value))
            .collect();
        let series = |step: &str, code: &str| (vec![format!("failed_step={step}"), format!("code={code}")], "1");
        let expected: Vec<(Vec<String>, &str)> = vec![
            series("CREATE_TICKET", "ORDER_TOTAL_LIMIT_EXCEEDED"),
            series("CREATE_TICKET", "RESTAURANT_NOT_FOUND"),
            (series("VERIFY_CONSUMER", OTHER_LABEL).0, "2"),
        ];
        let rejected: Vec<(Vec<String>, &str)> = rejected.iter().map(|(l, v)| (l.clone(), v.as_str())).collect();
        assert_eq!(rejected, expected);
    }

    #[test]
    fn the_machines_own_codes_are_known_at_every_step() {
        for step in 0..=create_order_saga::APPROVE_ORDER {
            assert_eq!(known_failure_code(step, "TIMEOUT"), Some("TIMEOUT"));
            assert_eq!(known_failure_code(step, "CANCELLED"), Some("CANCELLED"));
        }
        assert_eq!(known_failure_code(create_order_saga::AUTHORIZE_CARD, "CARD_DECLINED"), Some("CARD_DECLINED"));
        assert_eq!(
            known_failure_code(create_order_saga::APPROVE_TICKET, "KITCHEN_UNAVAILABLE"),
            Some("KITCHEN_UNAVAILABLE")
        );
        assert_eq!(known_failure_code(create_order_saga::AUTHORIZE_CARD, "ORDER_TOTAL_LIMIT_EXCEEDED"), None);
        assert_eq!(known_failure_code(create_order_saga::CREATE_ORDER, "CARD_DECLINED"), None);
    }
}
