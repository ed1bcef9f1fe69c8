//! A supervised consumer loop. It (re)connects with backoff, declares its queue,
//! sets the prefetch and consumes; each delivery is handled in its own task, so up
//! to `prefetch` messages are in flight at once. A delivery is acknowledged only
//! after its handler returns, i.e. after its effects are stored and any message it
//! causes is confirmed; if the process dies first, the broker redelivers it. Acks
//! go out in batches, `ack_delay` after the first of them (the private `acks` module).
//!
//! On shutdown the loop cancels its consumer (no new deliveries), waits for the
//! in-flight handlers up to a cap, and returns.
//!
//! Metrics: `ftgo_messages_total{queue, disposition}` and
//! `ftgo_messages_dead_lettered_total{queue}`.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use lapin::{
    BasicProperties,
    message::Delivery,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable, LongString},
};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{Broker, Publisher, QueueSpec, acks::Acks, broker::backoff, envelope};

/// One delivery as a handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct IncomingMessage<'a> {
    pub queue: &'a str,
    pub properties: &'a BasicProperties,
    pub payload: &'a [u8],
    pub redelivered: bool,
}

/// What to do with a delivery once its handler is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Handled (or deliberately dropped as a duplicate, stale or expired message).
    Ack,
    /// Can never be handled (undecodable, unknown type): to the dead-letter queue.
    DeadLetter(String),
    /// A transient fault (Redis or the broker unreachable): requeue after a pause.
    Retry(String),
}

/// Handles deliveries of one queue.
#[async_trait::async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    async fn handle(&self, message: IncomingMessage<'_>) -> Disposition;
}

/// Settings of one consumer loop.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub queue: QueueSpec,
    pub prefetch: u16,
    /// How long shutdown waits for in-flight handlers.
    pub drain_timeout: Duration,
    /// Pause before a `Retry` delivery is requeued, so a persistent fault does not
    /// turn into a hot redelivery loop.
    pub retry_delay: Duration,
    /// How long the first handled delivery's ack waits for others to share its
    /// frames (0: as soon as the batcher runs).
    pub ack_delay: Duration,
}

/// The default [`ConsumerSettings::ack_delay`].
pub const DEFAULT_ACK_DELAY: Duration = Duration::from_millis(2);

impl ConsumerSettings {
    pub fn new(queue: QueueSpec, prefetch: u16) -> Self {
        Self {
            queue,
            prefetch,
            drain_timeout: Duration::from_secs(10),
            retry_delay: Duration::from_millis(250),
            ack_delay: DEFAULT_ACK_DELAY,
        }
    }
}

/// Consumes `settings.queue` until `shutdown`, reconnecting after any failure.
/// `ready` is true while the consumer is registered with the broker.
pub async fn run_consumer(
    broker: Broker,
    publisher: Publisher,
    settings: ConsumerSettings,
    handler: Arc<dyn MessageHandler>,
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        match consume(&broker, &publisher, &settings, &handler, &ready, &shutdown, &mut failures).await {
            Ok(()) => break,
            Err(error) => {
                ready.send_replace(false);
                let delay = backoff(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(queue = %settings.queue.name, %error, retry_in_ms = delay.as_millis() as u64, "consumer lost; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }
    ready.send_replace(false);
    tracing::info!(queue = %settings.queue.name, "consumer stopped");
}

async fn consume(
    broker: &Broker,
    publisher: &Publisher,
    settings: &ConsumerSettings,
    handler: &Arc<dyn MessageHandler>,
    ready: &watch::Sender<bool>,
    shutdown: &CancellationToken,
    failures: &mut u32,
) -> Result<(), lapin::Error> {
    let channel = broker.channel().await?;
    let broker_settings = broker.settings();
    settings.queue.declare(&channel, broker_settings.queue_type, broker_settings.queue_expires).await?;
    channel.basic_qos(settings.prefetch, BasicQosOptions::default()).await?;
    let tag = format!("{}.{}", settings.queue.name, uuid::Uuid::new_v4().simple());
    let mut consumer = channel
        .basic_consume(
            settings.queue.name.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    *failures = 0;
    ready.send_replace(true);
    tracing::info!(queue = %settings.queue.name, prefetch = settings.prefetch, "consuming");

    let (acks, batcher) = Acks::start(channel.clone(), settings.ack_delay, settings.queue.name.clone());
    let counters = Arc::new(Counters::new(&settings.queue.name));
    let tasks = TaskTracker::new();
    let result = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                ready.send_replace(false);
                if let Err(error) = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await {
                    tracing::debug!(%error, "cancelling the consumer");
                }
                break Ok(());
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    acks.delivered(delivery.delivery_tag);
                    let handler = handler.clone();
                    let publisher = publisher.clone();
                    let queue = settings.queue.clone();
                    let retry_delay = settings.retry_delay;
                    let acks = acks.clone();
                    let counters = counters.clone();
                    tasks.spawn(async move {
                        dispose(delivery, &*handler, &publisher, &queue, retry_delay, &acks, &counters).await
                    });
                }
                Some(Err(error)) => break Err(error),
                None => break Err(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                    lapin::ChannelState::Closed, "the broker ended the consumer",
                ))),
            }
        }
    };
    tasks.close();
    let drained = tokio::time::timeout(settings.drain_timeout, tasks.wait()).await.is_ok();
    if !drained {
        tracing::warn!(queue = %settings.queue.name, "in-flight messages not finished in time; the broker will redeliver them");
    }
    // The batcher ends once the tasks' handles are gone, after sending the acks it
    // holds; tasks still running past the drain keep theirs, so it is not awaited then.
    drop(acks);
    if drained {
        let _ = tokio::time::timeout(settings.drain_timeout, batcher).await;
    } else {
        batcher.abort();
    }
    if result.is_ok() {
        let _ = channel.close(200, "shutdown".into()).await;
    }
    result
}

