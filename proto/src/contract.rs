//! The saga's messaging contract, read from the `(ftgo.messaging.v1.saga)` options
//! of the proto files: which queue each command and reply travels on, which service
//! consumes it and which reply answers a command. Services route by it and the
//! AsyncAPI documents are generated from it, so a queue name is written only in
//! the `.proto` files.
//!
//! The one decision to know: the options are read once, lazily, from the compiled-in
//! [`FILE_DESCRIPTOR_SET`](crate::FILE_DESCRIPTOR_SET), and checked as a whole on
//! that first read (every annotated message has a queue, a receiver, a title and a
//! summary; every command's reply exists and is a reply). Lookups by a message's
//! name (data from the network) return [`ContractError`]; only [`queue_of`], which
//! takes a generated type known at compile time, panics on a missing option, and
//! the tests of this module rule that out for every saga message.

use std::{collections::BTreeMap, sync::LazyLock};

use prost::Message;
use prost_reflect::{DescriptorPool, Value};

use crate::messaging::v1::SagaMessage;

/// The full name of the extension that annotates saga messages.
pub const SAGA_OPTION: &str = "ftgo.messaging.v1.saga";

/// Why the contract, or a lookup in it, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The compiled-in descriptor set does not decode (a build problem).
    #[error("the compiled-in descriptor set does not decode: {0}")]
    Descriptors(String),
    /// The descriptor set lacks `options.proto` (a build problem).
    #[error("the descriptor set has no extension {SAGA_OPTION}")]
    NoSagaOption,
    /// The option on a message does not decode as `SagaMessage`.
    #[error("the {SAGA_OPTION} option of {message} does not decode: {reason}")]
    BadOption { message: String, reason: String },
    /// A required field of a message's option is empty.
    #[error("the {SAGA_OPTION} option of {message} has no {field}")]
    MissingField { message: String, field: &'static str },
    /// A command names a reply that is not an annotated reply.
    #[error("{command} names the reply {reply}, which is not a saga reply message")]
    BadReply { command: String, reply: String },
    /// The message is unknown, or has no saga option.
    #[error("{0} is not a saga message (no {SAGA_OPTION} option)")]
    NotASagaMessage(String),
    /// No command is consumed by this service.
    #[error("no saga command is consumed by {0}")]
    NoCommands(String),
    /// A service consumes commands from more than one queue.
    #[error("{service} consumes commands from several queues: {queues:?}")]
    SeveralCommandQueues { service: String, queues: Vec<String> },
    /// A failure code that is not SCREAMING_SNAKE_CASE, is listed twice, or is on
    /// a command (only replies carry failures).
    #[error("the {SAGA_OPTION} option of {message} lists the failure code {code:?}: {reason}")]
    BadFailureCode { message: String, code: String, reason: &'static str },
}

/// One annotated saga message: its option, by the full protobuf name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaMessageInfo {
    /// The fully-qualified protobuf name, e.g. `ftgo.consumer.v1.VerifyConsumerCommand`.
    pub full_name: String,
    /// The option as written in the `.proto` file.
    pub option: SagaMessage,
}

impl SagaMessageInfo {
    /// A command (or compensation) names the reply that answers it; a reply does not.
    pub fn is_command(&self) -> bool {
        !self.option.reply.is_empty()
    }
}

/// Every saga message of the descriptor set, sorted by full name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    messages: BTreeMap<String, SagaMessageInfo>,
}

impl Contract {
    /// Reads and checks the saga options of every message in `pool`.
    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, ContractError> {
        let extension = pool.get_extension_by_name(SAGA_OPTION).ok_or(ContractError::NoSagaOption)?;
        let mut annotated = Vec::new();
        for descriptor in pool.all_messages() {
            let options = descriptor.options();
            if !options.has_extension(&extension) {
                continue;
            }
            let full_name = descriptor.full_name().to_owned();
            let bad = |reason: String| ContractError::BadOption { message: full_name.clone(), reason };
            let option = match options.get_extension(&extension).as_ref() {
                Value::Message(value) => {
                    SagaMessage::decode(value.encode_to_vec().as_slice()).map_err(|e| bad(e.to_string()))?
                }
                other => return Err(bad(format!("not a message: {other:?}"))),
            };
            annotated.push((full_name, option));
        }
        Self::from_options(annotated)
    }

