# syntax=docker/dockerfile:1
#
# Builds all four FTGO services; the runtime image runs the one selected with
#   docker build --build-arg SERVICE=consumer_service -t ftgo/consumer_service .
# (default: order_service). All four binaries are present in every image, so the
# entrypoint can also be overridden, e.g. `command: ["/usr/local/bin/<service>"]`
# (what k8s/ does with a single ftgo image).
#
# Checked by hadolint in ci/validate-manifests.sh.

FROM rust:1.95-slim-bookworm AS chef
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# protoc is not needed by the build (proto/ uses a pure-Rust compiler) but
# tooling around the build expects it to exist.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
ENV PROTOC=/usr/bin/protoc
ARG CARGO_CHEF_VERSION=0.1.77
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /app

FROM chef AS planner
WORKDIR /app
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
WORKDIR /app
COPY --from=planner /app/recipe.json recipe.json
# Dependencies only: this layer is cached until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# curl is for health checks (docker-compose.yaml asks each service's /readyz).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ftgo \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin ftgo
COPY --from=builder \
    /app/target/release/order_service \
    /app/target/release/consumer_service \
    /app/target/release/restaurant_service \
    /app/target/release/accounting_service \
    /usr/local/bin/
# Declared here, not at the top of the stage, so that the layers above are shared
# by the images of all four services.
ARG SERVICE=order_service
RUN case "${SERVICE}" in \
        order_service|consumer_service|restaurant_service|accounting_service) ;; \
        *) echo "unknown SERVICE '${SERVICE}'" >&2; exit 1 ;; \
    esac \
    && ln -s "/usr/local/bin/${SERVICE}" /usr/local/bin/service
WORKDIR /
USER 10001
# gRPC: order 50051, consumer 50052, restaurant 50053, accounting 50054.
# HTTP (/metrics, /healthz, /readyz): order 8081, consumer 8082, restaurant 8083,
# accounting 8084.
EXPOSE 50051-50054 8081-8084
ENTRYPOINT ["/usr/local/bin/service"]
