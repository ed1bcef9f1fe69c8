//! gRPC plumbing every service shares: reflection for both protocol versions (old
//! grpcurl only speaks `v1alpha`), and `grpc.health.v1` driven by readiness.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic_health::server::HealthReporter;

/// The health service name that is `SERVING` while the process answers at all:
/// what liveness probes ask for, as opposed to `""` (ready to work).
pub const LIVENESS_SERVICE: &str = "liveness";

/// The reflection builder: every FTGO proto file is known (so every message type
/// resolves), but only `service` and health are advertised, so `grpcurl list` on a
/// port shows what that port serves.
fn reflection(service: &str) -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service)
        .with_service_name("grpc.health.v1.Health")
}

/// Reflection, `grpc.reflection.v1`, advertising `service`.
pub fn reflection_v1(
    service: &str,
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::Error,
> {
    reflection(service).build_v1()
}

/// Reflection, `grpc.reflection.v1alpha` (what grpcurl before 1.9 speaks),
/// advertising `service`.
pub fn reflection_v1alpha(
    service: &str,
) -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
    tonic_reflection::server::Error,
> {
    reflection(service).build_v1alpha()
}

/// Binds the gRPC listener; port 0 picks a free port (tests), reported by
/// `local_addr` before the server runs.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Marks the whole server (`""`) and `service_name` as serving or not. Kubernetes'
/// `grpc:` probes ask for `""` unless told otherwise.
pub async fn set_health(reporter: &HealthReporter, service_name: &str, serving: bool) {
    let status = if serving { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
    reporter.set_service_status("", status).await;
    reporter.set_service_status(service_name, status).await;
}
