//! consumer_service against the real RabbitMQ and Redis: each test runs the service
//! in-process in its own namespace, sends commands as the orchestrator would, and
//! checks the replies, the dead-letter queue and the state read back over gRPC.

use std::time::Duration;

use consumer_service::{
    COMMAND_QUEUE, GRPC_SERVICE_NAME, KEY_PREFIX, Settings,
    domain::{CONSUMER_NOT_FOUND, CONSUMER_SUSPENDED, Consumer, ConsumerStatus, Fixtures},
    run,
    store::Keys,
};
use lapin::BasicProperties;
use messaging::envelope::now_millis;
use prost::Name;
use proto::{
    common::v1::Failure,
    consumer::v1::{
        ConsumerStatus as PbStatus, ConsumerVerified, GetConsumerRequest, VerifyConsumerCommand, VerifyConsumerReply,
        consumer_service_client::ConsumerServiceClient, verify_consumer_reply::Outcome,
    },
};
use redis::AsyncCommands;
use test_support::{ServiceUnderTest, TestEnv};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(20);

/// A running service with a gRPC client.
struct App {
    service: ServiceUnderTest,
    grpc: ConsumerServiceClient<Channel>,
}

impl App {
    async fn stop(self) -> anyhow::Result<()> {
        self.service.stop().await
    }
}

/// Starts consumer_service with `fixtures` in the test's namespace and waits until
/// health says SERVING (its command consumer is registered).
async fn spawn(env: &TestEnv, fixtures: Fixtures) -> anyhow::Result<App> {
    env.track_queue(COMMAND_QUEUE);
    let settings = Settings { fixtures, ..Settings::new(env.settings())? };
    let service = ServiceUnderTest::start(|token| run(settings, token), GRPC_SERVICE_NAME, WAIT).await?;
    let grpc = ConsumerServiceClient::new(service.channel().await?);
    Ok(App { service, grpc })
}

fn builtin() -> Fixtures {
    Fixtures::builtin().expect("built-in fixtures parse")
}

fn order_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Sends VerifyConsumer and returns its reply, checking it answers this message.
async fn verify(env: &TestEnv, message_id: &str, consumer_id: i64) -> anyhow::Result<VerifyConsumerReply> {
    let command = VerifyConsumerCommand { order_id: order_id(), consumer_id };
    env.call(COMMAND_QUEUE, message_id, &command.order_id, &command, None, WAIT).await
}

fn failure_code(reply: &VerifyConsumerReply) -> Option<&str> {
    match &reply.outcome {
        Some(Outcome::Failure(Failure { code, transient: false, .. })) => Some(code),
        _ => None,
    }
}

async fn status_of(app: &mut App, consumer_id: i64) -> anyhow::Result<PbStatus> {
    let consumer = app.grpc.get_consumer(GetConsumerRequest { consumer_id }).await?.into_inner();
    Ok(consumer.status())
}

