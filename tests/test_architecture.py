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


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        names[name.removesuffix(".__init__")] = path
    return names


def import_edges(source: str, names: set[str]) -> tuple[set[str], set[str]]:
    """(modules of the package that `source` imports, package imports that name no module).

    Every import counts: at the top, inside functions, and under `if TYPE_CHECKING:` (a type-only
    import still ties the two modules together). A relative import names no module here either.
    """
    edges, unresolved = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            unresolved.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "attngan":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in names:
                    edges.add(full)
                elif node.module in names:
                    edges.add(node.module)
                else:
                    unresolved.add(full)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "attngan":
                    continue
                (edges if alias.name in names else unresolved).add(alias.name)
    return edges, unresolved


def _import_graph() -> dict[str, set[str]]:
    names = _module_names()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in names.items():
        graph[name], _ = import_edges(path.read_text(encoding="utf-8"), set(names))
        graph[name].discard(name)
    return graph


def test_every_import_of_the_package_names_a_module():
    names = _module_names()
    bad = []
    for name, path in sorted(names.items()):
        _, unresolved = import_edges(path.read_text(encoding="utf-8"), set(names))
        bad += [f"{name}: {u}" for u in sorted(unresolved)]
    assert bad == [], f"imports the import graph cannot follow (no such module): {bad}"


def test_the_import_scan_sees_type_only_imports_and_unknown_modules():
    names = {"attngan", "attngan.a", "attngan.b", "attngan.c"}
    source = """
from typing import TYPE_CHECKING
from attngan import a
if TYPE_CHECKING:
    from attngan.b import Thing
def f():
    import attngan.c
    from attngan.gone import x
    from . import near
"""
    edges, unresolved = import_edges(source, names)
    assert edges == {"attngan.a", "attngan.b", "attngan.c"}
    assert unresolved == {"attngan.gone.x", "."}


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
    # config (dataclasses, presets) stands on its loader/validator and on the original's yml table.
    assert _reaches(graph, "attngan.config") <= {"attngan.errors", "attngan.config_io", "attngan.legacy_yml"}
    for low in ("attngan.io", "attngan.model_card"):  # a model card is read and written at io's level
        assert not any(m.startswith(("attngan.training", "attngan.pipeline", "attngan.metrics", "attngan.apps"))
                       for m in _reaches(graph, low)), low


def test_the_import_graph_has_no_cycles():
    graph = _import_graph()
    cycles = sorted({tuple(sorted({a, b})) for a in list(graph) for b in graph[a]
                     if a in _reaches(graph, b)})
    assert cycles == [], f"modules that import each other (directly or through others): {cycles[:5]}"


# Data layouts are decided in one place: the data sources (attngan.data.records and the modules
# that define a source). Anywhere else, a comparison with a data set's name or a condition on a
# layout's marker folder is a second detector in the making.
LAYOUT_NAMES = {"birds", "coco", "cub", "imagefolder", "shards", "CUB_200_2011"}
DATA_SOURCE_MODULES = {"data/records.py", "data/cub.py", "data/coco.py", "data/imagefolder.py",
                       "data/shards.py", "data/layout.py"}
# The config names its presets after the data sets (text settings, the original's yml files):
# a choice of settings, not of how a folder is read.
CONFIG_MODULES = {"config.py", "legacy.py", "legacy_yml.py"}


def _literals(node: ast.AST):
    for n in ast.walk(node):
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            yield n.value


def layout_branches(source: str, names: set[str] = LAYOUT_NAMES) -> list[tuple[int, str]]:
    """(line, code) of every comparison with a layout name, and every condition that mentions one
    (`if (root / "CUB_200_2011").is_dir()`, `x if dataset == "coco" else y`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
        elif isinstance(node, (ast.If, ast.IfExp, ast.While, ast.Assert)):
            parts = [node.test]
        elif isinstance(node, ast.comprehension):
            parts = list(node.ifs)
        elif isinstance(node, ast.match_case):
            parts = [node.pattern]
        else:
            continue
        if any(v in names for p in parts for v in _literals(p)):
            found.append((parts[0].lineno, ast.unparse(parts[0])[:80]))
    return sorted(set(found))


def test_no_dataset_name_branch_outside_the_data_sources():
    from attngan.data.records import sources

    names = LAYOUT_NAMES | {s.name for s in sources()}
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in DATA_SOURCE_MODULES or rel in CONFIG_MODULES:
            continue
        bad += [f"{rel}:{line}: {code}" for line, code in layout_branches(path.read_text(encoding="utf-8"), names)]
    assert bad == [], ("a branch on a data set's name outside the data sources (add a DataSource "
                       f"in attngan.data.records instead): {bad}")


def test_the_layout_branch_scan_finds_each_form():
    planted = '''
def f(root, dataset, fmt):
    if dataset == "birds":
        pass
    kind = "birds" if (root / "CUB_200_2011").is_dir() else "coco"
    ok = fmt in ("imagefolder", "webdataset")
    while "cub" != fmt:
        break
    return [k for k in root if "shards" in k]
'''
    lines = sorted({line for line, _ in layout_branches(planted)})
    assert lines == [3, 5, 6, 7, 9], lines
    assert layout_branches("if kind in ('part', 'bird'):\n    pass\n") == []


# Which ground truth a folder carries is decided in one place too: its data source's
# `ground_truth` (attngan.data.records.ground_truth). Outside the data package a file test of a
# manifest's name, literal or through a MANIFEST constant, is a second answer in the making.
MANIFEST_NAMES = {"synth_birds.json", "synth_scenes.json"}
FILE_TESTS = {"is_file", "exists", "isfile"}


def manifest_tests(source: str) -> list[tuple[int, str]]:
    """(line, code) of every file test (`.is_file()`, `.exists()`, `os.path.isfile(...)`) of a
    path that names a manifest: a literal file name or a name ending in MANIFEST."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in FILE_TESTS):
            continue
        parts = [node.func.value, *node.args]
        names = {n.id if isinstance(n, ast.Name) else n.attr for p in parts for n in ast.walk(p)
                 if isinstance(n, (ast.Name, ast.Attribute))}
        if (any(v in MANIFEST_NAMES for p in parts for v in _literals(p))
                or any(n.endswith("MANIFEST") for n in names)):
            found.append((node.lineno, ast.unparse(node)[:80]))
    return sorted(set(found))


