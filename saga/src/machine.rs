//! The saga state machine: pure functions from (state, input) to (new state,
//! transition). A transition holds at most one command to publish and the events
//! to append to the saga's stream. The caller persists the new state (with
//! compare-and-set) *before* it publishes the command.
//!
//! Rules, from shared/design.md §3:
//! - A reply is applied only if it answers the command the saga awaits now (its
//!   message id); anything else is stale or a duplicate and is ignored.
//! - A timeout or a transient failure re-sends the same command (same message id)
//!   after an exponential backoff, up to the step's attempt limit. Then the step is
//!   abandoned: up to the pivot the saga compensates, after it the step is retried
//!   for as long as it takes.
//! - An abandoned step is ambiguous (the participant may still act on it), so it is
//!   compensated as if it had succeeded; compensations are safe when the action
//!   never ran and leave a tombstone that refuses a late action.
//! - Compensations run in reverse order; one that keeps failing parks the saga as
//!   `CompensationFailed` until an operator retries it.

use serde::{Deserialize, Serialize};

use crate::definition::{Compensation, SagaDefinition, StepKind};

/// Where a saga is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaStatus {
    Running,
    Compensating,
    /// Terminal: every step succeeded.
    Approved,
    /// Terminal: a step failed and every completed step was compensated.
    Rejected,
    /// Parked: a compensation kept failing; an operator must retry it.
    CompensationFailed,
}

impl SagaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Compensating => "COMPENSATING",
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
            Self::CompensationFailed => "COMPENSATION_FAILED",
        }
    }

    /// Still moving by itself (it has a pending command or retry).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Compensating)
    }

    /// Approved or rejected: nothing will ever change it again. A parked saga is
    /// not finished; it waits for an operator.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Approved | Self::Rejected)
    }
}

/// Whether a command is a step's action or its compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Action,
    Compensation,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Compensation => "compensation",
        }
    }
}

/// The command a saga awaits a reply to, or is waiting to re-send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub message_id: String,
    pub step: usize,
    pub phase: Phase,
    /// 1-based number of the send this pending state refers to.
    pub attempt: u32,
    /// False while waiting out a backoff before re-sending.
    pub sent: bool,
    /// When the sweeper must look at the saga: the reply deadline if `sent`,
    /// otherwise the time to re-send.
    pub wake_at_ms: i64,
    /// When the first attempt was sent: a step's latency spans its retries.
    #[serde(default)]
    pub first_sent_at_ms: i64,
}

/// Why a saga failed, or why it is parked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub step: String,
    pub code: String,
    pub reason: String,
    pub at_ms: i64,
}

/// A saga instance. `version` is owned by the store (compare-and-set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState<D> {
    pub saga_id: String,
    pub status: SagaStatus,
    /// The step being executed, or compensated while compensating.
    pub step: usize,
    pub pending: Option<Pending>,
    /// Steps still to compensate; the last one is next.
    pub to_compensate: Vec<usize>,
    pub failure: Option<FailureRecord>,
    /// Why the saga is parked, when it is.
    pub parked: Option<FailureRecord>,
    /// Bumped by an operator's retry so re-sent commands get fresh message ids
    /// (a participant would otherwise answer with the reply it stored).
    pub generation: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub data: D,
    #[serde(skip)]
    pub version: u64,
}

impl<D> SagaState<D> {
    /// When the sweeper must next look at this saga, if ever.
    pub fn wake_at_ms(&self) -> Option<i64> {
        if self.status.is_active() { self.pending.as_ref().map(|p| p.wake_at_ms) } else { None }
    }
}

/// The time and the randomness a transition may use, passed in so the machine
/// stays pure and its tests deterministic.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now_ms: i64,
    /// In [0, 1): spreads backoffs.
    pub jitter: f64,
}

/// The failure codes the state machine gives a step itself; every other code comes
/// from a participant's reply or the saga's domain.
pub mod codes {
    /// Every attempt of a command went unanswered.
    pub const TIMEOUT: &str = "TIMEOUT";
    /// An operator cancelled the saga.
    pub const CANCELLED: &str = "CANCELLED";
    /// Both.
    pub const ALL: [&str; 2] = [TIMEOUT, CANCELLED];
}

/// A business or transient failure reported for a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub code: String,
    pub message: String,
    pub transient: bool,
}

impl StepFailure {
    pub fn business(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), transient: false }
    }
}

/// A reply's outcome with its decoded success payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<P> {
    Success(P),
    Failure(StepFailure),
}