    /// Checks the options of saga messages, by full name: required fields are set,
    /// and every command's reply is an annotated reply.
    pub fn from_options(options: impl IntoIterator<Item = (String, SagaMessage)>) -> Result<Self, ContractError> {
        let mut messages = BTreeMap::new();
        for (full_name, option) in options {
            for (field, value) in [
                ("queue", &option.queue),
                ("receiver", &option.receiver),
                ("title", &option.title),
                ("summary", &option.summary),
            ] {
                if value.trim().is_empty() {
                    return Err(ContractError::MissingField { message: full_name, field });
                }
            }
            check_failure_codes(&full_name, &option)?;
            messages.insert(full_name.clone(), SagaMessageInfo { full_name, option });
        }
        for info in messages.values().filter(|m| m.is_command()) {
            let reply = &info.option.reply;
            if messages.get(reply).is_none_or(SagaMessageInfo::is_command) {
                return Err(ContractError::BadReply { command: info.full_name.clone(), reply: reply.clone() });
            }
        }
        Ok(Self { messages })
    }

    /// Every saga message, sorted by full name.
    pub fn messages(&self) -> impl Iterator<Item = &SagaMessageInfo> {
        self.messages.values()
    }

    /// The saga message named `full_name` (e.g. an AMQP `type` property).
    pub fn message(&self, full_name: &str) -> Result<&SagaMessageInfo, ContractError> {
        self.messages.get(full_name).ok_or_else(|| ContractError::NotASagaMessage(full_name.to_owned()))
    }

    /// The queue of the saga message named `full_name`.
    pub fn queue(&self, full_name: &str) -> Result<&str, ContractError> {
        Ok(&self.message(full_name)?.option.queue)
    }

    /// The failure code `code` as the reply `reply` lists it, or `None` when the
    /// reply does not list it (or is not a saga reply). Borrowed from the contract,
    /// so a caller holding the `'static` [`contract()`] gets a `'static` code: a
    /// metric label that costs no allocation and cannot be any string a sender makes
    /// up. The reply is found by a scan of the dozen saga messages, so no name is built.
    pub fn failure_code(&self, reply: crate::TypeName, code: &str) -> Option<&str> {
        let message = self.messages.values().find(|m| reply.matches(&m.full_name))?;
        message.option.failure_codes.iter().find(|known| *known == code).map(String::as_str)
    }

    /// The messages `service` consumes (commands for a participant, replies for the
    /// orchestrator), sorted by full name.
    pub fn received_by<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a SagaMessageInfo> + 'a {
        self.messages().filter(move |m| m.option.receiver == service)
    }

    /// The commands `service` sends: those whose replies it receives.
    pub fn commands_sent_by<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a SagaMessageInfo> + 'a {
        self.messages().filter(move |m| {
            m.is_command() && self.messages.get(&m.option.reply).is_some_and(|r| r.option.receiver == service)
        })
    }

    /// The one queue `service` consumes commands from, e.g. `consumer_service.commands`.
    pub fn command_queue(&self, service: &str) -> Result<&str, ContractError> {
        let mut queues: Vec<&str> = self
            .messages()
            .filter(|m| m.is_command() && m.option.receiver == service)
            .map(|m| m.option.queue.as_str())
            .collect();
        queues.sort_unstable();
        queues.dedup();
        match queues.as_slice() {
            [] => Err(ContractError::NoCommands(service.to_owned())),
            [queue] => Ok(queue),
            _ => Err(ContractError::SeveralCommandQueues {
                service: service.to_owned(),
                queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            }),
        }
    }
}

