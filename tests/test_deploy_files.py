"""Structure of the deployment artefacts shared by compose and Kubernetes: Dockerfile, .env.example.

No Docker daemon or cluster is needed: the files are parsed and cross-checked, so a renamed
setting or a forgotten variable fails here rather than at deploy time. Compose and Kubernetes
have their own modules (test_deploy_compose.py, test_deploy_k8s.py).
"""

from __future__ import annotations

import json
import re
import tomllib

from tests.deploy_helpers import DEPLOY, REPO, compose, env_example, settings_variables

DESIGN = REPO.parent / "shared" / "DESIGN.md"

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
        "PROXY_STATE_REDIS_URL",
    ]
)
SECRET_VARIABLES = frozenset({"PROXY_UPSTREAM_API_KEY", "PROXY_ADMIN_TOKEN", "PROXY_METRICS_TOKEN"})
# Settings fields that are TOML tables (PROXY_CONFIG), never environment variables.
TABLE_SETTINGS = frozenset({"PROXY_PRICING", "PROXY_KEYS"})


def design_variables() -> frozenset[str]:
    """PROXY_* names in DESIGN.md's "Configuration" table, or the fallback list."""
    if not DESIGN.is_file():
        return DESIGN_FALLBACK
    section = DESIGN.read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n## ")[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    return frozenset(re.findall(r"PROXY_[A-Z_]+[A-Z]", "\n".join(table)))


def test_design_table_is_parsed() -> None:
    """The configuration table yields the documented variables, not an empty set."""
    assert {"PROXY_UPSTREAM_URL", "PROXY_REDIS_URL", "PROXY_LOG_FORMAT"} <= design_variables()


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


def test_dockerfile_fixes_the_mmap_threshold_so_purged_images_return_memory() -> None:
    """MALLOC_MMAP_THRESHOLD_=131072 in the image's environment: with glibc's dynamic threshold a
    full hot tier kept +333 MiB RSS after a purge; fixed, large buffers are mmapped and returned."""
    env = " ".join(args for op, args in dockerfile_instructions() if op == "ENV")
    assert "MALLOC_MMAP_THRESHOLD_=131072" in env.split()


def test_dockerfile_copies_what_pip_install_needs() -> None:
    """The image copies pyproject.toml, its readme and the package before `pip install .`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    steps = dockerfile_instructions()
    copied = {src for op, args in steps if op == "COPY" for src in args.split()[:-1]}
    assert {"pyproject.toml", project["readme"], "proxy"} <= copied
    assert any(op == "RUN" and "pip install ." in args for op, args in steps)


def test_env_example_lists_every_variable() -> None:
    """.env.example names every setting the proxy reads from the environment (each documented
    one and every Settings field), each with a comment, and no typos."""
    names = {k for k in env_example() if k.startswith("PROXY_")}
    missing = (design_variables() | EXTRA_VARIABLES | (settings_variables() - TABLE_SETTINGS)) - names
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


def test_env_example_names_every_variable_compose_interpolates() -> None:
    """Each ${VAR} of docker-compose.yml is in .env.example, and every non-PROXY_ entry is used there."""
    text = (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert interpolated
    listed = set(env_example())
    assert interpolated <= listed
    assert {name for name in listed if not name.startswith("PROXY_")} <= interpolated
    assert compose()  # the file parses


def test_env_example_placeholders_are_not_usable_secrets() -> None:
    """Passwords in the example are visibly placeholders, never a real-looking default."""
    env = env_example()
    assert env["GF_ADMIN_PASSWORD"].startswith("replace")