/// A command to publish: which step's action or compensation, its message id
/// (stable across re-sends), the attempt and the deadline it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRef {
    pub step: usize,
    pub phase: Phase,
    pub message_id: String,
    pub attempt: u32,
    pub deadline_ms: i64,
}

/// What happened, for the saga's event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    SagaStarted,
    CommandSent,
    StepSucceeded,
    StepFailed,
    StepTimedOut,
    RetryScheduled,
    CompensationStarted,
    CompensationSent,
    CompensationSucceeded,
    CompensationFailed,
    SagaApproved,
    SagaRejected,
    SagaParked,
    OperatorAction,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SagaStarted => "SAGA_STARTED",
            Self::CommandSent => "COMMAND_SENT",
            Self::StepSucceeded => "STEP_SUCCEEDED",
            Self::StepFailed => "STEP_FAILED",
            Self::StepTimedOut => "STEP_TIMED_OUT",
            Self::RetryScheduled => "RETRY_SCHEDULED",
            Self::CompensationStarted => "COMPENSATION_STARTED",
            Self::CompensationSent => "COMPENSATION_SENT",
            Self::CompensationSucceeded => "COMPENSATION_SUCCEEDED",
            Self::CompensationFailed => "COMPENSATION_FAILED",
            Self::SagaApproved => "SAGA_APPROVED",
            Self::SagaRejected => "SAGA_REJECTED",
            Self::SagaParked => "SAGA_PARKED",
            Self::OperatorAction => "OPERATOR_ACTION",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ALL_EVENT_KINDS.iter().copied().find(|k| k.as_str() == s)
    }

    /// The last event a watcher needs: the saga is approved, rejected or parked.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::SagaApproved | Self::SagaRejected | Self::SagaParked)
    }
}

const ALL_EVENT_KINDS: [EventKind; 14] = [
    EventKind::SagaStarted,
    EventKind::CommandSent,
    EventKind::StepSucceeded,
    EventKind::StepFailed,
    EventKind::StepTimedOut,
    EventKind::RetryScheduled,
    EventKind::CompensationStarted,
    EventKind::CompensationSent,
    EventKind::CompensationSucceeded,
    EventKind::CompensationFailed,
    EventKind::SagaApproved,
    EventKind::SagaRejected,
    EventKind::SagaParked,
    EventKind::OperatorAction,
];

/// One event of a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub step: usize,
    pub attempt: u32,
    pub code: String,
    pub message: String,
}

impl Event {
    fn new(kind: EventKind, step: usize, attempt: u32) -> Self {
        Self { kind, step, attempt, code: String::new(), message: String::new() }
    }

    fn with(mut self, code: &str, message: impl Into<String>) -> Self {
        self.code = code.to_owned();
        self.message = message.into();
        self
    }
}

/// The result of one input: the command to publish (after persisting) and the
/// events to append.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transition {
    pub send: Option<CommandRef>,
    pub events: Vec<Event>,
}

/// Why an input changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("the saga is not awaiting that message (stale or duplicate reply)")]
    NotAwaited,
    #[error("the saga is {0} and takes no more input")]
    Settled(&'static str),
    #[error("nothing is due yet")]
    NotDue,
    #[error("{0}")]
    NotAllowed(String),
}

/// The domain half of a saga: what a success reply means for the saga's data, and
/// what the orchestrator's own (local) steps do.
pub trait SagaDomain {
    type Data;
    type Payload;

    /// Records a successful reply of `step` in `data`. An `Err` is a failure the
    /// orchestrator raises after the action succeeded (a rule of its own), so the
    /// step is compensated too.
    fn apply_success(&self, step: usize, payload: Self::Payload, data: &mut Self::Data) -> Result<(), StepFailure>;

    /// Runs a local step.
    fn run_local(&self, _step: usize, _data: &mut Self::Data) -> Result<(), StepFailure> {
        Ok(())
    }
}

/// A definition with its domain: the whole behaviour of one kind of saga.
pub struct SagaMachine<'a, Dm> {
    pub definition: &'a SagaDefinition,
    pub domain: &'a Dm,
}

impl<'a, Dm: SagaDomain> SagaMachine<'a, Dm> {
    pub fn new(definition: &'a SagaDefinition, domain: &'a Dm) -> Self {
        Self { definition, domain }
    }

    /// The id of a step's command: stable across re-sends, new per operator retry.
    pub fn message_id(&self, state: &SagaState<Dm::Data>, step: usize, phase: Phase) -> String {
        format!(
            "{}.{}.{}.{}",
            state.saga_id,
            self.definition.step_name(step).to_ascii_lowercase(),
            phase.as_str(),
            state.generation
        )
    }

