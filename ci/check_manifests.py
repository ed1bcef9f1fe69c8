#!/usr/bin/env python3
"""Project rules for docker-compose.yaml and the rendered k8s manifests that a
schema cannot express: every service publishes the ports README promises, has a
health check, and (k8s) exposes its HTTP port with Prometheus scrape
annotations next to the gRPC probes.

    check_manifests.py --compose docker-compose.yaml
    check_manifests.py --k8s [LABEL=]rendered.yaml [--k8s ...]

Prints one line per checked item; exits 1 on any violation. Needs PyYAML (the
CI venv has it, as a dependency of kubernetes-validate).
"""

import argparse
import sys

import yaml

# service (compose name) -> (gRPC port, HTTP port)
SERVICES = {
    "order_service": (50051, 8081),
    "consumer_service": (50052, 8082),
    "restaurant_service": (50053, 8083),
    "accounting_service": (50054, 8084),
}
PARTICIPANTS = ["consumer_service", "restaurant_service", "accounting_service"]
RABBITMQ_UI = 15672

problems = []


def check(ok, what):
    print(("  ok   " if ok else "  FAIL ") + what)
    if not ok:
        problems.append(what)


def group(subject, items):
    """One line per subject: ok with all items, or FAIL with the failed ones."""
    failed = [what for ok, what in items if not ok]
    if failed:
        check(False, f"{subject}: " + "; ".join(failed))
    else:
        check(True, f"{subject}: " + "; ".join(what for _, what in items))


def published(service):
    """(host, container) port pairs of a compose service, short or long syntax."""
    pairs = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            pairs.add((int(port.get("published", 0)), int(port.get("target", 0))))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) >= 2:
            pairs.add((int(parts[-2]), int(parts[-1])))
    return pairs


def condition(service, dep):
    deps = service.get("depends_on") or {}
    return (deps.get(dep) or {}).get("condition") if isinstance(deps, dict) else None


def check_compose(path):
    with open(path) as f:
        doc = yaml.safe_load(f)  # resolves anchors and << merges
    services = doc.get("services") or {}
    print(f"{path}:")
    rabbit = services.get("rabbitmq") or {}
    check((RABBITMQ_UI, RABBITMQ_UI) in published(rabbit),
          f"rabbitmq: management UI published on {RABBITMQ_UI}")
    redis_cmd = " ".join(map(str, (services.get("redis") or {}).get("command") or []))
    check("--appendonly yes" in redis_cmd, "redis: runs with --appendonly yes")
    for name, (grpc, http) in SERVICES.items():
        svc = services.get(name)
        if svc is None:
            check(False, f"{name}: service missing")
            continue
        ports = published(svc)
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env if "=" in e)
        test = " ".join(map(str, (svc.get("healthcheck") or {}).get("test") or []))
        deps = ["rabbitmq", "redis"] + (PARTICIPANTS if name == "order_service" else [])
        group(name, [
            ((grpc, grpc) in ports and (http, http) in ports, f"publishes {grpc}, {http}"),
            (str(env.get("HTTP_ADDR", "")).endswith(f":{http}"),
             f"HTTP_ADDR on {http}"),
            (f":{http}/readyz" in test, f"health check GET :{http}/readyz"),
            (all(condition(svc, d) == "service_healthy" for d in deps),
             "waits for " + ", ".join(deps) + " healthy"),
        ])


def container_port(container, name):
    for port in container.get("ports") or []:
        if port.get("name") == name:
            return port.get("containerPort")
    return None


def check_k8s(arg):
    label, _, path = arg.rpartition("=")
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    print(f"{label or path}:")
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), {})[d["metadata"]["name"]] = d
    for svc_name, (grpc, http) in SERVICES.items():
        name = svc_name.replace("_", "-")
        dep = by_kind.get("Deployment", {}).get(name)
        svc = by_kind.get("Service", {}).get(name)
        if dep is None or svc is None:
            check(False, f"{name}: Deployment and Service exist")
            continue
        pod = dep["spec"]["template"]
        ann = pod.get("metadata", {}).get("annotations") or {}
        c = pod["spec"]["containers"][0]
        # The container's environment as Kubernetes builds it: envFrom ConfigMaps
        # first, then explicit env entries (which win).
        env = {}
        for source in c.get("envFrom") or []:
            ref = (source.get("configMapRef") or {}).get("name")
            env.update((by_kind.get("ConfigMap", {}).get(ref) or {}).get("data") or {})
        env.update({e["name"]: e.get("value") for e in c.get("env") or []})
        ready = (c.get("readinessProbe") or {}).get("grpc") or {}
        live = (c.get("livenessProbe") or {}).get("grpc") or {}
        ports = {p.get("name"): p for p in svc.get("spec", {}).get("ports") or []}
        group(name, [
            (container_port(c, "grpc") == grpc and container_port(c, "http") == http,
             f"containerPorts grpc={grpc} http={http}"),
            (str(env.get("HTTP_ADDR", "")).endswith(f":{http}"), f"HTTP_ADDR on {http}"),
            (str(env.get("GRPC_ADDR", "")).endswith(f":{grpc}"), f"GRPC_ADDR on {grpc}"),
            (ann.get("prometheus.io/scrape") == "true"
             and ann.get("prometheus.io/port") == str(http)
             and ann.get("prometheus.io/path") == "/metrics",
             f"prometheus.io scrape annotations (:{http}/metrics)"),
            (ready.get("port") == grpc and ready.get("service", "") == "",
             "gRPC readiness probe (\"\")"),
            (live.get("port") == grpc and live.get("service") == "liveness",
             "gRPC liveness probe (\"liveness\")"),
            (ports.get("grpc", {}).get("port") == grpc
             and ports.get("http", {}).get("port") == http
             and ports.get("http", {}).get("targetPort") == "http",
             f"Service ports {grpc}, {http}"),
        ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compose", action="append", default=[])
    parser.add_argument("--k8s", action="append", default=[])
    args = parser.parse_args()
    if not args.compose and not args.k8s:
        parser.error("nothing to check: pass --compose and/or --k8s")
    for path in args.compose:
        check_compose(path)
    for path in args.k8s:
        check_k8s(path)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
