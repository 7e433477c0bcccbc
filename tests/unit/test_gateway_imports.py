"""The gateway's modules import one another without a cycle.

Every import statement counts, wherever it stands: at module level, inside a function, or under
`if TYPE_CHECKING:` — an import hidden in a function is still a cycle, only a later one.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "services" / "gateway"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement of `path` may load (for `from X import a`: X and X.a)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def gateway_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(GATEWAY.rglob("*.py")) if "migrations" not in p.parts}


def import_graph() -> dict[str, set[str]]:
    modules = gateway_modules()
    # a package's __init__ is imported by its submodules whatever they name; ours are empty or leaf-like, and a
    # submodule importing its own package is not an edge worth a cycle
    return {name: {n for n in imported_names(path) if n in modules and n != name and not name.startswith(n + ".")}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_gateways_import_graph_is_acyclic():
    graph = import_graph()
    assert "services.gateway.auth" in graph and graph["services.gateway.auth"], "the scan found no imports"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


@pytest.mark.parametrize("leaf", ["state", "validators", "errors", "cache"])
def test_shared_modules_are_leaves(leaf):
    assert import_graph()[f"services.gateway.{leaf}"] == set()


def test_config_imports_no_middleware():
    assert import_graph()["services.gateway.config"] <= {"services.gateway.validators"}


@pytest.mark.parametrize("first", ["auth", "config", "cors", "idempotency", "state"])
def test_each_of_the_untied_modules_imports_first_in_a_fresh_interpreter(first):
    order = [first] + [m for m in ("auth", "config", "cors", "idempotency", "state", "app") if m != first]
    code = "; ".join(f"import services.gateway.{m}" for m in order)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)

