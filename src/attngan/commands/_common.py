"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attngan.errors import AttnGANError, check_seed

if TYPE_CHECKING:
    from attngan.config import Config


def add_training_data_argument(p) -> None:
    """--data of the training commands: every layout the training loaders read."""
    p.add_argument("--data", required=True,
                   help="data: a CUB/COCO folder, an image folder with metadata.jsonl/.csv, or "
                        "WebDataset shards ('shards/train-{000000..000009}.tar' or their folder)")


def add_config_arguments(p: argparse.ArgumentParser, default: str = "bird") -> None:
    from attngan.config import PRESETS  # dataclasses only: --help stays fast

    p.add_argument("--config", default=default,
                   help=f"preset name ({', '.join(PRESETS)}), our YAML, or an "
                        f"original AttnGAN .yml (default: {default})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.batch_size=8 (repeatable; "
                        "VALUE is parsed as YAML)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    from attngan.config_io import yaml_load

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise AttnGANError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml_load(raw)
        except yaml.YAMLError as e:
            reason = str(e).splitlines()[0] if str(e) else "not YAML"
            raise AttnGANError(f"--set {key}: cannot parse value {raw[:80]!r}: {reason}") from None
        except ValueError:  # an int beyond Python's digit limit
            raise AttnGANError(f"--set {key}: cannot parse value {raw[:80]!r}") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise AttnGANError(f"--set {key}: '{part}' was already set to a value, not a section")
        node[parts[-1]] = value
    return out


def resolve_config(args: argparse.Namespace):
    """The config of --config and --set, with --seed applied; validated as a whole."""
    from attngan.config import load_config, validate

    cfg = load_config(args.config, parse_overrides(args.overrides))
    if getattr(args, "seed", None) is not None:
        cfg.seed = check_seed(args.seed, "--seed")
    return validate(cfg)


def check_minutes(minutes: float, what: str = "--minutes") -> float:
    """A wall-clock budget in minutes: finite and 0 or more (0 = no budget)."""
    if not (math.isfinite(minutes) and minutes >= 0):
        raise AttnGANError(f"{what} must be 0 or more (0 = no budget), got {minutes}")
    return minutes


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Fail now, in one line, if a folder cannot be created or written at `path`.

    Commands call this before loading models or data, so a typo such as an output path under a
    regular file fails in a second rather than after the work (and without a traceback from
    mkdir). Returns the path; nothing is created.
    """
    path = _non_empty(path, what)
    _check_dir(path, path, what)
    return path


def _non_empty(path: str | os.PathLike, what: str) -> Path:
    # Path("") is the current folder: an empty --out (an unset shell variable) would write there.
    if not str(path).strip():
        raise AttnGANError(f"{what} is empty; give a path")
    return Path(path)


def _check_dir(path: Path, shown: Path, what: str) -> None:
    probe = path
    while True:
        if probe.is_symlink() and not probe.exists():
            raise AttnGANError(f"{what} {shown}: {probe} is a broken symbolic link")
        if probe.exists():
            if not probe.is_dir():
                where = "is a file" if probe == shown else "is a file, not a folder"
                raise AttnGANError(f"{what} {shown}: {probe} {where}")
            if not os.access(probe, os.W_OK | os.X_OK):
                raise AttnGANError(f"{what} {shown}: {probe} is not writable")
            return
        parent = probe.parent
        if parent == probe:  # nothing of the path exists, not even its root
            return
        probe = parent


def check_not_inside_a_run(path: str | os.PathLike, what: str = "--out") -> Path:
    """A run folder must not sit inside another run's folder (e.g. `--out runs/x/model`): each
    run rewrites and cleans its own folder, so one would overwrite or delete the other's files.
    A run folder is one that holds a training state (state.pt)."""
    path = _non_empty(path, what)
    for parent in path.resolve().parents:
        if (parent / "state.pt").is_file():
            raise AttnGANError(f"{what} {path} is inside the run folder {parent}; choose a folder outside it")
    return path


def check_writable_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """As check_writable_dir, for a file to be written at `path`: its folder must be creatable,
    and `path` itself must not be a folder."""
    path = _non_empty(path, what)
    if path.is_dir():
        raise AttnGANError(f"{what} {path} is a folder; give a file name")
    _check_dir(path.parent, path, what)
    return path


def print_config(cfg: Config) -> None:
    print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))


def add_render_arguments(p: argparse.ArgumentParser, data_set: str, native: str, native_help: str) -> None:
    """The options every generated data set shares: seed, workers, overwrite and output format."""
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    p.add_argument("--workers", type=int, default=1, help="processes (does not change the output)")
    p.add_argument("--overwrite", action="store_true", help=f"replace an existing {data_set} folder at --out")
    p.add_argument("--format", choices=(native, "imagefolder", "webdataset"), default=native,
                   help=f"{native}: {native_help} (default); imagefolder: images + metadata.jsonl; "
                        "webdataset: train-/test-NNNNNN.tar shards + shards.json")
