"""Run folders that survive kills: one writer at a time, no stale temporaries, logs that match the
snapshot a run resumes from, and resumes that refuse a changed network or batch.

Every write in a run folder goes through a temporary beside its target (attngan.fileio,
io.replace_dir), so a process killed mid-write leaves its temporary behind. The next run of the
same folder takes the folder's lock and removes those whose writer is dead: the temporaries carry
the project's own prefix and their writer's PID, so nothing a user put there is ever removed. The lock is a POSIX record
lock on `.lock`, whose text is the holder's PID: the kernel drops it when its holder dies, however it
dies, and forked DataLoader workers do not inherit it (an flock would stay held until the last
worker exited). A second live run is refused with that PID instead of racing the first one's writes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from attngan.errors import AttnGANError
from attngan.fileio import atomic_write_bytes, read_json_object, temporary_writer

LOCK_NAME = ".lock"

# The subfolders a run writes single files into (previews); its saved-model folders are replaced
# whole, so a killed write inside one of them sits in a temporary folder beside it.
RUN_SUBFOLDERS = ("samples", "attention")


def is_temporary(name: str) -> bool:
    """Whether `name` is one of the project's temporaries (attngan.fileio names them)."""
    return temporary_writer(name) is not None


def clean_temporaries(folder: str | os.PathLike, subfolders: tuple[str, ...] = RUN_SUBFOLDERS,
                      own_are_stale: bool = False) -> list[Path]:
    """Remove the temporaries that writers which are no longer alive left directly in `folder` and
    in its `subfolders`; returns what was removed. Nothing else is looked at: a user's files (a
    hidden `.notes.old` included) and the temporaries of a live writer stay. `own_are_stale`:
    this process's PID counts as dead (a run that has just taken the folder's lock and written
    nothing yet; its PID on a temporary is a reused one)."""
    removed: list[Path] = []
    folder = Path(folder)
    for d in (folder, *(folder / s for s in subfolders)):
        if not d.is_dir() or d.is_symlink():
            continue
        for entry in sorted(d.iterdir()):
            pid = temporary_writer(entry.name)
            if pid is None or (pid_alive(pid) and not (own_are_stale and pid == os.getpid())):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid.isdigit() else "another process"


@contextmanager
def claim_run_dir(folder: str | os.PathLike, enabled: bool = True) -> Iterator[list[Path]]:
    """Hold `folder`'s lock for the body (creating the folder) and clean its stale temporaries
    first (saying how many); yields what was removed. A folder another live process holds is a
    one-line error.
    `enabled=False` (non-zero DDP ranks: rank 0 holds the lock for the run) does nothing."""
    if not enabled:
        yield []
        return
    import fcntl

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise AttnGANError(f"{folder} is in use by {_holder(lock)} (an attngan run writing "
                                   "there); wait for it to end or stop it") from None
            raise
        # The previous holder may have unlinked the file between our open and our lockf: then the
        # lock we hold is on a file nobody else can find. Start again on the current one.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        removed = clean_temporaries(folder, own_are_stale=True)
        if removed:
            print(f"removed {len(removed)} temporaries of an earlier, killed run in {folder}")
        yield removed
    finally:
        # Unlink while still holding the lock, so a run folder that ended holds only its files.
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
        os.close(fd)
        if created:  # a run that failed before writing anything leaves no empty folder behind
            try:
                folder.rmdir()
            except OSError:
                pass


def truncate_jsonl(path: str | os.PathLike, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite a JSON-lines log (atomically) with only the rows `keep` accepts, dropping also a
    torn last line of a killed writer; returns how many rows were dropped. A resumed run calls this
    so that rows written after its snapshot are not there twice."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(row, dict) and keep(row):
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode("utf-8"))
    return dropped


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], fixed: tuple[str, ...],
                        folder: str | os.PathLike) -> list[str]:
    """Compare the config a run started with (`saved`, its resolved_config.json) with the one it
    resumes with. A changed key under one of the `fixed` prefixes (shapes, batch, seed: what the
    saved state cannot continue under) is a one-line error naming the key and both values; the other
    changes are returned as "key: old -> new" for the run to print."""
    old, new = _flat(saved), _flat(current)
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]

    def is_fixed(k: str) -> bool:
        return any(k == f or k.startswith(f + ".") for f in fixed)

    refused = [k for k in changed if is_fixed(k) and k in old]
    if refused:
        k = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise AttnGANError(f"cannot resume {folder}: {k} was {old[k]!r} and is now {new.get(k)!r}"
                           f"{more}; the saved state needs the same value (use another --out "
                           "for a new run)")
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed if k in old]


def resume_changes(folder: str | os.PathLike, current: dict[str, Any],
                   fixed: tuple[str, ...]) -> list[str]:
    """check_resume_config against the folder's resolved_config.json (the config its run wrote);
    a folder without one (written before that file existed) has nothing to compare."""
    saved = Path(folder) / "resolved_config.json"
    if not saved.is_file():
        return []
    return check_resume_config(read_json_object(saved, "run config"), current, fixed, folder)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
