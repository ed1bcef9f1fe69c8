//! Typed settings from environment variables. Each service builds its own settings
//! struct from these helpers once at start-up; tests build the struct directly and
//! never touch the process environment.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use crate::Namespace;

/// A setting that could not be parsed; names the variable and what was wrong.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct SettingsError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// Reads `name`, or `default` when unset or empty.
pub fn env_or<T>(name: &'static str, default: T) -> Result<T, SettingsError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|e: T::Err| SettingsError { name, value, reason: e.to_string() })
        }
        _ => Ok(default),
    }
}

/// A duration given in milliseconds.
pub fn env_millis(name: &'static str, default_ms: u64) -> Result<Duration, SettingsError> {
    env_or(name, default_ms).map(Duration::from_millis)
}

/// A boolean: true/false, 1/0, yes/no, on/off.
pub fn env_bool(name: &'static str, default: bool) -> Result<bool, SettingsError> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(SettingsError { name, value, reason: "expected true or false".into() }),
        },
        _ => Ok(default),
    }
}

/// A string that holds a credential (a URL with a password): `Debug` and `Display`
/// never show it, so settings can be logged whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is handed to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "plain" | "text" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?} (plain or json)")),
        }
    }
}

/// The RabbitMQ queue type of every queue the services declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// Classic durable queues: right for a single broker.
    #[default]
    Classic,
    /// Quorum queues: replicated, for a RabbitMQ cluster.
    Quorum,
}

impl FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "classic" => Ok(Self::Classic),
            "quorum" => Ok(Self::Quorum),
            other => Err(format!("unknown queue type {other:?} (classic or quorum)")),
        }
    }
}

/// Settings every service has: where the broker and Redis are, its namespace, its
/// gRPC address and its consumer's prefetch.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    pub amqp_url: Secret,
    pub redis_url: Secret,
    pub namespace: Namespace,
    pub grpc_addr: SocketAddr,
    /// The operators' HTTP port: `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: SocketAddr,
    /// Unacknowledged deliveries per consumer, which is also how many commands one
    /// replica handles concurrently.
    pub prefetch: u16,
    /// How long a handled delivery's ack waits for others to share its frames.
    pub ack_delay: Duration,
    pub queue_type: QueueType,
    /// Test-only: queues delete themselves after this long unused (`x-expires`).
    pub queue_expires: Option<Duration>,
    pub log_format: LogFormat,
}

impl CommonSettings {
    /// Local-development defaults, with the given gRPC and HTTP ports.
    pub fn local(grpc_port: u16, http_port: u16) -> Self {
        Self {
            amqp_url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            redis_url: Secret::new("redis://127.0.0.1:6379"),
            namespace: Namespace::default(),
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], grpc_port)),
            http_addr: SocketAddr::from(([0, 0, 0, 0], http_port)),
            prefetch: 64,
            ack_delay: messaging::consumer::DEFAULT_ACK_DELAY,
            queue_type: QueueType::Classic,
            queue_expires: None,
            log_format: LogFormat::Plain,
        }
    }

    /// Reads `AMQP_URL`, `REDIS_URL`, `FTGO_NAMESPACE`, `GRPC_ADDR`, `HTTP_ADDR`,
    /// `AMQP_PREFETCH`, `AMQP_ACK_DELAY_MS`, `AMQP_QUEUE_TYPE` and `LOG_FORMAT` over
    /// [`Self::local`].
    pub fn from_env(default_grpc_port: u16, default_http_port: u16) -> Result<Self, SettingsError> {
        let local = Self::local(default_grpc_port, default_http_port);
        let prefetch: u16 = env_or("AMQP_PREFETCH", local.prefetch)?;
        if prefetch == 0 {
            return Err(SettingsError {
                name: "AMQP_PREFETCH",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            amqp_url: Secret::new(env_or("AMQP_URL", local.amqp_url.expose().to_owned())?),
            redis_url: Secret::new(env_or("REDIS_URL", local.redis_url.expose().to_owned())?),
            namespace: Namespace::new(env_or("FTGO_NAMESPACE", String::new())?),
            grpc_addr: env_or("GRPC_ADDR", local.grpc_addr)?,
            http_addr: env_or("HTTP_ADDR", local.http_addr)?,
            prefetch,
            ack_delay: env_millis("AMQP_ACK_DELAY_MS", local.ack_delay.as_millis() as u64)?,
            queue_type: env_or("AMQP_QUEUE_TYPE", local.queue_type)?,
            queue_expires: None,
            log_format: env_or("LOG_FORMAT", local.log_format)?,
        })
    }
}
