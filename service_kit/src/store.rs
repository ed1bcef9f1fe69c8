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
    let mut deleted = 0;
    scan(conn, &pattern, async |conn, keys| {
        deleted += keys.len();
        redis::cmd("UNLINK").arg(keys).query_async::<()>(conn).await
    })
    .await?;
    Ok(deleted)
}

/// The keys that match the glob `pattern`. SCAN, not KEYS: on a Redis that holds
/// millions of keys (a shared one), KEYS blocks every other client for seconds.
pub async fn keys_matching(conn: &mut ConnectionManager, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut found = Vec::new();
    scan(conn, pattern, async |_, keys| {
        found.extend_from_slice(keys);
        Ok(())
    })
    .await?;
    Ok(found)
}

/// Runs `each` on every batch of keys that SCAN finds for `pattern`.
async fn scan(
    conn: &mut ConnectionManager,
    pattern: &str,
    mut each: impl AsyncFnMut(&mut ConnectionManager, &[String]) -> redis::RedisResult<()>,
) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(500).query_async(conn).await?;
        if !keys.is_empty() {
            each(conn, &keys).await?;
        }
        if next == 0 {
            return Ok(());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_under_a_prefix_are_found_and_deleted_and_no_others() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let (_, mut conn) = connect(&url, &CancellationToken::new()).await.expect("Redis must be running");
        // Glob characters in the prefix are taken literally.
        let prefix = format!("t-store-scan-{}-[x]*:", std::process::id());
        let neighbour = format!("t-store-scan-{}-[x]y:kept", std::process::id());
        let keys: Vec<String> = (0..1200).map(|i| format!("{prefix}k{i}")).collect();
        for chunk in keys.chunks(400) {
            let pairs: Vec<(&str, u32)> = chunk.iter().map(|k| (k.as_str(), 1)).collect();
            let _: () = redis::cmd("MSET").arg(&pairs).query_async(&mut conn).await.expect("mset");
        }
        let _: () = redis::cmd("SET").arg(&neighbour).arg(1).query_async(&mut conn).await.expect("set");

        let mut found = keys_matching(&mut conn, &format!("{}*", escape_glob(&prefix))).await.expect("scan");
        found.sort();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(found, expected, "every key, over several SCAN batches, and not the neighbour");
        assert_eq!(delete_prefix(&mut conn, &prefix).await.expect("delete"), 1200);
        assert!(keys_matching(&mut conn, &format!("{}*", escape_glob(&prefix))).await.expect("scan").is_empty());
        let kept: i64 = redis::cmd("EXISTS").arg(&neighbour).query_async(&mut conn).await.expect("exists");
        assert_eq!(kept, 1, "a key outside the prefix stays");
        let _: () = redis::cmd("DEL").arg(&neighbour).query_async(&mut conn).await.expect("del");
    }
}
