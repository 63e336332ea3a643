"""`EvalContext`, what a metric function reads: the scored images' stream outputs, and the real
side they are compared with (features of the real split images, R-precision's caption pool),
cached on disk.

Real-image features are computed once per (data folder, split, image size, extractor weights); the
caption pool once per (the captions' word ids and classes, the DAMSM).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from attngan.data.cache import fingerprint, resolve_cache_dir
from attngan.data.dataset import TextImageDataset, make_loader
from attngan.data.layout import read_image_list
from attngan.fileio import atomic_write
from attngan.metrics.extractors import FeatureArrays, quantize
from attngan.metrics.options import EvalOptions


@dataclass
class EvalContext:
    options: EvalOptions
    device: torch.device
    data_root: Path
    data_cfg: Any                              # DataConfig of the real images
    vocab: Any                                 # vocabulary of the data folder's captions
    image_size: int
    ground_truth: str | None = None            # the data's (DataSource.ground_truth): what it carries
    stage_ids: list[int | None] = field(default_factory=list)   # the scored stages (None: a folder)
    stage_sizes: list[int] = field(default_factory=list)
    streams: dict[str, Any] = field(default_factory=dict)      # built by registry.STREAMS
    descriptions: dict[str, str] = field(default_factory=dict)
    generated: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    captions: list[str] = field(default_factory=list)          # as the images were generated from
    full_captions: list[str] = field(default_factory=list)
    # Per image, the {part: colour} its prompt file states (None: read from the caption's text).
    attributes: list[dict[str, str] | None] = field(default_factory=list)
    class_ids: np.ndarray | None = None
    class_ids_given: bool = True                               # the data set's classes (not stand-ins)
    timings: dict[str, float] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)          # what several metrics derive once
    _real: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def wanted(self) -> list[dict[str, str] | None]:
        """Per scored image, the attributes its prompt file states, or None (parse the caption)."""
        return self.attributes if self.attributes else [None] * len(self.full_captions)

    # Real images.

    def cache_dir(self) -> Path:
        if self.options.cache_dir:
            path = Path(self.options.cache_dir)
        else:
            path = resolve_cache_dir(self.data_root, None) / "metrics"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def real_dataset(self, size: int | list[int], center: bool = False):
        """The split's real images as the data loader makes them, at one size or (a list) at
        every stage size: a centre crop at the largest (or, with --real-transform original and
        not `center`, the train crop), the smaller ones downscaled from it."""
        sizes = [size] if isinstance(size, int) else list(size)
        # "original": the test split through the train transform (random crop + flip), as the
        # original's evaluation loader; seeded so that the statistics repeat.
        original = self.options.real_transform == "original" and not center
        ds = TextImageDataset(self.data_root, self.options.split, self.data_cfg, self.vocab,
                              image_sizes=sizes, train=original)
        if original:
            ds.reseed(self.options.seed)
        return ds

    def real_features(self, stream_name: str, sizes: list[int] | None = None) -> dict[str, np.ndarray]:
        """Features of the real split images at the scored image size, cached on disk.

        With `sizes`, the stream is given each batch as the list of the loader's per-stage images
        at those sizes (for metrics that compare stage by stage).
        """
        memo = stream_name if sizes is None else f"{stream_name}@{'-'.join(map(str, sizes))}"
        if memo in self._real:
            return self._real[memo]

        stream = self.streams[stream_name]
        # The file list with sizes and mtimes: a data set regenerated in place gets new statistics.
        files = fingerprint(read_image_list(self.data_root, self.options.split), self.image_size)
        key = {
            "format": 1, "data": str(self.data_root.resolve()), "files": files, "split": self.options.split,
            "image_size": self.image_size, "stream": stream_name, "weights": stream.digest,
            "dataset": self.data_cfg.dataset, "max_images": self.options.real_images,
        }
        if self.options.real_transform != "center":
            # Only added when not the default, so centre-crop statistics keep their cache files.
            key["real_transform"] = [self.options.real_transform, self.options.seed]
        px = f"{self.image_size}px"
        if sizes is not None:
            # Only added when given, so the single-size streams keep their cache files.
            key["image_sizes"] = [int(s) for s in sizes]
            px = "-".join(map(str, sizes)) + "px"
        tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = self.cache_dir() / f"real-{stream_name}-{self.options.split}-{px}-{tag}.npz"
        if path.is_file():
            with np.load(path) as z:
                feats = {k: z[k] for k in z.files}
        else:
            t0 = time.perf_counter()
            feats = self._compute_real(stream, sizes)
            _atomic_savez(path, feats)
            self.timings[f"real_{stream_name}_s"] = time.perf_counter() - t0
        self._real[memo] = feats
        return feats

    def _compute_real(self, stream, sizes: list[int] | None = None) -> dict[str, np.ndarray]:
        ds = self.real_dataset(self.image_size if sizes is None else sizes)
        if self.options.real_images:
            ds = torch.utils.data.Subset(ds, range(min(self.options.real_images, len(ds))))
        # The seed draws the crops and flips of --real-transform original (centre crops ignore it).
        loader = make_loader(ds, self.options.batch, shuffle=False, workers=0, drop_last=False, seed=self.options.seed)
        feats = FeatureArrays()
        for batch in tqdm(loader, desc=f"real {self.options.split} images ({stream.name})",
                          disable=not self.options.progress, leave=False):
            images = quantize(batch["images"][0]) if sizes is None else [quantize(x) for x in batch["images"]]
            feats.add(stream(images, None))
        return feats.arrays()

    def caption_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """Sentence codes of every caption of the split and their images' classes: the pool
        DM-GAN's R-precision draws mismatched captions from (`get_mis_caption`)."""
        damsm = self.streams["damsm"]
        if "caption_pool" not in self._real:
            # Cached on disk like the real-image features: the pool is every test caption through
            # the DAMSM (29,510 for SynthBirds), the same for every model scored by that DAMSM.
            # Keyed by the captions' word ids themselves (reading them is cheap; encoding is not).
            ds = TextImageDataset(self.data_root, self.options.split, self.data_cfg, self.vocab,
                                  image_sizes=[self.image_size], train=False)
            words = hashlib.sha256(np.ascontiguousarray(ds._tokens).tobytes()
                                   + np.ascontiguousarray(ds._offsets).tobytes()
                                   + np.asarray(ds.class_ids).tobytes()).hexdigest()
            key = {"format": 2, "data": str(self.data_root.resolve()), "split": self.options.split,
                   "captions": words, "weights": damsm.digest, "words_num": damsm.words_num}
            tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
            path = self.cache_dir() / f"caption-pool-{self.options.split}-{tag}.npz"
            if path.is_file():
                with np.load(path) as z:
                    self._real["caption_pool"] = {k: z[k] for k in z.files}
            else:
                emb, cls = damsm.encode_pool(ds, self.options.batch * 8)
                self._real["caption_pool"] = {"emb": np.asarray(emb), "cls": np.asarray(cls)}
                _atomic_savez(path, self._real["caption_pool"])
        pool = self._real["caption_pool"]
        return pool["emb"], pool["cls"]


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a name, np.savez would append ".npz"
            np.savez(f, **arrays)

    atomic_write(path, write)
