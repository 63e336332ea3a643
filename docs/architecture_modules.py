"""The module list of docs/ARCHITECTURE.md, made from the code: every module of src/attngan with the
first sentence of its docstring. `python docs/architecture_modules.py --write` rewrites the list
in place; tests/test_architecture.py fails when the file and the code disagree.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "attngan"
DOC = ROOT / "docs" / "ARCHITECTURE.md"
START, END = "<!-- modules: start (docs/architecture_modules.py --write) -->", "<!-- modules: end -->"


def modules() -> list[tuple[str, str]]:
    """(path relative to src/attngan, first sentence of the docstring) for every module."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(PACKAGE).as_posix()
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if rel.endswith("__init__.py") and not doc:
            continue  # an empty package marker says nothing
        first = " ".join(doc.strip().split("\n\n")[0].split())
        out.append((rel, _first_sentence(first)))
    return out


def _first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not "Sec. 3", "et al. 2018", "e.g. ")."""
    for m in re.finditer(r"\. ", text):
        word = text[: m.start()].rsplit(" ", 1)[-1].lstrip("(")
        if word not in ("Sec", "al", "e.g", "i.e", "vs", "cf", "Eq", "Fig"):
            return text[: m.start() + 1]
    return text


def render() -> str:
    width = max(len(rel) for rel, _ in modules())
    lines = [START, "```"]
    lines += [f"{rel:<{width}}  {summary or '(no docstring)'}" for rel, summary in modules()]
    lines += ["```", END]
    return "\n".join(lines)


def current() -> str:
    text = DOC.read_text(encoding="utf-8")
    a, b = text.index(START), text.index(END) + len(END)
    return text[a:b]


def write() -> None:
    text = DOC.read_text(encoding="utf-8")
    a, b = text.index(START), text.index(END) + len(END)
    DOC.write_text(text[:a] + render() + text[b:], encoding="utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write()
    else:
        print(render())
