//! Confirmed publishing. Each publish waits for the broker's ack of that message
//! (publisher confirms), but many publishes run at once on the one channel, so the
//! window of outstanding confirms is as large as the callers' concurrency rather
//! than one message at a time.
//!
//! Publishes are `mandatory`: a message no queue would take comes back as an error
//! instead of vanishing. A publish whose confirm never arrives is unknown; callers
//! treat it as not sent and send again with the same `message_id`, which the
//! receivers' idempotency makes safe.
//!
//! Once closed, a publisher stays closed: a publish that comes late (a handler
//! still running after shutdown's drain) fails instead of opening a channel,
//! which would reconnect and declare its queues again after they were deleted.

use std::{sync::Arc, time::Duration};

use lapin::{Channel, Confirmation, options::BasicPublishOptions, options::ConfirmSelectOptions};
use tokio::sync::Mutex;

use crate::{Broker, OutgoingMessage, QueueSpec, envelope::now_millis};

/// Why a message may not have reached its queue.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("AMQP error while publishing: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue named {0:?} took the message")]
    Unroutable(String),
    #[error("no confirm from the broker within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("the publisher is closed")]
    Closed,
}

/// A confirm-mode channel shared by all tasks of a process.
#[derive(Clone)]
pub struct Publisher {
    broker: Broker,
    /// The open channel. A std mutex held only to clone or swap it, never across an
    /// await: every publish takes it, and an async mutex would hand it from task to
    /// task with a wake-up each when many transitions publish at once.
    channel: Arc<std::sync::Mutex<Option<Channel>>>,
    /// Held while a channel is (re)opened, so concurrent publishes open one;
    /// it holds whether [`Publisher::close`] has run, which no channel outlives.
    reopen: Arc<Mutex<bool>>,
    /// Queues declared on every new channel before the first publish.
    declare: Arc<Vec<QueueSpec>>,
    confirm_timeout: Duration,
}

impl Publisher {
    /// A publisher that declares `declare` (the queues it sends to) whenever it
    /// opens a channel.
    pub fn new(broker: Broker, declare: Vec<QueueSpec>) -> Self {
        Self {
            broker,
            channel: Arc::new(std::sync::Mutex::new(None)),
            reopen: Arc::new(Mutex::new(false)),
            declare: Arc::new(declare),
            confirm_timeout: Duration::from_secs(10),
        }
    }

    /// Opens (and declares) the channel now rather than at the first publish.
    pub async fn ready(&self) -> Result<(), PublishError> {
        self.channel().await.map(|_| ())
    }

    /// The slot of the open channel, also after a panic elsewhere poisoned the
    /// lock: no critical section here leaves it half-changed.
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Channel>> {
        self.channel.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The open channel, if it is still connected.
    fn connected(&self) -> Option<Channel> {
        self.slot().as_ref().filter(|channel| channel.status().connected()).cloned()
    }

    async fn channel(&self) -> Result<Channel, PublishError> {
        if let Some(channel) = self.connected() {
            return Ok(channel);
        }
        // Held until the new channel is in its slot; it guards the closed flag.
        let closed = self.reopen.lock().await;
        // Another publish may have opened one while this one waited.
        if let Some(channel) = self.connected() {
            return Ok(channel);
        }
        if *closed {
            return Err(PublishError::Closed);
        }
        let channel = self.broker.channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let settings = self.broker.settings();
        for spec in self.declare.iter() {
            spec.declare(&channel, settings.queue_type, settings.queue_expires).await?;
        }
        *self.slot() = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes to `message.queue` through the default exchange and waits for the
    /// broker's confirm.
    pub async fn publish(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        let result = self.publish_once(message).await;
        if let Err(PublishError::Amqp(_) | PublishError::ConfirmTimeout(_)) = &result {
            // The channel is suspect; the next publish opens a fresh one.
            self.slot().take();
        }
        result
    }

    async fn publish_once(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        let channel = self.channel().await?;
        let properties = message.envelope.to_properties(now_millis());
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let confirm = channel
            .basic_publish("".into(), message.queue.as_str().into(), options, &message.payload, properties)
            .await?;
        let confirmation = tokio::time::timeout(self.confirm_timeout, confirm)
            .await
            .map_err(|_| PublishError::ConfirmTimeout(self.confirm_timeout))??;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable(message.queue.clone())),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
        }
    }

    /// Closes the channel (at shutdown, before the connection), for good.
    pub async fn close(&self) {
        let taken = {
            *self.reopen.lock().await = true;
            self.slot().take()
        };
        if let Some(channel) = taken
            && channel.status().connected()
            && let Err(error) = channel.close(200, "shutdown".into()).await
        {
            tracing::debug!(%error, "closing the publisher channel");
        }
    }

    /// Publishes raw bytes with the given properties to an exchange (dead-lettering
    /// keeps the original properties), waiting for the confirm.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: lapin::BasicProperties,
    ) -> Result<(), PublishError> {
        let channel = self.channel().await?;
        let confirm = channel
            .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions::default(), payload, properties)
            .await?;
        match tokio::time::timeout(self.confirm_timeout, confirm)
            .await
            .map_err(|_| PublishError::ConfirmTimeout(self.confirm_timeout))??
        {
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            _ => Ok(()),
        }
    }
}
