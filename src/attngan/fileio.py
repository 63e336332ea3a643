"""Atomic file writes (torch-free): a temp file beside the target, then a rename.

Readers never see half a file, and a process killed mid-write leaves the previous version.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def tmp_path_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes 0600 files; saved models and reports should be readable like any other file.
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def publish_mode(path: str | os.PathLike) -> None:
    """Give a file, or a folder and everything in it, the permissions a plain open()/mkdir() would.

    mkstemp/mkdtemp make 0600/0700 entries, and torch.save and safetensors also leave 0600 files
    behind: without this, a saved model is unreadable to anyone but its writer.
    """
    mask = _umask()
    path = Path(path)
    if path.is_dir():
        for p in path.rglob("*"):
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
        os.chmod(path, 0o777 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def tmp_dir_beside(path: str | os.PathLike) -> Path:
    """A fresh staging folder next to `path`, to fill and then rename over it."""
    path = Path(path)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))