def test_no_ground_truth_file_test_outside_the_data_package():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("data/"):
            continue
        bad += [f"{rel}:{line}: {code}" for line, code in manifest_tests(path.read_text(encoding="utf-8"))]
    assert bad == [], ("a test of a manifest's file name outside the data package (ask "
                       f"attngan.data.records.ground_truth instead): {bad}")


def test_the_manifest_test_scan_finds_each_form():
    planted = '''
def f(root, os, Path):
    a = (root / "synth_birds.json").is_file()
    if os.path.exists(os.path.join(root, "synth_scenes.json")):
        pass
    b = (Path(root) / SCENES_MANIFEST).is_file()
    c = os.path.isfile(root / synth_birds.MANIFEST)
    d = (root / "config.json").is_file()
    e = (root / "synth_birds.json").read_text()
'''
    assert [line for line, _ in manifest_tests(planted)] == [3, 4, 6, 7]


# Applications (attngan.apps) are programs on the public API that docs/ARCHITECTURE.md lists: the
# library never imports them (the CLI's command module is their one door), and they import
# nothing of the package outside that list.
APPS = "attngan.apps"
APP_DOORS = {"attngan.commands.demo"}


def public_api() -> dict[str, set[str]]:
    """module -> the names a program may import from it ("*": all), from docs/ARCHITECTURE.md."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text[text.index("<!-- public api: start -->"):text.index("<!-- public api: end -->")]
    rows = [line.split() for line in block.splitlines()[1:] if line.strip() and not line.startswith("```")]
    return {row[0]: set(row[1:]) for row in rows}


def non_public_imports(source: str, public: dict[str, set[str]], own: str) -> list[str]:
    """The imports of the package in `source` that are neither the public API nor inside `own`
    (the application's own package), each as "module.name"."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "attngan":
            if node.module == own or node.module.startswith(own + "."):
                continue
            allowed = public.get(node.module, set())
            for alias in node.names:
                if f"{node.module}.{alias.name}" in public or "*" in allowed and not alias.name.startswith("_"):
                    continue  # a public submodule, or a public name of a whole-module entry
                if alias.name not in allowed:
                    bad.append(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] == "attngan"
                    and not (a.name in public and "*" in public[a.name])]
    return bad


def test_the_public_api_names_modules_and_names_that_exist():
    import importlib

    for module, names in public_api().items():
        mod = importlib.import_module(module)
        for name in names - {"*"}:
            assert hasattr(mod, name), f"docs/ARCHITECTURE.md lists {module}.{name}, which does not exist"


def test_no_library_module_imports_an_application():
    graph = _import_graph()
    apps = {m for m in graph if m == APPS or m.startswith(APPS + ".")}
    assert apps, "attngan.apps has no modules"
    bad = sorted(m for m in graph if m not in apps and m not in APP_DOORS
                 and any(t == APPS or t.startswith(APPS + ".") for t in _reaches(graph, m)))
    assert bad == [], f"library modules that reach an application: {bad}"


def test_applications_import_only_the_public_api():
    public = public_api()
    for app in sorted(p for p in (PACKAGE / "apps").iterdir() if p.is_dir() and p.name != "__pycache__"):
        own = f"{APPS}.{app.name}"
        for path in sorted(app.rglob("*.py")):
            bad = non_public_imports(path.read_text(encoding="utf-8"), public, own)
            assert bad == [], f"{path.relative_to(ROOT)} imports outside the public API: {bad}"


def test_the_public_import_scan_finds_each_form():
    public = {"attngan": {"Config"}, "attngan.io": {"*"}, "attngan.pipeline": {"AttnGANPipeline"}}
    planted = '''
from attngan import Config, io
from attngan.io import load, _build
from attngan.pipeline import AttnGANPipeline, fuse_generator
from attngan.apps.demo.settings import KIMG
from attngan.networks import build_generator
import attngan.training.gan_loop
import attngan.io
import torch
'''
    assert non_public_imports(planted, public, "attngan.apps.demo") == [
        "attngan.io._build", "attngan.pipeline.fuse_generator", "attngan.networks.build_generator",
        "attngan.training.gan_loop"]
