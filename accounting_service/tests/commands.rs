//! accounting_service against the real RabbitMQ and Redis: each test runs the
//! service in-process in its own namespace, sends commands as the orchestrator
//! would, and checks the replies, the dead-letter queue and the state read back
//! over gRPC (ListAuthorizations, GetAccount).

use std::time::Duration;

use accounting_service::{
    COMMAND_QUEUE, GRPC_SERVICE_NAME, KEY_PREFIX, Settings,
    domain::{ACCOUNT_NOT_FOUND, AUTHORIZATION_VOIDED, CARD_DECLINED, INVALID_AMOUNT},
    run,
    store::Keys,
};
use anyhow::Context;
use lapin::BasicProperties;
use messaging::envelope::now_millis;
use prost::Name;
use proto::{
    accounting::v1::{
        AuthorizationState, AuthorizationVoided, AuthorizeCardCommand, AuthorizeCardReply, CardAuthorized,
        GetAccountRequest, ListAuthorizationsRequest, ListAuthorizationsResponse, VoidAuthorizationCommand,
        VoidAuthorizationReply, accounting_service_client::AccountingServiceClient, authorize_card_reply,
        void_authorization_reply,
    },
    common::v1::{Failure, Money},
};
use redis::AsyncCommands;
use test_support::{ServiceUnderTest, TestEnv};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(20);

/// A running service with a gRPC client.
struct App {
    service: ServiceUnderTest,
    grpc: AccountingServiceClient<Channel>,
}

impl App {
    async fn stop(self) -> anyhow::Result<()> {
        self.service.stop().await
    }

    async fn list(&mut self, order_id: &str) -> anyhow::Result<ListAuthorizationsResponse> {
        Ok(self.grpc.list_authorizations(ListAuthorizationsRequest { order_id: order_id.into() }).await?.into_inner())
    }
}

/// Starts accounting_service with the built-in fixtures in the test's namespace and
/// waits until health says SERVING (its command consumer is registered).
async fn spawn(env: &TestEnv) -> anyhow::Result<App> {
    env.track_queue(COMMAND_QUEUE);
    let settings = Settings::new(env.settings())?;
    let service = ServiceUnderTest::start(|token| run(settings, token), GRPC_SERVICE_NAME, WAIT).await?;
    let grpc = AccountingServiceClient::new(service.channel().await?);
    Ok(App { service, grpc })
}

fn new_order_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Sends AuthorizeCard and returns its reply, checking it answers this message.
async fn authorize(
    env: &TestEnv,
    message_id: &str,
    order_id: &str,
    consumer_id: i64,
    amount_minor: i64,
) -> anyhow::Result<AuthorizeCardReply> {
    let command =
        AuthorizeCardCommand { order_id: order_id.into(), consumer_id, amount: Some(Money::usd(amount_minor)) };
    env.call(COMMAND_QUEUE, message_id, order_id, &command, None, WAIT).await
}

/// Sends VoidAuthorization and returns its reply, checking it answers this message.
async fn void(env: &TestEnv, message_id: &str, order_id: &str) -> anyhow::Result<VoidAuthorizationReply> {
    let command = VoidAuthorizationCommand { order_id: order_id.into() };
    env.call(COMMAND_QUEUE, message_id, order_id, &command, None, WAIT).await
}

fn authorized_id(reply: &AuthorizeCardReply) -> Option<&str> {
    match &reply.outcome {
        Some(authorize_card_reply::Outcome::Success(CardAuthorized { authorization_id })) => Some(authorization_id),
        _ => None,
    }
}

fn failure(reply: &AuthorizeCardReply) -> Option<&Failure> {
    match &reply.outcome {
        Some(authorize_card_reply::Outcome::Failure(failure)) => Some(failure),
        _ => None,
    }
}

fn voided_id(reply: &VoidAuthorizationReply) -> Option<&str> {
    match &reply.outcome {
        Some(void_authorization_reply::Outcome::Success(AuthorizationVoided { authorization_id })) => {
            Some(authorization_id)
        }
        _ => None,
    }
}

