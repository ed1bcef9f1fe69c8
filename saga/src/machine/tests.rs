//! Given/when/then tests of the state machine over a saga shaped like
//! CreateOrderSaga: every failure point, timeouts, duplicates and operator calls.

use std::time::Duration;

use super::*;
use crate::definition::{RetryPolicy, StepDefinition};

const VERIFY: usize = 1;
const TICKET: usize = 2;
const AUTH: usize = 3;
const APPROVE: usize = 4;

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempt_timeout: Duration::from_millis(1000),
        max_attempts,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
    }
}

fn definition() -> SagaDefinition {
    SagaDefinition::new(vec![
        StepDefinition::local("CREATE_ORDER", StepKind::Compensatable),
        StepDefinition::remote("VERIFY_CONSUMER", StepKind::Compensatable, policy(3)),
        StepDefinition::remote("CREATE_TICKET", StepKind::Compensatable, policy(3))
            .compensated_by(Compensation::Always, policy(2)),
        StepDefinition::remote("AUTHORIZE_CARD", StepKind::Pivot, policy(2))
            .compensated_by(Compensation::OnlyIfAbandoned, policy(2)),
        StepDefinition::remote("APPROVE_TICKET", StepKind::Retriable, policy(0)),
        StepDefinition::local("APPROVE_ORDER", StepKind::Retriable),
    ])
    .expect("valid definition")
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Order {
    total: i64,
    ticket: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Payload {
    Nothing,
    Ticket { id: i64, total: i64 },
}

struct Domain;

impl SagaDomain for Domain {
    type Data = Order;
    type Payload = Payload;

    fn apply_success(&self, step: usize, payload: Payload, data: &mut Order) -> Result<(), StepFailure> {
        if let (TICKET, Payload::Ticket { id, total }) = (step, payload) {
            data.ticket = Some(id);
            data.total = total;
            if total > 500 {
                return Err(StepFailure::business("ORDER_TOTAL_LIMIT_EXCEEDED", "too expensive"));
            }
        }
        Ok(())
    }
}

fn at(now_ms: i64) -> Clock {
    Clock { now_ms, jitter: 0.5 }
}

struct Saga {
    def: SagaDefinition,
    state: SagaState<Order>,
    last: Transition,
}

impl Saga {
    fn started() -> Self {
        let def = definition();
        let (state, last) = SagaMachine::new(&def, &Domain).start("s1".into(), Order::default(), at(0));
        Self { def, state, last }
    }

    fn reply(&mut self, outcome: Outcome<Payload>, now: i64) -> Result<(), Ignored> {
        let id = self.awaited();
        self.reply_to(&id, outcome, now)
    }

    fn reply_to(&mut self, id: &str, outcome: Outcome<Payload>, now: i64) -> Result<(), Ignored> {
        let def = self.def.clone();
        self.last = SagaMachine::new(&def, &Domain).on_reply(&mut self.state, id, outcome, at(now))?;
        Ok(())
    }

    fn wake(&mut self, now: i64) -> Result<(), Ignored> {
        let def = self.def.clone();
        self.last = SagaMachine::new(&def, &Domain).on_wake(&mut self.state, at(now))?;
        Ok(())
    }

    fn awaited(&self) -> String {
        self.state.pending.as_ref().map(|p| p.message_id.clone()).unwrap_or_default()
    }

    fn sent(&self) -> Option<(usize, Phase, u32)> {
        self.last.send.as_ref().map(|c| (c.step, c.phase, c.attempt))
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.last.events.iter().map(|e| e.kind).collect()
    }

    fn ok(&mut self) {
        let payload = match self.state.step {
            TICKET => Payload::Ticket { id: 7, total: 100 },
            _ => Payload::Nothing,
        };
        self.reply(Outcome::Success(payload), 10).expect("awaited reply");
    }
}

fn business(code: &str) -> Outcome<Payload> {
    Outcome::Failure(StepFailure::business(code, "no"))
}

fn transient(code: &str) -> Outcome<Payload> {
    Outcome::Failure(StepFailure { code: code.into(), message: "later".into(), transient: true })
}

#[test]
fn start_runs_the_local_step_and_sends_verify_consumer() {
    let saga = Saga::started();
    assert_eq!(saga.kinds(), vec![EventKind::SagaStarted, EventKind::StepSucceeded, EventKind::CommandSent]);
    assert_eq!(saga.sent(), Some((VERIFY, Phase::Action, 1)));
    assert_eq!(saga.state.status, SagaStatus::Running);
    assert_eq!(saga.state.wake_at_ms(), Some(1000));
    assert_eq!(saga.awaited(), "s1.verify_consumer.action.0");
    assert_eq!(saga.last.send.as_ref().map(|c| c.deadline_ms), Some(1000));
}

#[test]
fn every_success_approves_the_saga() {
    let mut saga = Saga::started();
    saga.ok();
    assert_eq!(saga.sent(), Some((TICKET, Phase::Action, 1)));
    saga.ok();
    assert_eq!(saga.state.data, Order { total: 100, ticket: Some(7) });
    assert_eq!(saga.sent(), Some((AUTH, Phase::Action, 1)));
    saga.ok();
    assert_eq!(saga.sent(), Some((APPROVE, Phase::Action, 1)));
    saga.ok();
    assert_eq!(saga.state.status, SagaStatus::Approved);
    assert_eq!(saga.sent(), None);
    assert_eq!(saga.kinds(), vec![EventKind::StepSucceeded, EventKind::StepSucceeded, EventKind::SagaApproved]);
    assert_eq!(saga.last.events[2].step, APPROVE + 1, "the approval is recorded on the last step");
    assert_eq!(saga.state.wake_at_ms(), None);
}

#[test]
fn a_rejected_consumer_rejects_the_saga_with_nothing_to_compensate() {
    let mut saga = Saga::started();
    saga.reply(business("CONSUMER_SUSPENDED"), 10).unwrap();
    assert_eq!(saga.state.status, SagaStatus::Rejected);
    assert_eq!(saga.kinds(), vec![EventKind::StepFailed, EventKind::SagaRejected]);
    let failure = saga.state.failure.clone().unwrap();
    assert_eq!((failure.step.as_str(), failure.code.as_str()), ("VERIFY_CONSUMER", "CONSUMER_SUSPENDED"));
    assert_eq!(saga.sent(), None);
}

#[test]
fn a_declined_card_compensates_the_ticket_but_not_the_authorization() {
    let mut saga = Saga::started();
    saga.ok();
    saga.ok();
    saga.reply(business("CARD_DECLINED"), 10).unwrap();
    assert_eq!(saga.state.status, SagaStatus::Compensating);
    assert_eq!(saga.sent(), Some((TICKET, Phase::Compensation, 1)));
    assert_eq!(saga.kinds(), vec![EventKind::StepFailed, EventKind::CompensationStarted, EventKind::CompensationSent]);
    saga.ok();
    assert_eq!(saga.state.status, SagaStatus::Rejected);
    assert_eq!(saga.state.failure.as_ref().map(|f| f.step.as_str()), Some("AUTHORIZE_CARD"));
}

#[test]
fn an_orchestrator_rule_failing_after_the_ticket_compensates_that_ticket() {
    let mut saga = Saga::started();
    saga.ok();
    saga.reply(Outcome::Success(Payload::Ticket { id: 9, total: 900 }), 10).unwrap();
    assert_eq!(saga.state.data.ticket, Some(9));
    assert_eq!(saga.sent(), Some((TICKET, Phase::Compensation, 1)));
    saga.ok();
    assert_eq!(saga.state.status, SagaStatus::Rejected);
    assert_eq!(saga.state.failure.as_ref().map(|f| f.code.as_str()), Some("ORDER_TOTAL_LIMIT_EXCEEDED"));
}

#[test]
fn a_duplicate_or_stale_reply_is_ignored() {
    let mut saga = Saga::started();
    let verify = saga.awaited();
    saga.ok();
    let before = saga.state.clone();
    assert_eq!(saga.reply_to(&verify, Outcome::Success(Payload::Nothing), 20), Err(Ignored::NotAwaited));
    assert_eq!(saga.reply_to("someone-else", business("X"), 20), Err(Ignored::NotAwaited));
    assert_eq!(saga.state, before);
}

#[test]
fn a_reply_to_a_finished_saga_is_ignored() {
    let mut saga = Saga::started();
    let id = saga.awaited();
    saga.reply(business("CONSUMER_NOT_FOUND"), 10).unwrap();
    assert_eq!(saga.reply_to(&id, Outcome::Success(Payload::Nothing), 20), Err(Ignored::Settled("REJECTED")));
}

#[test]
fn a_timeout_resends_the_same_command_after_a_backoff() {
    let mut saga = Saga::started();
    let id = saga.awaited();
    assert_eq!(saga.wake(999), Err(Ignored::NotDue));
    saga.wake(1000).unwrap();
    assert_eq!(saga.kinds(), vec![EventKind::StepTimedOut, EventKind::RetryScheduled]);
    assert_eq!(saga.sent(), None);
    assert_eq!(saga.state.wake_at_ms(), Some(1100));
    saga.wake(1100).unwrap();
    assert_eq!(saga.sent(), Some((VERIFY, Phase::Action, 2)));
    assert_eq!(saga.awaited(), id, "a re-send keeps the message id");
    assert_eq!(saga.state.pending.as_ref().map(|p| p.first_sent_at_ms), Some(0), "latency spans the retries");
    assert_eq!(saga.state.wake_at_ms(), Some(2100));
}

#[test]
fn a_late_reply_during_the_backoff_is_still_the_awaited_answer() {
    let mut saga = Saga::started();
    saga.wake(1000).unwrap();
    saga.ok();
    assert_eq!(saga.sent(), Some((TICKET, Phase::Action, 1)));
}

#[test]
fn a_step_abandoned_before_the_pivot_is_compensated_as_if_it_had_succeeded() {
    let mut saga = Saga::started();
    saga.ok();
    // CREATE_TICKET never answers: 3 attempts, then abandonment.
    let mut now = 10;
    for attempt in 1..=3 {
        now = saga.state.wake_at_ms().unwrap();
        saga.wake(now).unwrap();
        if attempt < 3 {
            now = saga.state.wake_at_ms().unwrap();
            saga.wake(now).unwrap();
            assert_eq!(saga.sent(), Some((TICKET, Phase::Action, attempt + 1)));
        }
    }
    assert_eq!(saga.state.status, SagaStatus::Compensating);
    assert_eq!(saga.sent(), Some((TICKET, Phase::Compensation, 1)));
    let failure = saga.state.failure.clone().unwrap();
    assert_eq!((failure.step.as_str(), failure.code.as_str()), ("CREATE_TICKET", "TIMEOUT"));
    assert!(failure.reason.contains("gave up after 3 attempts"), "{}", failure.reason);
    saga.ok();
    assert_eq!(saga.state.status, SagaStatus::Rejected);
    assert!(now > 0);
}

#[test]
fn an_abandoned_pivot_is_voided_and_then_the_ticket_rejected() {
    let mut saga = Saga::started();
    saga.ok();
    saga.ok();
    for _ in 0..3 {
        let now = saga.state.wake_at_ms().unwrap();
        saga.wake(now).unwrap();
    }
    assert_eq!(saga.sent(), Some((AUTH, Phase::Compensation, 1)), "void first (reverse order)");
    saga.ok();
    assert_eq!(saga.sent(), Some((TICKET, Phase::Compensation, 1)));
    saga.ok();
    assert_eq!(saga.state.status, SagaStatus::Rejected);
}

#[test]
fn a_transient_failure_is_retried_then_abandoned_at_the_limit() {
    let mut saga = Saga::started();
    saga.reply(transient("BUSY"), 10).unwrap();
    assert_eq!(saga.kinds(), vec![EventKind::RetryScheduled]);
    assert_eq!(saga.last.events[0].code, "BUSY");
    saga.wake(saga.state.wake_at_ms().unwrap()).unwrap();
    saga.reply(transient("BUSY"), 300).unwrap();
    saga.wake(saga.state.wake_at_ms().unwrap()).unwrap();
    saga.reply(transient("BUSY"), 900).unwrap();
    assert_eq!(saga.state.status, SagaStatus::Rejected, "VERIFY_CONSUMER has nothing to compensate");
}

#[test]
fn steps_after_the_pivot_retry_forever_and_never_compensate() {
    let mut saga = Saga::started();
    saga.ok();
    saga.ok();
    saga.ok();
    for attempt in 1..=10u32 {
        saga.reply(business("TICKET_LOCKED"), 10).unwrap();
        assert_eq!(saga.kinds(), vec![EventKind::RetryScheduled]);
        saga.wake(saga.state.wake_at_ms().unwrap()).unwrap();
        assert_eq!(saga.sent(), Some((APPROVE, Phase::Action, attempt + 1)));
    }
    for _ in 0..5 {
        saga.wake(saga.state.wake_at_ms().unwrap()).unwrap();
        saga.wake(saga.state.wake_at_ms().unwrap()).unwrap();
    }
    assert_eq!(saga.state.status, SagaStatus::Running);
    saga.ok();
    assert_eq!(saga.state.status, SagaStatus::Approved);
}

#[test]
fn a_compensation_that_keeps_failing_parks_the_saga_until_an_operator_retries() {
    let mut saga = Saga::started();
    saga.ok();
    saga.ok();
    saga.reply(business("CARD_DECLINED"), 10).unwrap();
    let first_id = saga.awaited();
    saga.reply(business("TICKET_ALREADY_ACCEPTED"), 20).unwrap();
    saga.wake(saga.state.wake_at_ms().unwrap()).unwrap();
    saga.reply(business("TICKET_ALREADY_ACCEPTED"), 500).unwrap();
    assert_eq!(saga.state.status, SagaStatus::CompensationFailed);
    assert_eq!(saga.kinds(), vec![EventKind::CompensationFailed, EventKind::SagaParked]);
    assert_eq!(saga.state.wake_at_ms(), None);
    assert_eq!(saga.state.parked.as_ref().map(|p| p.code.as_str()), Some("TICKET_ALREADY_ACCEPTED"));

    let def = saga.def.clone();
    saga.last = SagaMachine::new(&def, &Domain).retry_parked(&mut saga.state, at(1000)).unwrap();
    assert_eq!(saga.sent(), Some((TICKET, Phase::Compensation, 1)));
    assert_ne!(saga.awaited(), first_id, "an operator retry uses a fresh message id");
    saga.ok();
    assert_eq!(saga.state.status, SagaStatus::Rejected);
}

#[test]
fn an_operator_cancel_compensates_the_step_in_flight() {
    let mut saga = Saga::started();
    saga.ok();
    let def = saga.def.clone();
    saga.last = SagaMachine::new(&def, &Domain).cancel(&mut saga.state, "customer called", at(20)).unwrap();
    assert_eq!(saga.sent(), Some((TICKET, Phase::Compensation, 1)));
    assert_eq!(saga.state.failure.as_ref().map(|f| f.code.as_str()), Some("CANCELLED"));
}

#[test]
fn an_operator_cannot_cancel_past_the_pivot() {
    let mut saga = Saga::started();
    saga.ok();
    saga.ok();
    saga.ok();
    let def = saga.def.clone();
    let result = SagaMachine::new(&def, &Domain).cancel(&mut saga.state, "too late", at(20));
    assert!(matches!(result, Err(Ignored::NotAllowed(_))));
    assert_eq!(saga.state.status, SagaStatus::Running);
}

#[test]
fn state_round_trips_through_json() {
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct D {
        n: i64,
    }
    let state = SagaState {
        saga_id: "x".into(),
        status: SagaStatus::Compensating,
        step: 2,
        pending: Some(Pending {
            message_id: "m".into(),
            step: 2,
            phase: Phase::Compensation,
            attempt: 2,
            sent: false,
            wake_at_ms: 5,
            first_sent_at_ms: 1,
        }),
        to_compensate: vec![1],
        failure: None,
        parked: None,
        generation: 1,
        created_at_ms: 1,
        updated_at_ms: 2,
        data: D { n: 3 },
        version: 0,
    };
    let json = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<SagaState<D>>(&json).unwrap(), state);
}
