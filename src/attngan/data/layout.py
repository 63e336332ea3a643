"""The on-disk pieces of the original AttnGAN release that its data sources share, and the image
code every source uses.

The release's layouts (CUB-200-2011 in attngan.data.cub, MS-COCO 2014 in attngan.data.coco) list
their keys in train|test/filenames.pickle, their captions in text/<key>.txt (or as word ids in
captions.pickle), and optional classes in train|test/class_info.pickle. Which source reads a
folder is decided by attngan.data.records; `read_image_list`, `read_class_ids` and
`read_split_captions` are views of one split's records for the callers that want them apart.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from attngan.data.records import Record, check_key, check_split, detect_source, inside
from attngan.errors import AttnGANError
from attngan.text import load_captions_pickle, load_plain_pickle, tokenize


class DataWarning(UserWarning):
    """Something in the data was skipped, repaired or replaced; the message says what."""


def preview_list(items: list, n: int = 3) -> str:
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")


# Keys and classes.

def read_filenames(root: Path, split: str) -> list[str]:
    path = root / split / "filenames.pickle"
    if not path.is_file():
        raise AttnGANError(f"missing {path}: the {split} split's list of image keys")
    keys = load_plain_pickle(path)
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
        raise AttnGANError(f"{path} must hold a list of image keys (strings)")
    for k in keys:
        try:
            check_key(k, str(path))
        except AttnGANError:  # open() would raise deep in a worker
            raise AttnGANError(f"{path} holds an image key that cannot be a file name: "
                               f"{k[:60]!r}") from None
    return [k[:-4] if k.endswith(".jpg") else k for k in keys]


def read_class_info(root: Path, split: str, keys: list[str]) -> np.ndarray | None:
    """The release's class_info.pickle (one class id per key), or None without one."""
    path = root / split / "class_info.pickle"
    if not path.is_file():
        return None
    ids = load_plain_pickle(path)
    if not isinstance(ids, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and -2 ** 63 <= i < 2 ** 63 for i in ids):
        raise AttnGANError(f"{path} must hold a list of integer class ids")
    if len(ids) != len(keys):
        raise AttnGANError(f"{path} has {len(ids)} class ids for {len(keys)} images "
                           f"in {split}/filenames.pickle")
    return np.asarray(ids, dtype=np.int64)


def image_paths(root: Path, split: str, relatives: list[str]) -> list[Path]:
    """root/<relative> for each image, inside the folder and present (one error names the
    missing ones)."""
    paths = [inside(root, rel, f"{root} ({split} images)") for rel in relatives]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise AttnGANError(f"{len(missing)} of {len(paths)} {split} images are missing, e.g. "
                           f"{preview_list(missing)}")
    return paths


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


def text_captions(root: Path, keys: list[str]) -> list[list[str]] | None:
    """The lines of text/<key>.txt per key, or None without a text/ folder."""
    if not (root / "text").is_dir():
        return None
    lines, non_utf8 = [], []
    for key in keys:
        ls, bad = read_caption_file(inside(root, f"text/{key}.txt", f"{root} (captions)"))
        lines.append(ls)
        if bad:
            non_utf8.append(f"text/{key}.txt")
    if non_utf8:
        warnings.warn(f"{len(non_utf8)} caption files under {root} are not valid UTF-8 "
                      f"({preview_list(non_utf8)}): undecodable bytes were dropped",
                      DataWarning, stacklevel=3)
    return lines


def release_caption_lines(root: Path, split: str) -> list[list[str]]:
    """Every caption of a split from filenames.pickle and text/ alone (no image is looked at):
    what a vocabulary is built from."""
    lines = text_captions(root, read_filenames(root, split))
    if lines is None:
        raise AttnGANError(f"missing caption folder {root / 'text'} (text/<key>.txt per image)")
    return lines


def pickle_caption_ids(root: Path, split: str, keys: list[str]) -> list[list[list[int]]] | None:
    """Word ids per key from the release's captions.pickle (filenames order, the same number of
    captions per image), or None without one."""
    path = root / "captions.pickle"
    if not path.is_file() or not keys:
        return None
    caps = load_captions_pickle(path)
    flat = caps.train if split == "train" else caps.test
    if len(flat) % len(keys):
        raise AttnGANError(f"{path} has {len(flat)} {split} captions, not the same number for each "
                           f"of {len(keys)} images; add the text/ folder instead")
    n = len(flat) // len(keys)
    return [list(flat[i * n:(i + 1) * n]) for i in range(len(keys))]


