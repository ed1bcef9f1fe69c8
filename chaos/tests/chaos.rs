//! The chaos run as a test: 300 sagas, 75 faults (15 of each kind), 16 at once,
//! against the service binaries next to the `chaos` binary. `cargo test
//! --workspace` (README's test command) builds them, since every service crate has
//! integration tests; run alone, build them first:
//!
//! ```sh
//! cargo build --bins && cargo test -p chaos --test chaos -- --nocapture
//! ```
//!
//! About a minute on two cores. `CHAOS_SEED=<n>` replays a schedule; otherwise the
//! seed is random and printed, so a failure in CI can be replayed.

use std::{path::PathBuf, time::Duration};

use chaos::{Config, faults::FaultKind, processes::Binaries};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_sagas_survive_seventy_five_faults_with_every_invariant_intact() {
    let Some(bin_dir) = PathBuf::from(env!("CARGO_BIN_EXE_chaos")).parent().map(PathBuf::from) else {
        panic!("CARGO_BIN_EXE_chaos has no directory");
    };
    // Missing binaries fail the test: a chaos test that skips itself proves nothing.
    if let Err(error) = Binaries::locate(&bin_dir) {
        panic!("the service binaries are not built ({error:#}); run `cargo build --bins` first");
    }
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(chaos::random_seed);
    eprintln!("chaos test: seed {seed} (replay with CHAOS_SEED={seed})");
    let mut config = Config::new(300, 75, 16, seed);
    config.bin_dir = Some(bin_dir);
    config.terminal_timeout = Duration::from_secs(90);

    let report = tokio::time::timeout(Duration::from_secs(290), chaos::run(config))
        .await
        .expect("the chaos run finishes within five minutes")
        .expect("the chaos run could be carried out");
    println!("{report}");

    assert!(report.checked.lost.is_empty(), "sagas lost (seed {seed}): {:#?}", report.checked.lost);
    assert!(
        report.checked.violations.is_empty(),
        "invariant violations (seed {seed}): {:#?}",
        report.checked.violations
    );
    assert!(
        report.checked.duplicates_applied.is_empty(),
        "duplicates applied (seed {seed}): {:#?}",
        report.checked.duplicates_applied
    );
    assert_eq!(report.sagas, 300, "every saga was created (seed {seed})");
    for kind in FaultKind::ALL {
        let injected = report.faults.get(&kind).copied().unwrap_or_default();
        assert!(injected >= 15, "only {injected} {kind} faults took effect (seed {seed})");
    }
}