/// (id, state) of each authorization in a listing.
fn states(list: &ListAuthorizationsResponse) -> Vec<(String, AuthorizationState)> {
    list.authorizations.iter().map(|a| (a.authorization_id.clone(), a.state())).collect()
}

#[tokio::test]
async fn authorize_card_within_the_limit_creates_one_authorization_in_force() -> anyhow::Result<()> {
    let env = TestEnv::new("acct-ok").await?;
    let mut app = spawn(&env).await?;
    let order = new_order_id();

    let reply = authorize(&env, "m-auth", &order, 1, 1500).await?;
    let id = authorized_id(&reply).context("authorized")?.to_owned();
    let uuid = uuid::Uuid::parse_str(&id)?;
    assert_eq!(uuid.get_version_num(), 7);

    let list = app.list(&order).await?;
    assert_eq!(list.authorizations.len(), 1);
    let authorization = &list.authorizations[0];
    assert_eq!(authorization.authorization_id, id);
    assert_eq!(authorization.order_id, order);
    assert_eq!(authorization.consumer_id, 1);
    assert_eq!(authorization.amount, Some(Money::usd(1500)));
    assert_eq!(authorization.state(), AuthorizationState::Authorized);
    assert!(!list.tombstone);

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn authorize_card_above_the_credit_limit_is_declined_with_the_amount_and_the_limit() -> anyhow::Result<()> {
    let env = TestEnv::new("acct-declined").await?;
    let mut app = spawn(&env).await?;
    let order = new_order_id();

    let reply = authorize(&env, "m-declined", &order, 3, 2500).await?;
    let failure = failure(&reply).context("declined")?;
    assert_eq!(failure.code, CARD_DECLINED);
    assert!(!failure.transient);
    assert!(failure.message.contains("25.00") && failure.message.contains("20.00"), "{}", failure.message);
    // The limit is per authorization: an amount at the limit passes, again and again.
    let at_limit = authorize(&env, "m-at-limit", &new_order_id(), 3, 2000).await?;
    assert!(authorized_id(&at_limit).is_some(), "{at_limit:?}");

    let list = app.list(&order).await?;
    assert!(list.authorizations.is_empty() && !list.tombstone, "{list:?}");

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn authorize_card_without_an_account_is_refused_with_account_not_found() -> anyhow::Result<()> {
    let env = TestEnv::new("acct-noaccount").await?;
    let mut app = spawn(&env).await?;
    let order = new_order_id();

    let reply = authorize(&env, "m-noaccount", &order, 99, 100).await?;
    assert_eq!(failure(&reply).map(|f| f.code.as_str()), Some(ACCOUNT_NOT_FOUND), "{reply:?}");
    let missing = app.grpc.get_account(GetAccountRequest { consumer_id: 99 }).await.expect_err("no account 99");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(app.list(&order).await?.authorizations.is_empty());

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn authorize_card_with_a_non_positive_amount_is_refused_with_invalid_amount() -> anyhow::Result<()> {
    let env = TestEnv::new("acct-amount").await?;
    let mut app = spawn(&env).await?;
    let order = new_order_id();

    let zero = authorize(&env, "m-zero", &order, 1, 0).await?;
    assert_eq!(failure(&zero).map(|f| f.code.as_str()), Some(INVALID_AMOUNT), "{zero:?}");
    let negative = authorize(&env, "m-negative", &order, 1, -100).await?;
    assert_eq!(failure(&negative).map(|f| f.code.as_str()), Some(INVALID_AMOUNT), "{negative:?}");
    assert!(app.list(&order).await?.authorizations.is_empty());

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_second_authorize_card_for_the_order_returns_the_authorization_in_force() -> anyhow::Result<()> {
    let env = TestEnv::new("acct-again").await?;
    let mut app = spawn(&env).await?;
    let order = new_order_id();

    let first = authorize(&env, "m-first", &order, 1, 1500).await?;
    let second = authorize(&env, "m-second", &order, 1, 1500).await?;
    let id = authorized_id(&first).context("authorized")?;
    assert_eq!(authorized_id(&second), Some(id));
    assert_eq!(states(&app.list(&order).await?), vec![(id.to_owned(), AuthorizationState::Authorized)]);

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn void_authorization_voids_the_authorization_in_force_and_refuses_later_ones() -> anyhow::Result<()> {
    let env = TestEnv::new("acct-void").await?;
    let mut app = spawn(&env).await?;
    let order = new_order_id();

    let authorized = authorize(&env, "m-auth", &order, 2, 4000).await?;
    let id = authorized_id(&authorized).context("authorized")?.to_owned();
    let voided = void(&env, "m-void", &order).await?;
    assert_eq!(voided_id(&voided), Some(id.as_str()));

    let list = app.list(&order).await?;
    assert_eq!(states(&list), vec![(id.clone(), AuthorizationState::Voided)]);
    assert!(list.tombstone);

    let late = authorize(&env, "m-late", &order, 2, 4000).await?;
    assert_eq!(failure(&late).map(|f| f.code.as_str()), Some(AUTHORIZATION_VOIDED), "{late:?}");
    assert_eq!(states(&app.list(&order).await?), vec![(id, AuthorizationState::Voided)]);

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn the_same_command_delivered_twice_gets_the_same_reply_and_changes_state_once() -> anyhow::Result<()> {
    let env = TestEnv::new("acct-dup").await?;
    let mut app = spawn(&env).await?;
    let order = new_order_id();

    let first = authorize(&env, "m-auth", &order, 1, 1500).await?;
    let again = authorize(&env, "m-auth", &order, 1, 1500).await?;
    assert_eq!(again, first);
    let id = authorized_id(&first).context("authorized")?.to_owned();
    assert_eq!(states(&app.list(&order).await?), vec![(id.clone(), AuthorizationState::Authorized)]);

    // The redelivered void replays its stored reply (the id it voided), while a new
    // void finds nothing in force any more: the reply comes from the store.
    let voided = void(&env, "m-void", &order).await?;
    assert_eq!(voided_id(&voided), Some(id.as_str()));
    assert_eq!(void(&env, "m-void", &order).await?, voided);
    let fresh = void(&env, "m-void-2", &order).await?;
    assert_eq!(voided_id(&fresh), Some(""));
    let list = app.list(&order).await?;
    assert_eq!(states(&list), vec![(id, AuthorizationState::Voided)]);
    assert!(list.tombstone);

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_void_before_the_authorization_is_an_empty_rollback_and_the_late_authorization_is_refused()
-> anyhow::Result<()> {
    let env = TestEnv::new("acct-void-first").await?;
    let mut app = spawn(&env).await?;
    let order = new_order_id();

    let voided = void(&env, "m-void", &order).await?;
    assert_eq!(voided_id(&voided), Some(""), "{voided:?}");
    let list = app.list(&order).await?;
    assert!(list.authorizations.is_empty() && list.tombstone, "{list:?}");

    let late = authorize(&env, "m-late", &order, 1, 1500).await?;
    assert_eq!(failure(&late).map(|f| f.code.as_str()), Some(AUTHORIZATION_VOIDED), "{late:?}");
    let list = app.list(&order).await?;
    assert!(list.authorizations.is_empty() && list.tombstone, "{list:?}");

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn read_calls_return_accounts_and_validate_their_arguments() -> anyhow::Result<()> {
    let env = TestEnv::new("acct-read").await?;
    let mut app = spawn(&env).await?;

    let carol = app.grpc.get_account(GetAccountRequest { consumer_id: 3 }).await?.into_inner();
    assert_eq!((carol.card.as_str(), carol.credit_limit), ("**** 0005", Some(Money::usd(2000))));
    let alice = app.grpc.get_account(GetAccountRequest { consumer_id: 1 }).await?.into_inner();
    assert_eq!((alice.card.as_str(), alice.credit_limit), ("**** 4242", Some(Money::usd(100_000))));

    let invalid = app.grpc.get_account(GetAccountRequest { consumer_id: 0 }).await.expect_err("id 0 is invalid");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(invalid.message().contains("consumer_id"), "{}", invalid.message());
    let invalid = app
        .grpc
        .list_authorizations(ListAuthorizationsRequest { order_id: String::new() })
        .await
        .expect_err("an empty order id is invalid");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(invalid.message().contains("order_id"), "{}", invalid.message());

    let unknown = app.list(&new_order_id()).await?;
    assert_eq!(unknown, ListAuthorizationsResponse { authorizations: Vec::new(), tombstone: false });

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn undecodable_unknown_and_orderless_messages_are_dead_lettered_and_the_service_keeps_going() -> anyhow::Result<()>
{
    use prost::Message;

    let env = TestEnv::new("acct-dlq").await?;
    let mut app = spawn(&env).await?;

    let props = |message_id: &str, type_name: &str| {
        BasicProperties::default()
            .with_message_id(message_id.into())
            .with_correlation_id(new_order_id().as_str().into())
            .with_type(type_name.into())
            .with_reply_to(env.reply_queue().into())
    };
    // A truncated varint: not a protobuf message at all.
    env.send_raw(COMMAND_QUEUE, &[0xff, 0xff, 0xff], props("m-garbage", &AuthorizeCardCommand::full_name())).await?;
    env.send_raw(COMMAND_QUEUE, b"", props("m-unknown", "ftgo.accounting.v1.RefundCommand")).await?;
    let orderless = VoidAuthorizationCommand { order_id: String::new() }.encode_to_vec();
    env.send_raw(COMMAND_QUEUE, &orderless, props("m-orderless", &VoidAuthorizationCommand::full_name())).await?;

    let dead = env.wait_dead_letters(COMMAND_QUEUE, 3, WAIT).await?;
    let found: Vec<(&str, &str)> =
        dead.iter().map(|d| (d.message_id.as_str(), d.reason.as_deref().unwrap_or_default())).collect();
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0].0, "m-garbage");
    assert!(found[0].1.contains("malformed"), "{found:?}");
    assert_eq!(found[1].0, "m-orderless");
    assert!(found[1].1.contains("order_id"), "{found:?}");
    assert_eq!(found[2].0, "m-unknown");
    assert!(found[2].1.contains("unknown command type"), "{found:?}");

    let order = new_order_id();
    let reply = authorize(&env, "m-after", &order, 1, 1500).await?;
    assert!(authorized_id(&reply).is_some(), "{reply:?}");
    assert_eq!(app.list(&order).await?.authorizations.len(), 1);

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn an_expired_authorize_card_changes_nothing_and_gets_no_reply() -> anyhow::Result<()> {
    let env = TestEnv::new("acct-expired").await?;
    let mut app = spawn(&env).await?;
    let order = new_order_id();

    let command = AuthorizeCardCommand { order_id: order.clone(), consumer_id: 1, amount: Some(Money::usd(1500)) };
    env.send_command(COMMAND_QUEUE, "m-expired", &order, &command, Some(now_millis() - 1_000)).await?;
    // A later command on the same queue: once it is answered, the expired one has
    // been taken off the queue (refused by the service or dropped by the broker).
    let other = new_order_id();
    let reply = authorize(&env, "m-live", &other, 1, 1500).await?;
    assert!(authorized_id(&reply).is_some(), "{reply:?}");

    let list = app.list(&order).await?;
    assert!(list.authorizations.is_empty() && !list.tombstone, "{list:?}");
    let keys = Keys::new(env.namespace.key_prefix(KEY_PREFIX));
    let stored: bool = env.redis.clone().exists(keys.processed("m-expired")).await?;
    assert!(!stored, "an expired command stored an outcome");
    assert!(env.get(env.reply_queue()).await?.is_none(), "an expired command was answered");

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}
