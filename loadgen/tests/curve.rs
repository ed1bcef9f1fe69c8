//! `loadgen --curve` end to end: the binary against the four services running
//! in-process on the real RabbitMQ and Redis, at a tiny scale, so the closed
//! loop, each side's points and the reports are checked as a user would read
//! them (the figures themselves mean nothing at this size).

mod common;

use system_tests::System;

#[tokio::test]
async fn a_curve_runs_each_share_on_both_sides_reads_each_point_and_leaves_no_baseline_behind() {
    let system = System::start("loadgen-curve", &[], |_| {}).await;
    let addr = system.order.as_ref().expect("order_service runs").addr();
    // An objective no debug build misses at this size, so every point is within
    // it and each side sustains its highest share.
    let target = format!("http://{addr}");
    let run = common::run_loadgen(&[
        "--target",
        &target,
        "--curve",
        "--curve-scale",
        "0.001",
        "--curve-shares",
        "1,0.5",
        "--slo-p99-ms",
        "60000",
        "--cpu-of",
        "redis-server",
    ])
    .await;
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert_eq!(run.status, Some(0), "loadgen failed\n{stdout}\n{stderr}");
    let report = run.report();
    let markdown = run.markdown();

    assert_eq!(report["protocol"]["shares"], serde_json::json!([0.5, 1.0]), "sorted");
    assert_eq!(report["protocol"]["slo_p99_ms"], 60000.0);
    let closed = &report["closed_loop"];
    assert_eq!(closed["concurrency"], 64);
    assert_eq!(closed["sagas_completed"], 10);
    assert_eq!(closed["rounds"].as_array().map(Vec::len), Some(5), "five baseline rounds");
    let busy = closed["cpu"]["machine"]["busy_percent"].as_f64();
    assert!(busy.is_some_and(|b| b > 0.0 && b <= 100.0), "the machine was busy: {}", closed["cpu"]);
    let maximums = [
        ("baseline", closed["baseline_sagas_per_sec"].as_f64().expect("the baseline's rate")),
        ("system", closed["sagas_per_sec"].as_f64().expect("the system's rate")),
    ];
    for (side, maximum) in maximums {
        let curve = &report[side];
        assert_eq!(curve["max_sagas_per_sec"].as_f64(), Some(maximum), "{side}");
        let points = curve["points"].as_array().expect("points");
        let shares: Vec<f64> = points.iter().map(|p| p["share"].as_f64().expect("a share")).collect();
        assert_eq!(shares, [0.5, 1.0], "{side}: every share ran");
        for point in points {
            let share = point["share"].as_f64().expect("a share");
            assert_eq!(point["rate_per_sec"].as_f64(), Some((share * maximum).round()), "{side} {share}: own maximum");
            assert_eq!(point["failures"], 0, "{side} {share}: {point}");
            assert!(point["latency_ms"]["p99"].as_f64().is_some_and(|p99| p99 > 0.0), "{side} {share}: {point}");
            assert_eq!(point["within_objective"], true, "{side} {share}: {point}");
            // With --cpu-of, each point says how much of the machine's time was stolen.
            let steal = point["steal_percent"].as_f64();
            assert!(steal.is_some_and(|s| (0.0..=100.0).contains(&s)), "{side} {share}: {point}");
        }
        assert_eq!(curve["sustained_share"], 1.0, "{side}");
        assert_eq!(curve["sustained_rate_per_sec"], points[1]["rate_per_sec"], "{side}");
        assert!(
            stdout.contains(&format!("{side}: p99 within 60000 ms and no failure up to 100 % of its maximum")),
            "{stdout}"
        );
    }
    assert!(markdown.starts_with("# loadgen: latency against load"), "{markdown}");
    assert_eq!(markdown.lines().filter(|l| l.starts_with("| baseline |") || l.starts_with("| system |")).count(), 4);

    common::assert_baseline_gone(&run.baseline_namespace()).await;
    system.stop().await;
}
