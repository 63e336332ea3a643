"""The on-disk layout of the original AttnGAN release, read without surprises.

birds (CUB-200-2011 and SynthBirds), under `root`:
    CUB_200_2011/images/<key>.jpg, CUB_200_2011/images.txt, CUB_200_2011/bounding_boxes.txt,
    text/<key>.txt, train|test/filenames.pickle, optional train|test/class_info.pickle,
    optional captions.pickle
coco, under `root`:
    images/<key>.jpg (or train2014/, val2014/ as downloaded), text/<key>.txt,
    train|test/filenames.pickle, or annotations/captions_{train,val}2014.json instead.
imagefolder (any data), under `root`: images in any subfolders and metadata.jsonl or metadata.csv
    (attngan.data.imagefolder); detected whatever data.dataset says.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from attngan.errors import AttnGANError
from attngan.fileio import atomic_write_bytes
from attngan.text import load_captions_pickle, load_plain_pickle

SPLITS = ("train", "test")
DATASETS = ("birds", "coco")
COCO_JSON = {"train": "captions_train2014.json", "test": "captions_val2014.json"}
_CLASS_PREFIX = re.compile(r"^(\d+)\.")  # CUB class folders: 002.Laysan_Albatross


class DataWarning(UserWarning):
    """Something in the data was skipped, repaired or replaced; the message says what."""


def check_dataset(dataset: str) -> str:
    if dataset not in DATASETS and dataset != "imagefolder":
        raise AttnGANError(f"unknown dataset layout '{dataset}'; choose one of {', '.join(DATASETS)}")
    return dataset


def detect_layout(root: str | os.PathLike, dataset: str) -> str:
    """'imagefolder' for a folder with a metadata file, else the configured layout (birds, coco)."""
    from attngan.data.imagefolder import is_imagefolder

    return "imagefolder" if is_imagefolder(root) else check_dataset(dataset)


def _imagefolder_split(root: Path, split: str):
    from attngan.data.imagefolder import read_imagefolder

    return read_imagefolder(root).split(split)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise AttnGANError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    return split


def preview_list(items: list, n: int = 3) -> str:
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")


# Keys, boxes and classes.

def read_filenames(root: Path, split: str) -> list[str]:
    path = root / split / "filenames.pickle"
    if not path.is_file():
        raise AttnGANError(f"missing {path}: the {split} split's list of image keys")
    keys = load_plain_pickle(path)
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
        raise AttnGANError(f"{path} must hold a list of image keys (strings)")
    bad = next((k for k in keys if not k or "\x00" in k), None)
    if bad is not None:  # a NUL cannot be in a file name: open() would raise deep in a worker
        raise AttnGANError(f"{path} holds an image key that cannot be a file name: {bad[:60]!r}")
    return [k[:-4] if k.endswith(".jpg") else k for k in keys]


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
        except ValueError:
            raise AttnGANError(f"{boxes_txt}:{n}: expected '<id> x y w h', got {line!r}") from None
        if parts[0] not in names:
            raise AttnGANError(f"{boxes_txt}:{n}: image id {parts[0]} is not in {images_txt}")
        boxes[names[parts[0]]] = (x, y, w, h)
    return boxes


def read_class_ids(root: Path, split: str, dataset: str, keys: list[str]) -> np.ndarray:
    """One class id per key: class_info.pickle, else the CUB class folder's number, else unique.

    Same-class pairs are masked out of the DAMSM losses. The original falls back to one class per
    image; CUB keys name their class (`002.Laysan_Albatross/...` -> 2), so we use that for birds.
    """
    if dataset == "imagefolder" or detect_layout(root, dataset) == "imagefolder":
        by_key = {r.key: r.class_id for r in _imagefolder_split(Path(root), split)}
        return np.asarray([by_key[k] for k in keys], dtype=np.int64)
    path = root / split / "class_info.pickle"
    if path.is_file():
        ids = load_plain_pickle(path)
        if not isinstance(ids, (list, tuple)) or not all(isinstance(i, int) for i in ids):
            raise AttnGANError(f"{path} must hold a list of integer class ids")
        if len(ids) != len(keys):
            raise AttnGANError(f"{path} has {len(ids)} class ids for {len(keys)} images "
                               f"in {split}/filenames.pickle")
        return np.asarray(ids, dtype=np.int64)
    if dataset == "birds":
        matches = [_CLASS_PREFIX.match(k.split("/")[0]) for k in keys]
        if all(matches):
            return np.asarray([int(m.group(1)) for m in matches], dtype=np.int64)
        bad = [k for k, m in zip(keys, matches) if not m]
        warnings.warn(f"{len(bad)} keys of the {split} split do not start with a class folder like "
                      f"'002.Name/' ({preview_list(bad)}) and there is no {path}: every image is its "
                      "own class", DataWarning, stacklevel=3)
    return np.arange(len(keys), dtype=np.int64)


def image_path(root: Path, dataset: str, key: str) -> Path:
    if dataset == "birds":
        return root / "CUB_200_2011" / "images" / f"{key}.jpg"
    path = root / "images" / f"{key}.jpg"
    if not path.exists():
        # COCO as downloaded: train2014/COCO_train2014_*.jpg, val2014/COCO_val2014_*.jpg.
        for folder in ("train2014", "val2014"):
            if folder in key and (root / folder / f"{key}.jpg").exists():
                return root / folder / f"{key}.jpg"
    return path


@dataclass
class ImageList:
    """The images of one split, in filenames.pickle order."""

    keys: list[str]
    paths: list[Path]
    bboxes: list[tuple[int, int, int, int] | None]


def read_image_list(root: Path, split: str, dataset: str) -> ImageList:
    root = Path(root)
    check_split(split)
    check_dataset(dataset)
    if not root.is_dir():
        raise AttnGANError(f"dataset folder not found: {root}")
    if detect_layout(root, dataset) == "imagefolder":
        records = _imagefolder_split(root, split)
        if not records:
            raise AttnGANError(f"the {split} split under {root} lists no images (its metadata file "
                               "gives every image the other split)")
        return ImageList([r.key for r in records], [r.path for r in records],
                         [r.bbox for r in records])
    if (root / split / "filenames.pickle").is_file() or dataset == "birds":
        keys = read_filenames(root, split)
    else:
        keys = sorted(coco_json_captions(root, split))
    if not keys:
        raise AttnGANError(f"the {split} split under {root} lists no images")
    paths = [image_path(root, dataset, k) for k in keys]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise AttnGANError(f"{len(missing)} of {len(keys)} {split} images are missing, e.g. "
                           f"{preview_list(missing)}")
    if dataset == "birds":
        boxes = read_bboxes(root)
        no_box = [k for k in keys if k not in boxes]
        if no_box:
            raise AttnGANError(f"{len(no_box)} {split} images have no bounding box in "
                               f"{root / 'CUB_200_2011'}/images.txt + bounding_boxes.txt, e.g. "
                               f"{preview_list(no_box)}")
        bboxes: list = [boxes[k] for k in keys]
    else:
        bboxes = [None] * len(keys)
    return ImageList(keys, paths, bboxes)


# Images.

def bbox_crop_box(bbox: tuple[int, int, int, int], width: int, height: int
                  ) -> tuple[int, int, int, int] | None:
    """The original crop: a square of half-size int(0.75 max(w, h)) around the box centre,
    clipped to the image (so it is not square at the borders). None if nothing is left."""
    x, y, w, h = bbox
    r = int(0.75 * max(w, h))
    cx, cy = int(x + w / 2), int(y + h / 2)
    x1, y1 = max(0, cx - r), max(0, cy - r)
    x2, y2 = min(width, cx + r), min(height, cy + r)
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def shorter_side_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) after resizing the shorter side to `size`, as torchvision's Resize(int)."""
    if width <= height:
        return size, max(1, int(size * height / width))
    return max(1, int(size * width / height)), size


