//! `loadgen --targets` end to end: the binary against the four services running
//! in-process on the real RabbitMQ and Redis, at a tiny scale, so the phases,
//! the verdicts and the reports are checked as a user would read them (the
//! figures themselves mean nothing at this size).

mod common;

use std::collections::BTreeMap;

use system_tests::System;

#[tokio::test]
async fn targets_run_every_phase_report_each_verdict_and_leave_no_baseline_behind() {
    let system = System::start("loadgen-targets", &[], |_| {}).await;
    let addr = system.order.as_ref().expect("order_service runs").addr();
    let target = format!("http://{addr}");
    let run = common::run_loadgen(&["--target", &target, "--targets", "--targets-scale", "0.001"]).await;
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    // 0 when every target is met, 2 when one is not (at this size some are not).
    let status = run.status;
    assert!(matches!(status, Some(0 | 2)), "loadgen failed ({status:?})\n{stdout}\n{stderr}");
    let report = run.report();
    let markdown = run.markdown();

    // Each phase ran its share of the scaled protocol, and every saga was approved.
    let phases = [("closed_loop", 10), ("one_in_flight", 5)];
    for (phase, sagas) in phases {
        assert_eq!(report[phase]["sagas_completed"], sagas, "{phase}");
        assert_eq!(report[phase]["final_states"]["APPROVED"], sagas, "{phase}");
        assert_eq!(report[phase]["rounds"].as_array().map(Vec::len), Some(5), "{phase}: five baseline rounds");
        assert!(report[phase]["baseline_sagas_per_sec"].as_f64().is_some_and(|b| b > 0.0), "{phase}");
    }
    assert_eq!(report["closed_loop"]["concurrency"], 64);
    assert_eq!(report["one_in_flight"]["concurrency"], 1);
    let open = &report["open_loop"];
    let half = (report["closed_loop"]["sagas_per_sec"].as_f64().expect("a rate") / 2.0).round();
    assert_eq!(open["rate_per_sec"].as_f64(), Some(half), "the open loop runs at half the closed loop's rate");
    assert!(open.get("baseline").is_none(), "the open loop is the system alone");
    assert_eq!(open["sagas_completed"], open["sagas_started"]);

    // The verdicts read those reports' own figures.
    let list = report["targets"].as_array().expect("targets");
    let names: Vec<&str> = list.iter().map(|t| t["target"].as_str().expect("a name")).collect();
    assert_eq!(names, ["closed_loop_ratio", "one_in_flight_p50_ratio", "open_loop_p99_ms", "open_loop_failures"]);
    let targets: BTreeMap<&str, &serde_json::Value> = names.iter().copied().zip(list).collect();
    assert_eq!(targets["closed_loop_ratio"]["measured"], report["closed_loop"]["ratio"]);
    assert_eq!(targets["one_in_flight_p50_ratio"]["measured"], report["one_in_flight"]["p50_ratio"]);
    assert_eq!(targets["open_loop_p99_ms"]["measured"], open["latency_ms"]["p99"]);
    assert_eq!(targets["open_loop_failures"]["measured"], 0.0);
    assert_eq!(targets["open_loop_failures"]["met"], true);
    let all_met = targets.values().all(|t| t["met"] == true);
    assert_eq!(report["all_met"], all_met);
    assert_eq!(status, Some(if all_met { 0 } else { 2 }), "the exit status follows the verdicts");
    assert!(stdout.contains("targets:") && stdout.contains("open_loop_p99_ms"), "{stdout}");
    assert!(markdown.starts_with("# loadgen: the performance targets"), "{markdown}");

    // The baseline's namespace is gone: its queues, exchanges and keys.
    common::assert_baseline_gone(&run.baseline_namespace()).await;
    system.stop().await;
}
