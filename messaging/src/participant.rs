//! The command loop of a saga participant: read the envelope, refuse an expired
//! command, run the handler, publish its reply to `reply_to` with a confirm, and only
//! then let the consumer ack the command.
//!
//! Metrics: `ftgo_commands_total{type, outcome}` (replied, expired, rejected,
//! retried). `type` is one of the handler's [`CommandHandler::command_types`], or
//! `unknown`: a label taken from whatever arrives would let any sender create
//! series without bound. The counters are registered once, at start.
//!
//! Handlers are idempotent by contract: they store their reply under the command's
//! `message_id` in the same atomic write as their domain change, so a redelivered
//! command (the reply was lost, the process died before the ack, the orchestrator
//! re-sent it) gets the same reply again and changes nothing.

use tracing::Instrument;

use crate::{
    Disposition, Envelope, IncomingMessage, MessageHandler, OutgoingMessage, PublishError, Publisher,
    envelope::{now_millis, traceparent_for},
};

/// A command as a handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    pub envelope: &'a Envelope,
    pub payload: &'a [u8],
}

impl Command<'_> {
    /// Decodes the payload as `M`, or says why it is not one.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, CommandError> {
        M::decode(self.payload)
            .map_err(|e| CommandError::Malformed(format!("payload is not a valid {}: {e}", self.envelope.type_name)))
    }

    /// Decodes the payload as `M` and refuses it unless its order id (read by
    /// `order_id`) is the envelope's correlation id: the reply goes to the saga the
    /// envelope names, so a payload about another order (or about none) must not
    /// be acted on.
    pub fn decode_for_order<M: prost::Message + Default>(
        &self,
        order_id: impl FnOnce(&M) -> &str,
    ) -> Result<M, CommandError> {
        let message = self.decode::<M>()?;
        let id = order_id(&message);
        if id != self.envelope.correlation_id {
            return Err(CommandError::Malformed(format!(
                "payload order_id {id:?} is not the envelope's correlation_id {:?}",
                self.envelope.correlation_id
            )));
        }
        Ok(message)
    }
}

/// The reply to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub type_name: String,
    pub payload: Vec<u8>,
}

impl Reply {
    pub fn of<M: prost::Message + prost::Name>(message: &M) -> Self {
        Self { type_name: M::full_name(), payload: message.encode_to_vec() }
    }
}

/// Why a command was not answered.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The payload does not decode: it goes to the dead-letter queue.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// No handler for this `type`: it goes to the dead-letter queue.
    #[error("unknown command type {0:?}")]
    UnknownType(String),
    /// Redis or another dependency failed: the command is redelivered later.
    #[error("transient failure: {0}")]
    Transient(String),
}

/// Handles the commands of one participant.
#[async_trait::async_trait]
pub trait CommandHandler: Send + Sync + 'static {
    /// The full protobuf names of the commands it handles (the envelope's `type`),
    /// asked once when the loop is built.
    fn command_types(&self) -> Vec<String>;

    async fn handle(&self, command: Command<'_>) -> Result<Reply, CommandError>;
}

/// The `type` label of commands whose type the handler does not list.
pub const UNKNOWN_TYPE_LABEL: &str = "unknown";

/// The `ftgo_commands_total` counters of one command type.
struct Outcomes {
    replied: metrics::Counter,
    expired: metrics::Counter,
    rejected: metrics::Counter,
    retried: metrics::Counter,
}

impl Outcomes {
    fn new(type_label: &str) -> Self {
        let outcome = |outcome: &'static str| metrics::counter!("ftgo_commands_total", "type" => type_label.to_owned(), "outcome" => outcome);
        Self {
            replied: outcome("replied"),
            expired: outcome("expired"),
            rejected: outcome("rejected"),
            retried: outcome("retried"),
        }
    }
}

/// Adapts a [`CommandHandler`] to the consumer loop.
pub struct ParticipantLoop<H> {
    handler: H,
    publisher: Publisher,
    /// The participant's name, on its spans (`service`).
    service: &'static str,
    /// One entry per type the handler lists (a handful: searched in order).
    outcomes: Vec<(String, Outcomes)>,
    unknown: Outcomes,
}

