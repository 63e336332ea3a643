"""Every layout as Records, and Records written as an image folder or as shards.

`attngan make-shards` and `attngan synth-birds|synth-scenes --format imagefolder|webdataset` go
through here: the same images, captions, classes, splits and boxes whichever layout they came from.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path, PurePosixPath

from attngan.data.imagefolder import Record, is_imagefolder, read_imagefolder
from attngan.errors import AttnGANError
from attngan.fileio import atomic_write_bytes


def detect_source_layout(root: Path) -> str:
    if is_imagefolder(root):
        return "imagefolder"
    if (root / "CUB_200_2011").is_dir():
        return "birds"
    if (root / "annotations").is_dir() or (root / "images").is_dir() or (root / "train2014").is_dir():
        return "coco"
    raise AttnGANError(f"{root} is neither an image folder (metadata.jsonl/.csv), CUB/SynthBirds "
                       "(CUB_200_2011/) nor COCO (images/, annotations/)")


def layout_records(root: str | os.PathLike, split: str, layout: str | None = None) -> list[Record]:
    """The split's images with their caption lines, class ids and boxes, from any layout."""
    from attngan.data.layout import read_class_ids, read_image_list, read_split_captions

    root = Path(root)
    if not root.is_dir():
        raise AttnGANError(f"dataset folder not found: {root}")
    layout = layout or detect_source_layout(root)
    if layout == "imagefolder":
        return read_imagefolder(root).split(split)
    images = read_image_list(root, split, layout)
    source = read_split_captions(root, split, images.keys, layout)
    if source.lines is None:
        raise AttnGANError(f"{root} has captions as word ids only (captions.pickle): add its text/ "
                           "folder to convert it")
    classes = read_class_ids(root, split, layout, images.keys)
    out = []
    for key, path, bbox, lines, cid in zip(images.keys, images.paths, images.bboxes, source.lines,
                                           classes):
        caps = [ln.strip() for ln in lines if ln.strip()]
        if caps:
            out.append(Record(key, path, caps, int(cid), split, bbox))
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


def synth_birds_as(fmt: str, out: str | os.PathLike, *, images: int, classes: int | None, size: int,
                   seed: int, workers: int = 1, overwrite: bool = False, progress: bool = True,
                   per_shard: int = 1000) -> Path:
    """SynthBirds as an image folder (metadata.jsonl) or as WebDataset shards: rendered in CUB's
    layout in a temporary folder, then converted (same images, captions, classes and boxes)."""
    from attngan.data.synth_birds import generate_synth_birds

    render = lambda folder, replace: generate_synth_birds(  # noqa: E731
        folder, images=images, classes=classes, size=size, seed=seed, workers=workers,
        overwrite=replace, progress=progress)
    return rendered_as(fmt, out, render, native="cub", layout="birds", source="SynthBirds",
                       overwrite=overwrite, progress=progress, per_shard=per_shard)


def rendered_as(fmt: str, out: str | os.PathLike, render, *, native: str, layout: str, source: str,
                overwrite: bool = False, progress: bool = True, per_shard: int = 1000) -> Path:
    """A generated data set in `fmt`: `native` renders it straight into `out` (`render(out,
    overwrite)`); "imagefolder" and "webdataset" render it in `layout` into a temporary folder
    beside `out` and convert it with the writers of make-shards."""
    from attngan.data.shards import INDEX, write_shards
    from attngan.data.staging import check_target

    if fmt not in (native, "imagefolder", "webdataset"):
        raise AttnGANError(f"unknown format '{fmt}'; choose one of {native}, imagefolder, webdataset")
    out = Path(os.path.abspath(Path(out).expanduser()))
    if fmt == native:
        return render(out, overwrite)
    check_target(out, overwrite, "metadata.jsonl" if fmt == "imagefolder" else INDEX)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.parent / f".{out.name}.{native}-{os.getpid()}"
    try:
        render(staged, True)
        records = {s: layout_records(staged, s, layout) for s in ("train", "test")}
        if fmt == "imagefolder":
            write_imagefolder(records, out)
        else:
            if out.is_dir():
                shutil.rmtree(out)
            write_shards(records, out, per_shard=per_shard, source=source, progress=progress)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return out
