"""deploy/docker-compose.yml, parsed and cross-checked (there is no Docker engine to run it here).

Same design as the Kubernetes manifests: two proxies behind nginx, a cache Redis that may evict
and a state Redis that never does and persists, hardened containers, Prometheus with the alert rules.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.deploy_helpers import (
    DEPLOY,
    REPO,
    as_env_dict,
    compose,
    flag_value,
    load_yaml,
    redis_bytes,
)

PROXIES = ("proxy1", "proxy2")
REDIS = ("redis-cache", "redis-state")
SHUTDOWN_GRACE_S = 30  # the default PROXY_SHUTDOWN_GRACE; .env.example keeps it


def services() -> dict[str, dict[str, Any]]:
    """Compose services by name."""
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def seconds(duration: str) -> float:
    """A compose duration such as "70s" or "1m30s"."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def default_of(value: str) -> str:
    """The default of a ``${VAR:-default}`` interpolation (or the value itself)."""
    match = re.fullmatch(r"\$\{[A-Z0-9_]+:-(.*)\}", value)
    return match.group(1) if match else value


def test_compose_has_every_service() -> None:
    """Two proxies, the load balancer, both Redis, Prometheus and Grafana."""
    assert {*PROXIES, "lb", *REDIS, "prometheus", "grafana"} == set(services())


@pytest.mark.parametrize("name", PROXIES)
def test_proxies_use_both_redis_and_wait_for_them(name: str) -> None:
    """Each replica is built from the repo, points both Redis URLs at the two services, waits for both."""
    service = services()[name]
    assert (DEPLOY / service["build"]["context"]).resolve() == REPO
    assert (REPO / service["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    env = as_env_dict(service["environment"])
    assert env["PROXY_REDIS_URL"] == "redis://redis-cache:6379/0"
    assert env["PROXY_STATE_REDIS_URL"] == "redis://redis-state:6379/0"
    assert (env["PROXY_HOST"], env["PROXY_PORT"]) == ("0.0.0.0", "8080")
    for redis in REDIS:
        assert service["depends_on"][redis] == {"condition": "service_healthy"}


@pytest.mark.parametrize("name", PROXIES)
def test_proxies_are_hardened_and_drain_before_being_killed(name: str) -> None:
    """Read-only root with a /tmp tmpfs, no capabilities, no-new-privileges, a /healthz check, and a
    stop grace longer than both drain phases (in-flight requests, then background stores)."""
    service = services()[name]
    assert service["read_only"] is True
    assert any(mount.split(":")[0] == "/tmp" for mount in service["tmpfs"])
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert any("/healthz" in part for part in service["healthcheck"]["test"])
    assert seconds(service["stop_grace_period"]) > 2 * SHUTDOWN_GRACE_S


@pytest.mark.parametrize("name", REDIS)
def test_redis_runs_unprivileged_and_reports_health(name: str) -> None:
    """Both Redis run as the image's redis user with no capabilities, read-only, health-checked."""
    service = services()[name]
    assert service["image"].startswith("redis:7")
    assert service["user"] == "999:1000"
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_cache_redis_is_a_bounded_lru_without_persistence() -> None:
    """The cache Redis evicts any key by LRU under a memory cap and writes nothing to disk."""
    command = [str(arg) for arg in services()["redis-cache"]["command"]]
    assert flag_value(command, "--maxmemory-policy") == "allkeys-lru"
    assert redis_bytes(default_of(flag_value(command, "--maxmemory"))) > 0
    assert flag_value(command, "--save") == ""
    assert flag_value(command, "--appendonly") == "no"


def test_state_redis_never_evicts_and_persists_on_a_volume() -> None:
    """The state Redis: noeviction, AOF fsynced every second into /data on a named volume."""
    service = services()["redis-state"]
    command = [str(arg) for arg in service["command"]]
    assert flag_value(command, "--maxmemory-policy") == "noeviction"
    assert flag_value(command, "--appendonly") == "yes"
    assert flag_value(command, "--appendfsync") in {"everysec", "always"}
    assert flag_value(command, "--dir") == "/data"
    volume, path = service["volumes"][0].split(":")[:2]
    assert path == "/data"
    assert volume in compose()["volumes"]


def test_every_service_refuses_new_privileges() -> None:
    """no-new-privileges everywhere; capabilities dropped everywhere but nginx (its master switches user)."""
    for name, service in services().items():
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        if name != "lb":
            assert service.get("cap_drop") == ["ALL"], name


def test_load_balancer_waits_for_healthy_proxies_and_targets_both() -> None:
    """nginx starts after both proxies are healthy, balances over both and does not buffer SSE."""
    lb = services()["lb"]
    assert lb["depends_on"] == {name: {"condition": "service_healthy"} for name in PROXIES}
    conf = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    assert all(f"server {name}:8080" in conf for name in PROXIES)
    assert "proxy_buffering off" in conf


def test_bind_mounts_name_existing_files() -> None:
    """Every relative bind mount names a file or folder that exists in the repo."""
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} missing"


def test_host_ports_are_unique() -> None:
    """No two services publish the same host port."""
    ports = [p.split(":")[0] for s in services().values() for p in s.get("ports", [])]
    assert len(ports) == len(set(ports))


def test_grafana_is_provisioned_and_anonymous() -> None:
    """Grafana mounts the repo's provisioning and dashboards and lets anonymous viewers in."""
    grafana = services()["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "../grafana/provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == "../grafana/dashboards"
    env = as_env_dict(grafana["environment"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_prometheus_scrapes_every_proxy() -> None:
    """Job llm-proxy scrapes /metrics of each replica every 15 s."""
    config = load_yaml(DEPLOY / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "llm-proxy"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scrape_interval", config["global"]["scrape_interval"]) == "15s"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:8080" for name in PROXIES}


def test_prometheus_container_finds_the_rule_files() -> None:
    """Each rule file prometheus.yml names resolves, through compose's mounts, to a file in deploy/."""
    prometheus = services()["prometheus"]
    flags = dict(arg.split("=", 1) for arg in prometheus["command"] if "=" in arg)
    config_path = PurePosixPath(flags["--config.file"])
    mounts = {
        PurePosixPath(target): DEPLOY / source
        for source, target, *_ in (v.split(":") for v in prometheus["volumes"])
        if source.startswith(".")
    }
    assert mounts[config_path] == DEPLOY / "prometheus.yml"
    rule_files = load_yaml(DEPLOY / "prometheus.yml")["rule_files"]
    assert rule_files
    for rule_file in rule_files:
        in_container = config_path.parent / rule_file
        (host,) = [
            source / in_container.relative_to(target)
            for target, source in mounts.items()
            if in_container.is_relative_to(target)
        ]
        assert host.is_file(), f"{rule_file} -> {host}"
        assert host == DEPLOY / rule_file  # the same path promtool checks from the repo


def test_prometheus_and_grafana_start_in_order() -> None:
    """Prometheus is health-checked; Grafana waits for it to be healthy."""
    assert "/-/ready" in " ".join(services()["prometheus"]["healthcheck"]["test"])
    assert services()["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