impl<H: CommandHandler> ParticipantLoop<H> {
    pub fn new(handler: H, publisher: Publisher, service: &'static str) -> Self {
        let outcomes = handler
            .command_types()
            .into_iter()
            .map(|type_name| {
                let outcomes = Outcomes::new(&type_name);
                (type_name, outcomes)
            })
            .collect();
        Self { handler, publisher, service, outcomes, unknown: Outcomes::new(UNKNOWN_TYPE_LABEL) }
    }

    fn outcomes(&self, type_name: &str) -> &Outcomes {
        self.outcomes.iter().find(|(known, _)| *known == type_name).map_or(&self.unknown, |(_, outcomes)| outcomes)
    }
}

#[async_trait::async_trait]
impl<H: CommandHandler> MessageHandler for ParticipantLoop<H> {
    async fn handle(&self, message: IncomingMessage<'_>) -> Disposition {
        let envelope = match Envelope::from_properties(message.properties) {
            Ok(envelope) => envelope,
            Err(error) => return Disposition::DeadLetter(error.to_string()),
        };
        let Some(reply_to) = envelope.reply_to.clone() else {
            return Disposition::DeadLetter("command has no reply_to".into());
        };
        let span = tracing::debug_span!(
            "command",
            service = self.service,
            order_id = %envelope.correlation_id,
            message_id = %envelope.message_id,
            kind = %envelope.type_name,
            attempt = envelope.attempt,
        );
        // A child of the sender's span: one saga, one trace, across services.
        crate::trace::set_parent(
            &span,
            envelope.traceparent.as_deref().and_then(crate::trace::context_from_traceparent),
        );
        let traceparent = crate::trace::traceparent_of(&span)
            .or_else(|| envelope.traceparent.clone())
            .or_else(|| traceparent_for(&envelope.correlation_id));
        async move {
            let outcomes = self.outcomes(&envelope.type_name);
            if envelope.is_expired(now_millis()) {
                // The orchestrator has given up on this attempt (and re-sent or
                // compensated it): acting now could only do harm.
                tracing::info!(
                    order_id = %envelope.correlation_id,
                    message_id = %envelope.message_id,
                    kind = %envelope.type_name,
                    deadline_ms = envelope.deadline_ms,
                    "refusing an expired command"
                );
                outcomes.expired.increment(1);
                return Disposition::Ack;
            }
            let reply = match self.handler.handle(Command { envelope: &envelope, payload: message.payload }).await {
                Ok(reply) => reply,
                Err(error @ (CommandError::Malformed(_) | CommandError::UnknownType(_))) => {
                    outcomes.rejected.increment(1);
                    return Disposition::DeadLetter(error.to_string());
                }
                Err(CommandError::Transient(reason)) => {
                    outcomes.retried.increment(1);
                    tracing::warn!(
                        order_id = %envelope.correlation_id,
                        message_id = %envelope.message_id,
                        kind = %envelope.type_name,
                        %reason,
                        "transient failure; the command will be redelivered"
                    );
                    return Disposition::Retry(reason);
                }
            };
            let reply = OutgoingMessage {
                queue: reply_to,
                envelope: Envelope {
                    message_id: uuid::Uuid::now_v7().to_string(),
                    correlation_id: envelope.correlation_id.clone(),
                    reply_to: None,
                    type_name: reply.type_name,
                    step: envelope.step.clone(),
                    attempt: envelope.attempt,
                    deadline_ms: None,
                    command_id: Some(envelope.message_id.clone()),
                    traceparent,
                },
                payload: reply.payload,
            };
            match self.publisher.publish(&reply).await {
                Ok(()) => {
                    tracing::debug!(reply = %reply.envelope.type_name, "replied");
                    outcomes.replied.increment(1);
                    Disposition::Ack
                }
                // No queue takes replies at that address: retrying cannot help, and
                // the outcome is stored, so the command is parked where it is seen.
                Err(PublishError::Unroutable(queue)) => {
                    Disposition::DeadLetter(format!("reply_to queue {queue:?} does not exist; reply not delivered"))
                }
                // The stored reply is sent again on redelivery.
                Err(error) => Disposition::Retry(format!("reply not confirmed: {error}")),
            }
        }
        .instrument(span)
        .await
    }
}