/// The consumer's metric handles, registered once per consumer rather than looked
/// up (and their labels allocated) for every message.
struct Counters {
    ack: metrics::Counter,
    retry: metrics::Counter,
    dead_letter: metrics::Counter,
    dead_lettered: metrics::Counter,
}

impl Counters {
    fn new(queue: &str) -> Self {
        let disposition = |outcome: &'static str| metrics::counter!("ftgo_messages_total", "queue" => queue.to_owned(), "disposition" => outcome);
        Self {
            ack: disposition("ack"),
            retry: disposition("retry"),
            dead_letter: disposition("dead_letter"),
            dead_lettered: metrics::counter!("ftgo_messages_dead_lettered_total", "queue" => queue.to_owned()),
        }
    }
}

async fn dispose(
    delivery: Delivery,
    handler: &dyn MessageHandler,
    publisher: &Publisher,
    queue: &QueueSpec,
    retry_delay: Duration,
    acks: &Acks,
    counters: &Counters,
) {
    let message = IncomingMessage {
        queue: &queue.name,
        properties: &delivery.properties,
        payload: &delivery.data,
        redelivered: delivery.redelivered,
    };
    // Trace level: the handler's own span (debug) carries the same ids, and is what
    // the span exporter takes.
    let span = tracing::trace_span!(
        "delivery",
        queue = %queue.name,
        message_id = delivery.properties.message_id().as_ref().map(|s| s.as_str()).unwrap_or(""),
        order_id = delivery.properties.correlation_id().as_ref().map(|s| s.as_str()).unwrap_or(""),
    );
    let disposition = handler.handle(message).instrument(span).await;
    match &disposition {
        Disposition::Ack => &counters.ack,
        Disposition::Retry(_) => &counters.retry,
        Disposition::DeadLetter(_) => &counters.dead_letter,
    }
    .increment(1);
    let tag = delivery.delivery_tag;
    let result = match disposition {
        Disposition::Ack => {
            acks.ack(tag);
            return;
        }
        Disposition::Retry(reason) => {
            tracing::debug!(queue = %queue.name, %reason, "requeueing after a transient failure");
            tokio::time::sleep(retry_delay).await;
            delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await
        }
        Disposition::DeadLetter(reason) => {
            counters.dead_lettered.increment(1);
            dead_letter(&delivery, publisher, queue, &reason).await
        }
    };
    // Sent (or the channel is gone): a batched `multiple` ack may pass this tag now.
    acks.settled(tag);
    if let Err(error) = result {
        // The channel is gone; the broker redelivers the message to another consumer.
        tracing::debug!(queue = %queue.name, %error, "could not settle a delivery");
    }
}

/// Sends a delivery to its queue's dead-letter exchange with the reason in a header
/// (so the dead-letter queue shows why), then acks it. If that publish fails, the
/// delivery is rejected without requeue, which dead-letters it through the queue's
/// `x-dead-letter-exchange` (reason `rejected`).
async fn dead_letter(
    delivery: &Delivery,
    publisher: &Publisher,
    queue: &QueueSpec,
    reason: &str,
) -> Result<bool, lapin::Error> {
    let props = &delivery.properties;
    tracing::warn!(
        queue = %queue.name,
        message_id = props.message_id().as_ref().map(|s| s.as_str()).unwrap_or("-"),
        correlation_id = props.correlation_id().as_ref().map(|s| s.as_str()).unwrap_or("-"),
        kind = props.kind().as_ref().map(|s| s.as_str()).unwrap_or("-"),
        bytes = delivery.data.len(),
        %reason,
        "dead-lettering a message that cannot be handled"
    );
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        envelope::HEADER_DEAD_LETTER_REASON.into(),
        AMQPValue::LongString(LongString::from(reason.as_bytes().to_vec())),
    );
    headers.insert(
        envelope::HEADER_ORIGINAL_QUEUE.into(),
        AMQPValue::LongString(LongString::from(queue.name.as_bytes().to_vec())),
    );
    // No expiration in the dead-letter queue: what is there stays until an operator looks.
    let mut copy = BasicProperties::default().with_headers(headers).with_delivery_mode(2);
    if let Some(v) = props.message_id() {
        copy = copy.with_message_id(v.clone());
    }
    if let Some(v) = props.correlation_id() {
        copy = copy.with_correlation_id(v.clone());
    }
    if let Some(v) = props.kind() {
        copy = copy.with_type(v.clone());
    }
    if let Some(v) = props.content_type() {
        copy = copy.with_content_type(v.clone());
    }
    if let Some(v) = props.reply_to() {
        copy = copy.with_reply_to(v.clone());
    }
    match publisher.publish_raw(&queue.dead_letter_exchange(), &queue.name, &delivery.data, copy).await {
        Ok(()) => delivery.ack(BasicAckOptions::default()).await,
        Err(error) => {
            tracing::warn!(queue = %queue.name, %error, "could not publish to the dead-letter exchange; rejecting instead");
            delivery.nack(BasicNackOptions { requeue: false, ..Default::default() }).await
        }
    }
}
