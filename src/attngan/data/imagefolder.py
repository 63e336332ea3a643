"""Your own data: a folder of images with a metadata file (Hugging Face's `imagefolder` layout).

    my_data/
        metadata.jsonl            (or metadata.csv, with a header row)
        any/sub/folders/photo.jpg ...

One row per image, a JSON object per line (CSV: the same names as columns; a list as JSON text):
    {"file_name": "any/sub/folders/photo.jpg",     path relative to the folder (required)
     "text": "a caption" | ["a caption", ...],      one or more captions (required; "caption" and
                                                    "captions" are accepted too; a string with
                                                    newlines holds one caption per line)
     "split": "train" | "test",                     optional ("validation"/"val" count as test)
     "label": 3 | "sparrow",                        optional ("class" too): the image's class
     "bbox": [x, y, w, h]}                          optional: the birds crop around the box

Without a split column every image gets one from a fixed seed (SPLIT_SEED): a quarter of the
classes (two at least, from four classes up) are test classes (class-disjoint, as CUB's split)
when classes are given, else a quarter of the images. Without classes every image is its own class: only an image's own captions then
count as matches in the DAMSM losses and R-precision, as the original does for data without
class_info.pickle. Rows with `split` or `label` must all have them (or none).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attngan.data.records import DataSource, Record, check_key, inside
from attngan.data.vocab import new_data_vocabulary
from attngan.errors import AttnGANError

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
SPLIT_SEED = 0
TEST_FRACTION = 0.25
_SPLIT_NAMES = {"train": "train", "test": "test", "validation": "test", "val": "test"}
_TEXT_KEYS = ("text", "caption", "captions")
_CLASS_KEYS = ("label", "class")


@dataclass
class ImageFolderMeta:
    root: Path
    metadata_path: Path
    records: list[Record]                     # sorted by key
    stamp: str                                # hash of the metadata file: a changed file, a new stamp
    classes_given: bool
    split_given: bool

    def split(self, split: str) -> list[Record]:
        return [r for r in self.records if r.split == split]


def find_metadata(root: str | Path) -> Path | None:
    root = Path(root)
    found = [root / name for name in METADATA_FILES if (root / name).is_file()]
    if len(found) > 1:
        raise AttnGANError(f"{root} has both metadata.jsonl and metadata.csv; keep one")
    return found[0] if found else None


def is_imagefolder(root: str | Path) -> bool:
    """A folder with metadata.jsonl/.csv (and not the original layout's filenames.pickle)."""
    try:
        root = Path(root)
        if not root.is_dir() or (root / "train" / "filenames.pickle").is_file():
            return False
        return any((root / name).is_file() for name in METADATA_FILES)
    except OSError:
        return False


# Parsing.

def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise AttnGANError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AttnGANError(f"{path} is not UTF-8 text (byte {e.start})") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise AttnGANError(f"{path}:{n}: not a JSON object ({e.msg})") from None
            except ValueError as e:  # a number beyond Python's digit limit
                raise AttnGANError(f"{path}:{n}: not a JSON object ({str(e)[:60]})") from None
            except RecursionError:
                raise AttnGANError(f"{path}:{n}: not a JSON object (nested too deeply)") from None
            if not isinstance(obj, dict):
                raise AttnGANError(f"{path}:{n}: not a JSON object")
            rows.append((n, obj))
        return rows
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "file_name" not in reader.fieldnames:
        raise AttnGANError(f"{path}: the header row must name a 'file_name' column")
    try:
        for row in reader:
            obj = {k: _csv_value(k, v) for k, v in row.items() if k is not None and v not in (None, "")}
            rows.append((reader.line_num, obj))
    except csv.Error as e:
        raise AttnGANError(f"{path}:{reader.line_num}: {e}") from None
    return rows


def _csv_value(key: str, value: str) -> Any:
    # CSV cells are text: lists (several captions, a bbox) are written as JSON, and a label of
    # digits is a class number.
    v = value.strip()
    if v.startswith("[") and key in (*_TEXT_KEYS, "bbox"):
        try:
            return json.loads(v)
        except (ValueError, RecursionError):  # not JSON, a huge number, or nested too deeply
            return value
    if key in _CLASS_KEYS and v.lstrip("-").isdigit() and len(v) <= 18:  # longer: beyond int64, a name
        return int(v)
    return value


def _captions(where: str, value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, str):
            raise AttnGANError(f"{where}: captions must be text, got {type(item).__name__}")
        out.extend(line.strip() for line in item.splitlines() if line.strip())
    if not out:
        raise AttnGANError(f"{where}: the caption is empty")
    return out


def _bbox(where: str, value: Any) -> tuple[int, int, int, int]:
    ok = (isinstance(value, list) and len(value) == 4
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  for v in value))
    if not ok or value[2] <= 0 or value[3] <= 0:
        raise AttnGANError(f"{where}: bbox must be [x, y, w, h] with w, h > 0, got {value!r}")
    x, y, w, h = (int(v) for v in value)  # truncated, as CUB's bounding_boxes.txt is read
    return x, y, max(w, 1), max(h, 1)


