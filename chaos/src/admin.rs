//! The operator's tools the runner uses on the shared broker and Redis:
//! `rabbitmqctl` (connections, firehose tracing), `ss` (which local socket belongs
//! to which process), `CLIENT KILL` and the namespace's clean-up.
//!
//! The one decision to know: other test runs share this broker and this Redis, so
//! nothing here acts on anything it has not first proven to be ours: an AMQP
//! connection whose `connection_name` says `ns=<namespace>` (or whose client port
//! is a socket owned by one of our child processes), a Redis client whose address
//! is a socket owned by one of our child processes, queues and keys under our
//! namespace's prefix. No `close_all_connections`, no `CLIENT KILL TYPE`, no
//! `FLUSH*`.

use std::{collections::HashSet, process::Stdio};

use anyhow::{Context, bail};
use lapin::{Channel, options::QueueDeleteOptions};
use redis::aio::ConnectionManager;

/// Runs `rabbitmqctl` with `args` and returns its stdout.
pub async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running rabbitmqctl (is it installed and may this user run it?)")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The virtual host of an AMQP URL (`/` for `.../%2f` or no path).
pub fn vhost_of(amqp_url: &str) -> String {
    let after_scheme = amqp_url.split_once("://").map(|(_, rest)| rest).unwrap_or(amqp_url);
    let path = after_scheme.split_once('/').map(|(_, path)| path).unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() {
        return "/".to_owned();
    }
    percent_decode(path)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(value) => {
                out.push(value);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether firehose tracing is on for `vhost`.
pub async fn tracing_enabled(vhost: &str) -> anyhow::Result<bool> {
    let out = rabbitmqctl(&["-q", "list_vhosts", "name", "tracing"]).await?;
    for line in out.lines() {
        let mut fields = line.split('\t');
        if fields.next() == Some(vhost) {
            return Ok(fields.next().map(str::trim) == Some("true"));
        }
    }
    bail!("vhost {vhost:?} not found in `rabbitmqctl list_vhosts`")
}

/// Turns firehose tracing on or off for `vhost`.
pub async fn set_tracing(vhost: &str, on: bool) -> anyhow::Result<()> {
    rabbitmqctl(&["-q", if on { "trace_on" } else { "trace_off" }, "-p", vhost]).await?;
    Ok(())
}

/// One AMQP connection as `rabbitmqctl list_connections` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpConnection {
    /// The Erlang pid, as `close_connection` wants it.
    pub pid: String,
    pub peer_port: u16,
    pub name: Option<String>,
}

/// Every AMQP connection of the broker (names and ports only).
pub async fn list_amqp_connections() -> anyhow::Result<Vec<AmqpConnection>> {
    let out = rabbitmqctl(&["-q", "list_connections", "pid", "peer_port", "client_properties"]).await?;
    Ok(parse_connections(&out))
}

/// Parses the tab-separated `pid peer_port client_properties` listing; the client
/// properties are an Erlang term such as `[{"connection_name","x ns=y pid=1"},…]`.
pub fn parse_connections(listing: &str) -> Vec<AmqpConnection> {
    listing
        .lines()
        .filter(|line| line.starts_with('<'))
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            let pid = fields.next()?.trim().to_owned();
            let peer_port = fields.next()?.trim().parse().ok()?;
            let properties = fields.next().unwrap_or("");
            let name = properties.split_once("{\"connection_name\",\"").and_then(|(_, rest)| {
                // Also accept the `{"connection_name",longstr,"…"}` form.
                rest.split_once('"').map(|(name, _)| name.to_owned())
            });
            let name = name.or_else(|| {
                properties
                    .split_once("{\"connection_name\",longstr,\"")
                    .and_then(|(_, rest)| rest.split_once('"').map(|(name, _)| name.to_owned()))
            });
            Some(AmqpConnection { pid, peer_port, name })
        })
        .collect()
}

/// Whether a connection name says it belongs to `namespace` (the exact token
/// `ns=<namespace>`, so that namespace `a` never matches `ns=ab`).
pub fn name_in_namespace(name: &str, namespace: &str) -> bool {
    let token = format!("ns={namespace}");
    name.split_whitespace().any(|word| word == token)
}

/// Closes one AMQP connection by its Erlang pid.
pub async fn close_amqp_connection(pid: &str) -> anyhow::Result<()> {
    rabbitmqctl(&["-q", "close_connection", pid, "chaos"]).await?;
    Ok(())
}

/// A local TCP socket to `port` and the pid that owns it, from `ss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    pub local_port: u16,
    pub pid: u32,
}

