"""Records of any data source written as an image folder or as shards.

`attngan make-shards` and `attngan synth-birds|synth-scenes --format imagefolder|webdataset` go
through here: the same images, captions, classes, splits and boxes whichever layout they came from.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path, PurePosixPath

from attngan.data.records import Record, split_records
from attngan.data.staging import check_target
from attngan.data.synth_birds import generate_synth_birds
from attngan.errors import AttnGANError
from attngan.fileio import atomic_write_bytes



def layout_records(root: str | os.PathLike, split: str) -> list[Record]:
    """The split's images with their caption lines, class ids and boxes, from any data source."""
    records = split_records(root, split)
    if any(r.caption_ids is not None and not r.captions for r in records):
        raise AttnGANError(f"{root} has captions as word ids only (captions.pickle): add its text/ "
                           "folder to convert it")
    out = []
    for r in records:
        caps = [ln.strip() for ln in r.captions if ln.strip()]
        if caps:
            out.append(replace(r, captions=caps))
    return out


def _file_name(key: str, path: Path) -> str:
    p = PurePosixPath(key.replace("\\", "/"))
    ext = path.suffix.lower() or ".jpg"
    return f"images/{p}{ext}" if p.suffix.lower() != ext else f"images/{p}"


def write_imagefolder(records_by_split: dict[str, list[Record]], out: str | os.PathLike) -> Path:
    """images/<key>.<ext> and metadata.jsonl (file_name, text, split, label, bbox) under `out`,
    built in a temporary folder beside it and renamed into place."""
    out = Path(os.path.abspath(out))
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    try:
        for split, records in records_by_split.items():
            for r in records:
                name = _file_name(r.key, Path(r.path))
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(r.path, target)
                rows.append({"file_name": name, "text": list(r.captions), "split": split,
                             "label": int(r.class_id),
                             **({"bbox": list(r.bbox)} if r.bbox is not None else {})})
        atomic_write_bytes(tmp / "metadata.jsonl",
                           "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8"))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise AttnGANError(f"cannot write the image folder {out}: {e.strerror or e}") from None
        raise
    return out


def _write_shards(records: dict[str, list[Record]], out: Path, source: str, per_shard: int,
                  progress: bool) -> None:
    # Imported here: shards bring torch, which the other conversions and the renderers never load.
    from attngan.data.shards import write_shards

    if out.is_dir():
        shutil.rmtree(out)
    write_shards(records, out, per_shard=per_shard, source=source, progress=progress)


# Formats a generated data set is converted to from its native render: the file a finished output
# holds (written last), and its writer.
CONVERTED = {
    "imagefolder": ("metadata.jsonl", lambda records, out, source, per_shard, progress: write_imagefolder(records, out)),
    "webdataset": ("shards.json", _write_shards),
}


def synth_birds_as(fmt: str, out: str | os.PathLike, *, images: int, classes: int | None, size: int,
                   seed: int, workers: int = 1, overwrite: bool = False, progress: bool = True,
                   per_shard: int = 1000) -> Path:
    """SynthBirds as an image folder (metadata.jsonl) or as WebDataset shards: rendered in CUB's
    layout in a temporary folder, then converted (same images, captions, classes and boxes)."""
    render = lambda folder, replace: generate_synth_birds(  # noqa: E731
        folder, images=images, classes=classes, size=size, seed=seed, workers=workers,
        overwrite=replace, progress=progress)
    return rendered_as(fmt, out, render, native="cub", source="SynthBirds",
                       overwrite=overwrite, progress=progress, per_shard=per_shard)


def rendered_as(fmt: str, out: str | os.PathLike, render, *, native: str, source: str,
                overwrite: bool = False, progress: bool = True, per_shard: int = 1000) -> Path:
    """A generated data set in `fmt`: `native` renders it straight into `out` (`render(out,
    overwrite)`); "imagefolder" and "webdataset" render it natively into a temporary folder beside
    `out`, read it through its data source and convert it with the writers of make-shards."""
    if fmt != native and fmt not in CONVERTED:
        raise AttnGANError(f"unknown format '{fmt}'; choose one of {', '.join((native, *CONVERTED))}")
    out = Path(os.path.abspath(Path(out).expanduser()))
    if fmt not in CONVERTED:
        return render(out, overwrite)
    marker, write = CONVERTED[fmt]
    check_target(out, overwrite, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.parent / f".{out.name}.{native}-{os.getpid()}"
    try:
        render(staged, True)
        write({s: layout_records(staged, s) for s in ("train", "test")}, out, source, per_shard, progress)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return out
