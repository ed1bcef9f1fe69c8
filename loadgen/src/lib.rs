//! loadgen: load for the FTGO CreateOrderSaga, measured end to end.
//!
//! - [`mix`]: README's demo scenarios and a weighted mix of them.
//! - [`schedule`]: closed loop (fixed clients) or open loop (fixed start rate), and
//!   when a run stops.
//! - [`engine`]: offers sagas to a [`engine::SagaRunner`] under a plan and times them.
//! - [`system`]: the runner for the real system (CreateOrder, then WatchOrder or
//!   GetOrder polling until the terminal state).
//! - [`baseline`]: the runner for a minimal orchestrator on the same broker and
//!   Redis with the same durability, the yardstick of the targets.
//! - [`stats`], [`report`], [`chart`]: HDR-histogram percentiles, a per-second
//!   timeline, the JSON / Markdown / text report and the SVG chart.
//! - [`cpu`]: CPU per saga of named processes and of loadgen (`--cpu-of`).
//! - [`targets`]: the targets measured in one run (`--targets`), with a
//!   verdict per target.
//! - [`curve`]: the open loop's latency against load for both sides, and the
//!   highest share of its maximum each sustains within a p99 objective (`--curve`).
//! - [`memory`]: the memory targets' readings and verdicts (the `memory_targets`
//!   binary, which starts the services itself).
//! - [`interrupt`]: the first SIGINT or SIGTERM, so both binaries clean up.
//!
//! The one decision to know: latency is CreateOrder→terminal as the client sees
//! it, and in the open loop it starts at the scheduled start time, so a system
//! that falls behind shows its queueing instead of hiding it.
#![forbid(unsafe_code)]

pub mod baseline;
pub mod chart;
pub mod cpu;
pub mod curve;
pub mod engine;
pub mod interrupt;
pub mod memory;
pub mod mix;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod system;
pub mod targets;