/// Failure codes are stable identifiers that clients match on and metrics carry
/// as labels: SCREAMING_SNAKE_CASE, each listed once, and only on replies.
fn check_failure_codes(full_name: &str, option: &SagaMessage) -> Result<(), ContractError> {
    let bad = |code: &str, reason| ContractError::BadFailureCode {
        message: full_name.to_owned(),
        code: code.to_owned(),
        reason,
    };
    for (i, code) in option.failure_codes.iter().enumerate() {
        if !option.reply.is_empty() {
            return Err(bad(code, "a command carries no failure"));
        }
        let screaming = code.starts_with(|c: char| c.is_ascii_uppercase())
            && code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !screaming {
            return Err(bad(code, "not SCREAMING_SNAKE_CASE"));
        }
        if option.failure_codes[..i].contains(code) {
            return Err(bad(code, "listed twice"));
        }
    }
    Ok(())
}

static POOL: LazyLock<Result<DescriptorPool, ContractError>> = LazyLock::new(|| {
    DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).map_err(|e| ContractError::Descriptors(e.to_string()))
});

static CONTRACT: LazyLock<Result<Contract, ContractError>> = LazyLock::new(|| Contract::from_pool(descriptor_pool()?));

/// The descriptor pool of every FTGO proto file (decoded once), with source info
/// (comments) and the custom options.
pub fn descriptor_pool() -> Result<&'static DescriptorPool, ContractError> {
    POOL.as_ref().map_err(Clone::clone)
}

/// The contract of the compiled-in descriptor set (read and checked once).
pub fn contract() -> Result<&'static Contract, ContractError> {
    CONTRACT.as_ref().map_err(Clone::clone)
}

/// The queue (before the namespace) of the saga message `M`.
pub fn try_queue_of<M: prost::Name>() -> Result<&'static str, ContractError> {
    contract()?.queue(&M::full_name())
}

/// The queue (before the namespace) of the saga message `M`, e.g.
/// `consumer_service.commands` for `VerifyConsumerCommand`.
///
/// # Panics
///
/// When `M` has no saga option: a mistake in the `.proto` files, which this
/// module's tests catch for every saga message. Use [`try_queue_of`] or
/// [`Contract::queue`] for names that come from outside.
pub fn queue_of<M: prost::Name>() -> &'static str {
    match try_queue_of::<M>() {
        Ok(queue) => queue,
        Err(error) => panic!("the proto contract is incomplete: {error}"),
    }
}

/// A queue's base name known at compile time by its message type and looked up in
/// the contract when used: a `const` that reads like the string literal it
/// replaces (`namespace.queue(CONSUMER_QUEUE)` through `Deref<Target = str>`).
#[derive(Clone, Copy)]
pub struct Queue(fn() -> &'static str);

impl Queue {
    /// The queue of the saga message `M`.
    pub const fn of<M: prost::Name>() -> Self {
        Self(queue_of::<M>)
    }

    /// The queue's base name (see [`queue_of`] for when this panics).
    pub fn name(&self) -> &'static str {
        (self.0)()
    }
}

impl std::ops::Deref for Queue {
    type Target = str;

    fn deref(&self) -> &str {
        self.name()
    }
}

impl AsRef<str> for Queue {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl std::fmt::Display for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queue({:?})", self.name())
    }
}

#[cfg(test)]
mod tests {
    use prost::Name;

    use super::*;
    use crate::{accounting::v1 as accounting, consumer::v1 as consumer, restaurant::v1 as restaurant};

    /// The spec: every saga command and reply, its queue, and the reply of a command.
    fn expected() -> Vec<(String, &'static str, Option<String>)> {
        let replies = "order_service.replies";
        vec![
            (
                consumer::VerifyConsumerCommand::full_name(),
                "consumer_service.commands",
                Some(consumer::VerifyConsumerReply::full_name()),
            ),
            (consumer::VerifyConsumerReply::full_name(), replies, None),
            (
                restaurant::CreateTicketCommand::full_name(),
                "restaurant_service.commands",
                Some(restaurant::CreateTicketReply::full_name()),
            ),
            (restaurant::CreateTicketReply::full_name(), replies, None),
            (
                restaurant::RejectTicketCommand::full_name(),
                "restaurant_service.commands",
                Some(restaurant::RejectTicketReply::full_name()),
            ),
            (restaurant::RejectTicketReply::full_name(), replies, None),
            (
                restaurant::ApproveTicketCommand::full_name(),
                "restaurant_service.commands",
                Some(restaurant::ApproveTicketReply::full_name()),
            ),
            (restaurant::ApproveTicketReply::full_name(), replies, None),
            (
                accounting::AuthorizeCardCommand::full_name(),
                "accounting_service.commands",
                Some(accounting::AuthorizeCardReply::full_name()),
            ),
            (accounting::AuthorizeCardReply::full_name(), replies, None),
            (
                accounting::VoidAuthorizationCommand::full_name(),
                "accounting_service.commands",
                Some(accounting::VoidAuthorizationReply::full_name()),
            ),
            (accounting::VoidAuthorizationReply::full_name(), replies, None),
        ]
    }

