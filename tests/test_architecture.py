"""docs/ARCHITECTURE.md names every module that exists and no other, and the package keeps its
layering: no import cycles, and nothing used for inference imports the training loops."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "attngan"


def _load_doc_tool():
    spec = importlib.util.spec_from_file_location("architecture_modules", ROOT / "docs" / "architecture_modules.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_architecture_lists_every_module_and_only_those():
    tool = _load_doc_tool()
    named = re.findall(r"^(\S+\.py)\s", tool.current(), flags=re.M)
    existing = [rel for rel, _ in tool.modules()]
    assert sorted(set(named) - set(existing)) == [], "ARCHITECTURE.md names modules that do not exist"
    assert sorted(set(existing) - set(named)) == [], "modules missing from ARCHITECTURE.md"
    assert tool.current() == tool.render(), "run: python docs/architecture_modules.py --write"


def _import_graph() -> dict[str, set[str]]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        names[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
                       and getattr(stmt.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(stmt)}
        for node in ast.walk(tree):  # imports inside functions count too; annotations-only do not
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("attngan"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    graph[name].add(full if full in names else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in names)
        graph[name].discard(name)
    return graph


def _reaches(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_inference_never_imports_the_training_loops():
    graph = _import_graph()
    for top in ("attngan.pipeline", "attngan.legacy", "attngan.serve.app", "attngan.io",
                "attngan.metrics.evaluation", "attngan.captioner"):
        if top not in graph:
            continue
        bad = sorted(m for m in _reaches(graph, top) if m.startswith("attngan.training."))
        assert bad == [], f"{top} reaches {bad}"


def test_model_io_and_config_sit_below_everything_else():
    graph = _import_graph()
    assert _reaches(graph, "attngan.config") <= {"attngan.errors"}
    assert not any(m.startswith(("attngan.training", "attngan.pipeline", "attngan.metrics"))
                   for m in _reaches(graph, "attngan.io"))


def test_the_import_graph_has_no_cycles():
    graph = _import_graph()
    cycles = sorted({tuple(sorted({a, b})) for a in list(graph) for b in graph[a]
                     if a in _reaches(graph, b)})
    assert cycles == [], f"modules that import each other (directly or through others): {cycles[:5]}"
