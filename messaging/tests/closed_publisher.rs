//! A closed publisher stays closed. A publish that comes after `close()` (a
//! handler still running when shutdown's drain gave up) fails with
//! `PublishError::Closed`, and does not open a channel, which would declare the
//! publisher's queues again after a clean-up had deleted them.

use messaging::{Broker, Envelope, OutgoingMessage, PublishError, Publisher, QueueSpec};
use test_support::{TestEnv, existing_topology};

#[tokio::test]
async fn a_publish_after_close_fails_and_declares_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new("closedpub").await?;
    env.track_queue("late");
    let queue = QueueSpec::new(env.queue("late"));
    let broker = Broker::new(env.broker.settings().clone());
    let publisher = Publisher::new(broker.clone(), vec![queue.clone()]);
    publisher.ready().await?;
    let amqp = env.broker.connection().await?;
    let declared = existing_topology(&amqp, std::slice::from_ref(&queue.name)).await?;
    assert!(declared.contains(&queue.name), "ready() declares the publisher's queues: {declared:?}");

    publisher.close().await;
    queue.delete(&env.broker.channel().await?).await?;
    let message = OutgoingMessage {
        queue: queue.name.clone(),
        envelope: Envelope { message_id: "late-1".into(), ..Default::default() },
        payload: b"late".to_vec(),
    };
    let late = publisher.publish(&message).await;
    assert!(matches!(late, Err(PublishError::Closed)), "a publish after close(): {late:?}");
    let declared = existing_topology(&amqp, std::slice::from_ref(&queue.name)).await?;
    assert!(!declared.contains(&queue.name), "the deleted queue was declared again: {declared:?}");

    broker.close().await;
    env.cleanup().await;
    Ok(())
}
