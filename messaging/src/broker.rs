//! One AMQP connection per process, re-established on demand. Channels are cheap
//! and owned by their users (the publisher, each consumer); when the connection
//! dies, their next operation fails, they ask the broker for a fresh connection,
//! and the one that gets there first reconnects.

use std::{sync::Arc, time::Duration};

use lapin::{Connection, ConnectionProperties};
use tokio::sync::Mutex;

/// How to reach the broker and how queues are declared.
#[derive(Clone)]
pub struct BrokerSettings {
    pub url: String,
    /// Shown in the management UI's connection list.
    pub connection_name: String,
    pub queue_type: crate::topology::QueueType,
    /// Test-only `x-expires`: unused queues delete themselves.
    pub queue_expires: Option<Duration>,
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("connection_name", &self.connection_name)
            .field("queue_type", &self.queue_type)
            .finish_non_exhaustive()
    }
}

/// Shared handle to the process's AMQP connection.
#[derive(Clone)]
pub struct Broker {
    settings: Arc<BrokerSettings>,
    connection: Arc<Mutex<Option<Arc<Connection>>>>,
}

impl Broker {
    pub fn new(settings: BrokerSettings) -> Self {
        Self { settings: Arc::new(settings), connection: Arc::new(Mutex::new(None)) }
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// The live connection, connecting first if there is none or it died.
    pub async fn connection(&self) -> Result<Arc<Connection>, lapin::Error> {
        let mut guard = self.connection.lock().await;
        if let Some(conn) = guard.as_ref()
            && conn.status().connected()
        {
            return Ok(conn.clone());
        }
        let properties =
            ConnectionProperties::default().with_connection_name(self.settings.connection_name.clone().into());
        let conn = Arc::new(Connection::connect(&self.settings.url, properties).await?);
        tracing::info!(connection = %self.settings.connection_name, "connected to RabbitMQ");
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// A new channel on the live connection.
    pub async fn channel(&self) -> Result<lapin::Channel, lapin::Error> {
        self.connection().await?.create_channel().await
    }

    /// Closes the connection (at shutdown, after consumers and publishers are done).
    pub async fn close(&self) {
        if let Some(conn) = self.connection.lock().await.take()
            && conn.status().connected()
            && let Err(error) = conn.close(200, "shutdown".into()).await
        {
            tracing::debug!(%error, "closing the AMQP connection");
        }
    }
}

/// Capped exponential backoff with jitter, for reconnect loops.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let jitter = rand::random_range(0..=base / 4);
    Duration::from_millis(base + jitter)
}
