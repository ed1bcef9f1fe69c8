//! The saga engine.
//!
//! - [`definition`]: a saga is a declared list of steps, each of a kind
//!   (compensatable, pivot, retriable, as in *Microservices Patterns*) with its retry
//!   policy; the definition refuses shapes that cannot be right, such as a
//!   compensation after the pivot.
//! - [`machine`]: a pure state machine. Given a state and an input (a reply, a
//!   deadline, an operator's call) it decides the next command or compensation and
//!   the events to record. No I/O, no clock, no randomness of its own: everything
//!   it needs comes in as arguments, so every failure point is unit-tested.
//! - [`store`]: the saga's state in Redis, changed only by compare-and-set (one Lua
//!   script that also appends the saga's events and moves its deadline), so two
//!   orchestrator replicas never both advance one saga.
//!
//! The one decision a reader must know: state is persisted *before* the command it
//! implies is published. If the process dies in between, the deadline index still
//! holds the saga and the sweeper re-sends the same command with the same id.
#![forbid(unsafe_code)]

pub mod definition;
pub mod machine;
pub mod store;

pub use definition::{Compensation, DefinitionError, RetryPolicy, SagaDefinition, StepDefinition, StepKind};
pub use machine::{
    Clock, CommandRef, Event, EventKind, FailureRecord, Ignored, Outcome, Pending, Phase, SagaDomain, SagaMachine,
    SagaState, SagaStatus, StepFailure, Transition,
};