    /// A new saga: runs the local steps and sends the first command.
    pub fn start(&self, saga_id: String, data: Dm::Data, clock: Clock) -> (SagaState<Dm::Data>, Transition) {
        let mut state = SagaState {
            saga_id,
            status: SagaStatus::Running,
            step: 0,
            pending: None,
            to_compensate: Vec::new(),
            failure: None,
            parked: None,
            generation: 0,
            created_at_ms: clock.now_ms,
            updated_at_ms: clock.now_ms,
            data,
            version: 0,
        };
        let mut t = Transition::default();
        t.events.push(Event::new(EventKind::SagaStarted, 0, 0));
        self.advance(&mut state, clock, &mut t);
        (state, t)
    }

    /// Applies the reply to command `command_id`.
    pub fn on_reply(
        &self,
        state: &mut SagaState<Dm::Data>,
        command_id: &str,
        outcome: Outcome<Dm::Payload>,
        clock: Clock,
    ) -> Result<Transition, Ignored> {
        if !state.status.is_active() {
            return Err(Ignored::Settled(state.status.as_str()));
        }
        let pending = state.pending.clone().filter(|p| p.message_id == command_id).ok_or(Ignored::NotAwaited)?;
        let mut t = Transition::default();
        let kind = self.definition.step(pending.step).map(|s| s.kind);
        match (pending.phase, outcome) {
            (Phase::Action, Outcome::Success(payload)) => {
                t.events.push(Event::new(EventKind::StepSucceeded, pending.step, pending.attempt));
                state.pending = None;
                match self.domain.apply_success(pending.step, payload, &mut state.data) {
                    Ok(()) => {
                        state.step = pending.step + 1;
                        self.advance(state, clock, &mut t);
                    }
                    Err(failure) => self.fail(state, pending.step, failure, true, clock, &mut t),
                }
            }
            (Phase::Action, Outcome::Failure(failure)) if failure.transient => {
                self.retry_or_give_up(state, &pending, failure, clock, &mut t);
            }
            (Phase::Action, Outcome::Failure(failure)) if kind == Some(StepKind::Retriable) => {
                // Past the pivot there is no going back: retry, and let the
                // attempt count and the stuck-saga listing surface it.
                self.schedule_retry(state, &pending, Some(&failure), clock, &mut t);
            }
            (Phase::Action, Outcome::Failure(failure)) => {
                self.fail(state, pending.step, failure, false, clock, &mut t);
            }
            (Phase::Compensation, Outcome::Success(_)) => {
                t.events.push(Event::new(EventKind::CompensationSucceeded, pending.step, pending.attempt));
                state.pending = None;
                self.next_compensation(state, clock, &mut t);
            }
            (Phase::Compensation, Outcome::Failure(failure)) => {
                t.events.push(
                    Event::new(EventKind::CompensationFailed, pending.step, pending.attempt)
                        .with(&failure.code, failure.message.clone()),
                );
                self.retry_or_park(state, &pending, failure, clock, &mut t);
            }
        }
        state.updated_at_ms = clock.now_ms;
        Ok(t)
    }

    /// The sweeper's input: a reply deadline passed, or a backoff ended.
    pub fn on_wake(&self, state: &mut SagaState<Dm::Data>, clock: Clock) -> Result<Transition, Ignored> {
        if !state.status.is_active() {
            return Err(Ignored::Settled(state.status.as_str()));
        }
        let pending = state.pending.clone().ok_or(Ignored::NotDue)?;
        if clock.now_ms < pending.wake_at_ms {
            return Err(Ignored::NotDue);
        }
        let mut t = Transition::default();
        if pending.sent {
            let policy = self.policy(pending.step, pending.phase);
            let message = format!(
                "no reply to {} {} within {} ms (attempt {})",
                self.definition.step_name(pending.step),
                pending.phase.as_str(),
                policy.attempt_timeout.as_millis(),
                pending.attempt
            );
            t.events.push(
                Event::new(EventKind::StepTimedOut, pending.step, pending.attempt).with(codes::TIMEOUT, &message),
            );
            let failure = StepFailure { code: codes::TIMEOUT.into(), message, transient: true };
            match pending.phase {
                Phase::Action => self.retry_or_give_up(state, &pending, failure, clock, &mut t),
                Phase::Compensation => self.retry_or_park(state, &pending, failure, clock, &mut t),
            }
        } else {
            self.send(state, pending.step, pending.phase, pending.attempt, clock, &mut t);
        }
        state.updated_at_ms = clock.now_ms;
        Ok(t)
    }