def _file_name(root: Path, where: str, value: Any) -> tuple[str, Path]:
    if not isinstance(value, str) or not value.strip():
        raise AttnGANError(f"{where}: 'file_name' must be a path relative to the folder")
    key = value.strip().replace("\\", "/")
    check_key(key, f"{where}: 'file_name'")
    try:
        path = inside(root, key, where)
    except AttnGANError as e:
        raise AttnGANError(f"{where}: 'file_name' {value[:60]!r} must stay inside the folder "
                           f"({str(e).removeprefix(where + ': ')})") from None
    return path.relative_to(root).as_posix(), path


_CACHE: dict[tuple[str, int, int], ImageFolderMeta] = {}


def read_imagefolder(root: str | Path) -> ImageFolderMeta:
    """Every row of the metadata file, checked, with a split and a class id each (cached per
    metadata file version)."""
    root = Path(root)
    path = find_metadata(root)
    if path is None:
        raise AttnGANError(f"{root} has no metadata.jsonl or metadata.csv")
    st = path.stat()
    tag = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if tag in _CACHE:
        return _CACHE[tag]
    meta = _parse(root, path)
    _CACHE.clear()
    _CACHE[tag] = meta
    return meta


def _parse(root: Path, path: Path) -> ImageFolderMeta:
    rows = _rows(path)
    if not rows:
        raise AttnGANError(f"{path} lists no images")
    name = path.name
    seen: dict[str, int] = {}
    parsed = []
    for n, obj in rows:
        where = f"{name}:{n}"
        if "file_name" not in obj:
            raise AttnGANError(f"{where}: no 'file_name'")
        key, file = _file_name(root, where, obj["file_name"])
        if key in seen:
            raise AttnGANError(f"{where}: '{key}' is listed twice (first on line {seen[key]})")
        seen[key] = n
        text_key = next((k for k in _TEXT_KEYS if k in obj), None)
        if text_key is None:
            raise AttnGANError(f"{where}: no 'text' (the image's caption or list of captions)")
        caps = _captions(where, obj[text_key])
        split = obj.get("split")
        if split is not None:
            if not isinstance(split, str) or split.strip().lower() not in _SPLIT_NAMES:
                raise AttnGANError(f"{where}: split must be 'train' or 'test', got {split!r}")
            split = _SPLIT_NAMES[split.strip().lower()]
        label_key = next((k for k in _CLASS_KEYS if k in obj and obj[k] is not None), None)
        label = obj[label_key] if label_key else None
        if label is not None and (isinstance(label, bool) or not isinstance(label, (int, str))
                                  or (isinstance(label, str) and not label.strip())
                                  or (isinstance(label, int) and not -2 ** 63 <= label < 2 ** 63)
                                  or (isinstance(label, str) and len(label) > 1000)):
            raise AttnGANError(f"{where}: {label_key} must be an integer (64-bit) or a name, got "
                               f"{str(label)[:40]!r}")
        bbox = _bbox(where, obj["bbox"]) if obj.get("bbox") is not None else None
        parsed.append((n, key, caps, split, label, bbox, file))

    for idx, what in ((3, "split"), (4, "label")):
        have = [p for p in parsed if p[idx] is not None]
        if have and len(have) != len(parsed):
            lacking = next(p for p in parsed if p[idx] is None)
            raise AttnGANError(f"{name}:{lacking[0]}: no '{what}', while other rows have one "
                               f"(give every row a {what}, or none)")
    missing = [(p[0], p[1]) for p in parsed if not p[6].is_file()]
    if missing:
        shown = ", ".join(f"line {n}: {key}" for n, key in missing[:3])
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise AttnGANError(f"{len(missing)} images listed in {path} are missing: {shown}{more}")

    classes_given = parsed[0][4] is not None
    split_given = parsed[0][3] is not None
    parsed.sort(key=lambda p: p[1])
    keys = [p[1] for p in parsed]
    if classes_given:
        labels = [p[4] for p in parsed]
        if all(isinstance(x, int) for x in labels):
            class_ids = labels
        else:  # names (or a mix): numbered in sorted order
            names = sorted({str(x) for x in labels})
            number = {x: i + 1 for i, x in enumerate(names)}
            class_ids = [number[str(x)] for x in labels]
    else:
        class_ids = list(range(len(keys)))  # every image its own class
    splits = ([p[3] for p in parsed] if split_given
              else seeded_split(keys, class_ids if classes_given else None, path))
    records = [Record(key, file, caps, int(cid), split, bbox, n)
               for (n, key, caps, _, _, bbox, file), cid, split in zip(parsed, class_ids, splits)]
    stamp = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return ImageFolderMeta(root, path, records, stamp, classes_given, split_given)


