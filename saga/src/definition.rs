//! Declaring a saga: its steps, their kinds and retry policies.
//!
//! Kinds follow *Microservices Patterns*: compensatable steps come first and can be
//! undone; the pivot is the go/no-go step; retriable steps after it never fail the
//! saga, they are retried until they succeed. [`SagaDefinition::new`] refuses a
//! definition that breaks that shape.

use std::time::Duration;

/// The kind of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Before the pivot; undone by its compensation if a later step fails.
    Compensatable,
    /// The go/no-go step: once it succeeds the saga only moves forward.
    Pivot,
    /// After the pivot: retried until it succeeds, never compensated.
    Retriable,
}

/// When a step's compensation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compensation {
    /// Nothing to undo.
    None,
    /// Whenever the step's action may have taken effect and the saga fails.
    Always,
    /// Only when the step itself is abandoned without an answer: the pivot's
    /// action may have happened, and its effect must not outlive the saga.
    OnlyIfAbandoned,
}

/// Retries of one command: an attempt waits `attempt_timeout` for a reply; after a
/// timeout or a transient failure the command is re-sent after an exponential
/// backoff with jitter, up to `max_attempts` sends in all (0 = without limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempt_timeout: Duration,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// The pause before send number `attempt + 1`, after `attempt` sends (1-based).
    /// `jitter` in [0, 1) spreads it over ±20 % so retries of many sagas do not
    /// arrive in lockstep.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let base = self.backoff_initial.saturating_mul(1u32 << exponent).min(self.backoff_max);
        base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
    }

    /// Whether send number `attempt` was the last one allowed.
    pub fn exhausted(&self, attempt: u32) -> bool {
        self.max_attempts != 0 && attempt >= self.max_attempts
    }
}

/// One step of a saga.
#[derive(Debug, Clone)]
pub struct StepDefinition {
    /// Upper-case name, used in events, message ids and headers (`CREATE_TICKET`).
    pub name: &'static str,
    pub kind: StepKind,
    /// False for a step the orchestrator does itself (no command).
    pub remote: bool,
    pub compensation: Compensation,
    /// Retries of the step's command.
    pub policy: RetryPolicy,
    /// Retries of its compensation; when exhausted the saga parks.
    pub compensation_policy: RetryPolicy,
}

impl StepDefinition {
    /// A step the orchestrator does itself.
    pub fn local(name: &'static str, kind: StepKind) -> Self {
        let policy = RetryPolicy {
            attempt_timeout: Duration::ZERO,
            max_attempts: 1,
            backoff_initial: Duration::ZERO,
            backoff_max: Duration::ZERO,
        };
        Self { name, kind, remote: false, compensation: Compensation::None, policy, compensation_policy: policy }
    }

    /// A step that sends a command to a participant.
    pub fn remote(name: &'static str, kind: StepKind, policy: RetryPolicy) -> Self {
        Self { name, kind, remote: true, compensation: Compensation::None, policy, compensation_policy: policy }
    }

    /// Adds a compensation command with its own retry policy.
    pub fn compensated_by(mut self, when: Compensation, policy: RetryPolicy) -> Self {
        self.compensation = when;
        self.compensation_policy = policy;
        self
    }
}

