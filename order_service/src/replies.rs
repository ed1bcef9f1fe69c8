//! The handler of the orchestrator's reply queue. A reply is acknowledged once the
//! transition it causes is saved (and its next command published); a reply that
//! answers nothing the saga awaits is a duplicate or stale, and is acknowledged and
//! dropped. A reply that cannot be read goes to the dead-letter queue.

use messaging::{Disposition, Envelope, IncomingMessage, MessageHandler};
use tracing::Instrument;

use crate::{
    create_order_saga::decode_reply,
    orchestrator::{Applied, Orchestrator, OrchestratorError},
};

/// Applies replies to sagas.
pub struct ReplyHandler {
    pub orchestrator: Orchestrator,
}

#[async_trait::async_trait]
impl MessageHandler for ReplyHandler {
    async fn handle(&self, message: IncomingMessage<'_>) -> Disposition {
        let envelope = match Envelope::from_properties(message.properties) {
            Ok(envelope) => envelope,
            Err(error) => return Disposition::DeadLetter(error.to_string()),
        };
        let Some(command_id) = envelope.command_id.as_deref() else {
            return Disposition::DeadLetter("reply without the x-command-id header".into());
        };
        let outcome = match decode_reply(&envelope.type_name, message.payload) {
            Ok(outcome) => outcome,
            Err(error) => return Disposition::DeadLetter(error.to_string()),
        };
        // The reply continues the participant's span; the transition is its child.
        let span = tracing::debug_span!(
            "reply",
            service = "order_service",
            order_id = %envelope.correlation_id,
            command_id,
            kind = %envelope.type_name,
        );
        messaging::trace::set_parent(
            &span,
            envelope.traceparent.as_deref().and_then(messaging::trace::context_from_traceparent),
        );
        let applied = self
            .orchestrator
            .on_reply(&envelope.correlation_id, command_id, &envelope.type_name, outcome)
            .instrument(span)
            .await;
        match applied {
            Ok(Applied::Changed(_)) => Disposition::Ack,
            Ok(Applied::Ignored(reason)) => {
                tracing::debug!(order_id = %envelope.correlation_id, command_id, %reason, "reply dropped");
                Disposition::Ack
            }
            Err(OrchestratorError::NotFound(id)) => Disposition::DeadLetter(format!("no saga {id} for this reply")),
            Err(error) => Disposition::Retry(error.to_string()),
        }
    }
}
