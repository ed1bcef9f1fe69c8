//! Queue topology. Every consumed queue `Q` gets a fanout dead-letter exchange
//! `Q.dlx` and a queue `Q.dlq` bound to it; `Q` names `Q.dlx` as its
//! `x-dead-letter-exchange`, so rejected and expired messages land in `Q.dlq`.
//!
//! Queue arguments are fixed at declaration (re-declaring with other arguments
//! fails with PRECONDITION_FAILED), so they are derived from settings in exactly
//! one place, here. Declaring is idempotent and done by every process at start-up
//! and after every reconnect: publishers declare the queues they publish to, so a
//! message sent before its consumer ever started is kept, not dropped.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable, LongString},
};

/// The RabbitMQ queue type; quorum for clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

/// A durable queue with its dead-letter exchange and queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
}

impl QueueSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.name)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// Declares the queue, its dead-letter exchange and queue, and the binding.
    pub async fn declare(
        &self,
        channel: &Channel,
        queue_type: QueueType,
        expires: Option<Duration>,
    ) -> Result<(), lapin::Error> {
        let dlx = self.dead_letter_exchange();
        let dlq = self.dead_letter_queue();
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel.exchange_declare(dlx.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default()).await?;
        let queue_options = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare(dlq.as_str().into(), queue_options, base_arguments(queue_type, expires)).await?;
        channel
            .queue_bind(
                dlq.as_str().into(),
                dlx.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut args = base_arguments(queue_type, expires);
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(dlx.into_bytes())));
        channel.queue_declare(self.name.as_str().into(), queue_options, args).await?;
        Ok(())
    }

    /// Deletes the queue, its dead-letter queue and exchange (tests clean up).
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        channel.queue_delete(self.name.as_str().into(), QueueDeleteOptions::default()).await?;
        channel.queue_delete(self.dead_letter_queue().as_str().into(), QueueDeleteOptions::default()).await?;
        channel.exchange_delete(self.dead_letter_exchange().as_str().into(), Default::default()).await?;
        Ok(())
    }
}

fn base_arguments(queue_type: QueueType, expires: Option<Duration>) -> FieldTable {
    let mut args = FieldTable::default();
    let kind = match queue_type {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    };
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from(kind.as_bytes().to_vec())));
    if let Some(expires) = expires {
        args.insert("x-expires".into(), AMQPValue::LongLongInt(expires.as_millis() as i64));
    }
    args
}
