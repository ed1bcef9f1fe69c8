//! The command handler of `consumer_service.commands`: VerifyConsumer.
//!
//! The consumer's status is fixture data, so the decision is made in Rust; the
//! outcome is then stored under the command's message id unless one is stored
//! (`SET NX`, then `GET`) and the reply is built from what the store returns. A
//! redelivered command therefore gets the first outcome again, even if the consumer
//! changed meanwhile.
//! A Redis failure is transient: the command is requeued and nothing is stored.

use messaging::participant::{Command, CommandError, CommandHandler, Reply};
use prost::Name;
use proto::consumer::v1::VerifyConsumerCommand;
use service_kit::participant::transient;

use crate::{domain, store::ConsumerStore};

/// Handles every command type consumer_service accepts.
pub struct ConsumerCommands {
    store: ConsumerStore,
}

impl ConsumerCommands {
    pub fn new(store: ConsumerStore) -> Self {
        Self { store }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %command.order_id, consumer_id = command.consumer_id))]
    async fn verify_consumer(&self, message_id: &str, command: VerifyConsumerCommand) -> Result<Reply, CommandError> {
        let consumer = self.store.consumer(command.consumer_id).await.map_err(transient)?;
        let decided = domain::verify(command.consumer_id, consumer.as_deref());
        let stored = self.store.record_outcome(message_id, &decided).await.map_err(transient)?;
        stored.log("consumer verification");
        Ok(Reply::of(&stored.outcome.into_reply()))
    }
}

#[async_trait::async_trait]
impl CommandHandler for ConsumerCommands {
    fn command_types(&self) -> Vec<String> {
        vec![VerifyConsumerCommand::full_name()]
    }

    async fn handle(&self, command: Command<'_>) -> Result<Reply, CommandError> {
        let type_name = command.envelope.type_name.as_str();
        if proto::is_type::<VerifyConsumerCommand>(type_name) {
            self.verify_consumer(
                &command.envelope.message_id,
                command.decode_for_order(|c: &VerifyConsumerCommand| &c.order_id)?,
            )
            .await
        } else {
            Err(CommandError::UnknownType(type_name.to_owned()))
        }
    }
}
