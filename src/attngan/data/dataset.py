"""TextImageDataset: (multi-scale image, caption) pairs from the records of any data source
(attngan.data.records: CUB, COCO, image folders, shards); training shards stream through
attngan.data.shards.ShardDataset, which shares the crop and caption code below.

Per item, as the original `TextDataset` (the original code, datasets.py):
one caption of the image's `captions_per_image`, the bird bbox crop, shorter side resized to
int(S * 76 / 64), one random S x S crop + horizontal flip, and every smaller stage image downscaled
from that same crop; [-1, 1] tensors. Decoding happens in DataLoader workers; `cfg.cache` reads
pre-resized crops from a memmap instead (attngan.data.cache).
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from attngan.config import DataConfig
from attngan.data.cache import IMAGE_ERRORS, ImageCache, open_or_build, stored_size
from attngan.data.layout import DataWarning, ImageList, load_cropped, preview_list
from attngan.data.records import Record, check_split, detect_source, local_folder
from attngan.data.sampler import EpochSampler
from attngan.errors import AttnGANError
from attngan.data.items import multi_scale_crops, pad_caption
from attngan.data.vocab import load_vocab
from attngan.text import Vocabulary, tokenize

__all__ = ["DataWarning", "TextImageDataset", "collate_sorted", "load_vocab", "make_loader"]


class TextImageDataset(Dataset):
    """Items: {"images": [3 x S x S per size], "caption": LongTensor(words_num), "cap_len": int,
    "class_id": int, "key": str, "skipped": [keys of unreadable images replaced by this one]}."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        cfg: DataConfig,
        vocab: Vocabulary,
        image_sizes: list[int] | None = None,
        train: bool = True,
        *,
        caption_index: int = 0,                        # the caption of each item when train=False
        cache_dir: str | os.PathLike | None = None,    # where cfg.cache keeps its files
    ):
        self.split = check_split(split)
        # The local folder that holds the split's files (shards: the split extracted once).
        self.root = local_folder(root, split)
        self.source = detect_source(self.root)
        self.dataset = self.source.name
        records = self.source.records(self.root, split)
        if not records:
            raise AttnGANError(f"the {split} split under {self.root} lists no images")
        self._pad_quietly = self.source.varying_captions
        if self._pad_quietly:
            # New data has any number of captions per image: every image offers as many as the
            # most-captioned one, an image with fewer repeating its own in turn.
            most = max(len(r.captions) for r in records)
            cfg = replace(cfg, captions_per_image=most, short_captions="pad")
        self.cfg = cfg
        self.vocab = vocab
        self.train = train
        if cfg.short_captions not in ("skip", "pad"):
            raise AttnGANError(f"data.short_captions must be 'skip' or 'pad', got {cfg.short_captions!r}")
        if cfg.captions_per_image < 1 or cfg.words_num < 1:
            raise AttnGANError("data.captions_per_image and data.words_num must be at least 1")
        sizes = image_sizes or [cfg.base_size * 2 ** i for i in range(cfg.branch_num)]
        if not all(isinstance(s, int) and s > 0 for s in sizes):
            raise AttnGANError(f"image sizes must be positive integers, got {sizes}")
        self.image_sizes = list(sizes)
        self.load_size = stored_size(max(sizes))     # shorter side before the random crop
        if not 0 <= caption_index < cfg.captions_per_image:
            raise AttnGANError(f"caption_index {caption_index} is outside "
                               f"0..{cfg.captions_per_image - 1}")
        self.caption_index = caption_index

        class_ids = np.asarray([r.class_id for r in records], dtype=np.int64)
        per_item = self._read_captions(records)
        keep = [i for i, caps in enumerate(per_item) if caps is not None]
        if not keep:
            raise AttnGANError(f"no {split} image under {self.root} has a usable caption")
        self.records: list[Record] = [records[i] for i in keep]
        self.keys: list[str] = [r.key for r in self.records]
        self.class_ids: np.ndarray = class_ids[keep]
        self._paths = [r.path for r in self.records]
        self._bboxes = [r.bbox for r in self.records]
        # All captions in one flat array: cheap to share with forked workers.
        flat = [np.asarray(c, dtype=np.int32) for i in keep for c in per_item[i]]
        self._offsets = np.cumsum([0] + [len(c) for c in flat]).astype(np.int64)
        self._tokens = np.concatenate(flat)

        self._bad: dict[int, str] = {}     # item -> reason; per process
        self.bad_keys: set[str] = set()    # what this process knows to be unreadable
        self._rng: torch.Generator | None = None
        self._rng_pid = -1
        self._cache: ImageCache | None = None
        self._cache_rows: np.ndarray | None = None
        if cfg.cache:
            self._cache = open_or_build(ImageList.of(records), self.root, split, max(sizes), cache_dir,
                                        cfg.workers)
            self._cache_rows = np.asarray([self._cache.row(k) for k in self.keys], dtype=np.int64)
            bad = [k for k in self.keys if k in self._cache.bad]
            if bad:
                for i, k in enumerate(self.keys):
                    if k in self._cache.bad:
                        self._bad[i] = self._cache.bad[k]
                warnings.warn(f"{len(bad)} of {len(self.keys)} {split} images are unreadable and "
                              f"will be skipped: {preview_list(bad)}", DataWarning, stacklevel=2)
                if self.train:
                    self.note_bad(bad)
                else:  # named just above; test images never abort (see note_bad)
                    self.bad_keys.update(bad)

    # Captions.

    def _read_captions(self, records: list[Record]) -> list[list[list[int]] | None]:
        """Exactly captions_per_image id lists per record, or None for an image that is dropped."""
        n = self.cfg.captions_per_image
        keys = [r.key for r in records]
        if any(r.caption_ids is not None for r in records):
            if load_vocab(self.root) != self.vocab:
                raise AttnGANError(f"{self.root} has no text/ folder, and the word ids in its "
                                   "captions.pickle need that file's own vocabulary")
            candidates: list[list[list[int]]] = [[c for c in r.caption_ids or [] if c] for r in records]
        else:
            candidates, oov = [], set()
            for lines in (r.captions for r in records):
                caps = []
                for line in lines:
                    ids, dropped = self.vocab.encode_tokens(tokenize(line))
                    oov.update(dropped)
                    if ids:  # empty or word-less lines are skipped, as the original
                        caps.append(ids)
                    if len(caps) == n:
                        break
                candidates.append(caps)
            if oov:
                warnings.warn(f"{len(oov)} words of the {self.split} captions are not in the "
                              f"vocabulary and were dropped: {preview_list(sorted(oov), 10)}",
                              DataWarning, stacklevel=3)
        out: list[list[list[int]] | None] = []
        short = []
        self.short_caption_keys: list[str] = []
        for key, caps in zip(keys, candidates):
            caps = caps[:n]
            if len(caps) < n:
                short.append(f"text/{key}.txt has {len(caps)}")
                self.short_caption_keys.append(key)
                if self.cfg.short_captions == "pad" and caps:
                    caps = [caps[k % len(caps)] for k in range(n)]  # repeat what is there
                else:
                    caps = None
            out.append(caps)
        if self._pad_quietly:
            lost = [k for k, c in zip(keys, out) if c is None]
            if lost:
                warnings.warn(f"{len(lost)} {self.split} images of {self.root} have no caption with "
                              f"a word of the vocabulary and were dropped: {preview_list(lost)}",
                              DataWarning, stacklevel=3)
            short = []  # the repeats are how new data is read, not a defect
        if short:
            dropped = sum(c is None for c in out)
            action = (f"dropped those {dropped} images" if self.cfg.short_captions == "skip" else
                      f"repeated their captions ({dropped} with none at all were dropped)")
            warnings.warn(f"{len(short)} {self.split} caption files under {self.root} have fewer "
                          f"than {n} captions ({preview_list(short)}): {action} "
                          f"(data.short_captions='{self.cfg.short_captions}')",
                          DataWarning, stacklevel=3)
        return out

    def _ids(self, i: int, k: int) -> np.ndarray:
        n = self.cfg.captions_per_image
        if not 0 <= k < n:
            raise IndexError(f"caption {k} of an item with {n} captions")
        j = i * n + k
        return self._tokens[self._offsets[j]:self._offsets[j + 1]]

    def caption(self, i: int, k: int) -> list[int]:
        """Every word id of caption k of item i (no padding, no subsampling)."""
        return self._ids(i, k).tolist()

    def caption_text(self, i: int, k: int) -> str:
        return self.vocab.decode(self._ids(i, k))

    def padded_caption(self, i: int, k: int) -> tuple[torch.Tensor, int]:
        """Caption k of item i as the model sees it: (LongTensor words_num zero-padded, cap_len).

        Longer captions keep words_num words at sorted random positions (the original): redrawn
        on every call when training, fixed per (i, k) otherwise so evaluation repeats.
        """
        ids = self._ids(i, k)
        gen = self._generator() if self.train and len(ids) > self.cfg.words_num else None
        return pad_caption(ids, self.cfg.words_num, self.train, gen, (i, k))

    def all_captions(self, split: str | None = None) -> Iterator[tuple[int, int, list[int]]]:
        """(item, k, word ids) for every caption of this dataset's split (R-precision, retrieval)."""
        if split is not None and split != self.split:
            raise AttnGANError(f"this dataset holds the '{self.split}' split, not '{split}'")
        for i in range(len(self)):
            for k in range(self.cfg.captions_per_image):
                yield i, k, self.caption(i, k)

    # Images.

    def reseed(self, seed: int) -> None:
        """Seed this process's crops, flips and caption choices."""
        self._rng = torch.Generator().manual_seed(int(seed) % 2 ** 63)
        self._rng_pid = os.getpid()

    def _generator(self) -> torch.Generator:
        # A forked worker must not replay its parent's stream: reseed from the worker's own seed.
        if self._rng is None or self._rng_pid != os.getpid():
            self.reseed(torch.initial_seed())
        return self._rng

    def _load(self, i: int) -> np.ndarray:
        if self._cache is not None:
            arr = self._cache.get(int(self._cache_rows[i]))
            if arr is None:
                raise OSError(self._cache.bad.get(self.keys[i], "unreadable"))
            return arr
        return load_cropped(self._paths[i], self._bboxes[i], self.load_size)

    def _crops(self, full: np.ndarray) -> list[torch.Tensor]:
        return multi_scale_crops(full, self.image_sizes, self.train,
                                 self._generator() if self.train else None)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        skipped = []
        for attempt in range(n):
            i = (index + attempt) % n  # an unreadable image is replaced by the next readable one
            if i in self._bad:
                continue
            try:
                full = self._load(i)
                break
            except IMAGE_ERRORS as e:
                self._bad[i] = f"{type(e).__name__}: {e}"
                skipped.append(self.keys[i])
        else:
            raise AttnGANError(f"none of the {n} {self.split} images under {self.root} is readable")
        if skipped:
            self.note_bad(skipped)
        k = (int(torch.randint(0, self.cfg.captions_per_image, (), generator=self._generator()))
             if self.train else self.caption_index)
        caption, cap_len = self.padded_caption(i, k)
        return {"images": self._crops(full), "caption": caption, "cap_len": cap_len,
                "class_id": int(self.class_ids[i]), "key": self.keys[i], "skipped": skipped}

    def note_bad(self, keys: list[str] | set[str]) -> None:
        """Record unreadable images. Training images abort the run once more than
        cfg.max_bad_fraction are unreadable; test images (preview grids, validation, evaluation) are
        named in a warning and replaced by the next readable one, since they do not train anything."""
        new = sorted(set(keys) - self.bad_keys)
        self.bad_keys.update(keys)
        if not self.train:
            if new:
                warnings.warn(f"unreadable {self.split} image{'s' if len(new) > 1 else ''} under "
                              f"{self.root} replaced by the next readable one: {preview_list(new)}",
                              DataWarning, stacklevel=2)
            return
        if len(self.bad_keys) > self.cfg.max_bad_fraction * len(self):
            raise AttnGANError(
                f"{len(self.bad_keys)} of {len(self)} {self.split} images under {self.root} are "
                f"unreadable (more than data.max_bad_fraction={self.cfg.max_bad_fraction}), e.g. "
                f"{preview_list(sorted(self.bad_keys))}")


