//! Batched acks on the real broker: deliveries handled out of order, one requeued
//! once and one dead-lettered, are each settled exactly once. After the consumer
//! stops, nothing is left in the queue (a delivery never acked would be back in it
//! once its channel closed), the requeued one was handled twice (a `multiple` ack
//! that covered it before its requeue would have lost it), and the dead-letter queue
//! holds the one. The consumer's counters say the same: one dead-lettered, one
//! requeued, the rest acked.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use lapin::BasicProperties;
use messaging::{
    Broker, Disposition, IncomingMessage, MessageHandler, Publisher, QueueSpec,
    consumer::{ConsumerSettings, run_consumer},
};
use metrics::{SharedString, Unit};
use metrics_util::{
    CompositeKey,
    debugging::{DebugValue, DebuggingRecorder},
};
use test_support::{TestEnv, eventually};
use tokio_util::sync::CancellationToken;

const MESSAGES: usize = 40;
const REQUEUED: &str = "m-3";
const DEAD: &str = "m-7";

/// Counts deliveries by message id; finishes them in a scrambled order.
#[derive(Default)]
struct Handler {
    seen: Mutex<HashMap<String, u32>>,
}

impl Handler {
    fn count(&self, id: &str) -> u32 {
        self.seen.lock().map(|seen| seen.get(id).copied().unwrap_or(0)).unwrap_or(0)
    }

    fn distinct(&self) -> usize {
        self.seen.lock().map(|seen| seen.len()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl MessageHandler for Handler {
    async fn handle(&self, message: IncomingMessage<'_>) -> Disposition {
        let id = message.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
        let times = {
            let Ok(mut seen) = self.seen.lock() else { return Disposition::Retry("lock".into()) };
            let times = seen.entry(id.clone()).or_default();
            *times += 1;
            *times
        };
        // Later messages often finish first, so acks arrive out of delivery order.
        let n: u64 = id.trim_start_matches("m-").parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis((n * 7) % 23)).await;
        match id.as_str() {
            REQUEUED if times == 1 => Disposition::Retry("first delivery fails".into()),
            DEAD => Disposition::DeadLetter("cannot be handled".into()),
            _ => Disposition::Ack,
        }
    }
}

/// The counters of a snapshot (which drains the recorder: take one).
type Counters = Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>;

/// The value of counter `name` whose labels include every one of `labels`.
fn counter(counters: &Counters, name: &str, labels: &[(&str, &str)]) -> u64 {
    counters
        .iter()
        .filter(|(key, ..)| {
            let key = key.key();
            key.name() == name
                && labels.iter().all(|(k, v)| key.labels().any(|label| label.key() == *k && label.value() == *v))
        })
        .map(|(.., value)| if let DebugValue::Counter(n) = value { *n } else { 0 })
        .sum()
}

#[tokio::test]
async fn out_of_order_acks_requeues_and_dead_letters_each_settle_once() -> anyhow::Result<()> {
    // This test binary's only test, so the global recorder is its own.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;
    let env = TestEnv::new("acks").await?;
    env.track_queue("acks");
    let queue = QueueSpec::new(env.queue("acks"));
    let broker = Broker::new(env.broker.settings().clone());
    let publisher = Publisher::new(broker.clone(), Vec::new());
    let handler = Arc::new(Handler::default());
    let settings = ConsumerSettings {
        retry_delay: Duration::from_millis(20),
        ack_delay: Duration::from_millis(5),
        ..ConsumerSettings::new(queue.clone(), 16)
    };
    let (ready_tx, mut ready) = tokio::sync::watch::channel(false);
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        broker.clone(),
        publisher.clone(),
        settings,
        handler.clone(),
        ready_tx,
        shutdown.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(20), ready.wait_for(|ready| *ready)).await??;

    for i in 0..MESSAGES {
        let properties = BasicProperties::default().with_message_id(format!("m-{i}").into()).with_delivery_mode(2);
        env.send_raw("acks", b"payload", properties).await?;
    }
    eventually(Duration::from_secs(30), || async {
        Ok((handler.distinct() == MESSAGES && handler.count(REQUEUED) == 2).then_some(()))
    })
    .await?;
    let dead = env.wait_dead_letters("acks", 1, Duration::from_secs(10)).await?;
    // Let the last batch of acks go out, then stop: what is unacked returns to the queue.
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), consumer).await??;
    publisher.close().await;
    broker.close().await;

    assert_eq!(env.queue_len(&queue.name).await?, 0, "every delivery was acked");
    for i in 0..MESSAGES {
        let id = format!("m-{i}");
        let expected = if id == REQUEUED { 2 } else { 1 };
        assert_eq!(handler.count(&id), expected, "{id} handled {expected} time(s)");
    }
    let dead_ids: Vec<&str> = dead.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(dead_ids, [DEAD]);
    let counters = snapshotter.snapshot().into_vec();
    let messages = |disposition| {
        counter(&counters, "ftgo_messages_total", &[("queue", &queue.name), ("disposition", disposition)])
    };
    assert_eq!(messages("ack"), MESSAGES as u64 - 1, "acked: all but the dead-lettered one");
    assert_eq!(messages("retry"), 1);
    assert_eq!(messages("dead_letter"), 1);
    assert_eq!(counter(&counters, "ftgo_messages_dead_lettered_total", &[("queue", &queue.name)]), 1);
    env.cleanup().await;
    Ok(())
}
