"""The architecture as the code has it: packages with one docstring, no import cycles, and a web
layer that loads no budget code. The layer order itself is import-linter's (``make lint``,
contracts in pyproject.toml)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "proxy"


def _import_graph() -> dict[str, set[str]]:
    """Module → modules it imports at run time (``if TYPE_CHECKING:`` imports load nothing)."""
    graph = grimp.build_graph("proxy", exclude_type_checking_imports=True, cache_dir=None)
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    """The run-time import graph of ``proxy`` has no cycle (the old cache <-> hot_tier one included)."""
    assert _cycles(_import_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a three-module loop is reported as one component."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_package_init_is_one_docstring() -> None:
    """Each package's ``__init__`` says what it owns in one docstring and holds no code."""
    inits = sorted(PACKAGE.glob("*/__init__.py"))
    assert len(inits) >= 12
    for init in inits:
        body = ast.parse(init.read_text()).body
        assert len(body) == 1, f"{init.relative_to(ROOT)} holds more than its docstring"
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring, f"{init.relative_to(ROOT)} has no docstring"


def test_the_web_layer_loads_no_budget_code() -> None:
    """Importing the web layer, the pipeline and the endpoints (every module of them) loads no
    ``proxy.budget`` module: the app factory plugs budgets in, nothing below it imports them."""
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for package in ("web", "pipeline", "endpoints")
        for path in (PACKAGE / package).glob("*.py")
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name.removesuffix('.__init__'))\n"
        "print(sorted(m for m in sys.modules if m.startswith('proxy.')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "proxy.web.admin" in loaded
    assert "proxy.pipeline.flow" in loaded
    assert "proxy.budget" not in loaded
    # The app factory is what plugs them in.
    with_app = subprocess.run(
        [sys.executable, "-c", "import sys, proxy.app; print(sorted(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "proxy.budget.guard" in with_app