def collate_sorted(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch sorted by caption length, descending (the text encoder packs)."""
    cap_lens = torch.tensor([it["cap_len"] for it in items], dtype=torch.long)
    order = torch.argsort(cap_lens, descending=True, stable=True).tolist()
    n_sizes = len(items[0]["images"])
    return {
        "images": [torch.stack([items[j]["images"][s] for j in order]) for s in range(n_sizes)],
        "captions": torch.stack([items[j]["caption"] for j in order]),
        "cap_lens": cap_lens[order],
        "class_ids": torch.tensor([items[j]["class_id"] for j in order], dtype=torch.long),
        "keys": [items[j]["key"] for j in order],
        "skipped": [k for it in items for k in it.get("skipped", ())],
    }


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy and random follow it.
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(info.seed)


def _worker_message(e: AttnGANError) -> str:
    # A worker's error comes back as "Caught AttnGANError in DataLoader worker ... Traceback ...";
    # keep only the original one-line message.
    text = str(e)
    if not text.startswith("Caught "):
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split("AttnGANError: ", 1)[-1]


class CheckedLoader(DataLoader):
    """A DataLoader that counts the unreadable images its workers skipped, aborts above
    cfg.max_bad_fraction, and warns with a summary at the end of each epoch."""

    seed: int = 0
    epoch: int = 0

    def __iter__(self):
        dataset = self.dataset
        if self.num_workers == 0 and hasattr(dataset, "reseed"):
            dataset.reseed(self.seed * 1_000_003 + self.epoch)  # workers are seeded by torch
        self.epoch += 1
        before = set(getattr(dataset, "bad_keys", ()))
        it = super().__iter__()
        try:
            while True:
                try:
                    batch = next(it)
                except StopIteration:
                    break
                except AttnGANError as e:
                    raise AttnGANError(_worker_message(e)) from None
                if batch.get("skipped") and hasattr(dataset, "note_bad"):
                    dataset.note_bad(batch["skipped"])
                yield batch
        except AttnGANError:
            # Stop the workers now: left to the garbage collector, their shutdown stalls
            # for seconds (the iterator sits in a reference cycle with the traceback).
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
                self._iterator = None  # a persistent loader starts fresh workers next time
            raise
        new = set(getattr(dataset, "bad_keys", ())) - before
        if new:
            warnings.warn(f"skipped {len(new)} unreadable images this epoch "
                          f"({len(dataset.bad_keys)} in all): {preview_list(sorted(new))}",
                          DataWarning, stacklevel=2)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, workers: int, drop_last: bool,
                seed: int, sampler: Sampler | None = None) -> CheckedLoader:
    """A reproducible loader: same seed, same order, crops, flips and captions."""
    generator = torch.Generator().manual_seed(seed)
    loader = CheckedLoader(
        dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
        sampler=sampler, num_workers=workers, drop_last=drop_last, collate_fn=collate_sorted,
        worker_init_fn=_seed_worker if workers > 0 else None, generator=generator,
        persistent_workers=workers > 0,
    )
    loader.seed = seed
    return loader


def open_split(data: str | os.PathLike, split: str, cfg: DataConfig, vocab: Vocabulary,
               image_sizes: list[int] | None = None, train: bool = True, **kwargs):
    """The dataset of a split of any source: the source's training stream when it has one (shards:
    ShardDataset), else a TextImageDataset (which reads shards' split extracted to a local image
    folder, for everything that indexes its items: validation, evaluation)."""
    if split == "train" and train:
        stream = detect_source(data).train_stream(data, cfg, vocab, image_sizes)
        if stream is not None:
            return stream
    return TextImageDataset(data, split, cfg, vocab, image_sizes, train, **kwargs)


def make_train_loader(dataset, batch_size: int, *, seed: int, loader_seed: int, rank: int,
                      world: int, workers: int):
    """(loader, position) for a training split: `position.set_position(epoch, batch)` starts an
    epoch. Folder data: a seeded per-epoch permutation sharded by rank (exact resume); shards:
    the stream's own per-rank/per-worker split, with as many batches on every rank."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        dataset.configure(rank, world, batch_size, seed)
        loader = make_loader(dataset, batch_size, shuffle=False, workers=workers, drop_last=True,
                             seed=loader_seed)
        return loader, dataset
    sampler = EpochSampler(len(dataset), batch_size, seed, rank, world,
                           dataset=dataset if workers == 0 else None)
    loader = make_loader(dataset, batch_size, shuffle=False, workers=workers, drop_last=True,
                         seed=loader_seed, sampler=sampler)
    return loader, sampler
