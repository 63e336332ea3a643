"""The project's own superseded folder layouts, read as the current one: what io.py's loader asks
before it trusts a config.json or a run folder's snapshot.

Users' runs and earlier installations hold folders written before the one format of io.py:
  a model folder      {"format_version": 1, "config", "n_words"};
  a DAMSM folder      {"config", "n_words", "metrics"}, with no version at all;
  an oracle folder    {"format": "attngan-oracle", "version": 1, <OracleConfig fields>};
  a captioner folder  {"format": "attngan-captioner", "version": 1, "config", "n_words", "metrics"};
  a DAMSM run folder  with last/ beside best/, where best/ was chosen on the test split.
An old config.json lists no files: its files are the ones its kind's loader reads. Nothing here
writes; the savers only write the current format.

The original AttnGAN release's checkpoints are another project's format: legacy.py converts them,
and builds on io.py, so io.py's own migration cannot live there without an import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attngan.fileio import read_json_object

# The formats of their own that the oracle and the captioner had at version 1.
OLD_FORMATS = {"attngan-oracle": "oracle", "attngan-captioner": "captioner"}


def old_folder_kind(meta: dict[str, Any]) -> str | None:
    """The kind of a config.json in an older layout, or None for any other (the current format,
    or something that is no saved folder at all: io.py's checks name the problem)."""
    if meta.get("format") in OLD_FORMATS and meta.get("version") == 1:
        return OLD_FORMATS[meta["format"]]
    if "format" not in meta and "version" not in meta:
        if meta.get("format_version") == 1:
            return "generator"
        if "format_version" not in meta and "config" in meta:
            return "damsm"
    return None


def old_run_snapshot(run: Path, snapshot: Path) -> Path:
    """The snapshot of a DAMSM run folder to load, given the one the current layout names.

    Runs of older releases kept last/ beside best/ and chose best/ by R-precision on the test
    split, the split evaluation scores on: their last/ is used instead. A best/ that records how it
    was selected (metrics["selection"]) is of the current layout and is used as it is."""
    last = run / "last"
    if not (last / "config.json").is_file():
        return snapshot
    meta = read_json_object(snapshot / "config.json", "DAMSM config")
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    return snapshot if "selection" in metrics else last