/// The established TCP sockets whose peer port is `port`, with their owners.
pub async fn sockets_to(port: u16) -> anyhow::Result<Vec<Socket>> {
    let filter = format!("dport = :{port}");
    let output = tokio::process::Command::new("ss")
        .args(["-tnpH", filter.as_str()])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running ss")?;
    if !output.status.success() {
        bail!("ss failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(parse_ss(&String::from_utf8_lossy(&output.stdout)))
}

/// Parses `ss -tnpH` lines: `ESTAB 0 0 127.0.0.1:40312 127.0.0.1:6379
/// users:(("order_service",pid=123,fd=11))`. A socket shared by several
/// processes yields one entry per pid.
pub fn parse_ss(listing: &str) -> Vec<Socket> {
    let mut sockets = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 {
            continue;
        }
        let Some(local_port) = fields[3].rsplit_once(':').and_then(|(_, port)| port.parse().ok()) else {
            continue;
        };
        let users = fields[5..].join(" ");
        for part in users.split("pid=").skip(1) {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(pid) = digits.parse() {
                sockets.push(Socket { local_port, pid });
            }
        }
    }
    sockets
}

/// The local ports of sockets to `port` owned by one of `pids`.
pub async fn ports_of(pids: &HashSet<u32>, port: u16) -> anyhow::Result<HashSet<u16>> {
    Ok(sockets_to(port).await?.into_iter().filter(|s| pids.contains(&s.pid)).map(|s| s.local_port).collect())
}

/// Kills the Redis clients whose address is `127.0.0.1:<port>` for each port;
/// returns how many Redis actually killed.
pub async fn kill_redis_clients(redis: &mut ConnectionManager, ports: &HashSet<u16>) -> usize {
    let mut killed = 0;
    for port in ports {
        let result: redis::RedisResult<redis::Value> =
            redis::cmd("CLIENT").arg("KILL").arg("ADDR").arg(format!("127.0.0.1:{port}")).query_async(redis).await;
        // "No such client": it went away between `ss` and now.
        if result.is_ok() {
            killed += 1;
        }
    }
    killed
}

/// Deletes the namespace's queues, dead-letter queues and dead-letter exchanges.
pub async fn delete_queues(channel: &Channel, namespace: &str, bases: &[&str]) -> Vec<String> {
    let mut errors = Vec::new();
    for base in bases {
        let queue = format!("{namespace}.{base}");
        for name in [queue.clone(), format!("{queue}.dlq")] {
            if let Err(error) = channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await {
                errors.push(format!("deleting queue {name}: {error}"));
            }
        }
        let dlx = format!("{queue}.dlx");
        if let Err(error) = channel.exchange_delete(dlx.as_str().into(), Default::default()).await {
            errors.push(format!("deleting exchange {dlx}: {error}"));
        }
    }
    errors
}

/// Every key matching `pattern` (a `SCAN MATCH` glob).
pub async fn scan_keys(redis: &mut ConnectionManager, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut cursor: u64 = 0;
    let mut found = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000).query_async(redis).await?;
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// Deletes every Redis key of the namespace (`SCAN MATCH "<ns>:*"` + `UNLINK`).
pub async fn delete_keys(redis: &mut ConnectionManager, namespace: &str) -> redis::RedisResult<usize> {
    let keys = scan_keys(redis, &format!("{}:*", escape_glob(namespace))).await?;
    for batch in keys.chunks(1000) {
        let _: () = redis::cmd("UNLINK").arg(batch).query_async(redis).await?;
    }
    Ok(keys.len())
}

/// `s` with the glob characters of a `SCAN MATCH` pattern escaped.
pub fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_listing_yields_pids_ports_and_names() {
        let listing = "pid\tpeer_port\tclient_properties\n\
            <rabbit@localhost.1.2.3>\t53572\t[{\"capabilities\",[{\"basic.nack\",true}]},{\"connection_name\",\"order_service ns=chaos-1 pid=7 host=h\"},{\"product\",\"lapin\"}]\n\
            <rabbit@localhost.1.2.4>\t53573\t[{\"product\",\"pika\"}]\n";
        let connections = parse_connections(listing);
        assert_eq!(connections.len(), 2);
        assert_eq!(connections[0].pid, "<rabbit@localhost.1.2.3>");
        assert_eq!(connections[0].peer_port, 53572);
        assert_eq!(connections[0].name.as_deref(), Some("order_service ns=chaos-1 pid=7 host=h"));
        assert_eq!(connections[1].name, None);
    }

    #[test]
    fn a_namespace_matches_only_its_own_token() {
        assert!(name_in_namespace("order_service ns=chaos-1 pid=7", "chaos-1"));
        assert!(!name_in_namespace("order_service ns=chaos-12 pid=7", "chaos-1"));
        assert!(!name_in_namespace("order_service@host", "chaos-1"));
    }

    #[test]
    fn ss_lines_yield_local_ports_and_owners() {
        let listing = "ESTAB 0      0      127.0.0.1:40312 127.0.0.1:6379 users:((\"order_service\",pid=123,fd=11))\n\
                       ESTAB 0      0      127.0.0.1:40314 127.0.0.1:6379 users:((\"a\",pid=5,fd=3),(\"b\",pid=6,fd=3))\n";
        let sockets = parse_ss(listing);
        assert_eq!(
            sockets,
            vec![
                Socket { local_port: 40312, pid: 123 },
                Socket { local_port: 40314, pid: 5 },
                Socket { local_port: 40314, pid: 6 },
            ]
        );
    }

    #[test]
    fn the_vhost_comes_from_the_url_path() {
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672/%2f"), "/");
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672"), "/");
        assert_eq!(vhost_of("amqp://127.0.0.1:5672/prod?heartbeat=10"), "prod");
    }
}