    /// Operator: abandon a running saga before its pivot has succeeded and
    /// compensate it. The current step counts as possibly done.
    pub fn cancel(&self, state: &mut SagaState<Dm::Data>, reason: &str, clock: Clock) -> Result<Transition, Ignored> {
        if state.status != SagaStatus::Running {
            return Err(Ignored::NotAllowed(format!(
                "only a running saga can be cancelled; this one is {}",
                state.status.as_str()
            )));
        }
        if self.definition.step(state.step).is_some_and(|s| s.kind == StepKind::Retriable) {
            return Err(Ignored::NotAllowed("the saga is past its pivot and can only complete".into()));
        }
        let mut t = Transition::default();
        t.events.push(Event::new(EventKind::OperatorAction, state.step, 0).with(codes::CANCELLED, reason));
        let step = state.step;
        let in_flight = state.pending.is_some();
        self.fail(state, step, StepFailure::business(codes::CANCELLED, reason), in_flight, clock, &mut t);
        state.updated_at_ms = clock.now_ms;
        Ok(t)
    }

    /// Operator: resume the compensation of a parked saga, with fresh message ids.
    pub fn retry_parked(&self, state: &mut SagaState<Dm::Data>, clock: Clock) -> Result<Transition, Ignored> {
        if state.status != SagaStatus::CompensationFailed {
            return Err(Ignored::NotAllowed(format!(
                "only a saga parked as COMPENSATION_FAILED can be retried; this one is {}",
                state.status.as_str()
            )));
        }
        let mut t = Transition::default();
        t.events.push(
            Event::new(EventKind::OperatorAction, state.step, 0).with("RETRY", "compensation retried by an operator"),
        );
        state.generation += 1;
        state.status = SagaStatus::Compensating;
        state.parked = None;
        self.next_compensation(state, clock, &mut t);
        state.updated_at_ms = clock.now_ms;
        Ok(t)
    }

    fn policy(&self, step: usize, phase: Phase) -> crate::RetryPolicy {
        let def = &self.definition.steps()[step];
        match phase {
            Phase::Action => def.policy,
            Phase::Compensation => def.compensation_policy,
        }
    }

    /// Runs local steps and sends the next remote command, or completes the saga.
    fn advance(&self, state: &mut SagaState<Dm::Data>, clock: Clock, t: &mut Transition) {
        loop {
            let Some(def) = self.definition.step(state.step) else {
                // The saga ends on its last step, which is where the event belongs.
                state.status = SagaStatus::Approved;
                state.pending = None;
                state.step = self.definition.len() - 1;
                t.events.push(Event::new(EventKind::SagaApproved, state.step, 0));
                return;
            };
            if def.remote {
                self.send(state, state.step, Phase::Action, 1, clock, t);
                return;
            }
            match self.domain.run_local(state.step, &mut state.data) {
                Ok(()) => {
                    t.events.push(Event::new(EventKind::StepSucceeded, state.step, 1));
                    state.step += 1;
                }
                Err(failure) => {
                    let step = state.step;
                    self.fail(state, step, failure, false, clock, t);
                    return;
                }
            }
        }
    }

    fn send(
        &self,
        state: &mut SagaState<Dm::Data>,
        step: usize,
        phase: Phase,
        attempt: u32,
        clock: Clock,
        t: &mut Transition,
    ) {
        let timeout = self.policy(step, phase).attempt_timeout;
        let deadline_ms = clock.now_ms + timeout.as_millis() as i64;
        let message_id = self.message_id(state, step, phase);
        let first_sent_at_ms = match &state.pending {
            Some(p) if attempt > 1 && p.step == step && p.phase == phase => p.first_sent_at_ms,
            _ => clock.now_ms,
        };
        state.step = step;
        state.pending = Some(Pending {
            message_id: message_id.clone(),
            step,
            phase,
            attempt,
            sent: true,
            wake_at_ms: deadline_ms,
            first_sent_at_ms,
        });
        let kind = match phase {
            Phase::Action => EventKind::CommandSent,
            Phase::Compensation => EventKind::CompensationSent,
        };
        t.events.push(Event::new(kind, step, attempt));
        t.send = Some(CommandRef { step, phase, message_id, attempt, deadline_ms });
    }

