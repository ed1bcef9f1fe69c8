//! What the end-to-end tests of the loadgen binary share: a run to its end with
//! its reports read back, and the check that its baseline left nothing behind.
// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

use std::process::Command;

use lapin::{Connection, ConnectionProperties};
use test_support::existing_topology;

/// A finished run of the loadgen binary.
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    json: Option<String>,
    markdown: Option<String>,
}

impl Run {
    /// The `--json` report, parsed.
    pub fn report(&self) -> serde_json::Value {
        serde_json::from_str(self.json.as_deref().expect("the JSON report")).expect("valid JSON")
    }

    /// The `--markdown` report.
    pub fn markdown(&self) -> &str {
        self.markdown.as_deref().expect("the Markdown report")
    }

    /// The baseline's namespace, as loadgen names it on stderr.
    pub fn baseline_namespace(&self) -> String {
        self.stderr
            .split_whitespace()
            .find(|word| word.starts_with("loadgen-base-"))
            .expect("loadgen names the baseline's namespace")
            .to_owned()
    }
}

/// Runs loadgen with `args`, `--quiet` and a `--json` and `--markdown` report
/// in fresh temporary files (read back, then removed), on the tests' RabbitMQ
/// and Redis.
pub async fn run_loadgen(args: &[&str]) -> Run {
    let json_path = std::env::temp_dir().join(format!("loadgen-test-{}.json", uuid::Uuid::new_v4()));
    let md_path = json_path.with_extension("md");
    let mut argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    argv.extend(["--json".into(), json_path.display().to_string()]);
    argv.extend(["--markdown".into(), md_path.display().to_string(), "--quiet".into()]);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(&argv)
            .env("AMQP_URL", test_support::amqp_url())
            .env("REDIS_URL", test_support::redis_url())
            .output()
    })
    .await
    .expect("joined")
    .expect("loadgen ran");
    let (json, markdown) = (std::fs::read_to_string(&json_path).ok(), std::fs::read_to_string(&md_path).ok());
    let _ = std::fs::remove_file(&json_path);
    let _ = std::fs::remove_file(&md_path);
    Run {
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        json,
        markdown,
    }
}

/// The baseline's queues in `namespace`; each has a dead-letter queue and exchange.
pub fn baseline_queues(namespace: &str) -> Vec<String> {
    loadgen::baseline::QUEUES.iter().map(|base| format!("{namespace}.{base}")).collect()
}

/// The pattern of the baseline's keys in `namespace`.
pub fn baseline_keys(namespace: &str) -> String {
    format!("{}:*", chaos::admin::escape_glob(namespace))
}

/// Asserts that nothing of the baseline's `namespace` is left: its queues,
/// their dead-letter queues and exchanges, and its keys.
pub async fn assert_baseline_gone(namespace: &str) {
    let amqp = Connection::connect(&test_support::amqp_url(), ConnectionProperties::default()).await.expect("AMQP");
    let left = existing_topology(&amqp, &baseline_queues(namespace)).await.expect("the broker answers");
    assert_eq!(left, Vec::<String>::new(), "{namespace}: left on the broker");
    let client = redis::Client::open(test_support::redis_url()).expect("redis url");
    let mut redis = redis::aio::ConnectionManager::new(client).await.expect("redis");
    let keys = chaos::admin::scan_keys(&mut redis, &baseline_keys(namespace)).await.expect("SCAN");
    assert!(keys.is_empty(), "{namespace}: {} keys left, e.g. {:?}", keys.len(), keys.first());
}
