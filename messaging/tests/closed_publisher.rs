//! A closed publisher stays closed. A publish that comes after `close()` (a
//! handler still running when shutdown's drain gave up) fails with
//! `PublishError::Closed`, and does not open a channel, which would declare the
//! publisher's queues again after a clean-up had deleted them.

use lapin::options::QueueDeclareOptions;
use messaging::{Broker, Envelope, OutgoingMessage, PublishError, Publisher, QueueSpec};
use test_support::TestEnv;

/// Whether `queue` exists, asked on a channel of its own (a passive declare of a
/// missing queue closes the channel it was asked on).
async fn exists(broker: &Broker, queue: &str) -> anyhow::Result<bool> {
    let channel = broker.channel().await?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    Ok(channel.queue_declare(queue.into(), passive, Default::default()).await.is_ok())
}

#[tokio::test]
async fn a_publish_after_close_fails_and_declares_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new("closedpub").await?;
    env.track_queue("late");
    let queue = QueueSpec::new(env.queue("late"));
    let broker = Broker::new(env.broker.settings().clone());
    let publisher = Publisher::new(broker.clone(), vec![queue.clone()]);
    publisher.ready().await?;
    assert!(exists(&env.broker, &queue.name).await?, "ready() declares the publisher's queues");

    publisher.close().await;
    queue.delete(&env.broker.channel().await?).await?;
    let message = OutgoingMessage {
        queue: queue.name.clone(),
        envelope: Envelope { message_id: "late-1".into(), ..Default::default() },
        payload: b"late".to_vec(),
    };
    let late = publisher.publish(&message).await;
    assert!(matches!(late, Err(PublishError::Closed)), "a publish after close(): {late:?}");
    assert!(!exists(&env.broker, &queue.name).await?, "the deleted queue was declared again");

    broker.close().await;
    env.cleanup().await;
    Ok(())
}
