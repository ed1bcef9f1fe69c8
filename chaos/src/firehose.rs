//! Captures the namespace's real commands and replies from RabbitMQ's firehose
//! (`amq.rabbitmq.trace`) so a duplicate fault can publish them again, with their
//! original properties, to their original queue.
//!
//! The one decision to know: a trace message carries the traced message's body
//! as its own body and the traced message's properties in its `properties`
//! header table, next to `exchange_name`, `routing_keys` (routing key plus CC and
//! BCC) and `connection` (`"<client ip:port> -> <broker ip:port>"`). Only
//! messages published to the default exchange and routed by one of the
//! namespace's four queue names are kept, and never those the runner published
//! itself (its own client port), so a duplicate is never duplicated again.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::Context;
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::index::sample};
use tokio::task::JoinHandle;

/// How many captured messages are kept (the most recent).
const KEEP: usize = 4000;
/// Duplicates are picked among this many of the most recent captures: recent
/// commands are still within their deadline, so the participants' idempotency
/// (not only their deadline check) is what refuses them.
const RECENT: usize = 200;
/// The `expiration` given to a republished command (see [`republish`]).
pub const COPY_EXPIRATION_MS: &str = "10000";

/// One captured message.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The queue it was published to (the routing key on the default exchange).
    pub queue: String,
    pub properties: BasicProperties,
    pub payload: Vec<u8>,
    pub at: Instant,
}

impl Captured {
    /// Replies go to the orchestrator's reply queue; everything else is a command.
    pub fn is_reply(&self) -> bool {
        self.queue.ends_with(".order_service.replies")
    }

    /// The command's absolute deadline (`x-deadline-ms`), if it has one.
    pub fn deadline_ms(&self) -> Option<i64> {
        let headers = self.properties.headers().as_ref()?;
        headers.inner().get(messaging::envelope::HEADER_DEADLINE).and_then(integer)
    }
}

/// The capture: the most recent messages of the namespace.
pub struct Capture {
    buffer: Mutex<VecDeque<Captured>>,
    seen: AtomicUsize,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Capture {
    /// Binds an exclusive, auto-deleted queue to the firehose (`publish.#`) on
    /// `connection` and keeps, in the background, what is published to `queues`.
    /// `own_ports` are the runner's own client ports, whose publishes are ignored.
    pub async fn start(
        connection: &Connection,
        queues: Vec<String>,
        own_ports: HashSet<u16>,
    ) -> anyhow::Result<Arc<Self>> {
        let channel = connection.create_channel().await?;
        let mut args = FieldTable::default();
        // The firehose sees every publish of the vhost (other test runs too): cap
        // the queue so a slow moment here never grows the broker's memory.
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(20_000));
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                args,
            )
            .await
            .context("declaring the firehose queue")?;
        channel
            .queue_bind(
                queue.name().as_str().into(),
                "amq.rabbitmq.trace".into(),
                "publish.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("binding to amq.rabbitmq.trace")?;
        let mut consumer = channel
            .basic_consume(
                queue.name().as_str().into(),
                "chaos-firehose".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        let capture = Arc::new(Self { buffer: Mutex::default(), seen: AtomicUsize::new(0), task: Mutex::default() });
        let queues: HashSet<String> = queues.into_iter().collect();
        let this = capture.clone();
        let task = tokio::spawn(async move {
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                if let Some(captured) = parse_trace(&delivery.properties, delivery.data, &queues, &own_ports) {
                    this.seen.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut buffer) = this.buffer.lock() {
                        if buffer.len() >= KEEP {
                            buffer.pop_front();
                        }
                        buffer.push_back(captured);
                    }
                }
            }
        });
        if let Ok(mut slot) = capture.task.lock() {
            *slot = Some(task);
        }
        Ok(capture)
    }

    /// How many messages were captured in all.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::Relaxed)
    }

    /// `count` distinct messages among the most recent captures, chosen by `seed`.
    pub fn pick(&self, count: usize, seed: u64) -> Vec<Captured> {
        let Ok(buffer) = self.buffer.lock() else { return Vec::new() };
        let window = buffer.len().min(RECENT);
        let first = buffer.len() - window;
        let mut rng = StdRng::seed_from_u64(seed);
        let count = count.min(window);
        let mut picked: Vec<usize> = sample(&mut rng, window, count).into_iter().map(|i| first + i).collect();
        picked.sort_unstable();
        // Draw once more so the choice of the next fault does not depend on
        // whether this one found enough messages.
        let _: u64 = rng.random();
        picked.into_iter().map(|i| buffer[i].clone()).collect()
    }

    /// Stops capturing.
    pub fn stop(&self) {
        if let Ok(mut slot) = self.task.lock()
            && let Some(task) = slot.take()
        {
            task.abort();
        }
    }
}

