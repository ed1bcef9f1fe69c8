//! The deadline sweeper: every replica scans the deadline index, claims due sagas
//! atomically (a lease, so each deadline is handled by one replica at a time) and
//! feeds them to the machine as timeouts or ended backoffs. It is also the start-up
//! recovery: nothing about a saga is held only in memory, so a fresh process finds
//! every saga that needs it here.
//!
//! It also prunes sagas that finished longer ago than the retention (state, events,
//! index entries and idempotency key, in one script per batch), so Redis holds a
//! bounded history rather than every saga ever run.

use std::time::Duration;

use futures::StreamExt;
use messaging::envelope::now_millis;
use tokio_util::sync::CancellationToken;

use crate::orchestrator::Orchestrator;

/// Sweeper settings.
#[derive(Debug, Clone, Copy)]
pub struct SweeperSettings {
    pub interval: Duration,
    /// How long a claim keeps other replicas off a saga.
    pub lease: Duration,
    /// Due sagas taken per scan.
    pub batch: usize,
    /// Due sagas handled at once.
    pub concurrency: usize,
    /// An unfinished saga older than this counts as stuck (the `ftgo_sagas_stuck` gauge).
    pub stuck_threshold: Duration,
    /// How long a finished saga stays readable (GetOrder, WatchOrder, listings)
    /// before it is deleted; `None` keeps it forever.
    pub retention: Option<Duration>,
}

/// Finished sagas deleted per script call: small enough not to block Redis for long.
const PRUNE_BATCH: usize = 200;

/// How often the gauges are read from Redis.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Sweeps until `shutdown`.
pub async fn run(orchestrator: Orchestrator, settings: SweeperSettings, shutdown: CancellationToken) {
    let mut gauges_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            _ = shutdown.cancelled() => break,
        }
        if gauges_at.elapsed() >= GAUGE_INTERVAL {
            gauges_at = tokio::time::Instant::now();
            if let Some(retention) = settings.retention {
                prune(&orchestrator, retention, &shutdown).await;
            }
            update_gauges(&orchestrator, settings.stuck_threshold).await;
        }
        loop {
            let now = now_millis();
            let due = match orchestrator.store().due(now, settings.batch).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "sweeper cannot read the deadline index");
                    break;
                }
            };
            let full = due.len() == settings.batch;
            futures::stream::iter(due)
                .for_each_concurrent(settings.concurrency, |id| {
                    let orchestrator = orchestrator.clone();
                    async move { sweep_one(&orchestrator, &id, now, settings.lease).await }
                })
                .await;
            if !full || shutdown.is_cancelled() {
                break;
            }
        }
    }
    tracing::info!("sweeper stopped");
}

async fn sweep_one(orchestrator: &Orchestrator, id: &str, now: i64, lease: Duration) {
    match orchestrator.store().claim(id, now, lease.as_millis() as i64).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(error) => {
            tracing::warn!(order_id = id, %error, "cannot claim a due saga");
            return;
        }
    }
    if let Err(error) = orchestrator.wake(id).await {
        // The claim's lease runs out and the saga is swept again.
        tracing::warn!(order_id = id, %error, "sweeping a saga failed");
    }
}

/// Deletes every saga that finished before now − `retention`, batch by batch.
async fn prune(orchestrator: &Orchestrator, retention: Duration, shutdown: &CancellationToken) {
    let cutoff = now_millis() - retention.as_millis() as i64;
    while !shutdown.is_cancelled() {
        match orchestrator.store().prune(cutoff, PRUNE_BATCH).await {
            Ok(pruned) => {
                crate::metrics::record_pruned(pruned);
                if pruned < PRUNE_BATCH {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot prune finished sagas");
                break;
            }
        }
    }
}

async fn update_gauges(orchestrator: &Orchestrator, stuck_threshold: Duration) {
    let store = orchestrator.store();
    let stuck_before = now_millis() - stuck_threshold.as_millis() as i64;
    match (
        store.count_unfinished(None).await,
        store.count_unfinished(Some(stuck_before)).await,
        store.count_finished().await,
    ) {
        (Ok(in_flight), Ok(stuck), Ok(kept)) => crate::metrics::set_gauges(in_flight, stuck, kept),
        (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
            tracing::debug!(%error, "cannot read the saga gauges")
        }
    }
}
