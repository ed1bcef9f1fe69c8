//! The saga envelope, carried in AMQP properties so that any AMQP client (the
//! management UI, `rabbitmqadmin`, a Python consumer) can read it without our code:
//!
//! | property / header | meaning |
//! |---|---|
//! | `message_id` | unique per command; a re-send of the same command keeps it |
//! | `correlation_id` | the saga (order) id |
//! | `reply_to` | the queue the reply goes to |
//! | `type` | the fully-qualified protobuf name of the payload |
//! | `content_type` | `application/x-protobuf` |
//! | `expiration` | ms until the command's deadline: the broker drops it after |
//! | `x-saga-step`, `x-attempt`, `x-deadline-ms` | step name, attempt (1-based), absolute deadline (Unix ms) |
//! | `x-command-id` | on a reply: the `message_id` of the command it answers |
//! | `traceparent` | W3C trace context; the saga id is the trace id |

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

pub const HEADER_STEP: &str = "x-saga-step";
pub const HEADER_ATTEMPT: &str = "x-attempt";
pub const HEADER_DEADLINE: &str = "x-deadline-ms";
pub const HEADER_COMMAND_ID: &str = "x-command-id";
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const HEADER_DEAD_LETTER_REASON: &str = "x-ftgo-dead-letter-reason";
pub const HEADER_ORIGINAL_QUEUE: &str = "x-ftgo-original-queue";

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Why an incoming message's properties are not a usable envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("missing AMQP property {0}")]
    Missing(&'static str),
}

/// The saga envelope of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub message_id: String,
    pub correlation_id: String,
    pub reply_to: Option<String>,
    pub type_name: String,
    pub step: Option<String>,
    pub attempt: u32,
    pub deadline_ms: Option<i64>,
    pub command_id: Option<String>,
    pub traceparent: Option<String>,
}

impl Envelope {
    /// Reads the envelope of a delivery. `message_id`, `correlation_id` and `type`
    /// are required; the rest is optional.
    pub fn from_properties(props: &BasicProperties) -> Result<Self, EnvelopeError> {
        let message_id =
            props.message_id().as_ref().map(|s| s.to_string()).ok_or(EnvelopeError::Missing("message_id"))?;
        let correlation_id =
            props.correlation_id().as_ref().map(|s| s.to_string()).ok_or(EnvelopeError::Missing("correlation_id"))?;
        let type_name = props.kind().as_ref().map(|s| s.to_string()).ok_or(EnvelopeError::Missing("type"))?;
        let headers = props.headers().as_ref();
        Ok(Self {
            message_id,
            correlation_id,
            reply_to: props.reply_to().as_ref().map(|s| s.to_string()),
            type_name,
            step: headers.and_then(|h| header_string(h, HEADER_STEP)),
            attempt: headers.and_then(|h| header_int(h, HEADER_ATTEMPT)).unwrap_or(1).clamp(0, u32::MAX as i64) as u32,
            deadline_ms: headers.and_then(|h| header_int(h, HEADER_DEADLINE)),
            command_id: headers.and_then(|h| header_string(h, HEADER_COMMAND_ID)),
            traceparent: headers.and_then(|h| header_string(h, HEADER_TRACEPARENT)),
        })
    }

    /// The AMQP properties of this envelope: persistent, protobuf, and the
    /// `expiration` derived from the deadline.
    pub fn to_properties(&self, now_ms: i64) -> BasicProperties {
        let mut headers = FieldTable::default();
        if let Some(step) = &self.step {
            headers.insert(HEADER_STEP.into(), long_string(step));
        }
        headers.insert(HEADER_ATTEMPT.into(), AMQPValue::LongLongInt(self.attempt as i64));
        if let Some(deadline) = self.deadline_ms {
            headers.insert(HEADER_DEADLINE.into(), AMQPValue::LongLongInt(deadline));
        }
        if let Some(id) = &self.command_id {
            headers.insert(HEADER_COMMAND_ID.into(), long_string(id));
        }
        if let Some(tp) = &self.traceparent {
            headers.insert(HEADER_TRACEPARENT.into(), long_string(tp));
        }
        let mut props = BasicProperties::default()
            .with_message_id(ShortString::from(self.message_id.as_str()))
            .with_correlation_id(ShortString::from(self.correlation_id.as_str()))
            .with_type(ShortString::from(self.type_name.as_str()))
            .with_content_type(crate::CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_timestamp((now_ms / 1000).max(0) as u64)
            .with_headers(headers);
        if let Some(reply_to) = &self.reply_to {
            props = props.with_reply_to(ShortString::from(reply_to.as_str()));
        }
        if let Some(deadline) = self.deadline_ms {
            // The broker drops (dead-letters, reason `expired`) what nobody consumed in time.
            props = props.with_expiration(ShortString::from((deadline - now_ms).max(1).to_string()));
        }
        props
    }

    /// Whether the command's deadline has passed.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.deadline_ms.is_some_and(|deadline| now_ms > deadline)
    }
}