def seeded_split(keys: list[str], class_ids: list[int] | None, where: Path | str = "") -> list[str]:
    """train/test per key from SPLIT_SEED: a quarter of the classes (class-disjoint) when classes
    are given, else a quarter of the images; at least one of each when there are two or more."""
    rng = np.random.default_rng(SPLIT_SEED)
    if class_ids is not None:
        classes = sorted(set(class_ids))
        if len(classes) >= 2:
            order = rng.permutation(len(classes))
            # Two test classes at least when there are four or more: R-precision ranks a test
            # caption against captions of other classes, which one test class does not have.
            n_test = min(max(1 if len(classes) < 4 else 2, round(len(classes) * TEST_FRACTION)),
                         len(classes) - 1)
            test = {classes[i] for i in order[:n_test]}
            return ["test" if c in test else "train" for c in class_ids]
        warnings.warn(f"{where}: every image has the same class, so the seeded split cannot keep "
                      "the test classes apart: a quarter of the images are test images",
                      stacklevel=3)
    order = rng.permutation(len(keys))
    n_test = min(max(1, round(len(keys) * TEST_FRACTION)), len(keys) - 1) if len(keys) >= 2 else 0
    test = set(order[:n_test].tolist())
    return ["test" if i in test else "train" for i in range(len(keys))]


class ImageFolderSource(DataSource):
    """Any images with a metadata.jsonl/.csv beside them (and not the release's filenames.pickle)."""

    name = "imagefolder"
    varying_captions = True

    def detect(self, root: Path) -> bool:
        return is_imagefolder(root)

    def records(self, root: Path, split: str) -> list[Record]:
        records = read_imagefolder(root).split(split)
        if not records:
            raise AttnGANError(f"the {split} split under {root} lists no images (its metadata file "
                               "gives every image the other split)")
        return records

    def caption_lines(self, root: Path, split: str) -> list[list[str]]:
        return [r.captions for r in read_imagefolder(root).split(split)]

    def vocabulary(self, root: Path, min_count: int | None = None):
        meta = read_imagefolder(root)
        lines = [line for rec in meta.records if rec.split == "train" for line in rec.captions]
        return new_data_vocabulary(root, lines, 1 if min_count is None else min_count, meta.stamp,
                                   str(meta.metadata_path))


SOURCE = ImageFolderSource()