    fn schedule_retry(
        &self,
        state: &mut SagaState<Dm::Data>,
        pending: &Pending,
        failure: Option<&StepFailure>,
        clock: Clock,
        t: &mut Transition,
    ) {
        let delay = self.policy(pending.step, pending.phase).backoff(pending.attempt, clock.jitter);
        let next = pending.attempt + 1;
        state.pending = Some(Pending {
            attempt: next,
            sent: false,
            wake_at_ms: clock.now_ms + delay.as_millis() as i64,
            ..pending.clone()
        });
        let mut event = Event::new(EventKind::RetryScheduled, pending.step, next);
        event.message = format!("attempt {next} in {} ms", delay.as_millis());
        if let Some(failure) = failure {
            event.code = failure.code.clone();
            event.message = format!("{}: {}; {}", failure.code, failure.message, event.message);
        }
        t.events.push(event);
    }

    fn retry_or_give_up(
        &self,
        state: &mut SagaState<Dm::Data>,
        pending: &Pending,
        failure: StepFailure,
        clock: Clock,
        t: &mut Transition,
    ) {
        let def = &self.definition.steps()[pending.step];
        if def.kind == StepKind::Retriable || !def.policy.exhausted(pending.attempt) {
            self.schedule_retry(state, pending, Some(&failure), clock, t);
        } else {
            // Abandoned: the participant may still act on a copy of the command,
            // so the step is compensated as if it had succeeded.
            let failure = StepFailure {
                message: format!("{} (gave up after {} attempts)", failure.message, pending.attempt),
                ..failure
            };
            self.fail(state, pending.step, failure, true, clock, t);
        }
    }

    fn retry_or_park(
        &self,
        state: &mut SagaState<Dm::Data>,
        pending: &Pending,
        failure: StepFailure,
        clock: Clock,
        t: &mut Transition,
    ) {
        if !self.definition.steps()[pending.step].compensation_policy.exhausted(pending.attempt) {
            self.schedule_retry(state, pending, Some(&failure), clock, t);
            return;
        }
        state.status = SagaStatus::CompensationFailed;
        state.pending = None;
        state.to_compensate.push(pending.step);
        let record = FailureRecord {
            step: self.definition.step_name(pending.step).to_owned(),
            code: failure.code.clone(),
            reason: format!("compensation failed after {} attempts: {}", pending.attempt, failure.message),
            at_ms: clock.now_ms,
        };
        t.events
            .push(Event::new(EventKind::SagaParked, pending.step, pending.attempt).with(&record.code, &record.reason));
        state.parked = Some(record);
    }

    /// Records the failure and starts compensating the completed steps (and the
    /// failed one itself when its action may have taken effect).
    fn fail(
        &self,
        state: &mut SagaState<Dm::Data>,
        step: usize,
        failure: StepFailure,
        step_may_have_acted: bool,
        clock: Clock,
        t: &mut Transition,
    ) {
        let attempt = state.pending.as_ref().map(|p| p.attempt).unwrap_or(1);
        t.events.push(Event::new(EventKind::StepFailed, step, attempt).with(&failure.code, failure.message.clone()));
        state.failure = Some(FailureRecord {
            step: self.definition.step_name(step).to_owned(),
            code: failure.code,
            reason: failure.message,
            at_ms: clock.now_ms,
        });
        state.status = SagaStatus::Compensating;
        state.pending = None;
        state.to_compensate = (0..=step)
            .filter(|&i| match self.definition.steps()[i].compensation {
                Compensation::None => false,
                Compensation::Always => i < step || step_may_have_acted,
                Compensation::OnlyIfAbandoned => i == step && step_may_have_acted,
            })
            .collect();
        if !state.to_compensate.is_empty() {
            t.events.push(Event::new(EventKind::CompensationStarted, step, 0));
        }
        self.next_compensation(state, clock, t);
    }

    fn next_compensation(&self, state: &mut SagaState<Dm::Data>, clock: Clock, t: &mut Transition) {
        match state.to_compensate.pop() {
            Some(step) => self.send(state, step, Phase::Compensation, 1, clock, t),
            None => {
                state.status = SagaStatus::Rejected;
                state.pending = None;
                let (code, reason) =
                    state.failure.as_ref().map(|f| (f.code.clone(), f.reason.clone())).unwrap_or_default();
                let step = self
                    .definition
                    .steps()
                    .iter()
                    .position(|s| state.failure.as_ref().is_some_and(|f| f.step == s.name))
                    .unwrap_or(state.step);
                t.events.push(Event::new(EventKind::SagaRejected, step, 0).with(&code, reason));
            }
        }
    }
}

#[cfg(test)]
mod tests;