def load_cropped(path: Path, bbox: tuple[int, int, int, int] | None, size: int) -> np.ndarray:
    """Decode, bbox-crop (birds) and resize the shorter side to `size`: H x W x 3 uint8.

    Raises OSError / ValueError for unreadable images (the caller counts and skips them).
    """
    with Image.open(path) as img:
        img = img.convert("RGB")
    if bbox is not None:
        box = bbox_crop_box(bbox, img.width, img.height)
        if box is None:
            warnings.warn(f"the bounding box {bbox} of {path} lies outside the "
                          f"{img.width}x{img.height} image: using the whole image", DataWarning,
                          stacklevel=2)
        else:
            img = img.crop(box)
    img = img.resize(shorter_side_dims(img.width, img.height, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


# Captions.

def read_caption_file(path: Path) -> tuple[list[str], bool]:
    """Non-empty lines of a caption file, and whether it was not valid UTF-8 (decoded with
    replacement characters, which the tokenizer then drops)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AttnGANError(f"missing caption file {path}") from None
    except OSError as e:
        raise AttnGANError(f"cannot read caption file {path}: {e.strerror}") from None
    try:
        text, bad = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        text, bad = raw.decode("utf-8", errors="replace"), True
    return [line for line in text.splitlines() if line.strip()], bad


def coco_json_captions(root: Path, split: str) -> dict[str, list[str]]:
    """key -> captions from COCO's annotations/captions_{train,val}2014.json (val is our test)."""
    path = root / "annotations" / COCO_JSON[split]
    if not path.is_file():
        raise AttnGANError(f"missing {root / split / 'filenames.pickle'} and {path}: "
                           f"no list of {split} images")
    try:
        raw = json.loads(path.read_bytes())
        names = {im["id"]: Path(im["file_name"]).stem for im in raw["images"]}
        out: dict[str, list[str]] = {key: [] for key in names.values()}
        for ann in raw["annotations"]:
            out[names[ann["image_id"]]].append(" ".join(str(ann["caption"]).split()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise AttnGANError(f"{path} is not a COCO captions file: {type(e).__name__}: {e}") from None
    return out


@dataclass
class SplitCaptions:
    """Caption text per key (`lines`), or word ids from captions.pickle (`ids`) without text/."""

    lines: list[list[str]] | None
    ids: list[list[list[int]]] | None


def read_split_captions(root: Path, split: str, keys: list[str], dataset: str,
                        captions_per_image: int | None = None) -> SplitCaptions:
    """Captions of `keys`: text/<key>.txt; else COCO json; else the original captions.pickle."""
    root = Path(root)
    if detect_layout(root, dataset) == "imagefolder":
        by_key = {r.key: r.captions for r in _imagefolder_split(root, split)}
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise AttnGANError(f"{len(missing)} {split} keys are not in the metadata file of "
                               f"{root}: {preview_list(missing)}")
        return SplitCaptions([list(by_key[k]) for k in keys], None)
    if (root / "text").is_dir():
        lines, non_utf8 = [], []
        for key in keys:
            ls, bad = read_caption_file(root / "text" / f"{key}.txt")
            lines.append(ls)
            if bad:
                non_utf8.append(f"text/{key}.txt")
        if non_utf8:
            warnings.warn(f"{len(non_utf8)} caption files under {root} are not valid UTF-8 "
                          f"({preview_list(non_utf8)}): undecodable bytes were dropped",
                          DataWarning, stacklevel=2)
        return SplitCaptions(lines, None)
    if dataset == "coco" and (root / "annotations" / COCO_JSON[split]).is_file():
        by_key = coco_json_captions(root, split)
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise AttnGANError(f"{len(missing)} {split} keys have no caption in "
                               f"{root / 'annotations' / COCO_JSON[split]}: {preview_list(missing)}")
        return SplitCaptions([by_key[k] for k in keys], None)
    if (root / "captions.pickle").is_file() and captions_per_image:
        # The preprocessed metadata alone: captions are id lists in filenames order x n.
        caps = load_captions_pickle(root / "captions.pickle")
        flat = caps.train if split == "train" else caps.test
        n = captions_per_image
        if len(flat) != len(keys) * n:
            raise AttnGANError(f"{root / 'captions.pickle'} has {len(flat)} {split} captions, "
                               f"not {len(keys)} images x {n}; add the text/ folder instead")
        return SplitCaptions(None, [flat[i * n:(i + 1) * n] for i in range(len(keys))])
    raise AttnGANError(f"missing caption folder {root / 'text'} (text/<key>.txt per image)")


def read_all_caption_lines(root: Path, split: str) -> list[list[str]]:
    """Every caption line of a split, for building a vocabulary (no captions.pickle involved)."""
    root = Path(root)
    if (root / split / "filenames.pickle").is_file():
        keys = read_filenames(root, split)
        if (root / "text").is_dir():
            return read_split_captions(root, split, keys, "birds").lines or []
        return read_split_captions(root, split, keys, "coco").lines or []
    if (root / "annotations" / COCO_JSON[split]).is_file():
        return list(coco_json_captions(root, split).values())
    raise AttnGANError(f"missing {root / split / 'filenames.pickle'}: cannot list the {split} "
                       "captions to build a vocabulary")


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


def raw_caption_lines(ds) -> list[list[str]] | None:
    """The caption lines of each dataset item as written (punctuation kept), or None.

    The word ids the model reads have lost the commas, and a comma is what separates
    "a bill that is short, black wings" from "a bill that is short black wings": the binding
    metric parses the text as written. Lines are filtered as the dataset filters them.
    """
    from attngan.text import tokenize

    try:
        source = read_split_captions(ds.root, ds.split, ds.keys, ds.dataset, ds.cfg.captions_per_image)
    except AttnGANError:
        return None
    if source.lines is None:
        return None
    out = []
    for lines in source.lines:
        kept = [ln.strip() for ln in lines if ds.vocab.encode_tokens(tokenize(ln))[0]]
        out.append(kept[: ds.cfg.captions_per_image])
    return out
