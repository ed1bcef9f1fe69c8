//! A watch stream survives the loss of its replica's Redis subscription (a Redis
//! restart, `CLIENT KILL`): the subscription comes back on a new connection and
//! the watcher is woken by the next save, not by its periodic recheck.
//!
//! Like the chaos runner, it kills only what it has proven to be its own: the
//! pub/sub client whose address is a socket of this test process (`ss`). That is
//! why it is a test binary of its own: in `orchestrator.rs` the tests run side by
//! side in one process, each with its replica's subscription, and the sockets
//! would not tell them apart.

use std::time::Duration;

use order_service::{
    Settings,
    create_order_saga::{ACCOUNTING_QUEUE, CONSUMER_QUEUE, REPLY_QUEUE, RESTAURANT_QUEUE},
};
use proto::{
    common::v1::{Failure, LineItem},
    consumer::v1 as consumer,
    order::v1::{CreateOrderRequest, SagaEventType, WatchOrderRequest, order_service_client::OrderServiceClient},
    restaurant::v1 as restaurant,
};
use service_kit::CancellationToken;
use test_support::{TestEnv, eventually, grpc_channel, wait_serving};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_watch_is_still_woken_by_saves_after_its_subscription_connection_is_killed() {
    let env = TestEnv::new("order-watch-kill").await.expect("env");
    for queue in [CONSUMER_QUEUE, RESTAURANT_QUEUE, ACCOUNTING_QUEUE, REPLY_QUEUE] {
        env.track_queue(queue);
    }
    let mut settings = Settings::local();
    settings.common = env.settings();
    // Without a wake-up the stream would not read again for an hour.
    settings.watch_recheck = Duration::from_secs(3600);
    let shutdown = CancellationToken::new();
    let service = order_service::run(settings, shutdown.clone()).await.expect("order_service starts");
    wait_serving(service.grpc_addr, WAIT).await.expect("serving");
    let mut client = OrderServiceClient::new(grpc_channel(service.grpc_addr).await.expect("channel"));
    let store = saga::store::SagaStore::new(env.redis.clone(), env.namespace.key_prefix("order"));
    let channel = store.events_channel();
    let mut redis = env.redis.clone();
    let subscribers = async |redis: &mut redis::aio::ConnectionManager| -> anyhow::Result<i64> {
        let (_, n): (String, i64) = redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(redis).await?;
        Ok(n)
    };
    assert_eq!(subscribers(&mut redis).await.expect("numsub"), 1, "the replica is subscribed");

    let request = CreateOrderRequest {
        consumer_id: 1,
        restaurant_id: 1,
        items: vec![LineItem { menu_item_id: "chicken-vindaloo".into(), quantity: 2 }],
        idempotency_key: String::new(),
    };
    let order_id = client.create_order(request).await.expect("create").into_inner().order_id;
    let mut stream = client
        .watch_order(WatchOrderRequest { order_id: order_id.clone(), after_event_id: String::new() })
        .await
        .expect("watch")
        .into_inner();
    let mut next = async || tokio::time::timeout(WAIT, stream.message()).await.expect("an event in time").expect("ok");
    while next().await.expect("replayed event").r#type != SagaEventType::CommandSent as i32 {}
    // Marked as a second replica's watch would mark it: the replica's own saves
    // would otherwise feed its watcher directly, and never use the subscription.
    let _: i64 = redis::AsyncCommands::hset(&mut redis, store.state_key(&order_id), "w", "*").await.expect("mark");

    // Drop the subscription, and store the next event at once, without waiting for
    // the new subscription: the event may land before it is back.
    let id = own_subscription(&mut redis).await.expect("the replica's subscription is listed");
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut redis).await.expect("kill");
    assert_eq!(killed, 1, "the replica's subscription was killed");
    let (command, _) = env.take_command(CONSUMER_QUEUE, WAIT).await.expect("VerifyConsumer");
    let verified = consumer::VerifyConsumerReply {
        outcome: Some(consumer::verify_consumer_reply::Outcome::Success(consumer::ConsumerVerified { consumer_id: 1 })),
    };
    env.reply(&command, &verified).await.expect("reply");
    let event = next().await.expect("the event stored around the reconnect");
    assert_eq!(event.r#type, SagaEventType::StepSucceeded as i32);
    assert_eq!(next().await.expect("stored with it").r#type, SagaEventType::CommandSent as i32);

    // Once subscribed again, the next save wakes it through the new subscription.
    eventually(WAIT, || async { Ok((subscribers(&mut env.redis.clone()).await? == 1).then_some(())) })
        .await
        .expect("subscribed again");
    // To the replica's own channel as well (the sagas it alone watches).
    let own: Vec<String> =
        redis::cmd("PUBSUB").arg("CHANNELS").arg(format!("{channel}:*")).query_async(&mut redis).await.expect("list");
    assert_eq!(own.len(), 1, "the replica's own channel is subscribed again: {own:?}");
    let (command, _) = env.take_command(RESTAURANT_QUEUE, WAIT).await.expect("CreateTicket");
    let refused = restaurant::CreateTicketReply {
        outcome: Some(restaurant::create_ticket_reply::Outcome::Failure(Failure::business(
            "RESTAURANT_CLOSED",
            "closed for the test",
        ))),
    };
    env.reply(&command, &refused).await.expect("reply");
    let failed = next().await.expect("the next save's event");
    assert_eq!((failed.r#type, failed.code.as_str()), (SagaEventType::StepFailed as i32, "RESTAURANT_CLOSED"));
    shutdown.cancel();
    let _ = service.wait().await;
    env.cleanup().await;
}

/// The id of the pub/sub client of Redis whose address is a socket of this process:
/// the in-process order_service's subscription (one replica, one subscription).
async fn own_subscription(redis: &mut redis::aio::ConnectionManager) -> anyhow::Result<u64> {
    let ss = std::process::Command::new("ss").args(["-Htnp", "state", "established"]).output()?;
    let own = format!("pid={},", std::process::id());
    let ports: Vec<String> = String::from_utf8_lossy(&ss.stdout)
        .lines()
        .filter(|line| line.contains(&own))
        .filter_map(|line| line.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    let list: String = redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query_async(redis).await?;
    list.lines()
        .filter(|line| {
            line.split(' ').any(|field| field.strip_prefix("addr=").is_some_and(|a| ports.iter().any(|p| p == a)))
        })
        .find_map(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")).and_then(|id| id.parse().ok()))
        .ok_or_else(|| anyhow::anyhow!("no pub/sub client of this process in CLIENT LIST"))
}
