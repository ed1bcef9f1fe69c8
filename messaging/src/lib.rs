//! The FTGO RabbitMQ transport (lapin), shared by the orchestrator and the participants.
//!
//! - [`envelope`]: the saga envelope lives in AMQP properties (`message_id`,
//!   `correlation_id`, `reply_to`, `type`, headers), so any AMQP client can read it.
//! - [`topology`]: every consumed queue gets a dead-letter exchange and queue, all
//!   declared idempotently at start-up.
//! - [`publisher`]: publishing waits for the broker's confirm, and reconnects lazily.
//! - [`consumer`]: a supervised consumer loop: reconnects with backoff, handles
//!   deliveries concurrently up to the prefetch, acks only after the handler says
//!   its effects are stored, and dead-letters what cannot be handled.
//! - [`participant`]: the command loop of a saga participant: expiry check, handler,
//!   confirmed reply, then ack.
//! - [`trace`]: W3C trace context through the `traceparent` header; one saga, one trace.
//!
//! The guarantee this crate gives is at-least-once delivery end to end; handlers
//! make their effects idempotent.
#![forbid(unsafe_code)]

mod acks;
pub mod broker;
pub mod consumer;
pub mod envelope;
pub mod participant;
pub mod publisher;
pub mod topology;
pub mod trace;

/// Describes the transport's metrics to the installed recorder (the `# HELP`
/// lines of `/metrics`); call it once the recorder is installed.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "ftgo_messages_total",
        "Messages consumed, by queue and disposition (ack, requeue, dead_letter)"
    );
    metrics::describe_counter!(
        "ftgo_messages_dead_lettered_total",
        "Messages moved to the queue's dead-letter queue, by queue"
    );
    metrics::describe_counter!(
        "ftgo_commands_total",
        "Saga commands handled by a participant, by command type (unknown for types it does not handle) and outcome"
    );
}

pub use broker::{Broker, BrokerSettings};
pub use consumer::{Disposition, IncomingMessage, MessageHandler, run_consumer};
pub use envelope::{Envelope, OutgoingMessage, now_millis};
pub use publisher::{PublishError, Publisher};
pub use topology::QueueSpec;

/// Messages are protobuf: every message carries this `content_type`.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
