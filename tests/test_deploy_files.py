"""Structure of the deployment artefacts: compose, Prometheus, Kubernetes, Dockerfile, .env.example.

No Docker daemon or cluster is needed: the files are parsed and cross-checked, so a renamed
service, a probe on the wrong path or a forgotten setting fails here rather than at deploy time.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import Settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DESIGN = REPO.parent / "shared" / "DESIGN.md"
PROXIES = ("proxy1", "proxy2")

# DESIGN.md's configuration table, for checkouts without ../shared beside the repository.
DESIGN_FALLBACK = frozenset(
    [
        "PROXY_UPSTREAM_URL",
        "PROXY_UPSTREAM_API_KEY",
        "PROXY_HOST",
        "PROXY_PORT",
        "PROXY_REDIS_URL",
        "PROXY_CACHE_TTL",
        "PROXY_CACHE_MAX_ENTRY_BYTES",
        "PROXY_MEMORY_CACHE_BYTES",
        "PROXY_MAX_BODY_BYTES",
        "PROXY_UPSTREAM_TIMEOUT",
        "PROXY_ADMIN_TOKEN",
        "PROXY_CONFIG",
        "PROXY_LOG_LEVEL",
        "PROXY_LOG_FORMAT",
    ]
)
# Settings described elsewhere in DESIGN.md (or added since) that operators must also find.
EXTRA_VARIABLES = frozenset(
    [
        "PROXY_CACHE_SCOPE",
        "PROXY_FINISH_ON_DISCONNECT",
        "PROXY_HOT_CACHE_BYTES",
        "PROXY_KEY_VERIFY_TTL",
        "PROXY_WORKERS",
    ]
)
SECRET_VARIABLES = frozenset({"PROXY_UPSTREAM_API_KEY", "PROXY_ADMIN_TOKEN"})


def load_yaml(path: Path) -> Any:
    """Parse one YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def k8s_documents() -> list[dict[str, Any]]:
    """Every manifest under deploy/k8s, multi-document files split."""
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def k8s_one(kind: str, name: str = "llm-cache-proxy") -> dict[str, Any]:
    """The single manifest of ``kind`` called ``name``."""
    found = [d for d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def design_variables() -> frozenset[str]:
    """PROXY_* names in DESIGN.md's "Configuration" table, or the fallback list."""
    if not DESIGN.is_file():
        return DESIGN_FALLBACK
    section = DESIGN.read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n## ")[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    return frozenset(re.findall(r"PROXY_[A-Z_]+[A-Z]", "\n".join(table)))


def settings_variables() -> frozenset[str]:
    """Every environment variable the proxy's Settings understands."""
    return frozenset(f"PROXY_{f.name.upper()}" for f in fields(Settings))


def env_example() -> dict[str, str]:
    """Variables of .env.example with their values."""
    pairs = {}
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            pairs[match.group(1)] = match.group(2)
    return pairs


def as_env_dict(environment: Any) -> dict[str, str]:
    """Compose accepts ``environment`` as a mapping or a list of ``K=V``."""
    if isinstance(environment, dict):
        return {str(k): str(v) for k, v in environment.items()}
    return dict(item.split("=", 1) for item in environment or [])


def compose() -> dict[str, Any]:
    """deploy/docker-compose.yml, parsed."""
    data: dict[str, Any] = load_yaml(DEPLOY / "docker-compose.yml")
    return data


def test_design_table_is_parsed() -> None:
    """The configuration table yields the documented variables, not an empty set."""
    assert {"PROXY_UPSTREAM_URL", "PROXY_REDIS_URL", "PROXY_LOG_FORMAT"} <= design_variables()


def test_compose_has_every_service() -> None:
    """Compose brings up two proxies, Redis, Prometheus and Grafana."""
    assert {*PROXIES, "redis", "prometheus", "grafana"} <= set(compose()["services"])


@pytest.mark.parametrize("name", PROXIES)
def test_compose_proxies_share_redis(name: str) -> None:
    """Each replica is built from the repo, waits for Redis and points PROXY_REDIS_URL at it."""
    service = compose()["services"][name]
    assert (DEPLOY / service["build"]["context"]).resolve() == REPO
    assert (REPO / service["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert "redis" in service["depends_on"]
    env = as_env_dict(service["environment"])
    assert re.fullmatch(r"redis://redis:6379(/\d+)?", env["PROXY_REDIS_URL"])
    assert env["PROXY_HOST"] == "0.0.0.0"
    assert env["PROXY_PORT"] == "8080"


def test_compose_redis_is_a_bounded_lru() -> None:
    """Redis 7 is started with a memory cap and LRU eviction, so the cache cannot grow unbounded."""
    redis = compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert "--maxmemory" in command


def test_compose_mounts_existing_files() -> None:
    """Every relative bind mount in compose names a file or folder that exists in the repo."""
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} missing"


def test_compose_host_ports_are_unique() -> None:
    """No two services publish the same host port."""
    ports = [p.split(":")[0] for s in compose()["services"].values() for p in s.get("ports", [])]
    assert len(ports) == len(set(ports))


def test_compose_grafana_is_provisioned_and_anonymous() -> None:
    """Grafana mounts the repo's provisioning and dashboards and lets anonymous viewers in."""
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "../grafana/provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == "../grafana/dashboards"
    env = as_env_dict(grafana["environment"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_compose_load_balancer_targets_both_proxies() -> None:
    """nginx balances over both replicas and does not buffer SSE streams."""
    conf = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    assert all(f"server {name}:8080" in conf for name in PROXIES)
    assert "proxy_buffering off" in conf


def test_prometheus_scrapes_every_proxy() -> None:
    """Job llm-proxy scrapes /metrics of each replica every 15 s."""
    config = load_yaml(DEPLOY / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "llm-proxy"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scrape_interval", config["global"]["scrape_interval"]) == "15s"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:8080" for name in PROXIES}
    assert set(PROXIES) <= set(compose()["services"])


def test_k8s_has_every_kind_without_namespace() -> None:
    """The manifests hold each kind once per name and leave the namespace to `kubectl -n`."""
    docs = k8s_documents()
    kinds = {d["kind"] for d in docs}
    expected = {"ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler"}
    assert expected <= kinds
    assert all("namespace" not in d["metadata"] for d in docs)
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names))


def test_k8s_selectors_match_labels() -> None:
    """Each Deployment selects its own pods, and each Service selects exactly one Deployment's pods."""
    docs = k8s_documents()
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for dep in deployments:
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    for svc in (d for d in docs if d["kind"] == "Service"):
        selector = svc["spec"]["selector"].items()
        matched = [d for d in deployments if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1, svc["metadata"]["name"]
        containers = matched[0]["spec"]["template"]["spec"]["containers"]
        ports = {p["name"] for c in containers for p in c["ports"]}
        assert all(p["targetPort"] in ports for p in svc["spec"]["ports"])


def test_k8s_deployment_probes_and_resources() -> None:
    """Two replicas, readiness on /readyz, liveness on /healthz, requests and limits set."""
    dep = k8s_one("Deployment")
    assert dep["spec"]["replicas"] == 2
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_k8s_deployment_is_scraped_and_configured() -> None:
    """Pods carry Prometheus scrape annotations and take env from the ConfigMap and Secret."""
    dep = k8s_one("Deployment")
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    sources = container["envFrom"]
    assert {"configMapRef": {"name": k8s_one("ConfigMap")["metadata"]["name"]}} in sources
    assert {"secretRef": {"name": k8s_one("Secret")["metadata"]["name"]}} in sources


def test_k8s_config_uses_known_variables_and_placeholder_secrets() -> None:
    """ConfigMap/Secret keys are real settings, secrets only in the Secret, and only placeholders."""
    data = k8s_one("ConfigMap")["data"]
    secret = k8s_one("Secret")["stringData"]
    assert set(data) | set(secret) <= settings_variables()
    assert not SECRET_VARIABLES & set(data)
    assert all("replace" in value for value in secret.values())
    assert data["PROXY_HOST"] == "0.0.0.0"
    redis_host = re.fullmatch(r"redis://([\w-]+):6379(/\d+)?", data["PROXY_REDIS_URL"])
    assert redis_host
    assert k8s_one("Service", redis_host.group(1))


def test_k8s_hpa_targets_the_deployment() -> None:
    """The HPA (autoscaling/v2) scales the proxy Deployment on 70 % CPU."""
    hpa = k8s_one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", k8s_one("Deployment")["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == 70
    assert hpa["spec"]["minReplicas"] >= 2


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile with continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in logical.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_dockerfile_runs_unprivileged_proxy() -> None:
    """python:3.11-slim, a non-root USER, port 8080 exposed and the serve command as CMD."""
    steps = dockerfile_instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [args for op, args in steps if op == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert ("EXPOSE", "8080") in steps
    cmd = [args for op, args in steps if op == "CMD"][-1]
    assert json.loads(cmd) == ["llm-cache-proxy", "serve", "--host", "0.0.0.0"]


def test_dockerfile_healthcheck_without_curl() -> None:
    """The healthcheck probes /healthz with Python, since the slim image has no curl."""
    (check,) = [args for op, args in dockerfile_instructions() if op == "HEALTHCHECK"]
    assert "/healthz" in check
    assert "urllib" in check
    assert "curl" not in check


def test_dockerfile_copies_what_pip_install_needs() -> None:
    """The image copies pyproject.toml, its readme and the package before `pip install .`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    steps = dockerfile_instructions()
    copied = {src for op, args in steps if op == "COPY" for src in args.split()[:-1]}
    assert {"pyproject.toml", project["readme"], "proxy"} <= copied
    assert any(op == "RUN" and "pip install ." in args for op, args in steps)


def test_env_example_lists_every_variable() -> None:
    """.env.example names every documented setting, each with a comment, and no typos."""
    names = {k for k in env_example() if k.startswith("PROXY_")}
    missing = (design_variables() | EXTRA_VARIABLES) - names
    assert not missing
    assert names <= settings_variables()
    lines = (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line.startswith("PROXY_"):
            assert any(prev.startswith("#") for prev in lines[max(0, index - 2) : index]), line


def test_env_example_holds_no_secrets() -> None:
    """Secret variables are left empty in the example file."""
    env = env_example()
    assert all(env[name] == "" for name in SECRET_VARIABLES)
