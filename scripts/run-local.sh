#!/usr/bin/env bash
# Run the whole FTGO system locally (no Docker) against a local RabbitMQ and Redis.
#
#   scripts/run-local.sh             # debug build
#   scripts/run-local.sh --release   # release build
#   scripts/run-local.sh --without accounting_service
#                                    # all but one service (start it later by hand,
#                                    # e.g. target/debug/accounting_service)
#
# Service configuration is taken from the environment (AMQP_URL, REDIS_URL,
# FTGO_NAMESPACE, RUST_LOG, LOG_FORMAT, ...); the built-in defaults target
# RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379.
# Ctrl-C (or SIGTERM) stops all four services gracefully.
set -euo pipefail

if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
  echo "run-local.sh needs bash >= 5.1 (found $BASH_VERSION)" >&2
  exit 1
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PROFILE=debug
BUILD_ARGS=(--bins)
declare -A SKIP=()
while [ $# -gt 0 ]; do
  case "$1" in
    --release)
      PROFILE=release
      BUILD_ARGS+=(--release)
      ;;
    --without)
      case "${2:-}" in
        consumer_service | restaurant_service | accounting_service | order_service) SKIP[$2]=1 ;;
        *)
          echo "--without takes a service name: consumer_service, restaurant_service, accounting_service or order_service" >&2
          exit 2
          ;;
      esac
      shift
      ;;
    -h | --help)
      sed -n '2,13p' "$0"
      exit 0
      ;;
    *)
      echo "usage: $0 [--release] [--without SERVICE]..." >&2
      exit 2
      ;;
  esac
  shift
done

log() { printf '[run-local] %s\n' "$*" >&2; }

tcp_probe() { # host port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" >/dev/null 2>&1
}

redis_up() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null || true)" = "PONG" ]
  else
    tcp_probe 127.0.0.1 6379
  fi
}

rabbit_up() {
  if command -v rabbitmq-diagnostics >/dev/null 2>&1 &&
    rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    return 0
  fi
  tcp_probe 127.0.0.1 5672
}

log "building ($PROFILE): cargo build ${BUILD_ARGS[*]}"
cargo build "${BUILD_ARGS[@]}"

missing=0
if ! redis_up; then
  missing=1
  cat >&2 <<'MSG'
[run-local] Redis is not answering on 127.0.0.1:6379. Start it with e.g.:
    redis-server --daemonize yes --port 6379 --save "" --appendonly no
  or: sudo systemctl start redis-server
  or: docker run -d --name ftgo-redis -p 6379:6379 redis:7
MSG
fi
if ! rabbit_up; then
  missing=1
  cat >&2 <<'MSG'
[run-local] RabbitMQ is not answering on 127.0.0.1:5672. Start it with e.g.:
    sudo rabbitmq-server -detached
  or: sudo systemctl start rabbitmq-server
  or: docker run -d --name ftgo-rabbitmq -p 5672:5672 -p 15672:15672 rabbitmq:4-management
MSG
fi
[ "$missing" -eq 0 ] || exit 1

BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"

# Participants first, then the orchestrator.
SERVICES=(consumer_service restaurant_service accounting_service order_service)
for svc in "${SERVICES[@]}"; do
  [ -x "$BIN_DIR/$svc" ] || { log "binary not found: $BIN_DIR/$svc"; exit 1; }
done

declare -a PIDS=()
declare -A NAME_OF=()
SHUTTING_DOWN=0

# Run the service in its own session (setsid execs in place, so $! stays the
# binary's PID) so a terminal Ctrl-C reaches only this script, which then
# sends exactly one SIGTERM to each service. The sed prefixers ignore
# INT/TERM so they keep relaying shutdown logs until the service closes its
# output.
start_service() { # binary prefix
  local svc=$1 prefix=$2 launcher=()
  if [ -n "${SKIP[$svc]:-}" ]; then
    log "not starting $svc (--without)"
    return 0
  fi
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  "${launcher[@]}" "$BIN_DIR/$svc" \
    > >(trap '' INT TERM; exec sed -u "s/^/[$prefix] /") 2>&1 &
  PIDS+=("$!")
  NAME_OF[$!]=$svc
  log "started $svc (pid $!)"
}

alive_pids() {
  local pid
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then printf '%s\n' "$pid"; fi
  done
}

stop_all() {
  local pid left i
  mapfile -t left < <(alive_pids)
  [ "${#left[@]}" -gt 0 ] || return 0
  log "sending SIGTERM to: $(for pid in "${left[@]}"; do printf '%s ' "${NAME_OF[$pid]}"; done)"
  kill -TERM "${left[@]}" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do # 15 s in 0.1 s steps
    mapfile -t left < <(alive_pids)
    [ "${#left[@]}" -gt 0 ] || break
    sleep 0.1
  done
  mapfile -t left < <(alive_pids)
  if [ "${#left[@]}" -gt 0 ]; then
    log "still running after 15s, sending SIGKILL to: $(for pid in "${left[@]}"; do printf '%s ' "${NAME_OF[$pid]}"; done)"
    kill -KILL "${left[@]}" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  sleep 0.2 # let the sed prefixers flush
}

on_signal() { SHUTTING_DOWN=1; }
trap on_signal INT TERM
# Never leave services behind if the script dies unexpectedly.
trap 'stop_all' EXIT

start_service consumer_service consumer
start_service restaurant_service restaurant
start_service accounting_service accounting
sleep 1
start_service order_service order

cat >&2 <<'MSG'

[run-local] All services started. Try:
    grpcurl -plaintext -d '{"consumer_id":1,"restaurant_id":1,"items":[{"menu_item_id":"chicken-vindaloo","quantity":2}]}' localhost:50051 ftgo.order.v1.OrderService/CreateOrder
[run-local] Press Ctrl-C to stop.

MSG

while :; do
  exited=""
  rc=0
  wait -n -p exited "${PIDS[@]}" || rc=$?
  if [ "$SHUTTING_DOWN" -eq 1 ]; then
    log "signal received, shutting down"
    stop_all
    trap - EXIT
    log "stopped"
    exit 0
  fi
  if [ -n "$exited" ]; then
    log "${NAME_OF[$exited]:-pid $exited} exited on its own (status $rc); stopping the others"
    stop_all
    trap - EXIT
    [ "$rc" -ne 0 ] || rc=1
    exit "$rc"
  fi
  if [ -z "$(alive_pids)" ]; then
    log "no services left running; exiting"
    trap - EXIT
    exit 1
  fi
  # wait returned without reaping a service (e.g. an untrapped signal); loop.
done
