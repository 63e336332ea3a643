"""Generated data sets are written whole: into a staging folder beside the target, then renamed into place.

An error or an interrupt never leaves a partial data set, a killed run's leftovers are cleaned up
by the next run on the same target, and only a folder holding the generator's own marker file is
ever replaced. The marker is the generator's manifest (its ground truth), read back here too.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from attngan.errors import AttnGANError
from attngan.rundir import pid_alive


def write_whole_folder(out: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool,
                       marker: str, what: str) -> Path:
    """`write(tmp)` fills a fresh folder beside `out`, which is then renamed to `out`.

    A non-empty `out` is refused unless `overwrite` is set and it holds `marker` (the manifest
    that says `what` wrote it). Parent folders made here are removed again on failure.
    """
    out = Path(os.path.abspath(Path(out).expanduser()))  # "." and "a/.." get a real name
    check_target(out, overwrite, marker, what)
    created = _make_parents(out.parent)
    _clean_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        write(tmp)
        _swap_into_place(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass
        if isinstance(e, OSError):
            raise AttnGANError(f"cannot write {what} to {out}: {e.strerror or e}") from None
        raise
    return out


def render_in_order(job: Callable[[int], Any], count: int, workers: int, init: Callable[..., None],
                    init_args: tuple, desc: str, progress: bool, chunksize: int = 4) -> list:
    """[job(0), ..., job(count - 1)] after init(*init_args), in this process or in `workers`
    forked ones. Each job seeds itself from its index, so the results do not depend on `workers`."""
    from tqdm import tqdm  # here: the demo's settings (read by `attngan --help`) import this module

    out: list = []
    bar = tqdm(total=count, desc=desc, unit="img", disable=not progress)
    try:
        if workers == 1:
            init(*init_args)
            for i in range(count):
                out.append(job(i))
                bar.update()
        else:
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                              else None)
            with ctx.Pool(workers, initializer=init, initargs=init_args) as pool:
                for rec in pool.imap(job, range(count), chunksize=chunksize):
                    out.append(rec)
                    bar.update()
    finally:
        bar.close()
    return out


def check_target(out: Path, overwrite: bool, marker: str, what: str | None = None) -> None:
    """`out` may be written: absent, empty, or (with `overwrite`) a folder that holds `marker`."""
    if out.exists() and not out.is_dir():
        raise AttnGANError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise AttnGANError(f"{out} already exists and is not empty (pass --overwrite to replace it)")
        if not (out / marker).is_file():
            kind = f"it is not a {what} folder (no {marker})" if what else f"it has no {marker}"
            raise AttnGANError(f"refusing to overwrite {out}: {kind}")


def read_manifest(root: str | os.PathLike, marker: str, what: str) -> dict:
    """A generated folder's manifest (JSON) with `manifest["root"]` set to the folder."""
    path = Path(root) / marker
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AttnGANError(f"{root} is not a {what} folder (no {marker})") from None
    except (OSError, ValueError) as e:
        raise AttnGANError(f"cannot read {path}: {e}".splitlines()[0]) from None
    manifest["root"] = str(Path(root))
    return manifest


def _make_parents(parent: Path) -> list[Path]:
    """mkdir -p that remembers what it made, so a failure can take it back."""
    missing = []
    p = parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    try:
        for d in reversed(missing):
            d.mkdir()
    except OSError as e:
        for d in missing:
            if d.exists():
                try:
                    d.rmdir()
                except OSError:
                    pass
        raise AttnGANError(f"cannot create {parent}: {e.strerror or e}") from None
    return list(reversed(missing))


def _clean_stale(out: Path) -> None:
    """Remove the staging folders that killed runs on `out` left beside it (their PID is
    in the name; a live process's are left alone). A run killed between the two renames of
    _swap_into_place left the previous data set as .OUT.old-PID and no OUT: that one goes back."""
    stale = re.compile(rf"^\.{re.escape(out.name)}\.(tmp|old)-(\d+)$")
    for entry in sorted(out.parent.iterdir()):
        m = stale.match(entry.name)
        if not m or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(m.group(2))
        if pid != os.getpid() and pid_alive(pid):
            continue
        if m.group(1) == "old" and not out.exists():
            os.replace(entry, out)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
