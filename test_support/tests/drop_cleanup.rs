//! A test that panics before its clean-up still leaves nothing behind: dropping a
//! [`TestEnv`] deletes its queues, dead-letter exchanges and keys.

use std::time::Duration;

use messaging::{QueueSpec, topology::QueueType};
use redis::AsyncCommands;
use test_support::{TestEnv, amqp_url, existing_topology, redis_url};

/// Makes what a test makes in its namespace: a tracked queue (with its
/// dead-letter queue and exchange) and a key. Returns the queue's full name and
/// the key.
async fn populate(env: &mut TestEnv) -> anyhow::Result<(String, String)> {
    env.track_queue("drop.commands");
    let queue = env.queue("drop.commands");
    let channel = env.broker.channel().await?;
    QueueSpec::new(queue.clone()).declare(&channel, QueueType::Classic, Some(Duration::from_secs(600))).await?;
    let key = env.namespace.key_prefix("drop") + "k";
    let () = env.redis.set(&key, "v").await?;
    Ok((queue, key))
}

/// What is left of the namespace: the queues and exchange that exist, and
/// whether the key does.
async fn left(queue: &str, key: &str) -> anyhow::Result<(Vec<String>, bool)> {
    let amqp = lapin::Connection::connect(amqp_url().as_str(), lapin::ConnectionProperties::default()).await?;
    let topology = existing_topology(&amqp, &[queue.to_owned()]).await?;
    let _ = amqp.close(200, "done".into()).await;
    let mut redis = redis::Client::open(redis_url())?.get_multiplexed_async_connection().await?;
    let exists: bool = redis.exists(key).await?;
    Ok((topology, exists))
}

#[tokio::test]
async fn a_dropped_env_deletes_its_namespace() -> anyhow::Result<()> {
    let mut env = TestEnv::new("drop").await?;
    let (queue, key) = populate(&mut env).await?;
    assert_eq!(left(&queue, &key).await?.0.len(), 3, "the queue, its dead-letter queue and exchange were made");

    drop(env);

    assert_eq!(left(&queue, &key).await?, (Vec::new(), false));
    Ok(())
}

#[tokio::test]
async fn a_test_that_panics_leaves_nothing_behind() -> anyhow::Result<()> {
    let (made_tx, made_rx) = tokio::sync::oneshot::channel();
    let failing_test = tokio::spawn(async move {
        let mut env = TestEnv::new("panic").await.expect("test env");
        let made = populate(&mut env).await.expect("populated");
        let _ = made_tx.send(made);
        panic!("the test under test fails before its clean-up");
    });
    let (queue, key) = made_rx.await?;
    let joined = failing_test.await;
    assert!(joined.is_err_and(|e| e.is_panic()), "the task panicked");

    assert_eq!(left(&queue, &key).await?, (Vec::new(), false));
    Ok(())
}

#[tokio::test]
async fn cleanup_still_deletes_and_the_drop_does_nothing_more() -> anyhow::Result<()> {
    let mut env = TestEnv::new("clean").await?;
    let (queue, key) = populate(&mut env).await?;

    env.cleanup().await;

    assert_eq!(left(&queue, &key).await?, (Vec::new(), false));
    Ok(())
}