/// A definition that cannot be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DefinitionError {
    #[error("a saga needs at least one step")]
    Empty,
    #[error("a saga has at most one pivot; {0} is a second one")]
    SecondPivot(&'static str),
    #[error("step {0} comes after the pivot, so it must be retriable")]
    CompensatableAfterPivot(&'static str),
    #[error("step {0} comes before the pivot, so it cannot be retriable")]
    RetriableBeforePivot(&'static str),
    #[error("step {0} comes after the pivot and cannot have a compensation")]
    CompensationAfterPivot(&'static str),
    #[error("step {0}: only the pivot's compensation can be kept for abandonment")]
    AbandonOnlyCompensationOffPivot(&'static str),
    #[error("step {0} is local and cannot have a compensation command")]
    LocalCompensation(&'static str),
    #[error("step {0}: a remote step needs an attempt timeout")]
    NoTimeout(&'static str),
}

/// A validated saga definition.
#[derive(Debug, Clone)]
pub struct SagaDefinition {
    steps: Vec<StepDefinition>,
}

impl SagaDefinition {
    /// Validates the shape: compensatable steps, then at most one pivot, then
    /// retriable steps; no compensation after the pivot.
    pub fn new(steps: Vec<StepDefinition>) -> Result<Self, DefinitionError> {
        if steps.is_empty() {
            return Err(DefinitionError::Empty);
        }
        let mut past_pivot = false;
        let has_pivot = steps.iter().any(|s| s.kind == StepKind::Pivot);
        for step in &steps {
            match step.kind {
                StepKind::Pivot if past_pivot => return Err(DefinitionError::SecondPivot(step.name)),
                StepKind::Pivot => past_pivot = true,
                StepKind::Compensatable if past_pivot => {
                    return Err(DefinitionError::CompensatableAfterPivot(step.name));
                }
                StepKind::Retriable if !past_pivot && has_pivot => {
                    return Err(DefinitionError::RetriableBeforePivot(step.name));
                }
                _ => {}
            }
            if step.kind == StepKind::Retriable && step.compensation != Compensation::None {
                return Err(DefinitionError::CompensationAfterPivot(step.name));
            }
            if step.compensation == Compensation::OnlyIfAbandoned && step.kind != StepKind::Pivot {
                return Err(DefinitionError::AbandonOnlyCompensationOffPivot(step.name));
            }
            if !step.remote && step.compensation != Compensation::None {
                return Err(DefinitionError::LocalCompensation(step.name));
            }
            if step.remote && step.policy.attempt_timeout.is_zero() {
                return Err(DefinitionError::NoTimeout(step.name));
            }
        }
        Ok(Self { steps })
    }

    pub fn steps(&self) -> &[StepDefinition] {
        &self.steps
    }

    pub fn step(&self, index: usize) -> Option<&StepDefinition> {
        self.steps.get(index)
    }

    /// The step's name, or `DONE` past the last step.
    pub fn step_name(&self, index: usize) -> &'static str {
        self.steps.get(index).map(|s| s.name).unwrap_or("DONE")
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempt_timeout: Duration::from_secs(1),
            max_attempts: 3,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_compensation_after_the_pivot_is_refused() {
        let steps = vec![
            StepDefinition::remote("PAY", StepKind::Pivot, policy()),
            StepDefinition::remote("SHIP", StepKind::Retriable, policy())
                .compensated_by(Compensation::Always, policy()),
        ];
        assert_eq!(SagaDefinition::new(steps).err(), Some(DefinitionError::CompensationAfterPivot("SHIP")));
    }

    #[test]
    fn a_compensatable_step_after_the_pivot_is_refused() {
        let steps = vec![
            StepDefinition::remote("PAY", StepKind::Pivot, policy()),
            StepDefinition::remote("RESERVE", StepKind::Compensatable, policy()),
        ];
        assert_eq!(SagaDefinition::new(steps).err(), Some(DefinitionError::CompensatableAfterPivot("RESERVE")));
    }

    #[test]
    fn two_pivots_are_refused() {
        let steps = vec![
            StepDefinition::remote("A", StepKind::Pivot, policy()),
            StepDefinition::remote("B", StepKind::Pivot, policy()),
        ];
        assert_eq!(SagaDefinition::new(steps).err(), Some(DefinitionError::SecondPivot("B")));
    }

    #[test]
    fn backoff_grows_exponentially_up_to_its_cap_with_bounded_jitter() {
        let p = policy();
        assert_eq!(p.backoff(1, 0.5), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(400));
        assert_eq!(p.backoff(10, 0.5), Duration::from_secs(1));
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(80));
        assert!(p.backoff(1, 0.999) < Duration::from_millis(121));
        assert!(p.exhausted(3) && !p.exhausted(2));
        assert!(!RetryPolicy { max_attempts: 0, ..p }.exhausted(1000));
    }
}
