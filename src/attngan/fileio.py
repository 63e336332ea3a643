"""Atomic file writes (torch-free): a temp file beside the target, then a rename.

Readers never see half a file, and a process killed mid-write leaves the previous version.
Also the reading side of small JSON metadata files (read_json_object, check_format).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from attngan.errors import AttnGANError

# Metadata files (config.json of a model or DAMSM folder) are a few kilobytes; the cap keeps a
# huge or endless file from being read into memory before it is rejected.
MAX_JSON_BYTES = 16 * 1024 * 1024


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Every temporary the project makes is named TMP_PREFIX + the writer's PID + "-" + mkstemp's 8
# random characters + ".tmp" (torch.save wants an extension), a name no user file has: a later run may then remove the temporaries of
# a writer that is no longer alive (attngan.rundir) without ever touching a file it did not write.
TMP_PREFIX, TMP_SUFFIX = ".attngan-tmp-", ".tmp"
_TMP_NAME = re.compile(r"^" + re.escape(TMP_PREFIX) + r"([1-9][0-9]{0,9})-[a-z0-9_]{8}\.tmp$")


def temporary_writer(name: str) -> int | None:
    """The PID of the process that made the temporary called `name`; None for any other name."""
    m = _TMP_NAME.match(name)
    pid = int(m.group(1)) if m else None
    return pid if pid is not None and pid < 2**31 else None  # no process has a larger PID


def _tmp_prefix() -> str:
    return f"{TMP_PREFIX}{os.getpid()}-"


def tmp_path_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(), suffix=TMP_SUFFIX, dir=path.parent)
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
    return Path(tempfile.mkdtemp(prefix=_tmp_prefix(), suffix=TMP_SUFFIX, dir=path.parent))


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """The one way a file is saved: `write(tmp)` fills a temporary beside `path` (any writer: bytes,
    torch.save, safetensors, numpy), which is flushed to disk, given normal permissions and renamed
    over `path`. Readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_beside(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        publish_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json_object(path: str | os.PathLike, what: str, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A JSON file that must hold an object (a mapping), as a dict; anything else (missing,
    unreadable, too large, not JSON, an array, null, a string) is a one-line AttnGANError that
    names `what` and the path."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise AttnGANError(f"{what} not found: {path}") from None
    except OSError as e:
        raise AttnGANError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise AttnGANError(f"{what} {path} is larger than {max_bytes // (1024 * 1024)} MiB; "
                           "it cannot be a metadata file")
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise AttnGANError(f"{what} {path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise AttnGANError(f"{what} {path} is not valid JSON ({e.msg} at line {e.lineno}, "
                           f"column {e.colno})") from None
    except ValueError as e:  # e.g. an integer beyond Python's digit limit
        raise AttnGANError(f"{what} {path} is not valid JSON ({str(e)[:80]})") from None
    except RecursionError:
        raise AttnGANError(f"{what} {path} is nested too deeply to be a metadata file") from None
    if not isinstance(obj, dict):
        raise AttnGANError(f"{what} {path} must hold a JSON object, got {_json_kind(obj)}")
    return obj


def shown(value: Any, limit: int = 40) -> str:
    """repr(value) for an error message, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_format(meta: dict[str, Any], fmt: str, version: int, where: str | os.PathLike, what: str) -> None:
    """The one check of a versioned metadata file (saved-model folders, vocabularies): its
    "format" must be `fmt` and its "version" `version`, else a one-line AttnGANError naming
    `where`; `what` names the expected kind of file ("an attngan vocabulary")."""
    if meta.get("format") != fmt:
        raise AttnGANError(f"{where} is not {what} (format {shown(meta.get('format'))}; expected '{fmt}')")
    if meta.get("version") != version:
        raise AttnGANError(f"{where} has format version {shown(meta.get('version'))}; "
                           f"this attngan reads version {version}")


def _json_kind(obj: Any) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    return {list: "an array", str: "a string", int: "a number", float: "a number"}.get(type(obj), type(obj).__name__)


def meta_names(meta: dict[str, Any], key: str, where: str | os.PathLike, unique: bool = True) -> list[str]:
    """`meta[key]` checked to be a non-empty list of (distinct) names; one line naming the key if not."""
    v = meta.get(key)
    if not (isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)
            and (not unique or len(set(v)) == len(v))):
        raise AttnGANError(f"{where}: \"{key}\" must be a non-empty list of distinct names")
    return v


def meta_int(meta: dict[str, Any], key: str, default: int, low: int, high: int, where: str | os.PathLike) -> int:
    """`meta[key]` (or `default`) checked to be an integer from `low` to `high`; one line if not."""
    v = meta.get(key, default)
    if type(v) is not int or not low <= v <= high:  # noqa: E721 - bool is not a size
        raise AttnGANError(f"{where}: \"{key}\" must be an integer from {low} to {high}, got {v!r}"[:200])
    return v
