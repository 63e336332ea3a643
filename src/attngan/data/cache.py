"""Pre-processed image cache: bbox crops decoded and resized once, read back through a memmap.

An epoch then slices uint8 arrays instead of decoding full JPEGs. The stored images are exactly
what the uncached path computes before its random crop (crop, shorter side -> int(S * 76 / 64)),
so cached and uncached items are identical for the same random draws.

Files, per split and stored size, under `<root>/cache/` (or a given folder):
    <split>_<stored>.json                 meta; written last, names the two files below
    <split>_<stored>.<token>.u8           all images, H x W x 3 uint8 each, back to back
    <split>_<stored>.<token>.index.npy    int64 rows (offset, height, width); height 0 = unreadable
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from attngan.data.layout import DataWarning, ImageList, load_cropped, read_image_list
from attngan.errors import AttnGANError
from attngan.fileio import atomic_write, atomic_write_bytes

CACHE_VERSION = 1
# What PIL raises for unreadable, truncated or absurd images.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def stored_size(size: int) -> int:
    """Shorter side before the random crop: int(size * 76 / 64), 304 for 256, 355 for 299."""
    return int(size * 76 / 64)


def fingerprint(images: ImageList, stored: int) -> str:
    """Changes when an image file, a bounding box or the stored size changes."""
    h = hashlib.sha256(f"attngan-cache v{CACHE_VERSION} {stored}\n".encode())
    for key, path, bbox in zip(images.keys, images.paths, images.bboxes):
        st = path.stat()
        h.update(f"{key}\t{st.st_size}\t{st.st_mtime_ns}\t{bbox}\n".encode())
    return h.hexdigest()


def resolve_cache_dir(root: Path, cache_dir: str | os.PathLike | None) -> Path:
    """The given folder, else `<root>/cache`, else (read-only root) a per-user folder."""
    if cache_dir is not None:
        path = Path(cache_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AttnGANError(f"cannot create the cache folder {path}: {e.strerror}") from None
        if not os.access(path, os.W_OK):
            raise AttnGANError(f"the cache folder {path} is not writable")
        return path
    path = Path(root) / "cache"
    try:
        path.mkdir(exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    base = Path(os.environ.get("ATTNGAN_CACHE", Path.home() / ".cache" / "attngan"))
    tag = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:10]
    fallback = base / f"{Path(root).resolve().name}-{tag}"
    warnings.warn(f"{root} is read-only: the image cache goes to {fallback} "
                  "(pass cache_dir to choose)", DataWarning, stacklevel=3)
    return resolve_cache_dir(root, fallback)


class ImageCache:
    """Read side. The memmap is opened lazily in each process (DataLoader workers fork)."""

    def __init__(self, meta_path: Path, meta: dict):
        self.meta_path = meta_path
        self.keys: list[str] = meta["keys"]
        self.bad: dict[str, str] = meta["bad"]
        self.stored: int = meta["stored"]
        self._data_path = meta_path.parent / meta["data"]
        self._index = np.load(meta_path.parent / meta["index"])
        self._row = {k: i for i, k in enumerate(self.keys)}
        self._data: np.ndarray | None = None
        self._pid = -1

    @classmethod
    def open(cls, cache_dir: Path, split: str, stored: int, fp: str) -> "ImageCache | None":
        """The cache if it exists and matches `fp`, else None."""
        meta_path = Path(cache_dir) / f"{split}_{stored}.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("version") != CACHE_VERSION or meta.get("fingerprint") != fp:
                return None
            cache = cls(meta_path, meta)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or damaged: rebuilt by the caller
        if len(cache._index) != len(cache.keys) or not cache._data_path.is_file():
            return None
        return cache

    def row(self, key: str) -> int:
        return self._row[key]

    def get(self, row: int) -> np.ndarray | None:
        """H x W x 3 uint8 (a read-only view), or None for an image that could not be read."""
        offset, h, w = (int(v) for v in self._index[row])
        if h == 0:
            return None
        if self._data is None or self._pid != os.getpid():
            self._data = np.memmap(self._data_path, dtype=np.uint8, mode="r")
            self._pid = os.getpid()
        return self._data[offset:offset + h * w * 3].reshape(h, w, 3)


class _Decode:
    """One cache row per item, decoded in DataLoader workers."""

    def __init__(self, images: ImageList, stored: int):
        self.images, self.stored = images, stored

    def __len__(self) -> int:
        return len(self.images.keys)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str]:
        try:
            return i, load_cropped(self.images.paths[i], self.images.bboxes[i], self.stored), ""
        except IMAGE_ERRORS as e:
            return i, None, f"{type(e).__name__}: {e}"


def _identity(x):
    return x


def write_cache(images: ImageList, cache_dir: Path, split: str, stored: int, fp: str,
                workers: int = 0) -> ImageCache:
    """Decode every image once (in `workers` processes) and write the cache atomically."""
    # torch only here: the data modules that import this one (rendering, conversion) run without it.
    import torch

    token = fp[:12]
    data_name = f"{split}_{stored}.{token}.u8"
    index_name = f"{split}_{stored}.{token}.index.npy"
    index = np.zeros((len(images.keys), 3), dtype=np.int64)
    bad: dict[str, str] = {}
    def fill(tmp: Path) -> None:
        # The loader draws its workers' base seed from its generator: its own, so that building
        # the cache leaves torch's global RNG, and with it the first run's weights, as it was.
        loader = torch.utils.data.DataLoader(_Decode(images, stored), batch_size=None,
                                             num_workers=workers, collate_fn=_identity,
                                             generator=torch.Generator())
        offset = 0
        with open(tmp, "wb") as f:
            for i, arr, reason in tqdm(loader, total=len(images.keys), unit="img",
                                       desc=f"caching {split} images at {stored}px", leave=False,
                                       disable=None):  # no bar when stderr is not a terminal (logs)
                if arr is None:
                    bad[images.keys[i]] = reason
                    continue
                f.write(np.ascontiguousarray(arr).tobytes())
                index[i] = (offset, arr.shape[0], arr.shape[1])
                offset += arr.size

    atomic_write(cache_dir / data_name, fill)
    buf = tempfile.SpooledTemporaryFile()
    np.save(buf, index)
    buf.seek(0)
    atomic_write_bytes(cache_dir / index_name, buf.read())
    meta = {"version": CACHE_VERSION, "split": split, "stored": stored, "fingerprint": fp,
            "data": data_name, "index": index_name, "keys": images.keys, "bad": bad}
    meta_path = cache_dir / f"{split}_{stored}.json"
    atomic_write_bytes(meta_path, json.dumps(meta).encode("utf-8"))  # the commit point
    for old in cache_dir.glob(f"{split}_{stored}.*"):
        if old.name not in (data_name, index_name, meta_path.name) and not old.name.startswith("."):
            old.unlink(missing_ok=True)
    return ImageCache(meta_path, meta)


def open_or_build(images: ImageList, root: Path, split: str, size: int,
                  cache_dir: str | os.PathLike | None = None, workers: int = 0) -> ImageCache:
    stored = stored_size(size)
    folder = resolve_cache_dir(root, cache_dir)
    fp = fingerprint(images, stored)
    cache = ImageCache.open(folder, split, stored, fp)
    if cache is None:
        cache = write_cache(images, folder, split, stored, fp, workers)
    return cache


def build_cache(root: str | os.PathLike, split: str, size: int, dataset: str = "birds",
                cache_dir: str | os.PathLike | None = None, workers: int = 2) -> Path:
    """Build (or confirm) the cache of `split` for crops of `size` px; returns its meta file."""
    root = Path(root)
    images = read_image_list(root, split, dataset)
    return open_or_build(images, root, split, size, cache_dir, workers).meta_path