/// A W3C `traceparent` whose trace id is the saga's UUID, so every message of one
/// saga belongs to one trace without any shared state. Built in one string: it is
/// made for every command the orchestrator sends.
pub fn traceparent_for(saga_id: &str) -> Option<String> {
    use std::fmt::Write as _;
    let mut traceparent = String::with_capacity(55);
    traceparent.push_str("00-");
    let (mut digits, mut zeros) = (0usize, 0usize);
    for c in saga_id.chars().filter(char::is_ascii_hexdigit) {
        traceparent.push(c.to_ascii_lowercase());
        digits += 1;
        zeros += usize::from(c == '0');
    }
    if digits != 32 || zeros == 32 {
        return None;
    }
    write!(traceparent, "-{:016x}-01", rand::random::<u64>().max(1)).ok()?;
    Some(traceparent)
}

/// A message ready to publish to a queue through the default exchange.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub queue: String,
    pub envelope: Envelope,
    pub payload: Vec<u8>,
}

impl OutgoingMessage {
    /// A protobuf message with its type name set from the message itself.
    pub fn protobuf<M: prost::Message + prost::Name>(
        queue: impl Into<String>,
        mut envelope: Envelope,
        message: &M,
    ) -> Self {
        envelope.type_name = M::full_name();
        Self { queue: queue.into(), envelope, payload: message.encode_to_vec() }
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

fn header_string(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn header_int(headers: &FieldTable, name: &str) -> Option<i64> {
    match headers.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(*v as i64),
        AMQPValue::LongUInt(v) => Some(*v as i64),
        AMQPValue::ShortInt(v) => Some(*v as i64),
        AMQPValue::ShortUInt(v) => Some(*v as i64),
        AMQPValue::ShortShortInt(v) => Some(*v as i64),
        AMQPValue::ShortShortUInt(v) => Some(*v as i64),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_survives_a_round_trip_through_amqp_properties() {
        let envelope = Envelope {
            message_id: "m-1".into(),
            correlation_id: "0190b5c2-6c4e-7a1b-8f00-000000000001".into(),
            reply_to: Some("order_service.replies".into()),
            type_name: "ftgo.restaurant.v1.CreateTicketCommand".into(),
            step: Some("CREATE_TICKET".into()),
            attempt: 3,
            deadline_ms: Some(10_000),
            command_id: None,
            traceparent: traceparent_for("0190b5c2-6c4e-7a1b-8f00-000000000001"),
        };
        let props = envelope.to_properties(9_000);
        assert_eq!(props.expiration().as_ref().map(|s| s.as_str()), Some("1000"));
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(Envelope::from_properties(&props), Ok(envelope));
    }

    #[test]
    fn a_message_without_a_type_is_not_an_envelope() {
        let props = BasicProperties::default().with_message_id("m".into()).with_correlation_id("c".into());
        assert_eq!(Envelope::from_properties(&props), Err(EnvelopeError::Missing("type")));
    }

    #[test]
    fn traceparent_uses_the_saga_uuid_as_trace_id() {
        let tp = traceparent_for("0190B5C2-6C4E-7A1B-8F00-000000000001").unwrap_or_default();
        assert!(tp.starts_with("00-0190b5c26c4e7a1b8f00000000000001-"), "{tp}");
        assert_eq!(tp.len(), 55);
        assert!(tp.ends_with("-01") && tp[36..52].chars().all(|c| c.is_ascii_hexdigit()), "{tp}");
        assert_eq!(traceparent_for("not-a-uuid"), None);
        // W3C forbids an all-zero trace id; 33 digits are not a UUID.
        assert_eq!(traceparent_for("00000000-0000-0000-0000-000000000000"), None);
        assert_eq!(traceparent_for("0190b5c2-6c4e-7a1b-8f00-0000000000011"), None);
    }
}