/// The captured message inside a firehose trace message, if it is one of ours.
fn parse_trace(
    trace: &BasicProperties,
    payload: Vec<u8>,
    queues: &HashSet<String>,
    own_ports: &HashSet<u16>,
) -> Option<Captured> {
    let headers = trace.headers().as_ref()?.inner();
    // Only the default exchange routes by queue name.
    if !string(headers.get("exchange_name")?)?.is_empty() {
        return None;
    }
    let AMQPValue::FieldArray(keys) = headers.get("routing_keys")? else { return None };
    let queue = keys.as_slice().iter().filter_map(string).find(|key| queues.contains(key))?;
    if let Some(client_port) = headers.get("connection").and_then(string).and_then(|c| client_port(&c))
        && own_ports.contains(&client_port)
    {
        return None;
    }
    let AMQPValue::FieldTable(properties) = headers.get("properties")? else { return None };
    Some(Captured { queue, properties: properties_from_trace(properties), payload, at: Instant::now() })
}

/// The client port of a trace's `connection` header, `"127.0.0.1:45754 -> 127.0.0.1:5672"`.
fn client_port(connection: &str) -> Option<u16> {
    let client = connection.split(" -> ").next()?;
    client.rsplit_once(':')?.1.parse().ok()
}

fn string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match *value {
        AMQPValue::ShortShortInt(v) => Some(v.into()),
        AMQPValue::ShortShortUInt(v) => Some(v.into()),
        AMQPValue::ShortInt(v) => Some(v.into()),
        AMQPValue::ShortUInt(v) => Some(v.into()),
        AMQPValue::LongInt(v) => Some(v.into()),
        AMQPValue::LongUInt(v) => Some(v.into()),
        AMQPValue::LongLongInt(v) => Some(v),
        AMQPValue::Timestamp(v) => i64::try_from(v).ok(),
        _ => None,
    }
}

/// Rebuilds AMQP properties from a trace's `properties` table (keys named as in
/// the AMQP spec: `message_id`, `correlation_id`, `type`, `headers`, …).
pub fn properties_from_trace(table: &FieldTable) -> BasicProperties {
    let table = table.inner();
    let text = |key: &str| table.get(key).and_then(string).map(ShortString::from);
    let number = |key: &str| table.get(key).and_then(integer);
    let mut p = BasicProperties::default();
    if let Some(v) = text("content_type") {
        p = p.with_content_type(v);
    }
    if let Some(v) = text("content_encoding") {
        p = p.with_content_encoding(v);
    }
    if let Some(AMQPValue::FieldTable(headers)) = table.get("headers") {
        p = p.with_headers(headers.clone());
    }
    if let Some(v) = number("delivery_mode") {
        p = p.with_delivery_mode(v.clamp(0, 255) as u8);
    }
    if let Some(v) = number("priority") {
        p = p.with_priority(v.clamp(0, 255) as u8);
    }
    if let Some(v) = text("correlation_id") {
        p = p.with_correlation_id(v);
    }
    if let Some(v) = text("reply_to") {
        p = p.with_reply_to(v);
    }
    if let Some(v) = text("expiration") {
        p = p.with_expiration(v);
    }
    if let Some(v) = text("message_id") {
        p = p.with_message_id(v);
    }
    if let Some(v) = number("timestamp") {
        p = p.with_timestamp(v.max(0) as u64);
    }
    if let Some(v) = text("type") {
        p = p.with_type(v);
    }
    if let Some(v) = text("user_id") {
        p = p.with_user_id(v);
    }
    if let Some(v) = text("app_id") {
        p = p.with_app_id(v);
    }
    if let Some(v) = text("cluster_id") {
        p = p.with_cluster_id(v);
    }
    p
}

