"""The Kubernetes manifests: valid against the Kubernetes schemas, hardened, and wired together.

Schema validation uses kubernetes-validate (PyPI), which bundles the OpenAPI-derived JSON schemas
of each Kubernetes release, so it runs offline; strict mode also refuses unknown fields (a
misspelt ``readOnlyRootFileSystem`` would otherwise be silently ignored by the API server).
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy_helpers import (
    containers,
    flag_value,
    k8s_bytes,
    k8s_documents,
    k8s_one,
    redis_bytes,
    settings_variables,
    workloads,
)

# The oldest release the manifests claim (topologySpreadConstraints.matchLabelKeys is beta and on
# by default from 1.27) and the newest one the validator knows.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
SECRET_VARIABLES = frozenset({"PROXY_UPSTREAM_API_KEY", "PROXY_ADMIN_TOKEN"})
PROXY_LABELS = {"app.kubernetes.io/name": "llm-cache-proxy", "app.kubernetes.io/component": "proxy"}


def _doc_id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec."""
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def redis_args(name: str) -> list[str]:
    """Command-line arguments of the Redis container of workload ``name``."""
    (workload,) = [w for w in workloads() if w["metadata"]["name"] == name]
    (container,) = pod_spec(workload)["containers"]
    return [str(arg) for arg in container["args"]]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("doc", k8s_documents(), ids=_doc_id)
