//! Redis connections. A `ConnectionManager` reconnects by itself after Redis drops
//! it, so handlers just retry their command; start-up waits for Redis with backoff
//! so the services can start before Redis does (as in docker compose).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum StoreConnectError {
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] redis::RedisError),
    #[error("shut down while waiting for Redis")]
    Cancelled,
}

/// Connects to Redis, retrying with capped backoff until it answers or `shutdown`.
pub async fn connect(
    url: &str,
    shutdown: &CancellationToken,
) -> Result<(redis::Client, ConnectionManager), StoreConnectError> {
    let client = redis::Client::open(nodelay(url).map_err(StoreConnectError::InvalidUrl)?)
        .map_err(StoreConnectError::InvalidUrl)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    let mut delay = Duration::from_millis(100);
    loop {
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(manager) => return Ok((client, manager)),
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "Redis not reachable yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Err(StoreConnectError::Cancelled),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The connection info of `url` with TCP_NODELAY. redis-rs leaves Nagle's
/// algorithm on by default; on a multiplexed connection a command written while
/// another one's reply is outstanding then waits for that reply's ACK before it
/// leaves, which adds up to a round trip to a saga step under load.
fn nodelay(url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

/// Deletes every key that starts with `prefix` (tests clean their namespace).
pub async fn delete_prefix(conn: &mut ConnectionManager, prefix: &str) -> redis::RedisResult<usize> {
    let pattern = format!("{}*", escape_glob(prefix));
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(500).query_async(conn).await?;
        if !keys.is_empty() {
            deleted += keys.len();
            let _: () = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

fn escape_glob(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}
