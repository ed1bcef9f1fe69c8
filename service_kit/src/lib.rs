//! What every FTGO service shares, so that each service crate holds only its domain:
//!
//! - [`settings`]: environment variables parsed once into typed values, with
//!   localhost defaults and a [`settings::Secret`] that never prints.
//! - [`namespace`]: the prefix that isolates one deployment's (or one test's)
//!   queues and Redis keys from another's on a shared broker and Redis.
//! - [`telemetry`]: the one `tracing` subscriber set-up, plain or JSON.
//! - [`shutdown`]: SIGTERM / Ctrl-C as a `CancellationToken` every loop watches.
//! - [`grpc`]: health and reflection (v1 and v1alpha) for every gRPC server.
//! - [`http`]: the operators' port: `/metrics`, `/healthz`, `/readyz`.
//! - [`store`]: Redis connections that reconnect by themselves.
//! - [`runtime`]: the life cycle of a service: bind, connect, consume, report
//!   health, serve, drain on shutdown.
//! - [`participant`]: what the saga participants share: idempotent outcomes stored
//!   under message ids, fixture loading, and their start, command and read errors.
#![forbid(unsafe_code)]

pub mod grpc;
pub mod http;
pub mod namespace;
pub mod participant;
pub mod runtime;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod threads;

pub use namespace::Namespace;
pub use tokio_util::sync::CancellationToken;
