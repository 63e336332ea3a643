"""`attngan make-shards`: write WebDataset shards from any supported data folder."""

from __future__ import annotations

import argparse

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


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from attngan.commands._common import check_writable_dir
    from attngan.data.convert import layout_records
    from attngan.data.shards import INDEX, write_shards
    from attngan.errors import AttnGANError

    out = check_writable_dir(args.out)
    if out.is_dir() and any(out.glob("*.tar")) and not args.overwrite:
        raise AttnGANError(f"{out} already holds shards (pass --overwrite to replace them)")
    if args.per_shard < 1 or args.min_count < 1:
        raise AttnGANError("--per-shard and --min-count must be at least 1")
    records = {s: layout_records(args.data, s) for s in ("train", "test")}
    if args.overwrite:
        for old in Path(out).glob("*.tar"):
            old.unlink()
    index = write_shards(records, out, per_shard=args.per_shard, source=str(args.data),
                         min_count=args.min_count)
    parts = ", ".join(f"{s} {v['samples']} samples in {len(v['shards'])} shards"
                      + (f" ({v['skipped']} not images, left out)" if v.get("skipped") else "")
                      for s, v in index["splits"].items())
    print(f"shards: {parts} -> {Path(out) / INDEX}")
    return 0
