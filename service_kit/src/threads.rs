//! The tokio runtime a service binary runs on, and how many worker threads it gets.
//!
//! The decision: the participants default to **one** worker thread and
//! order_service to one per core. A participant does little CPU work per message;
//! what it pays for is wake-ups, and with two workers every delivery also wakes
//! the idle worker to look for work to steal (visible in `strace` as futex calls
//! between the two). Measured in docs/performance.md: one worker cuts the
//! participants' CPU per saga by 10–15 %; throughput stays within the noise.
//! order_service serves gRPC beside its replies and needs the second core.
//!
//! `TOKIO_WORKER_THREADS`, tokio's own variable, overrides either default, so a
//! deployment that gives a participant more cores can use them.

use std::num::NonZeroUsize;

/// The environment variable that overrides the default (tokio's own name).
pub const WORKER_THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// A service's default number of tokio worker threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One worker thread: for the participants.
    One,
    /// One worker per available core (tokio's default): for order_service.
    PerCore,
}

/// The runtime setting was not usable.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{WORKER_THREADS_VAR} must be a whole number of 1 or more, got {0:?}")]
    InvalidWorkerThreads(String),
    #[error("cannot build the tokio runtime: {0}")]
    Build(#[from] std::io::Error),
}

/// The number of worker threads for `default`, unless `configured` (the value of
/// [`WORKER_THREADS_VAR`], if set) says otherwise.
pub fn worker_threads(default: Workers, configured: Option<&str>) -> Result<usize, RuntimeError> {
    match configured.map(str::trim) {
        Some(value) if !value.is_empty() => value
            .parse::<NonZeroUsize>()
            .map(NonZeroUsize::get)
            .map_err(|_| RuntimeError::InvalidWorkerThreads(value.to_owned())),
        _ => Ok(match default {
            Workers::One => 1,
            Workers::PerCore => std::thread::available_parallelism().map(NonZeroUsize::get).unwrap_or(1),
        }),
    }
}

/// A multi-thread runtime with every driver enabled and the worker count of
/// [`worker_threads`], read from the environment once.
pub fn tokio_runtime(default: Workers) -> Result<tokio::runtime::Runtime, RuntimeError> {
    build(default, std::env::var(WORKER_THREADS_VAR).ok().as_deref())
}

fn build(default: Workers, configured: Option<&str>) -> Result<tokio::runtime::Runtime, RuntimeError> {
    let workers = worker_threads(default, configured)?;
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_default_to_one_worker_and_the_orchestrator_to_one_per_core() {
        assert_eq!(worker_threads(Workers::One, None).unwrap(), 1);
        let cores = std::thread::available_parallelism().map(NonZeroUsize::get).unwrap_or(1);
        assert_eq!(worker_threads(Workers::PerCore, None).unwrap(), cores);
        assert_eq!(worker_threads(Workers::PerCore, Some("  ")).unwrap(), cores);
    }

    #[test]
    fn the_environment_overrides_the_default() {
        assert_eq!(worker_threads(Workers::One, Some("3")).unwrap(), 3);
        assert_eq!(worker_threads(Workers::PerCore, Some(" 1 ")).unwrap(), 1);
    }

    #[test]
    fn a_bad_worker_count_is_an_error_that_names_the_variable() {
        for bad in ["0", "-1", "two", "1.5"] {
            let error = worker_threads(Workers::One, Some(bad)).unwrap_err();
            assert!(error.to_string().contains(WORKER_THREADS_VAR), "{error}");
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn the_runtime_has_the_configured_workers() {
        assert_eq!(build(Workers::One, None).unwrap().metrics().num_workers(), 1);
        assert_eq!(build(Workers::One, Some("2")).unwrap().metrics().num_workers(), 2);
        assert!(matches!(build(Workers::PerCore, Some("0")), Err(RuntimeError::InvalidWorkerThreads(_))));
    }
}
