"""WebDataset shards: tar files of (image, captions, class) samples, streamed for training.

`--data "shards/train-{000000..000099}.tar"` (a brace pattern, one .tar, or a folder holding a
shards.json index) names the training shards. The test split is found beside them: in the
folder's shards.json, else by putting "test" for "train" in the pattern's file names.

A sample (what `attngan make-shards` writes; the `webdataset` package reads and writes the tars):
    <key>.jpg (or .png, .webp, ...)   the image file's bytes, as stored in the source
    <key>.json                        {"key": source key, "captions": [...], "class": int,
                                       "split": "train"|"test", "bbox": [x, y, w, h] | null}
Shards from elsewhere may carry the captions as <key>.txt (one per line) and the class as
<key>.cls instead; without a class every image is its own class.

Training streams: each process of a torchrun job, and each DataLoader worker in it, reads its own
shards (samples in turn when there are fewer shards than readers), through a seeded shuffle
buffer, and yields the same number of batches per epoch (a reader that runs out starts its shards
again) so the processes' collective steps stay in step. Evaluation and validation read the test
split as a local image folder, extracted once from its shards into the cache folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from attngan.config import DataConfig
from attngan.data.cache import IMAGE_ERRORS, resolve_cache_dir, stored_size
from attngan.data.items import multi_scale_crops, pad_caption
from attngan.data.layout import DataWarning, check_split, load_cropped, preview_list
from attngan.data.records import DataSource, Record, check_key, split_records
from attngan.errors import AttnGANError
from attngan.fileio import atomic_write_bytes, atomic_write_json, read_json_object, tmp_dir_beside
from attngan.text import (Vocabulary, build_vocab_from_lines, save_vocab_and_report, summarize_dropped,
                          tokenize)

INDEX = "shards.json"
INDEX_FORMAT = "attngan-shards"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm")
_BRACES = re.compile(r"\{\d+\.\.\d+\}")


def _webdataset():
    try:
        import webdataset
    except ImportError:
        raise AttnGANError("WebDataset shards need the webdataset package: "
                           "pip install 'attngan[shards]'") from None
    return webdataset


# Naming the shards.

def is_shard_source(data: Any) -> bool:
    """A .tar file, a brace pattern of them, or a folder with a shards.json index."""
    if data is None:
        return False
    s = str(data)
    if s.endswith(".tar"):
        return True
    try:
        return Path(s).is_dir() and (Path(s) / INDEX).is_file()
    except OSError:
        return False


MAX_SHARD_NAMES = 100_000  # a data set of 100,000 tar files is beyond any here; 10^8 names took minutes


def _brace_count(pattern: str) -> int:
    """An upper bound on the names a brace pattern expands to, from its text alone (expanding
    "{00000000..99999999}" to find out would take minutes and gigabytes)."""
    total = 1
    for m in re.finditer(r"\{([^{}]*)\}", pattern):
        body = m.group(1)
        r = re.fullmatch(r"(-?\d{1,18})\.\.(-?\d{1,18})(?:\.\.(-?\d{1,18}))?", body)
        if r:
            step = abs(int(r.group(3) or 1)) or 1
            n = abs(int(r.group(2)) - int(r.group(1))) // step + 1
        elif re.fullmatch(r"-?\d+\.\.-?\d+(?:\.\.-?\d+)?", body):
            n = MAX_SHARD_NAMES + 1  # more than 18 digits
        elif "," in body:
            n = body.count(",") + 1
        else:
            n = 52 if ".." in body else 1  # a letter range, at most a-zA-Z
        total *= n
        if total > MAX_SHARD_NAMES:
            break
    return total


def expand(pattern: str) -> list[str]:
    """Brace expansion ("train-{000..009}.tar"), as webdataset does it."""
    from braceexpand import braceexpand

    if _brace_count(str(pattern)) > MAX_SHARD_NAMES:
        raise AttnGANError(f"the shard pattern {str(pattern)[:200]} names more than {MAX_SHARD_NAMES} files")
    return list(braceexpand(str(pattern)))


def shard_folder(data: Any) -> Path:
    s = str(data)
    return Path(s) if not s.endswith(".tar") else Path(expand(s)[0]).parent


def read_index(folder: Path) -> dict[str, Any] | None:
    path = folder / INDEX
    if not path.is_file():
        return None

    index = read_json_object(path, "shard index")
    if index.get("format") != INDEX_FORMAT or not isinstance(index.get("splits"), dict):
        raise AttnGANError(f"{path} is not an attngan shard index (format '{INDEX_FORMAT}')")
    return index


def split_shards(data: Any, split: str) -> list[Path]:
    """The shard files of one split; an AttnGANError names what is missing."""
    s = str(data)
    folder = shard_folder(data)
    index = read_index(folder)
    if not s.endswith(".tar"):  # a folder with shards.json
        entry = index["splits"].get(split)
        if not entry or not entry.get("shards"):
            raise AttnGANError(f"{folder / INDEX} lists no {split} shards")
        names = [folder / n for n in entry["shards"]]
    elif split == "train":
        names = [Path(p) for p in expand(s)]
    else:
        entry = (index or {}).get("splits", {}).get(split) if index else None
        if entry and entry.get("shards"):
            names = [folder / n for n in entry["shards"]]
        else:
            head, tail = os.path.split(s)
            if "train" not in tail:
                raise AttnGANError(f"no {split} shards for {s}: add a shards.json beside them "
                                   "(attngan make-shards writes one) or name the files train-*.tar "
                                   "and test-*.tar")
            names = [Path(p) for p in expand(os.path.join(head, tail.replace("train", split)))]
    missing = [str(p) for p in names if not p.is_file()]
    if missing:
        raise AttnGANError(f"{len(missing)} of {len(names)} {split} shards are missing: "
                           f"{preview_list(missing)}")
    return names


def shards_stamp(paths: list[Path]) -> str:
    h = hashlib.sha256(b"attngan-shards v1\n")
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# Reading samples.

# A member of a sample (an image, its JSON) larger than this is skipped unread: a tar's header
# declares sizes that its bytes need not back (a sparse member, a gzip bomb), and a member is read
# whole into memory.
MAX_MEMBER_BYTES = 64 * 2**20


def _tar_members(f, path: Path, warn: bool) -> Iterator[dict[str, Any]]:
    """{"fname", "data"} of each regular member of a tar stream, as webdataset's tar iterator gives
    them, without any member past MAX_MEMBER_BYTES (declared or read) or stored sparse."""
    stream = tarfile.open(fileobj=f, mode="r|*")
    for info in stream:
        if not info.isreg() or re.match(r"__[^/]*__($|/)", info.name):  # webdataset's metadata members
            continue
        big = info.size > MAX_MEMBER_BYTES or info.issparse()
        data = None if big else stream.extractfile(info).read(MAX_MEMBER_BYTES + 1)
        if big or len(data) > MAX_MEMBER_BYTES:
            if warn:
                what = "stored sparse" if info.issparse() else f"declares {info.size} bytes"
                warnings.warn(f"{path.name}: member {info.name[:80]!r} {what}, more than a sample's member "
                              f"may hold ({MAX_MEMBER_BYTES >> 20} MiB): skipped unread", DataWarning, stacklevel=3)
            continue
        yield {"fname": info.name, "data": data}
        stream.members = []  # a stream's member list would grow with every sample


def read_shard(path: Path, warn: bool = True) -> Iterator[dict[str, Any]]:
    """Raw samples ({"__key__", "__url__", "<ext>": bytes}) of one tar; a damaged tar is reported
    (with how far it was read) and ends early instead of raising."""
    _webdataset()
    from webdataset.tariterators import group_by_keys

    def reraise(exn: Exception) -> bool:
        raise exn

    n = 0
    try:
        with open(path, "rb") as f:
            files = ({**fs, "__url__": str(path)} for fs in _tar_members(f, Path(path), warn))
            for sample in group_by_keys(files, handler=reraise):
                n += 1
                yield sample
    except Exception as e:  # tarfile.ReadError, EOFError, a duplicate member (ValueError), OSError
        if warn:
            first = str(e).splitlines()[0][:160] if str(e) else ""
            warnings.warn(f"shard {path} is damaged after {n} samples ({type(e).__name__}: "
                          f"{first}): the rest of it is skipped", DataWarning, stacklevel=2)


class BadSample(ValueError):
    """A sample that cannot be used; the message names its shard and key."""


def parse_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """{"key", "image" (bytes), "ext", "captions", "class_id", "split", "bbox", "shard"} of a raw
    sample; a BadSample names the shard and the sample."""
    where = f"{Path(raw.get('__url__', '?')).name}: sample {str(raw.get('__key__'))[:80]!r}"
    meta: dict[str, Any] = {}
    if "json" in raw:
        try:
            meta = json.loads(raw["json"])
        except (ValueError, RecursionError) as e:  # also UnicodeDecodeError; too deep a nesting
            raise BadSample(f"{where}: its .json is not valid JSON ({type(e).__name__}: "
                            f"{str(e)[:80]})") from None
        if not isinstance(meta, dict):
            raise BadSample(f"{where}: its .json is not an object")
    ext = next((e for e in IMAGE_EXTS if e in raw), None)
    if ext is None:
        members = ", ".join(sorted(k for k in raw if not k.startswith("__"))) or "none"
        raise BadSample(f"{where} has no image member (members: {members})")
    caps = meta.get("captions", meta.get("text", meta.get("caption")))
    if caps is None and "txt" in raw:
        caps = raw["txt"].decode("utf-8", errors="replace")
    if caps is None:
        raise BadSample(f"{where} has no captions (no .txt member and no 'captions' in its .json)")
    items = caps if isinstance(caps, list) else [caps]
    captions = [line.strip() for c in items if isinstance(c, str) for line in c.splitlines() if line.strip()]
    if not captions:
        raise BadSample(f"{where}: its caption is empty")
    key = meta.get("key") or raw["__key__"]
    try:
        check_key(key, where)
    except AttnGANError as e:
        raise BadSample(str(e)) from None
    cls = meta.get("class", meta.get("label"))
    if cls is None and "cls" in raw:
        try:
            cls = int(raw["cls"].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise BadSample(f"{where}: its .cls is not an integer") from None
    if isinstance(cls, int) and not isinstance(cls, bool) and not -2 ** 63 <= cls < 2 ** 63:
        raise BadSample(f"{where}: its class {str(cls)[:30]} does not fit in 64 bits")
    if cls is None or isinstance(cls, bool) or not isinstance(cls, int):
        cls = zlib.crc32(key.encode("utf-8", errors="replace"))  # its own class
    bbox = meta.get("bbox")
    if bbox is not None:
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                        and abs(v) < 2 ** 31 for v in bbox) and bbox[2] > 0 and bbox[3] > 0):
            raise BadSample(f"{where}: bbox must be [x, y, w, h] of finite numbers with w, h > 0, "
                            f"got {str(bbox)[:60]}")
        bbox = tuple(int(v) for v in bbox)
    return {"key": key, "image": raw[ext], "ext": ext, "captions": captions, "class_id": int(cls),
            "split": meta.get("split"), "bbox": bbox, "shard": Path(raw.get("__url__", "?")).name}


def shard_counts(paths: list[Path]) -> list[int]:
    """Samples per shard: from shards.json when it covers them, else by reading the tars."""
    folder = paths[0].parent
    index = read_index(folder)
    if index:
        counts = {}
        for entry in index["splits"].values():
            counts.update(dict(zip(entry.get("shards", []), entry.get("counts", []))))
        if all(p.parent == folder and p.name in counts for p in paths):
            return [int(counts[p.name]) for p in paths]
    return [sum(1 for _ in read_shard(p, warn=False)) for p in paths]


# Which reader reads what.

def reader_plan(n_shards: int, rank: int, world: int, worker: int, workers: int
                ) -> tuple[list[int] | None, int, int]:
    """(shard indices, sample stride, sample offset) of one reader: worker `worker` of `workers`
    in process `rank` of `world`. With at least one shard per reader each reads its own shards
    (every sample of them); with fewer, every reader opens every shard and keeps every
    stride-th sample from its offset, so no sample is read twice in a pass either way."""
    readers = world * max(workers, 1)
    slot = rank * max(workers, 1) + worker
    if n_shards >= readers:
        return list(range(n_shards))[slot::readers], 1, 0
    return list(range(n_shards)), readers, slot


def batches_for_worker(total_batches: int, worker: int, workers: int,
                       available: list[int] | None = None) -> int:
    """Worker `worker`'s share of its process's batches: in proportion to the samples each
    worker can read (`available`, one count per worker; equal shares without), largest
    remainders first, so a worker with fewer samples is not made to repeat them."""
    workers = max(workers, 1)
    weights = np.asarray(available if available is not None and sum(available) > 0
                         else [1] * workers, dtype=np.float64)
    exact = total_batches * weights / weights.sum()
    share = np.floor(exact).astype(int)
    order = np.argsort(-(exact - share), kind="stable")
    share[order[: total_batches - int(share.sum())]] += 1
    return int(share[worker])


def _strided_count(total: int, stride: int, offset: int) -> int:
    return len(range(offset, total, stride))


class ShardDataset(torch.utils.data.IterableDataset):
    """Streamed training items from shards, the same items as TextImageDataset makes from the
    same images and captions (crops, flips, caption choice and padding are shared code)."""

    def __init__(self, data: Any, split: str, cfg: DataConfig, vocab: Vocabulary, image_sizes: list[int] | None = None,
                 train: bool = True, *, seed: int = 0):
        self.data = str(data)
        self.split = check_split(split)
        self.cfg, self.vocab, self.train, self.seed = cfg, vocab, train, seed
        self.dataset = "shards"
        self.root = shard_folder(data)
        sizes = image_sizes or [cfg.base_size * 2 ** i for i in range(cfg.branch_num)]
        self.image_sizes = list(sizes)
        self.load_size = stored_size(max(sizes))
        self.paths = split_shards(data, split)
        _webdataset()
        self.counts = shard_counts(self.paths)
        self.n_samples = sum(self.counts)
        if self.n_samples == 0:
            raise AttnGANError(f"the {split} shards of {self.data} hold no samples")
        self.bad_keys: set[str] = set()
        self.rank, self.world, self.batch_size = 0, 1, None
        # Epoch bookkeeping: the epoch last set, and how many passes this copy had made then.
        self._epoch_set, self._iters_at_set, self._iters, self._start_batch = 0, 0, 0, 0

    # Set-up by the training loop.

    def configure(self, rank: int, world: int, batch_size: int, seed: int) -> None:
        """Stream for process `rank` of `world` in batches of `batch_size`: every process yields
        the same number of full batches per epoch."""
        self.rank, self.world, self.batch_size, self.seed = rank, world, batch_size, seed

    @property
    def batches_per_epoch(self) -> int:
        return (self.n_samples // self.world) // (self.batch_size or 1)

    def set_position(self, epoch: int, start_batch: int) -> None:
        # DataLoader workers keep their own copy of this object (persistent workers) and never
        # see a later call: they count the passes they have made since the epoch set before
        # they started. In-process loading sees every call.
        self._epoch_set, self._iters_at_set, self._start_batch = epoch, self._iters, start_batch

    def __len__(self) -> int:
        if self.batch_size is None:
            return self.n_samples
        return self.batches_per_epoch * self.batch_size

    # Items.

    def note_bad(self, keys) -> None:
        """Record unusable samples; abort once more than cfg.max_bad_fraction are."""
        self.bad_keys.update(keys)
        if len(self.bad_keys) > self.cfg.max_bad_fraction * self.n_samples:
            raise AttnGANError(
                f"{len(self.bad_keys)} of {self.n_samples} {self.split} samples of {self.data} are "
                f"unusable (more than data.max_bad_fraction={self.cfg.max_bad_fraction}), e.g. "
                f"{preview_list(sorted(self.bad_keys))}")

    def make_item(self, sample: dict[str, Any], generator: torch.Generator, ordinal: int = 0
                  ) -> dict[str, Any]:
        """The training/evaluation item of a parsed sample (raises BadSample or an image error)."""
        caps = []
        for line in sample["captions"]:
            ids, _ = self.vocab.encode_tokens(tokenize(line))
            if ids:
                caps.append(np.asarray(ids, dtype=np.int32))
        if not caps:
            raise BadSample(f"{sample['shard']}: sample '{sample['key']}' has no caption with a word "
                            "of the vocabulary")
        full = load_cropped(io.BytesIO(sample["image"]), sample["bbox"], self.load_size)
        k = int(torch.randint(0, len(caps), (), generator=generator)) if self.train else 0
        caption, cap_len = pad_caption(caps[k], self.cfg.words_num, self.train, generator, (ordinal, k))
        return {"images": multi_scale_crops(full, self.image_sizes, self.train, generator),
                "caption": caption, "cap_len": cap_len, "class_id": sample["class_id"],
                "key": sample["key"]}

    def samples(self, shard_ids: list[int] | None = None, stride: int = 1, offset: int = 0,
                order_rng: np.random.Generator | None = None) -> Iterator[dict[str, Any] | str]:
        """Parsed samples of the given shards (in a seeded order when order_rng is given); an
        unusable one comes as a string naming it."""
        ids = list(range(len(self.paths))) if shard_ids is None else list(shard_ids)
        if order_rng is not None:
            ids = [ids[i] for i in order_rng.permutation(len(ids))]
        j = 0
        for s in ids:
            for raw in read_shard(self.paths[s]):
                j += 1
                if (j - 1) % stride != offset:
                    continue
                try:
                    yield parse_sample(raw)
                except BadSample as e:
                    warnings.warn(str(e), DataWarning, stacklevel=2)
                    yield f"{self.paths[s].name}:{raw.get('__key__')}"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self._epoch_set + self._iters - self._iters_at_set
        start_batch = self._start_batch if self._iters == self._iters_at_set else 0
        self._iters += 1
        seeds = [self.seed, epoch, self.rank, worker]
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence(seeds).generate_state(1)[0]))
        n = len(self.paths)
        if self.batch_size is None:  # one plain pass, in shard order (tests, tools)
            quota, shard_ids, stride, offset = None, list(range(n)), 1, 0
        else:
            # Every reader deals the shards from the same per-epoch permutation.
            perm = (np.random.default_rng([self.seed, epoch, 3]).permutation(n) if self.train
                    else np.arange(n))
            plans = [reader_plan(n, self.rank, self.world, w, workers) for w in range(workers)]
            available = [sum(self.counts[perm[i]] for i in ids) if stride == 1 else
                         _strided_count(self.n_samples, stride, off) for ids, stride, off in plans]
            total = max(self.batches_per_epoch - start_batch, 0)
            quota = batches_for_worker(total, worker, workers, available) * self.batch_size
            if quota == 0:
                return
            ids, stride, offset = plans[worker]
            shard_ids = [int(perm[i]) for i in ids]
        stream = self._stream(shard_ids, stride, offset, epoch, worker, quota is not None)
        made, skipped = 0, []
        for sample in stream:
            if isinstance(sample, str):
                skipped.append(sample)
                continue
            try:
                item = self.make_item(sample, generator, made)
            except (BadSample, *IMAGE_ERRORS) as e:
                why = str(e) if isinstance(e, BadSample) else (
                    f"{sample['shard']}: sample '{sample['key']}' has an unreadable image "
                    f"({type(e).__name__}: {e})")
                warnings.warn(why, DataWarning, stacklevel=2)
                skipped.append(f"{sample['shard']}:{sample['key']}")
                continue
            item["skipped"], skipped = skipped, []
            yield item
            made += 1
            if quota is not None and made >= quota:
                return

    def _stream(self, shard_ids, stride, offset, epoch, worker, repeat: bool):
        """Samples of this reader's shards; when `repeat`, the shards again (reshuffled) until
        the caller has its quota."""
        passes = 0
        while True:
            seeds = [self.seed, epoch, self.rank, worker, passes]
            # Readers that share shards (stride > 1) must read them in one common order.
            order = (np.random.default_rng(seeds + [1] if stride == 1 else [self.seed, epoch, passes, 1])
                     if self.train and (passes > 0 or stride > 1) else None)
            samples = self.samples(shard_ids, stride, offset, order)
            if self.train and self.cfg.shuffle_buffer > 1:
                # Within a pass, so a sample comes once per pass however large the buffer.
                samples = shuffled(samples, self.cfg.shuffle_buffer, np.random.default_rng(seeds + [2]))
            n = 0
            for sample in samples:
                n += 1
                yield sample
            passes += 1
            if not repeat:
                return
            if n == 0:
                raise AttnGANError(f"process {self.rank}, data worker {worker} found no samples in "
                                   f"its shards of {self.data}")


def shuffled(stream, size: int, rng: np.random.Generator):
    """A shuffle buffer: holds `size` samples and yields a random one as each new one comes in."""
    buf: list = []
    for x in stream:
        if len(buf) < size:
            buf.append(x)
            continue
        i = int(rng.integers(size))
        buf[i], x = x, buf[i]
        yield x
    for i in rng.permutation(len(buf)):
        yield buf[i]


# The vocabulary and the test split of shards.

def shard_vocab(data: Any, min_count: int | None = None):
    """vocab.json beside the shards (written by make-shards), else one built from the training
    captions (saved beside them when that folder is writable)."""
    folder = shard_folder(data)
    path = folder / "vocab.json"
    train = split_shards(data, "train")
    stamp = shards_stamp(train)
    if path.is_file():
        # make-shards wrote it from these shards' captions: kept unless another minimum count is
        # asked for (shards copied elsewhere keep their vocabulary even with new file times).
        vocab = Vocabulary.load(path)
        raw = json.loads(path.read_text(encoding="utf-8"))
        if min_count is None or raw.get("min_count", 1) == min_count:
            return vocab
    lines = []
    for p in train:
        for raw in read_shard(p):
            try:
                lines.extend(parse_sample(raw)["captions"])
            except BadSample:
                continue
    vocab, report = build_vocab_from_lines(lines, min_count or 1, source=str(data))
    if report["dropped"]:
        warnings.warn(f"vocabulary of {data}: {summarize_dropped(report)}", stacklevel=2)
    try:
        save_vocab_and_report(folder, vocab, report, stamp)
    except OSError:
        pass  # read-only shards: the vocabulary lives in memory (and in the trained model)
    return vocab


def materialize_split(data: Any, split: str) -> Path:
    """The split's samples as a local image folder (metadata.jsonl), extracted once into the
    cache folder and reused while the shards are unchanged. Evaluation and validation index
    their items, which a stream cannot do."""
    if not is_shard_source(data):
        return Path(data)
    paths = split_shards(data, split)
    stamp = shards_stamp(paths)
    folder = shard_folder(data)
    cache = resolve_cache_dir(folder, None)
    target = cache / f"shards-{split}-{stamp}"
    if (target / "metadata.jsonl").is_file():
        return target
    tmp = tmp_dir_beside(target)
    rows, seen, bad = [], set(), []
    try:
        for p in paths:
            for raw in tqdm(read_shard(p), desc=f"extracting {p.name}", unit="img", leave=False):
                try:
                    s = parse_sample(raw)
                except BadSample as e:
                    bad.append(str(e))
                    continue
                name = _local_name(s["key"], s["ext"], len(rows))
                if name in seen:
                    name = f"images/{len(rows):09d}.{s['ext']}"
                try:
                    atomic_write_bytes(tmp / name, s["image"])
                except (OSError, ValueError):
                    # A key that names a file where another key made a folder (a.jpg, a.jpg/b),
                    # or the reverse: a numbered name instead.
                    name = f"images/{len(rows):09d}.{s['ext']}"
                    atomic_write_bytes(tmp / name, s["image"])
                seen.add(name)
                rows.append({"file_name": name, "text": s["captions"], "split": split,
                             "label": s["class_id"], **({"bbox": list(s["bbox"])} if s["bbox"] else {})})
        if bad:
            warnings.warn(f"{len(bad)} of {len(bad) + len(rows)} {split} samples of {data} are unusable "
                          f"and were skipped: {preview_list(bad)}", DataWarning, stacklevel=2)
        if not rows:
            raise AttnGANError(f"the {split} shards of {data} hold no usable sample")
        atomic_write_bytes(tmp / "metadata.jsonl",
                           "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "metadata.jsonl").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _local_name(key: str, ext: str, i: int) -> str:
    p = PurePosixPath(key.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not key.strip():
        return f"images/{i:09d}.{ext}"
    return str(p) if p.suffix.lower().lstrip(".") in IMAGE_EXTS else f"{p}.{ext}"


# Writing shards.

def image_bytes(path: Path) -> tuple[bytes, str]:
    """(the file's bytes, its member suffix) for an image that decodes as one; ValueError or
    OSError otherwise (a shard holds images only, whatever a metadata file lists)."""
    data = Path(path).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
            size = img.size
    except (SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None
    if min(size) < 1:
        raise ValueError(f"an image of size {size}")
    ext = Path(path).suffix.lower().lstrip(".") or "jpg"
    # The decoder sniffs the format; the suffix only names the member.
    return data, ext if ext in IMAGE_EXTS else "jpg"


def write_shards(records_by_split: dict[str, list[Record]], out: str | Path, per_shard: int = 1000,
                 source: str = "", min_count: int = 1, progress: bool = True) -> dict[str, Any]:
    """<out>/<split>-NNNNNN.tar per split (each written to a temp file, then renamed), the
    vocabulary of the training captions and shards.json (written last). `records_by_split` maps
    split -> Records with image paths. A record whose file is not an image is left out, and the
    warning names it."""
    wds = _webdataset()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if per_shard < 1:
        raise AttnGANError("--per-shard must be at least 1")
    splits: dict[str, Any] = {}
    written: dict[str, list[Record]] = {}
    for split, records in records_by_split.items():
        names, counts, kept, bad = [], [], [], []
        bar = tqdm(total=len(records), desc=f"writing {split} shards", unit="img",
                   disable=not progress, leave=False)
        pending = iter(records)
        while True:
            name = f"{split}-{len(names):06d}.tar"
            tmp = out / f".{name}.tmp"
            n = 0
            try:
                with open(tmp, "wb") as f:
                    writer = wds.TarWriter(f, mtime=0.0)
                    for r in pending:
                        bar.update(1)
                        try:
                            data, ext = image_bytes(r.path)
                        except (OSError, ValueError) as e:
                            bad.append(f"{r.key} ({type(e).__name__})")
                            continue
                        writer.write({"__key__": f"{split}-{len(kept):08d}", ext: data,
                                      "json": {"key": r.key, "captions": list(r.captions),
                                               "class": int(r.class_id), "split": split,
                                               "bbox": list(r.bbox) if r.bbox else None}})
                        kept.append(r)
                        n += 1
                        if n == per_shard:
                            break
                    writer.close()
                if n == 0 and names:
                    break  # the records ran out at a shard's end
                os.replace(tmp, out / name)
            finally:
                tmp.unlink(missing_ok=True)
            names.append(name)
            counts.append(n)
            if n < per_shard:
                break
        bar.close()
        if bad:
            warnings.warn(f"{len(bad)} of {len(records)} {split} images are not readable images and "
                          f"were left out of the shards: {preview_list(bad)}", DataWarning,
                          stacklevel=2)
        splits[split] = {"shards": names, "counts": counts, "samples": sum(counts),
                         "skipped": len(bad)}
        written[split] = kept
    train_lines = [c for r in written.get("train", []) for c in r.captions]
    if train_lines:
        vocab, report = build_vocab_from_lines(train_lines, min_count, source=source or str(out))
        stamp = shards_stamp([out / n for n in splits["train"]["shards"]])
        save_vocab_and_report(out, vocab, report, stamp)
        if report["dropped"] and progress:
            print(f"vocabulary: {summarize_dropped(report)}")
    index = {"format": INDEX_FORMAT, "version": 1, "source": source, "splits": splits}
    atomic_write_json(out / INDEX, index)
    return index


class ShardSource(DataSource):
    """WebDataset shards: a .tar, a brace pattern of them, or a folder with shards.json. Their
    records are those of the split extracted once into an image folder (`materialize_split`);
    training streams them instead (ShardDataset)."""

    name = "shards"
    varying_captions = True

    def detect(self, root: Path) -> bool:
        return is_shard_source(root)

    def folder(self, root: Path, split: str) -> Path:
        return materialize_split(root, split)

    def records(self, root: Path, split: str) -> list[Record]:
        return split_records(self.folder(root, split), split)

    def train_stream(self, root: Path, cfg: DataConfig, vocab: Vocabulary, image_sizes: list[int] | None) -> "ShardDataset":
        return ShardDataset(root, "train", cfg, vocab, image_sizes, train=True)

    def caption_lines(self, root: Path, split: str) -> list[list[str]]:
        out = []
        for p in split_shards(root, split):
            for raw in read_shard(p):
                try:
                    out.append(parse_sample(raw)["captions"])
                except BadSample:
                    continue
        return out

    def vocabulary(self, root: Path, min_count: int | None = None):
        return shard_vocab(root, min_count)


SOURCE = ShardSource()
