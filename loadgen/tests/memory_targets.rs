//! The `memory_targets` binary end to end at a small scale, against the service
//! binaries next to it (`cargo test --workspace` builds them, as for chaos's
//! test; run alone: `cargo build --bins && cargo test -p loadgen --test
//! memory_targets`). It checks what each phase must have seen, not the figures
//! a loaded machine gives: every saga created stays in flight, every service
//! wrote keys, the retention left none of order_service's, the seeding added
//! exactly what was asked, the exit status follows the verdicts, and no key
//! or queue of the run is left.

use std::process::Command;

use lapin::{Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable};
use serde_json::Value;

#[tokio::test]
async fn each_phase_measures_what_it_should_and_leaves_nothing_behind() {
    let exe = env!("CARGO_BIN_EXE_memory_targets");
    let dir = std::env::temp_dir().join(format!("memory-targets-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("report.json");
    let logs = dir.join("logs");
    let output = Command::new(exe)
        .args(["--in-flight", "300", "--warmup", "20", "--finished", "40", "--stored", "3000"])
        .args(["--stored-sagas", "60", "--rounds", "1", "--quiet"])
        .arg("--json")
        .arg(&json)
        .arg("--log-dir")
        .arg(&logs)
        .output()
        .expect("memory_targets runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!("no report ({e}); status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status)
    }))
    .expect("the report is JSON");

    let all_met = report["all_met"].as_bool().expect("all_met");
    let expected = if all_met { Some(0) } else { Some(2) };
    assert_eq!(output.status.code(), expected, "exit status follows all_met\n{stdout}\n{stderr}");
    assert!(stdout.contains("targets:"), "{stdout}");

    // In flight: no participant runs, so every saga created is still unfinished.
    let in_flight = &report["in_flight"];
    let added =
        in_flight["in_flight_after"].as_u64().unwrap_or(0) - in_flight["in_flight_before"].as_u64().unwrap_or(0);
    assert_eq!(added, 300, "{in_flight}");
    assert_eq!(in_flight["in_flight_before"].as_u64(), Some(20), "the warm-up's sagas are in flight too");
    assert!(in_flight["rss_peak_kib"].as_u64() >= in_flight["rss_before_kib"].as_u64(), "{in_flight}");
    assert!(in_flight["bytes_per_saga"].is_number(), "{in_flight}");

    // Finished: each service wrote keys; the retention pruned all of order_service's.
    let finished = &report["finished"];
    assert_eq!(finished["sagas"].as_u64(), Some(40));
    for service in ["order", "consumer", "restaurant", "accounting"] {
        let bytes = finished["bytes_per_saga_by_service"][service].as_f64().unwrap_or(0.0);
        assert!(bytes > 0.0, "{service} stored nothing per saga: {finished}");
    }
    assert_eq!(finished["order_keys_after_retention"].as_u64(), Some(0), "{finished}");
    assert_eq!(finished["order_bytes_after_retention"].as_u64(), Some(0), "{finished}");

    // Stored: the second namespace holds exactly the seeded copies more.
    let rounds = report["stored"].as_array().expect("stored rounds");
    assert_eq!(rounds.len(), 1);
    let few = rounds[0]["few_stored"].as_u64().unwrap_or(0);
    let many = rounds[0]["many_stored"].as_u64().unwrap_or(0);
    assert_eq!(many - few, 3000, "{rounds:?}");
    assert_eq!(few, 40, "the first namespace holds its first sagas: {rounds:?}");

    let names: Vec<&str> =
        report["targets"].as_array().expect("targets").iter().filter_map(|t| t["target"].as_str()).collect();
    assert_eq!(
        names,
        ["in_flight_bytes_per_saga", "finished_order_bytes_after_retention", "stored_sagas_throughput_change_percent"]
    );

    // Nothing left: the namespaces are the prefixes of the services' log files.
    let mut namespaces: Vec<String> = std::fs::read_dir(&logs)
        .expect("log dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.rsplit_once('-').map(|(ns, _)| ns.to_owned()))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    assert_eq!(namespaces.len(), 4, "inflight, finished, few and many: {namespaces:?}");
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("redis url");
    let mut redis = client.get_multiplexed_async_connection().await.expect("redis");
    let amqp = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", ConnectionProperties::default())
        .await
        .expect("rabbitmq");
    for namespace in &namespaces {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{namespace}:*")).query_async(&mut redis).await.expect("KEYS");
        assert!(keys.is_empty(), "{namespace} left keys: {:?}", &keys[..keys.len().min(5)]);
        let channel = amqp.create_channel().await.expect("channel");
        let queue = format!("{namespace}.order_service.replies");
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let declared = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await;
        assert!(declared.is_err(), "{queue} is left");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
