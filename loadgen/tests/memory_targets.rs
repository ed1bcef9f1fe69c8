//! The `memory_targets` binary end to end at a small scale, against the service
//! binaries next to it (`cargo test --workspace` builds them, as for chaos's
//! test; run alone: `cargo build --bins && cargo test -p loadgen --test
//! memory_targets`). It checks what each phase must have seen, not the figures
//! a loaded machine gives: every saga created stays in flight, every service
//! wrote keys, the retention left none of order_service's, the copies were there
//! for one side only, every verdict read a figure, the exit status follows the
//! verdicts, and no key, queue or exchange of the run is left.

use std::{path::Path, time::Duration};

use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("not a count: {value}"))
}

#[tokio::test]
async fn each_phase_measures_what_it_should_and_leaves_nothing_behind() {
    let exe = env!("CARGO_BIN_EXE_memory_targets");
    let dir = std::env::temp_dir().join(format!("memory-targets-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("report.json");
    let logs = dir.join("logs");
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = tokio::process::Command::new(exe)
        .args(["--in-flight", "300", "--warmup", "20", "--finished", "40", "--stored", "3000"])
        .args(["--stored-sagas", "60", "--rounds", "2", "--quiet"])
        .arg("--json")
        .arg(&json)
        .arg("--log-dir")
        .arg(&logs)
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .kill_on_drop(true)
        .spawn()
        .expect("memory_targets starts");
    let status = match tokio::time::timeout(Duration::from_secs(240), child.wait()).await {
        Ok(status) => status.expect("memory_targets runs"),
        Err(_) => {
            // SIGTERM first: it stops the services it started and deletes its
            // namespaces, where the SIGKILL of kill_on_drop would leave them.
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
            panic!("memory_targets did not end within four minutes; stderr:\n{}", read(&err));
        }
    };
    let (stdout, stderr) = (read(&out), read(&err));
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&json)
            .unwrap_or_else(|e| panic!("no report ({e}); status {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}")),
    )
    .expect("the report is JSON");

    let targets = report["targets"].as_array().expect("targets");
    let names: Vec<&str> = targets.iter().filter_map(|t| t["target"].as_str()).collect();
    assert_eq!(
        names,
        ["in_flight_bytes_per_saga", "finished_order_keys_after_retention", "stored_sagas_throughput_change_percent"]
    );
    for target in targets {
        assert!(target["measured"].is_number(), "every target was measured: {target}");
    }
    let all_met = report["all_met"].as_bool().expect("all_met");
    assert_eq!(all_met, targets.iter().all(|t| t["met"] == Value::Bool(true)));
    assert_eq!(status.code(), Some(if all_met { 0 } else { 2 }), "exit status\n{stdout}\n{stderr}");
    assert!(stdout.contains("targets:"), "{stdout}");

    // In flight: no participant runs, so every saga created is still unfinished.
    let in_flight = &report["in_flight"];
    assert_eq!(count(&in_flight["in_flight_before"]), 20, "the warm-up's sagas are in flight too");
    assert_eq!(count(&in_flight["in_flight_after"]), 320, "{in_flight}");
    assert!(count(&in_flight["rss_before_kib"]) > 1000, "an RSS was read: {in_flight}");

    // Finished: each service wrote keys; the retention pruned all of order_service's.
    let finished = &report["finished"];
    assert_eq!(count(&finished["sagas"]), 40);
    for service in ["order", "consumer", "restaurant", "accounting"] {
        let bytes = finished["bytes_per_saga_by_service"][service].as_f64().unwrap_or(0.0);
        assert!(bytes > 0.0, "{service} stored nothing per saga: {finished}");
    }
    assert_eq!(count(&finished["order_keys_after_retention"]), 0, "{finished}");

    // Stored: one namespace, the copies there for the "with" side only; the
    // "without" side holds the first sagas and the earlier sides' sagas.
    let rounds = report["stored"].as_array().expect("stored rounds");
    assert_eq!(rounds.len(), 2);
    // Round 1 runs "without" first, round 2 "with" first; each side adds its
    // 20 warm-up and 60 measured sagas.
    for (round, expected) in rounds.iter().zip([3000 + 80, 3000 - 80]) {
        let without = count(&round["without_stored"]);
        let with = count(&round["with_stored"]);
        assert_eq!(with - without.min(with), expected, "the copies, give or take one side's sagas: {round}");
        assert!(
            round["without_sagas_per_sec"].as_f64() > Some(0.0) && round["with_sagas_per_sec"].as_f64() > Some(0.0)
        );
    }
    assert_eq!(count(&rounds[0]["without_stored"]), 40, "the first side sees the first sagas only");

    // Nothing left: the namespaces are the prefixes of the services' log files.
    let mut namespaces: Vec<String> = std::fs::read_dir(&logs)
        .expect("log dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.rsplit_once('-').map(|(ns, _)| ns.to_owned()))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    assert_eq!(namespaces.len(), 3, "inflight, finished and stored: {namespaces:?}");
    let client = redis::Client::open(test_support::redis_url()).expect("redis url");
    let mut redis = redis::aio::ConnectionManager::new(client).await.expect("redis");
    let amqp = Connection::connect(&test_support::amqp_url(), ConnectionProperties::default()).await.expect("rabbitmq");
    let bases = [
        "order_service.replies",
        "consumer_service.commands",
        "restaurant_service.commands",
        "accounting_service.commands",
    ];
    for namespace in &namespaces {
        // The whole keyspace, a thousand keys per call: one SCAN with a huge
        // COUNT outlasts the client's response timeout on a Redis that holds
        // other namespaces' keys, and a single call would miss keys if it did not.
        let keys = chaos::admin::scan_keys(&mut redis, &format!("{}:*", chaos::admin::escape_glob(namespace)))
            .await
            .expect("SCAN");
        assert!(keys.is_empty(), "{namespace} left keys: {:?}", &keys[..keys.len().min(5)]);
        let queues: Vec<String> = bases.iter().map(|base| format!("{namespace}.{base}")).collect();
        let left = test_support::existing_topology(&amqp, &queues).await.expect("the broker answers");
        assert!(left.is_empty(), "{namespace} left queues or exchanges: {left:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
