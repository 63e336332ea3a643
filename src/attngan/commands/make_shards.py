"""`attngan make-shards`: write WebDataset shards from any supported data folder."""

from __future__ import annotations

import argparse
import re

NAME = "make-shards"
HELP = ("write WebDataset shards (train-/test-NNNNNN.tar, shards.json, vocab.json) from a CUB, "
        "SynthBirds, COCO or image-folder data set")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="data folder: an image folder (metadata.jsonl/.csv), CUB/SynthBirds or COCO")
    p.add_argument("--out", required=True, help="folder for the shards")
    p.add_argument("--per-shard", type=int, default=1000, help="samples per tar file")
    p.add_argument("--min-count", type=int, default=1,
                   help="vocabulary: keep words seen at least this often in the train captions")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in --out")


# The files write_shards makes, finished or in progress: only these are ever removed.
_OURS = re.compile(r"^(?:(?:train|test)-\d{6}\.tar|\.(?:train|test)-\d{6}\.tar\.tmp)$")


def our_shard_files(out) -> list:
    """The shard files (and shard temporaries) of a make-shards run in `out`; nothing else."""
    return sorted(p for p in out.iterdir() if _OURS.match(p.name) and (p.is_file() or p.is_symlink()))


_MEMBER = re.compile(r"^(?:train|test)-\d{8}\.")


def written_by_us(path) -> bool:
    """Whether a finished .tar looks like write_shards' own: its first member is named
    <split>-NNNNNNNN.<ext> with mtime 0. A user's WebDataset shards that merely share the naming
    are left alone."""
    import tarfile

    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
    except (OSError, tarfile.TarError):
        return False
    return first is None or (bool(_MEMBER.match(first.name)) and first.mtime == 0)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from attngan.commands._common import check_writable_dir
    from attngan.data.convert import layout_records
    from attngan.data.shards import INDEX, write_shards
    from attngan.errors import AttnGANError

    out = check_writable_dir(args.out)
    # shards.json is written last: with it the folder is a finished set of shards; without it,
    # our shard files there are what a killed run left, safe to write again.
    finished = (out / INDEX).exists()
    if finished and not args.overwrite:
        raise AttnGANError(f"{out} already holds shards (pass --overwrite to replace them)")
    if args.per_shard < 1 or args.min_count < 1:
        raise AttnGANError("--per-shard and --min-count must be at least 1")
    records = {s: layout_records(args.data, s) for s in ("train", "test")}
    if out.is_dir():
        old = our_shard_files(out)
        foreign = [p for p in old if p.suffix == ".tar" and not written_by_us(p)]
        if foreign:
            raise AttnGANError(f"{out} holds {foreign[0].name}, which make-shards did not write: "
                               "choose another --out (nothing was changed)")
        if finished:
            (out / INDEX).unlink()  # first: a run killed while replacing leaves no stale index
        for path in old:
            path.unlink()
        if old and not finished:
            print(f"make-shards: removed {len(old)} shard files of an earlier run that did not finish")
    index = write_shards(records, out, per_shard=args.per_shard, source=str(args.data),
                         min_count=args.min_count)
    parts = ", ".join(f"{s} {v['samples']} samples in {len(v['shards'])} shards"
                      + (f" ({v['skipped']} not images, left out)" if v.get("skipped") else "")
                      for s, v in index["splits"].items())
    print(f"shards: {parts} -> {Path(out) / INDEX}")
    return 0