/// A channel in confirm mode for republishing.
pub async fn publish_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Publishes each message again to its original queue, with its original
/// properties, waiting for the broker's confirms; returns how many were confirmed.
///
/// `expiration`: a command's original `expiration` is the time its first copy had
/// left until its deadline. A copy gets a fresh [`COPY_EXPIRATION_MS`] instead,
/// so that the broker does deliver it (even to a participant that is just
/// restarting) and the participants' own defences are what is tested: their
/// refusal of a command whose `x-deadline-ms` has passed (left untouched), and
/// their idempotency by `message_id` for one still in time. Replies have no
/// expiration and get none.
pub async fn republish(channel: &Channel, messages: &[Captured]) -> anyhow::Result<usize> {
    let mut confirmed = 0;
    for message in messages {
        let mut properties = message.properties.clone();
        if properties.expiration().is_some() {
            properties = properties.with_expiration(COPY_EXPIRATION_MS.into());
        }
        let confirm = channel
            .basic_publish(
                "".into(),
                message.queue.as_str().into(),
                BasicPublishOptions::default(),
                &message.payload,
                properties,
            )
            .await?;
        if confirm.await?.is_ack() {
            confirmed += 1;
        }
    }
    Ok(confirmed)
}

#[cfg(test)]
mod tests {
    use lapin::types::LongString;

    use super::*;

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    fn trace(exchange: &str, key: &str, connection: &str) -> BasicProperties {
        let mut props = FieldTable::default();
        props.insert("message_id".into(), long("o1.create_ticket.action.0"));
        props.insert("type".into(), long("ftgo.restaurant.v1.CreateTicketCommand"));
        props.insert("expiration".into(), long("998"));
        props.insert("delivery_mode".into(), AMQPValue::LongInt(2));
        props.insert("timestamp".into(), AMQPValue::LongInt(1234));
        let mut inner = FieldTable::default();
        inner.insert("x-attempt".into(), AMQPValue::LongLongInt(2));
        props.insert("headers".into(), AMQPValue::FieldTable(inner));
        let mut headers = FieldTable::default();
        headers.insert("exchange_name".into(), long(exchange));
        headers.insert("routing_keys".into(), AMQPValue::FieldArray(vec![long(key)].into()));
        headers.insert("connection".into(), long(connection));
        headers.insert("properties".into(), AMQPValue::FieldTable(props));
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn a_namespace_command_is_captured_with_its_properties() {
        let queues: HashSet<String> = ["ns.restaurant_service.commands".to_owned()].into();
        let t = trace("", "ns.restaurant_service.commands", "127.0.0.1:40000 -> 127.0.0.1:5672");
        let captured = parse_trace(&t, b"x".to_vec(), &queues, &HashSet::new()).expect("captured");
        assert_eq!(captured.queue, "ns.restaurant_service.commands");
        let p = &captured.properties;
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("o1.create_ticket.action.0"));
        assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("ftgo.restaurant.v1.CreateTicketCommand"));
        assert_eq!(p.expiration().as_ref().map(|s| s.as_str()), Some("998"));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.timestamp(), Some(1234));
        assert!(p.headers().as_ref().is_some_and(|h| h.contains_key("x-attempt")));
        assert!(!captured.is_reply());
    }

    #[test]
    fn other_namespaces_exchanges_and_our_own_publishes_are_not_captured() {
        let queues: HashSet<String> = ["ns.restaurant_service.commands".to_owned()].into();
        let own: HashSet<u16> = [40001].into();
        let conn = "127.0.0.1:40000 -> 127.0.0.1:5672";
        assert!(parse_trace(&trace("", "other.restaurant_service.commands", conn), vec![], &queues, &own).is_none());
        assert!(parse_trace(&trace("x.dlx", "ns.restaurant_service.commands", conn), vec![], &queues, &own).is_none());
        let mine = "127.0.0.1:40001 -> 127.0.0.1:5672";
        assert!(parse_trace(&trace("", "ns.restaurant_service.commands", mine), vec![], &queues, &own).is_none());
    }
}