def test_manifest_is_valid_against_the_kubernetes_schema(doc: dict[str, Any], version: str) -> None:
    """Every manifest validates strictly (no unknown fields) against the schema of each release."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{_doc_id(doc)} against {version}: {path}: {exc.message}", pytrace=False)


def test_validator_refuses_a_misspelt_field() -> None:
    """The validator really checks: a typo in a securityContext field is an error in strict mode."""
    broken = k8s_one("Deployment")
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = container["securityContext"].pop(
        "readOnlyRootFilesystem"
    )
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_expected_objects_exist_once_and_without_namespace() -> None:
    """Proxy Deployment/Service/HPA/PDB/config, both Redis, a NetworkPolicy; no namespace (`kubectl -n`)."""
    docs = k8s_documents()
    names = [_doc_id(d) for d in docs]
    assert len(names) == len(set(names))
    assert {
        "ConfigMap/llm-cache-proxy",
        "Secret/llm-cache-proxy",
        "Deployment/llm-cache-proxy",
        "Service/llm-cache-proxy",
        "HorizontalPodAutoscaler/llm-cache-proxy",
        "PodDisruptionBudget/llm-cache-proxy",
        "Deployment/llm-cache-proxy-redis-cache",
        "Service/llm-cache-proxy-redis-cache",
        "StatefulSet/llm-cache-proxy-redis-state",
        "Service/llm-cache-proxy-redis-state",
        "NetworkPolicy/llm-cache-proxy-redis",
    } <= set(names)
    assert all("namespace" not in d["metadata"] for d in docs)


@pytest.mark.parametrize("workload", workloads(), ids=_doc_id)
def test_every_container_is_locked_down(workload: dict[str, Any]) -> None:
    """Read-only root, no privilege escalation, ALL capabilities dropped, non-root, seccomp RuntimeDefault."""
    pod = pod_spec(workload)
    pod_context = pod.get("securityContext", {})
    assert pod.get("automountServiceAccountToken") is False
    assert pod.get("hostNetwork", False) is False
    for container in containers(workload):
        context = container.get("securityContext", {})
        assert context.get("readOnlyRootFilesystem") is True, container["name"]
        assert context.get("allowPrivilegeEscalation") is False, container["name"]
        assert context.get("privileged", False) is False, container["name"]
        assert context.get("capabilities", {}).get("drop") == ["ALL"], container["name"]
        assert not context.get("capabilities", {}).get("add"), container["name"]
        assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, container["name"]
        assert context.get("runAsUser", pod_context.get("runAsUser", 0)) != 0, container["name"]
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", container["name"]


@pytest.mark.parametrize("workload", workloads(), ids=_doc_id)
def test_every_container_has_requests_limits_and_probes(workload: dict[str, Any]) -> None:
    """CPU and memory requests, a memory limit no smaller than the request, readiness and liveness probes."""
    for container in containers(workload):
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        limit = k8s_bytes(resources["limits"]["memory"])
        assert limit >= k8s_bytes(resources["requests"]["memory"]), container["name"]
        assert "readinessProbe" in container, container["name"]
        assert "livenessProbe" in container, container["name"]


@pytest.mark.parametrize("workload", workloads(), ids=_doc_id)
def test_writable_paths_are_volumes(workload: dict[str, Any]) -> None:
    """With a read-only root, each place a container writes is a declared volume (or PVC template)."""
    pod = pod_spec(workload)
    declared = {v["name"] for v in pod.get("volumes", [])}
    declared |= {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    writes = {"proxy": "/tmp", "redis": "/data"}  # tempfile.mkdtemp / Redis' working directory
    for container in containers(workload):
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert writes[container["name"]] in mounts, container["name"]
        assert set(mounts.values()) <= declared


def test_proxy_pods_run_as_the_image_user_and_probe_health_and_readiness() -> None:
    """uid 10001 (the Dockerfile's USER), readiness on /readyz, liveness on /healthz, 2+ replicas."""
    dep = k8s_one("Deployment")
    assert dep["spec"]["replicas"] >= 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = pod_spec(dep)
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["enableServiceLinks"] is False  # a Service named "proxy" would inject PROXY_PORT
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_termination_grace_covers_prestop_and_both_drain_phases() -> None:
    """terminationGracePeriodSeconds > preStop sleep + 2 x PROXY_SHUTDOWN_GRACE (in-flight requests,
    then background stores, each bounded by it), so Kubernetes never SIGKILLs a draining proxy."""
    pod = pod_spec(k8s_one("Deployment"))
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert pre_stop >= 3  # endpoints and load balancers need a moment to drop the pod
    grace = float(k8s_one("ConfigMap")["data"]["PROXY_SHUTDOWN_GRACE"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + 2 * grace
    # The readiness probe notices the drain (503) within the pause's budget too.
    probe = container["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= pre_stop + grace


def test_proxy_pods_spread_over_nodes_hard_and_zones_soft() -> None:
    """Spread by hostname (DoNotSchedule) and zone (ScheduleAnyway), both selecting the proxy pods."""
    pod = pod_spec(k8s_one("Deployment"))
    constraints = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert constraints["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert constraints["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in constraints.values():
        assert constraint["maxSkew"] == 1
        assert constraint["labelSelector"]["matchLabels"] == PROXY_LABELS
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def test_disruption_budget_keeps_a_proxy_up_and_lets_drains_proceed() -> None:
    """The PDB selects the proxy pods and allows one disruption; the HPA never goes below 2 pods."""
    pdb = k8s_one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == PROXY_LABELS
    assert pdb["spec"]["maxUnavailable"] == 1
    hpa = k8s_one("HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", "llm-cache-proxy")


def test_cache_redis_is_a_bounded_lru_without_persistence() -> None:
    """The cache Redis evicts any key by LRU under maxmemory, writes nothing to disk, fits its limit."""
    args = redis_args("llm-cache-proxy-redis-cache")
    assert flag_value(args, "--maxmemory-policy") == "allkeys-lru"
    assert flag_value(args, "--appendonly") == "no"
    assert flag_value(args, "--save") == ""
    (workload,) = [w for w in workloads() if w["metadata"]["name"] == "llm-cache-proxy-redis-cache"]
    (container,) = pod_spec(workload)["containers"]
    limit = k8s_bytes(container["resources"]["limits"]["memory"])
    assert redis_bytes(flag_value(args, "--maxmemory")) <= 0.8 * limit


def test_state_redis_never_evicts_and_persists_on_a_volume() -> None:
    """The state Redis: a StatefulSet, noeviction, AOF fsynced every second into /data on a PVC."""
    state = k8s_one("StatefulSet", "llm-cache-proxy-redis-state")
    args = redis_args("llm-cache-proxy-redis-state")
    assert flag_value(args, "--maxmemory-policy") == "noeviction"
    assert flag_value(args, "--appendonly") == "yes"
    assert flag_value(args, "--appendfsync") in {"everysec", "always"}
    assert flag_value(args, "--dir") == "/data"
    (template,) = state["spec"]["volumeClaimTemplates"]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    (container,) = pod_spec(state)["containers"]
    assert {"name": template["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    # Room beside maxmemory for the copy-on-write of a fork (AOF rewrite, snapshot).
    limit = k8s_bytes(container["resources"]["limits"]["memory"])
    assert redis_bytes(flag_value(args, "--maxmemory")) <= 0.5 * limit
    assert pod_spec(state)["securityContext"]["fsGroup"] == pod_spec(state)["securityContext"]["runAsGroup"]
    service = k8s_one("Service", state["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"


def test_proxy_points_at_both_redis_services() -> None:
    """PROXY_REDIS_URL names the cache Redis Service, PROXY_STATE_REDIS_URL the state one, on its port."""
    data = k8s_one("ConfigMap")["data"]
    expected = {
        "PROXY_REDIS_URL": "llm-cache-proxy-redis-cache",
        "PROXY_STATE_REDIS_URL": "llm-cache-proxy-redis-state",
    }
    for variable, service_name in expected.items():
        match = re.fullmatch(r"redis://([\w-]+):(\d+)(/\d+)?", data[variable])
        assert match, data[variable]
        assert match.group(1) == service_name
        (port,) = k8s_one("Service", service_name)["spec"]["ports"]
        assert port["port"] == int(match.group(2))


def test_config_uses_known_variables_and_placeholder_secrets() -> None:
    """ConfigMap/Secret keys are real settings, secrets only in the Secret, and only placeholders."""
    data = k8s_one("ConfigMap")["data"]
    secret = k8s_one("Secret")["stringData"]
    assert set(data) | set(secret) <= settings_variables()
    assert not SECRET_VARIABLES & set(data)
    assert all("replace" in value for value in secret.values())
    assert data["PROXY_HOST"] == "0.0.0.0"


def test_proxy_takes_its_settings_from_the_configmap_and_secret_and_is_scraped() -> None:
    """envFrom names the ConfigMap and Secret; scrape annotations name the container's port."""
    dep = k8s_one("Deployment")
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    (container,) = pod_spec(dep)["containers"]
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    assert {"configMapRef": {"name": "llm-cache-proxy"}} in container["envFrom"]
    assert {"secretRef": {"name": "llm-cache-proxy"}} in container["envFrom"]


def test_each_service_selects_exactly_one_workload_on_a_named_port() -> None:
    """Every Service's selector matches one workload's pod labels, and its targetPort is a port name there."""
    for svc in (d for d in k8s_documents() if d["kind"] == "Service"):
        selector = svc["spec"]["selector"].items()
        matched = [w for w in workloads() if selector <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1, svc["metadata"]["name"]
        assert matched[0]["spec"]["selector"]["matchLabels"].items() <= selector
        ports = {p["name"] for c in containers(matched[0]) for p in c["ports"]}
        assert all(p["targetPort"] in ports for p in svc["spec"]["ports"])


def test_only_proxy_pods_may_reach_redis() -> None:
    """The NetworkPolicy selects both Redis pods and admits only proxy pods, on 6379."""
    policy = k8s_one("NetworkPolicy", "llm-cache-proxy-redis")
    spec = policy["spec"]
    (expression,) = spec["podSelector"]["matchExpressions"]
    assert (expression["key"], expression["operator"]) == ("app.kubernetes.io/component", "In")
    redis_components = {
        w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for w in workloads()
        if w["metadata"]["name"].startswith("llm-cache-proxy-redis")
    }
    assert set(expression["values"]) == redis_components == {"redis-cache", "redis-state"}
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": PROXY_LABELS}}]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