def release_captions(root: Path, split: str, keys: list[str], fallback=None
                     ) -> tuple[list[list[str]], list[list[list[int]]] | None]:
    """(caption lines, word ids) per key: text/<key>.txt; else `fallback(keys)` (another file of
    the layout, or None); else the release's captions.pickle (lines then empty)."""
    lines = text_captions(root, keys)
    if lines is None and fallback is not None:
        lines = fallback(keys)
    if lines is not None:
        return lines, None
    ids = pickle_caption_ids(root, split, keys)
    if ids is not None:
        return [[] for _ in keys], ids
    raise AttnGANError(f"missing caption folder {root / 'text'} (text/<key>.txt per image)")


def release_records(root: Path, split: str, keys: list[str], paths: list[Path], class_ids,
                    bboxes: list | None, lines: list[list[str]], ids: list | None) -> list[Record]:
    return [Record(k, p, list(ls), int(c), split, bboxes[i] if bboxes else None,
                   caption_ids=ids[i] if ids is not None else None)
            for i, (k, p, c, ls) in enumerate(zip(keys, paths, class_ids, lines))]


# One split's records, seen apart.

@dataclass
class ImageList:
    """The images of one split, in the source's order."""

    keys: list[str]
    paths: list[Path]
    bboxes: list[tuple[int, int, int, int] | None]

    @classmethod
    def of(cls, records: list[Record]) -> "ImageList":
        return cls([r.key for r in records], [r.path for r in records], [r.bbox for r in records])


@dataclass
class SplitCaptions:
    """Caption text per key (`lines`), or word ids from captions.pickle (`ids`) without text/."""

    lines: list[list[str]] | None
    ids: list[list[list[int]]] | None

    @classmethod
    def of(cls, records: list[Record]) -> "SplitCaptions":
        if records and records[0].caption_ids is not None:
            return cls(None, [r.caption_ids for r in records])
        return cls([list(r.captions) for r in records], None)


def _records(root, split: str) -> list[Record]:
    records = detect_source(root).records(Path(root), check_split(split))
    if not records:
        raise AttnGANError(f"the {split} split under {root} lists no images")
    return records


def read_image_list(root: str | os.PathLike, split: str, dataset: str | None = None) -> ImageList:
    """The split's images (`dataset` is not read: the folder's layout decides)."""
    return ImageList.of(_records(root, split))


def read_class_ids(root: str | os.PathLike, split: str, dataset: str | None = None,
                   keys: list[str] | None = None) -> np.ndarray:
    by_key = {r.key: r.class_id for r in _records(root, split)}
    return np.asarray([by_key[k] for k in (keys if keys is not None else by_key)], dtype=np.int64)


def read_split_captions(root: str | os.PathLike, split: str, keys: list[str],
                        dataset: str | None = None, captions_per_image: int | None = None
                        ) -> SplitCaptions:
    """Captions of `keys`, as lines or (captions.pickle alone) word ids."""
    by_key = {r.key: r for r in _records(root, split)}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise AttnGANError(f"{len(missing)} {split} keys are not in the data of {root}: "
                           f"{preview_list(missing)}")
    return SplitCaptions.of([by_key[k] for k in keys])


def raw_caption_lines(ds) -> list[list[str]] | None:
    """The caption lines of each dataset item as written (punctuation kept), or None.

    The word ids the model reads have lost the commas, and a comma is what separates
    "a bill that is short, black wings" from "a bill that is short black wings": the binding
    metric parses the text as written. Lines are filtered as the dataset filters them.
    """
    records = getattr(ds, "records", None)
    if not records or records[0].caption_ids is not None:
        return None
    out = []
    for r in records:
        kept = [ln.strip() for ln in r.captions if ds.vocab.encode_tokens(tokenize(ln))[0]]
        out.append(kept[: ds.cfg.captions_per_image])
    return out