#[tokio::test]
async fn an_active_consumer_is_verified() -> anyhow::Result<()> {
    let env = TestEnv::new("consumer-ok").await?;
    let mut app = spawn(&env, builtin()).await?;

    let reply = verify(&env, "m-alice", 1).await?;
    assert_eq!(reply.outcome, Some(Outcome::Success(ConsumerVerified { consumer_id: 1 })));
    assert_eq!(status_of(&mut app, 1).await?, PbStatus::Active);

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_suspended_consumer_is_refused_with_consumer_suspended() -> anyhow::Result<()> {
    let env = TestEnv::new("consumer-suspended").await?;
    let mut app = spawn(&env, builtin()).await?;

    let reply = verify(&env, "m-bob", 2).await?;
    assert_eq!(failure_code(&reply), Some(CONSUMER_SUSPENDED), "{reply:?}");
    assert_eq!(status_of(&mut app, 2).await?, PbStatus::Suspended);

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn an_unknown_consumer_is_refused_with_consumer_not_found() -> anyhow::Result<()> {
    let env = TestEnv::new("consumer-unknown").await?;
    let mut app = spawn(&env, builtin()).await?;

    let reply = verify(&env, "m-nobody", 99).await?;
    assert_eq!(failure_code(&reply), Some(CONSUMER_NOT_FOUND), "{reply:?}");
    let missing = app.grpc.get_consumer(GetConsumerRequest { consumer_id: 99 }).await.expect_err("no consumer 99");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn get_consumer_returns_the_fixture_and_refuses_a_non_positive_id() -> anyhow::Result<()> {
    let env = TestEnv::new("consumer-read").await?;
    let mut app = spawn(&env, builtin()).await?;

    let carol = app.grpc.get_consumer(GetConsumerRequest { consumer_id: 3 }).await?.into_inner();
    assert_eq!((carol.consumer_id, carol.name.as_str(), carol.status()), (3, "Carol", PbStatus::Active));
    let invalid = app.grpc.get_consumer(GetConsumerRequest { consumer_id: 0 }).await.expect_err("id 0 is invalid");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(invalid.message().contains("consumer_id"), "{}", invalid.message());

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_redelivered_command_gets_the_stored_reply_even_after_the_consumer_changed() -> anyhow::Result<()> {
    let env = TestEnv::new("consumer-dup").await?;
    let app = spawn(&env, builtin()).await?;

    let first = verify(&env, "m-dup", 2).await?;
    assert_eq!(failure_code(&first), Some(CONSUMER_SUSPENDED));
    let second = verify(&env, "m-dup", 2).await?;
    assert_eq!(second, first);
    app.stop().await?;

    // Restart with Bob reinstated: the fixture record is overwritten, but the
    // command already answered keeps its answer; only a new command sees the change.
    let mut fixtures = builtin();
    fixtures.consumers = vec![Consumer { consumer_id: 2, name: "Bob".into(), status: ConsumerStatus::Active }];
    let mut app = spawn(&env, fixtures).await?;
    assert_eq!(status_of(&mut app, 2).await?, PbStatus::Active);
    let third = verify(&env, "m-dup", 2).await?;
    assert_eq!(third, first);
    let fresh = verify(&env, "m-new", 2).await?;
    assert_eq!(fresh.outcome, Some(Outcome::Success(ConsumerVerified { consumer_id: 2 })));

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn undecodable_and_unknown_messages_are_dead_lettered_and_the_service_keeps_going() -> anyhow::Result<()> {
    let env = TestEnv::new("consumer-dlq").await?;
    let app = spawn(&env, builtin()).await?;

    let props = |message_id: &str, type_name: &str| {
        BasicProperties::default()
            .with_message_id(message_id.into())
            .with_correlation_id(order_id().as_str().into())
            .with_type(type_name.into())
            .with_reply_to(env.reply_queue().into())
    };
    // A truncated varint: not a protobuf message at all.
    env.send_raw(COMMAND_QUEUE, &[0xff, 0xff, 0xff], props("m-garbage", &VerifyConsumerCommand::full_name())).await?;
    env.send_raw(COMMAND_QUEUE, b"", props("m-unknown", "ftgo.consumer.v1.NoSuchCommand")).await?;
    // A well-formed command about another order than the envelope names (and an
    // empty one, which names none): the reply would go to the wrong saga.
    let other = VerifyConsumerCommand { order_id: order_id(), consumer_id: 1 };
    env.send_command(COMMAND_QUEUE, "m-other-order", &order_id(), &other, None).await?;
    env.send_raw(COMMAND_QUEUE, b"", props("m-empty", &VerifyConsumerCommand::full_name())).await?;

    // Messages are handled concurrently, so they may be dead-lettered in any order.
    let dead = env.wait_dead_letters(COMMAND_QUEUE, 4, WAIT).await?;
    let found: std::collections::BTreeMap<&str, &str> =
        dead.iter().map(|d| (d.message_id.as_str(), d.reason.as_deref().unwrap_or_default())).collect();
    assert_eq!(found.len(), 4, "{found:?}");
    let reason = |id: &str| found.get(id).copied().unwrap_or_default();
    assert!(reason("m-garbage").contains("malformed"), "{found:?}");
    assert!(reason("m-unknown").contains("unknown command type"), "{found:?}");
    for id in ["m-other-order", "m-empty"] {
        assert!(reason(id).contains("is not the envelope's correlation_id"), "{found:?}");
    }

    let reply = verify(&env, "m-after", 1).await?;
    assert_eq!(reply.outcome, Some(Outcome::Success(ConsumerVerified { consumer_id: 1 })));
    assert!(env.get(env.reply_queue()).await?.is_none(), "a refused command was answered");
    let keys = Keys::new(env.namespace.key_prefix(KEY_PREFIX));
    let stored: bool = env.redis.clone().exists(keys.processed("m-other-order")).await?;
    assert!(!stored, "a refused command stored an outcome");

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn an_expired_command_is_refused_without_a_reply_or_a_stored_outcome() -> anyhow::Result<()> {
    let env = TestEnv::new("consumer-expired").await?;
    let app = spawn(&env, builtin()).await?;

    let command = VerifyConsumerCommand { order_id: order_id(), consumer_id: 1 };
    env.send_command(COMMAND_QUEUE, "m-expired", &command.order_id, &command, Some(now_millis() - 1_000)).await?;
    // A later command on the same queue: once it is answered, the expired one has
    // been taken off the queue (refused by the service or dropped by the broker).
    let reply = verify(&env, "m-live", 3).await?;
    assert_eq!(reply.outcome, Some(Outcome::Success(ConsumerVerified { consumer_id: 3 })));

    let keys = Keys::new(env.namespace.key_prefix(KEY_PREFIX));
    let stored: bool = env.redis.clone().exists(keys.processed("m-expired")).await?;
    assert!(!stored, "an expired command stored an outcome");
    assert!(env.get(env.reply_queue()).await?.is_none(), "an expired command was answered");

    app.stop().await?;
    env.cleanup().await;
    Ok(())
}
