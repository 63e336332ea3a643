"""The repository speaks only of the project: no file names the environment it was built in or
documents that do not ship with it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Built from pieces so that this file does not match itself.
FORBIDDEN = ("work" + "place", "GUI" + "DE.md", "the " + "brief", "build " + "machine",
             "facts " + "file", "shared" + "/reference")
OUTPUTS = {".git", ".venv", ".pytest_cache", "runs", "data", "build", "dist"}  # top-level folders


def _repo_files() -> list[Path]:
    """The files git tracks or would (new, not ignored); outside a git checkout, every file but the
    virtual environment, run outputs and caches."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for p in ROOT.rglob("*"):
            parts = p.relative_to(ROOT).parts
            if p.is_file() and parts[0] not in OUTPUTS and not any(
                    part == "__pycache__" or part.endswith(".egg-info") for part in parts[:-1]):
                files.append(p)
        return files


def _hits(paths: list[Path], root: Path = ROOT) -> list[str]:
    """'path:line: word' for every forbidden word in a text file (case-insensitive)."""
    hits = []
    for path in paths:
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # binary files (weights, images) and files deleted but still tracked
        for n, line in enumerate(text.splitlines(), 1):
            low = line.lower()
            hits += [f"{path.relative_to(root)}:{n}: {w}" for w in FORBIDDEN if w.lower() in low]
    return hits


def test_the_scan_finds_a_forbidden_word_in_any_case(tmp_path):
    (tmp_path / "notes.md").write_text("fine\nsee " + "GUI" + "DE.MD for more\n", encoding="utf-8")
    (tmp_path / "weights.bin").write_bytes(b"\xff\xfe" + ("work" + "place").encode())
    found = _hits([tmp_path / "notes.md", tmp_path / "weights.bin"], root=tmp_path)
    assert found == ["notes.md:2: " + "GUI" + "DE.md"]


def test_no_file_speaks_of_the_build_environment():
    files = _repo_files()
    assert Path(__file__) in files and (ROOT / "README.md") in files
    assert _hits(files) == []
