//! The command handler of `accounting_service.commands`: AuthorizeCard (the pivot
//! of the CreateOrderSaga) and its compensation VoidAuthorization.
//!
//! AuthorizeCard first checks the account and the amount in Rust (fixture data
//! that does not change while the service runs); a refusal is stored under the
//! message id like any outcome. Otherwise one Lua script decides against the
//! order's state: refused after a void, the authorization already in force, or a
//! new one. VoidAuthorization is one script. Either way the reply is built from the
//! outcome the store returns, so a redelivered command gets the same reply. A Redis
//! failure is transient: the command is requeued and nothing is stored.

use messaging::participant::{Command, CommandError, CommandHandler, Reply};
use prost::Name;
use proto::{
    accounting::v1::{AuthorizeCardCommand, VoidAuthorizationCommand},
    common::v1::Money,
};
use service_kit::participant::{MAX_ORDER_ID_LEN, transient};

use crate::{
    domain::{self, AuthorizeOutcome},
    store::{AccountingStore, NewAuthorization},
};

/// Handles every command type accounting_service accepts.
pub struct AccountingCommands {
    store: AccountingStore,
}

impl AccountingCommands {
    pub fn new(store: AccountingStore) -> Self {
        Self { store }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %command.order_id, consumer_id = command.consumer_id))]
    async fn authorize_card(&self, message_id: &str, command: AuthorizeCardCommand) -> Result<Reply, CommandError> {
        check_order_id(&command.order_id)?;
        let account = self.store.account(command.consumer_id).await.map_err(transient)?;
        let stored =
            match domain::check_authorization(command.consumer_id, account.as_deref(), command.amount.as_ref()) {
                Err(refusal) => self.store.record_outcome(message_id, &AuthorizeOutcome::from(refusal)).await,
                Ok(amount_minor) => {
                    let new = NewAuthorization {
                        authorization_id: uuid::Uuid::now_v7().to_string(),
                        order_id: &command.order_id,
                        consumer_id: command.consumer_id,
                        amount_minor,
                        currency_code: Money::CURRENCY,
                    };
                    self.store.authorize(message_id, &new).await
                }
            }
            .map_err(transient)?;
        stored.log("card authorization");
        Ok(Reply::of(&stored.outcome.into_reply()))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %command.order_id))]
    async fn void_authorization(
        &self,
        message_id: &str,
        command: VoidAuthorizationCommand,
    ) -> Result<Reply, CommandError> {
        check_order_id(&command.order_id)?;
        let stored = self.store.void(message_id, &command.order_id).await.map_err(transient)?;
        stored.log("authorization voided; tombstone written");
        Ok(Reply::of(&stored.outcome.into_reply()))
    }
}

#[async_trait::async_trait]
impl CommandHandler for AccountingCommands {
    fn command_types(&self) -> Vec<String> {
        vec![AuthorizeCardCommand::full_name(), VoidAuthorizationCommand::full_name()]
    }

    async fn handle(&self, command: Command<'_>) -> Result<Reply, CommandError> {
        let type_name = command.envelope.type_name.as_str();
        let message_id = command.envelope.message_id.as_str();
        if proto::is_type::<AuthorizeCardCommand>(type_name) {
            self.authorize_card(message_id, command.decode_for_order(|c: &AuthorizeCardCommand| &c.order_id)?).await
        } else if proto::is_type::<VoidAuthorizationCommand>(type_name) {
            self.void_authorization(message_id, command.decode_for_order(|c: &VoidAuthorizationCommand| &c.order_id)?)
                .await
        } else {
            Err(CommandError::UnknownType(type_name.to_owned()))
        }
    }
}

/// Every accounting command is about an order: without a usable order id it can
/// never be handled, so it is dead-lettered as malformed.
fn check_order_id(order_id: &str) -> Result<(), CommandError> {
    if order_id.is_empty() || order_id.len() > MAX_ORDER_ID_LEN {
        return Err(CommandError::Malformed(format!("order_id must be 1 to {MAX_ORDER_ID_LEN} bytes")));
    }
    Ok(())
}
