//! `loadgen` stopped by a signal in the middle of a run: the baseline's
//! namespace (its queues, dead-letter queues and exchanges, and keys) is deleted
//! before it exits with the shell's status for the signal, where a default exit
//! would leave it on the broker. The run needs only RabbitMQ and Redis.

mod common;

use std::{process::Stdio, time::Duration};

use lapin::{Connection, ConnectionProperties};
use test_support::existing_topology;
use tokio::io::{AsyncBufReadExt, BufReader};

/// SIGTERMs loadgen and waits for it to end if the test stops first (a failed
/// assertion), so that loadgen still deletes its namespace; the SIGKILL of
/// `kill_on_drop` would leave it.
struct TerminateOnDrop(Option<u32>);

impl Drop for TerminateOnDrop {
    fn drop(&mut self) {
        let Some(pid) = self.0 else { return };
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        // Ended once /proc says zombie (state Z) or has no such process.
        for _ in 0..300 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z')) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn interrupt_mid_run(signal: &str, status: i32) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--baseline-only", "--concurrency", "4", "--duration", "300", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("loadgen starts");
    let mut guard = TerminateOnDrop(child.id());
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let announced = async {
        while let Some(line) = stderr.next_line().await.expect("stderr is readable") {
            if let Some(namespace) = line.strip_prefix("loadgen: baseline in namespace ") {
                return namespace.to_owned();
            }
        }
        panic!("loadgen ended without naming its baseline's namespace");
    };
    let namespace = tokio::time::timeout(Duration::from_secs(60), announced).await.expect("the baseline starts");

    let amqp = Connection::connect(&test_support::amqp_url(), ConnectionProperties::default()).await.expect("rabbitmq");
    let client = redis::Client::open(test_support::redis_url()).expect("redis url");
    let redis = redis::aio::ConnectionManager::new(client).await.expect("redis");
    let pattern = common::baseline_keys(&namespace);
    // Sagas are under way: the namespace has its queues, exchanges and keys.
    test_support::eventually(Duration::from_secs(30), || {
        let (amqp, mut redis, pattern, namespace) = (&amqp, redis.clone(), pattern.clone(), namespace.clone());
        async move {
            let keys = chaos::admin::scan_keys(&mut redis, &pattern).await?;
            let objects = existing_topology(amqp, &common::baseline_queues(&namespace)).await?;
            Ok((!keys.is_empty() && objects.len() == 6).then_some(()))
        }
    })
    .await
    .expect("the baseline's queues, exchanges and keys exist while it runs");

    let pid = child.id().expect("loadgen is running").to_string();
    let sent = std::process::Command::new("kill").args([signal, &pid]).status().expect("kill runs");
    assert!(sent.success());
    guard.0 = None;
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("loadgen ends").expect("wait");
    let mut rest = Vec::new();
    while let Ok(Some(line)) = stderr.next_line().await {
        rest.push(line);
    }
    assert_eq!(exit.code(), Some(status), "{signal}: exit status; stderr after the namespace line: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("is deleted")), "{rest:?}");
    common::assert_baseline_gone(&namespace).await;
}

#[tokio::test]
async fn sigint_in_the_middle_of_a_run_leaves_nothing_behind() {
    interrupt_mid_run("-INT", 130).await;
}

#[tokio::test]
async fn sigterm_in_the_middle_of_a_run_leaves_nothing_behind() {
    interrupt_mid_run("-TERM", 143).await;
}
