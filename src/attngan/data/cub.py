"""The CUB-200-2011 data source (birds; SynthBirds writes the same layout), as the original
release arranges it under `root`:

    CUB_200_2011/images/<key>.jpg, CUB_200_2011/images.txt, CUB_200_2011/bounding_boxes.txt,
    text/<key>.txt, train|test/filenames.pickle, optional train|test/class_info.pickle,
    optional captions.pickle (word ids, read when there is no text/ folder)

Every image is cropped around its bounding box. Without class_info.pickle the class is the
number of the key's CUB class folder (`002.Laysan_Albatross/...` -> 2). SynthBirds' ground truth
(synth_birds.json) beside this layout makes the folder SynthBirds (`ground_truth`).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from attngan.data.layout import (DataWarning, image_paths, preview_list, read_class_info,
                                 read_filenames, release_caption_lines, release_captions,
                                 release_records)
from attngan.data.records import DataSource, Record
from attngan.errors import AttnGANError

_CLASS_PREFIX = re.compile(r"^(\d+)\.")  # CUB class folders: 002.Laysan_Albatross


def read_bboxes(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """key -> (x, y, w, h) from CUB's images.txt and bounding_boxes.txt, truncated to int."""
    cub = root / "CUB_200_2011"
    images_txt, boxes_txt = cub / "images.txt", cub / "bounding_boxes.txt"
    for p in (images_txt, boxes_txt):
        if not p.is_file():
            raise AttnGANError(f"missing {p}: the birds layout needs CUB's images.txt and "
                               "bounding_boxes.txt")
    names: dict[str, str] = {}
    for n, line in enumerate(images_txt.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise AttnGANError(f"{images_txt}:{n}: expected '<id> <path>.jpg', got {line!r}")
        names[parts[0]] = parts[1][:-4] if parts[1].endswith(".jpg") else parts[1]
    boxes: dict[str, tuple[int, int, int, int]] = {}
    for n, line in enumerate(boxes_txt.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 5:
                raise ValueError
            x, y, w, h = (int(float(v)) for v in parts[1:])
        except (ValueError, OverflowError):
            raise AttnGANError(f"{boxes_txt}:{n}: expected '<id> x y w h', got {line[:80]!r}") from None
        if parts[0] not in names:
            raise AttnGANError(f"{boxes_txt}:{n}: image id {parts[0]} is not in {images_txt}")
        boxes[names[parts[0]]] = (x, y, w, h)
    return boxes


def class_ids(root: Path, split: str, keys: list[str]) -> np.ndarray:
    """One class id per key: class_info.pickle, else the CUB class folder's number, else unique.

    Same-class pairs are masked out of the DAMSM losses. The original falls back to one class per
    image; CUB keys name their class (`002.Laysan_Albatross/...` -> 2), so we use that.
    """
    given = read_class_info(root, split, keys)
    if given is not None:
        return given
    matches = [_CLASS_PREFIX.match(k.split("/")[0]) for k in keys]
    if all(matches):
        return np.asarray([int(m.group(1)) for m in matches], dtype=np.int64)
    bad = [k for k, m in zip(keys, matches) if not m]
    warnings.warn(f"{len(bad)} keys of the {split} split do not start with a class folder like "
                  f"'002.Name/' ({preview_list(bad)}) and there is no "
                  f"{root / split / 'class_info.pickle'}: every image is its own class",
                  DataWarning, stacklevel=4)
    return np.arange(len(keys), dtype=np.int64)


class CUBSource(DataSource):
    name = "cub"

    def detect(self, root: Path) -> bool:
        return (root / "CUB_200_2011").is_dir()

    def records(self, root: Path, split: str) -> list[Record]:
        if not root.is_dir():
            raise AttnGANError(f"dataset folder not found: {root}")
        keys = read_filenames(root, split)
        if not keys:
            raise AttnGANError(f"the {split} split under {root} lists no images")
        paths = image_paths(root, split, [f"CUB_200_2011/images/{k}.jpg" for k in keys])
        boxes = read_bboxes(root)
        no_box = [k for k in keys if k not in boxes]
        if no_box:
            raise AttnGANError(f"{len(no_box)} {split} images have no bounding box in "
                               f"{root / 'CUB_200_2011'}/images.txt + bounding_boxes.txt, e.g. "
                               f"{preview_list(no_box)}")
        lines, ids = release_captions(root, split, keys)
        return release_records(root, split, keys, paths, class_ids(root, split, keys),
                               [boxes[k] for k in keys], lines, ids)

    def caption_lines(self, root: Path, split: str) -> list[list[str]]:
        return release_caption_lines(root, split)

    def ground_truth(self, root: Path) -> str | None:
        # Imported here: reading records needs none of the renderer's modules.
        from attngan.data.synth_birds import MANIFEST

        return "synth_birds" if (root / MANIFEST).is_file() else None


SOURCE = CUBSource()
