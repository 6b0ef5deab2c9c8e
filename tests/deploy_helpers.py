"""Reading the deployment artefacts (compose, Kubernetes, .env.example) for the deploy tests."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from proxy.config import Settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"

_REDIS_UNITS = {
    "": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3,
}  # fmt: skip
_K8S_UNITS = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1000, "M": 1000**2, "G": 1000**3}


def load_yaml(path: Path) -> Any:
    """Parse one YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def settings_variables() -> frozenset[str]:
    """Every environment variable the proxy understands (one per Settings field)."""
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
    """deploy/docker-compose.yml, parsed (YAML merge keys resolved)."""
    data: dict[str, Any] = load_yaml(DEPLOY / "docker-compose.yml")
    return data


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


def workloads() -> list[dict[str, Any]]:
    """Every manifest that runs pods (Deployment, StatefulSet)."""
    return [d for d in k8s_documents() if d["kind"] in {"Deployment", "StatefulSet"}]


def containers(workload: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Init and regular containers of a workload's pod template."""
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def flag_value(args: list[str], flag: str) -> str:
    """The value after ``flag`` in an argument list (a redis-server command line)."""
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def redis_bytes(size: str) -> int:
    """A redis.conf memory size ("768mb", "1gb") in bytes (redis.conf: units are case-insensitive)."""
    match = re.fullmatch(r"(\d+)([a-z]*)", size.strip().lower())
    assert match, size
    assert match.group(2) in _REDIS_UNITS, size
    return int(match.group(1)) * _REDIS_UNITS[match.group(2)]


def k8s_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("768Mi", "1Gi") in bytes."""
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity.strip())
    assert match, quantity
    assert match.group(2) in _K8S_UNITS, quantity
    return int(match.group(1)) * _K8S_UNITS[match.group(2)]