    #[test]
    fn every_saga_message_has_its_queue_and_every_command_its_reply() {
        let contract = contract().expect("the contract reads");
        let mut expected = expected();
        expected.sort();
        let actual: Vec<_> = contract
            .messages()
            .map(|m| (m.full_name.clone(), m.option.queue.as_str(), m.is_command().then(|| m.option.reply.clone())))
            .collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn every_command_and_reply_message_of_the_participants_is_annotated() {
        let pool = descriptor_pool().expect("pool");
        let contract = contract().expect("contract");
        for message in pool.all_messages() {
            let name = message.full_name();
            if name.ends_with("Command") || name.ends_with("Reply") {
                assert!(contract.message(name).is_ok(), "{name} has no {SAGA_OPTION} option");
            }
        }
    }

    #[test]
    fn typed_lookups_give_the_queues_the_services_use() {
        assert_eq!(queue_of::<consumer::VerifyConsumerCommand>(), "consumer_service.commands");
        assert_eq!(&*Queue::of::<accounting::VoidAuthorizationCommand>(), "accounting_service.commands");
        assert_eq!(Queue::of::<restaurant::ApproveTicketReply>().to_string(), "order_service.replies");
        let contract = contract().expect("contract");
        assert_eq!(contract.command_queue("consumer_service"), Ok("consumer_service.commands"));
        assert_eq!(contract.command_queue("restaurant_service"), Ok("restaurant_service.commands"));
        assert_eq!(contract.command_queue("accounting_service"), Ok("accounting_service.commands"));
        assert_eq!(contract.commands_sent_by("order_service").count(), 6);
        assert_eq!(contract.received_by("order_service").count(), 6);
    }

    #[test]
    fn names_from_outside_are_typed_errors() {
        let contract = contract().expect("contract");
        assert_eq!(
            contract.queue("ftgo.consumer.v1.NoSuchCommand"),
            Err(ContractError::NotASagaMessage("ftgo.consumer.v1.NoSuchCommand".into()))
        );
        assert!(matches!(contract.queue(&consumer::Consumer::full_name()), Err(ContractError::NotASagaMessage(_))));
        assert_eq!(
            try_queue_of::<crate::common::v1::Money>(),
            Err(ContractError::NotASagaMessage("ftgo.common.v1.Money".into()))
        );
        assert_eq!(contract.command_queue("order_service"), Err(ContractError::NoCommands("order_service".into())));
    }

    #[test]
    fn a_command_whose_reply_is_not_a_saga_reply_is_refused() {
        let option = |queue: &str, reply: &str| SagaMessage {
            queue: queue.into(),
            receiver: "x_service".into(),
            reply: reply.into(),
            title: "T".into(),
            summary: "S".into(),
            compensation: false,
            failure_codes: Vec::new(),
        };
        let refused = Contract::from_options([("a.Command".to_owned(), option("x.commands", "a.Missing"))]);
        assert_eq!(refused, Err(ContractError::BadReply { command: "a.Command".into(), reply: "a.Missing".into() }));
        let untitled = SagaMessage { title: " ".into(), ..option("x.commands", "") };
        assert_eq!(
            Contract::from_options([("a.Reply".to_owned(), untitled)]),
            Err(ContractError::MissingField { message: "a.Reply".into(), field: "title" })
        );
        let fine = Contract::from_options([
            ("a.Command".to_owned(), option("x.commands", "a.Reply")),
            ("a.Reply".to_owned(), option("y.replies", "")),
        ]);
        assert!(fine.is_ok(), "{fine:?}");
    }

    #[test]
    fn every_reply_lists_its_failure_codes_and_no_command_does() {
        let contract = contract().expect("contract");
        let codes = |name: String| contract.message(&name).expect("saga message").option.failure_codes.clone();
        assert_eq!(codes(consumer::VerifyConsumerReply::full_name()), ["CONSUMER_NOT_FOUND", "CONSUMER_SUSPENDED"]);
        assert_eq!(
            codes(restaurant::CreateTicketReply::full_name()),
            ["RESTAURANT_NOT_FOUND", "MENU_ITEM_NOT_FOUND", "INVALID_ORDER", "TICKET_CANCELLED"]
        );
        assert_eq!(codes(restaurant::RejectTicketReply::full_name()), ["TICKET_ALREADY_ACCEPTED"]);
        assert_eq!(
            codes(restaurant::ApproveTicketReply::full_name()),
            ["TICKET_NOT_FOUND", "TICKET_REJECTED", "KITCHEN_UNAVAILABLE"]
        );
        assert_eq!(
            codes(accounting::AuthorizeCardReply::full_name()),
            ["ACCOUNT_NOT_FOUND", "INVALID_AMOUNT", "CARD_DECLINED", "AUTHORIZATION_VOIDED"]
        );
        assert!(codes(accounting::VoidAuthorizationReply::full_name()).is_empty());
        for command in contract.messages().filter(|m| m.is_command()) {
            assert!(command.option.failure_codes.is_empty(), "{}", command.full_name);
        }
    }

    #[test]
    fn a_failure_code_is_found_only_on_the_reply_that_lists_it() {
        let contract = contract().expect("contract");
        let authorize = crate::TypeName::of::<accounting::AuthorizeCardReply>();
        assert_eq!(contract.failure_code(authorize, "CARD_DECLINED"), Some("CARD_DECLINED"));
        assert_eq!(contract.failure_code(authorize, "CONSUMER_NOT_FOUND"), None);
        assert_eq!(contract.failure_code(authorize, "card_declined"), None);
        let missing = crate::TypeName { package: "ftgo.accounting.v1", name: "NoSuchReply" };
        assert_eq!(contract.failure_code(missing, "CARD_DECLINED"), None);
    }

    #[test]
    fn failure_codes_that_could_not_be_labels_or_are_on_commands_are_refused() {
        let reply = |codes: &[&str]| SagaMessage {
            queue: "y.replies".into(),
            receiver: "o_service".into(),
            title: "T".into(),
            summary: "S".into(),
            failure_codes: codes.iter().map(|c| (*c).to_owned()).collect(),
            ..SagaMessage::default()
        };
        let refused = |codes: &[&str]| match Contract::from_options([("a.Reply".to_owned(), reply(codes))]) {
            Err(ContractError::BadFailureCode { code, reason, .. }) => (code, reason),
            other => panic!("{codes:?} gave {other:?}"),
        };
        assert_eq!(refused(&["CARD declined"]), ("CARD declined".into(), "not SCREAMING_SNAKE_CASE"));
        assert_eq!(refused(&["_X"]), ("_X".into(), "not SCREAMING_SNAKE_CASE"));
        assert_eq!(refused(&[""]), ("".into(), "not SCREAMING_SNAKE_CASE"));
        assert_eq!(refused(&["A_1", "B", "A_1"]), ("A_1".into(), "listed twice"));
        let command = SagaMessage { reply: "a.Reply".into(), ..reply(&["X"]) };
        assert!(matches!(
            Contract::from_options([("a.Command".to_owned(), command), ("a.Reply".to_owned(), reply(&[]))]),
            Err(ContractError::BadFailureCode { reason: "a command carries no failure", .. })
        ));
        assert!(Contract::from_options([("a.Reply".to_owned(), reply(&["A_1", "B2"]))]).is_ok());
    }
}
