"""The layers stay layers, and the import graph has no circle.

Layer order, bottom to top: plugins -> tokenizers_ar -> priors -> pipelines. A module imports
only its own layer and the ones below it; `plugins` knows no component (each package registers
its own built-ins in its `plugin.py`, loaded by name). Stage 2 (priors) never imports stage 1
(tokenizers_ar) either: shared vocabulary lives in `plugins`. Every import counts, at module top
or inside a function (a function-level import hides a circle, it does not remove it); only
imports under `if TYPE_CHECKING:` are left out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("plugins", "tokenizers_ar", "priors", "pipelines")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the four packages."""
    out = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` except what sits under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports. `from pkg import name` depends on the module
    pkg.name when that is a module, else on pkg itself (its __init__)."""
    known = modules()

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        deps = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                           for a in node.names]
            else:
                continue
            deps |= {t for t in map(owner, targets) if t and t != module}
        graph[module] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_no_import_circle_anywhere():
    assert circles(import_graph()) == []


def test_no_upward_import():
    upward = [f"{m} -> {d}" for m, deps in import_graph().items() for d in deps if layer(d) > layer(m)]
    assert upward == []


def test_plugins_know_no_component():
    for module, deps in import_graph().items():
        if module.startswith("plugins"):
            assert all(d.startswith("plugins") for d in deps), (module, deps)


def test_stage_two_never_imports_stage_one():
    for module, deps in import_graph().items():
        if module.startswith("priors"):
            bad = {d for d in deps if d.startswith("tokenizers_ar")}
            assert not bad, f"{module} imports {sorted(bad)}"


def test_the_checks_see_circles_and_upward_imports():
    """The two checks above can fail: a made-up graph with a circle and an upward edge."""
    graph = {"priors.a": {"priors.b"}, "priors.b": {"priors.a", "pipelines.x"}, "pipelines.x": set()}
    assert circles(graph) == [["priors.a", "priors.b"]]
    assert layer("pipelines.x") > layer("priors.b")


def test_every_builtin_package_registers_itself():
    from plugins.manager import BUILTIN_PLUGINS

    assert {m.split(".")[0] for m in BUILTIN_PLUGINS} == set(LAYERS) - {"plugins"}
    assert all((ROOT / (m.replace(".", "/") + ".py")).is_file() for m in BUILTIN_PLUGINS)


def test_decoding_layers_have_no_cycle():
    """processors <- decoding <- strategies (sampling, beam, speculative) <- generate: nothing
    below `generate` imports a strategy, `generate`, or the package front (priors/__init__)."""
    graph = import_graph()
    strategies = {"priors.sampling", "priors.beam", "priors.speculative"}
    for module in ("priors.processors", "priors.decoding", "priors.sampling", "priors.beam",
                   "priors.speculative"):
        bad = graph[module] & (strategies | {"priors.generate", "priors"})
        assert not bad, f"{module} imports {sorted(bad)}"
    assert "priors.decoding" not in graph["priors.processors"]
    assert strategies <= graph["priors.generate"]
