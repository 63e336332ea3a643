"""The MS-COCO 2014 data source, in either form the data comes in under `root`:

    the AttnGAN release: images/<key>.jpg (or train2014/, val2014/ as downloaded), text/<key>.txt,
        train|test/filenames.pickle, optional captions.pickle;
    as downloaded: train2014/, val2014/ (or images/) and annotations/captions_{train,val}2014.json
        (val2014 is the test split). Other annotation files beside them are not read.

When both are there, filenames.pickle gives the split's keys and text/ their captions; the caption
json files fill in for a missing text/ folder. No bounding boxes; without class_info.pickle every
image is its own class. SynthScenes (data/synth_scenes.py) is written in this layout, with its
ground truth (synth_scenes.json) beside it (`ground_truth`), and evaluates with the shipped scenes
instruments (`evaluation_defaults`).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from attngan.data.layout import (image_paths, read_class_info, read_filenames, release_captions,
                                 release_records, text_captions)
from attngan.data.records import SPLITS, DataSource, Record, check_key
from attngan.errors import AttnGANError
from attngan.fileio import atomic_write_bytes

COCO_JSON = {"train": "captions_train2014.json", "test": "captions_val2014.json"}
IMAGE_FOLDERS = ("images", "train2014", "val2014")
# The scenes evaluation DAMSM's bundled name (assets/synthscenes-eval/damsm_eval).
SCENES_EVAL_DAMSM = "synthscenes-eval"


def coco_json_captions(root: Path, split: str) -> dict[str, list[str]]:
    """key -> captions from COCO's annotations/captions_{train,val}2014.json (val is our test)."""
    path = root / "annotations" / COCO_JSON[split]
    if not path.is_file():
        raise AttnGANError(f"missing {root / split / 'filenames.pickle'} and {path}: "
                           f"no list of {split} images")
    try:
        raw = json.loads(path.read_bytes())
        names = {im["id"]: Path(str(im["file_name"])).stem for im in raw["images"]}
        out: dict[str, list[str]] = {key: [] for key in names.values()}
        for ann in raw["annotations"]:
            out[names[ann["image_id"]]].append(" ".join(str(ann["caption"]).split()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, RecursionError) as e:
        raise AttnGANError(f"{path} is not a COCO captions file: {type(e).__name__}: "
                           f"{str(e)[:120]}") from None
    return out


def _has_keys(root: Path, split: str) -> bool:
    return (root / split / "filenames.pickle").is_file()


def split_keys(root: Path, split: str) -> list[str]:
    if _has_keys(root, split):
        return read_filenames(root, split)
    where = str(root / "annotations" / COCO_JSON[split])
    return sorted(check_key(k, where) for k in coco_json_captions(root, split))


def image_file(root: Path, key: str) -> str:
    """The image's path relative to `root`: images/<key>.jpg, else the downloaded folder that
    holds it (train2014/COCO_train2014_*.jpg, val2014/COCO_val2014_*.jpg)."""
    name = f"images/{key}.jpg"
    if not (root / name).exists():
        for folder in IMAGE_FOLDERS[1:]:
            if folder in key and (root / folder / f"{key}.jpg").exists():
                return f"{folder}/{key}.jpg"
    return name


class COCOSource(DataSource):
    name = "coco"

    def detect(self, root: Path) -> bool:
        has_images = any((root / d).is_dir() for d in IMAGE_FOLDERS)
        has_lists = any(_has_keys(root, s) or (root / "annotations" / COCO_JSON[s]).is_file()
                        for s in SPLITS)
        return has_images and has_lists

    def records(self, root: Path, split: str) -> list[Record]:
        keys = split_keys(root, split)
        if not keys:
            raise AttnGANError(f"the {split} split under {root} lists no images")
        paths = image_paths(root, split, [image_file(root, k) for k in keys])
        lines, ids = release_captions(root, split, keys, lambda ks: self._json_lines(root, split, ks))
        classes = read_class_info(root, split, keys)
        if classes is None:
            classes = np.arange(len(keys), dtype=np.int64)
        return release_records(root, split, keys, paths, classes, None, lines, ids)

    def _json_lines(self, root: Path, split: str, keys: list[str]) -> list[list[str]] | None:
        if not (root / "annotations" / COCO_JSON[split]).is_file():
            return None
        by_key = coco_json_captions(root, split)
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise AttnGANError(f"{len(missing)} {split} keys have no caption in "
                               f"{root / 'annotations' / COCO_JSON[split]}: {', '.join(missing[:3])}")
        return [by_key[k] for k in keys]

    def caption_lines(self, root: Path, split: str) -> list[list[str]]:
        # The text alone (a vocabulary is built before any image is looked at).
        if _has_keys(root, split):
            lines = text_captions(root, read_filenames(root, split))
            if lines is not None:
                return lines
        if (root / "annotations" / COCO_JSON[split]).is_file():
            by_key = coco_json_captions(root, split)
            return [by_key[k] for k in split_keys(root, split) if k in by_key]
        raise AttnGANError(f"missing {root / split / 'filenames.pickle'}: cannot list the {split} "
                           "captions to build a vocabulary")

    def ground_truth(self, root: Path) -> str | None:
        # Imported here: reading records needs none of the renderer's modules.
        from attngan.data.synth_scenes import MANIFEST

        return "synth_scenes" if (root / MANIFEST).is_file() else None

    def evaluation_defaults(self, root: Path) -> dict[str, Any]:
        # Imported here: reading records needs neither the captioner nor the metrics.
        from attngan.captioner import SCENES_CAPTIONER
        from attngan.metrics.scenes import bundled_judge_dir

        if self.ground_truth(root) != "synth_scenes":
            return {}
        # SynthScenes data is judged by the shipped judge and read back by the shipped scenes
        # captioner (a captioner of birds would read no scene); its R-precision is by a DAMSM the
        # generator never trained against (the model's own is optimistic).
        return {"judge": str(bundled_judge_dir()), "captioner": SCENES_CAPTIONER,
                "eval_damsm": SCENES_EVAL_DAMSM}


SOURCE = COCOSource()


def build_coco_text(root: str | os.PathLike) -> dict[str, int]:
    """Write text/<key>.txt and train|test/filenames.pickle from COCO's caption json files.

    train2014 becomes `train`, val2014 becomes `test` (as the original). Every file is written
    atomically, so an interrupted run leaves complete files only. Returns images per split.
    """
    root = Path(root)
    counts = {}
    (root / "text").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        by_key = coco_json_captions(root, split)
        for key in sorted(by_key):
            data = ("\n".join(by_key[key]) + "\n").encode("utf-8")
            path = root / "text" / f"{key}.txt"
            if path.is_file() and path.read_bytes() == data:
                continue
            atomic_write_bytes(path, data)
        (root / split).mkdir(exist_ok=True)
        atomic_write_bytes(root / split / "filenames.pickle", pickle.dumps(sorted(by_key), protocol=2))
        counts[split] = len(by_key)
    return counts
