"""`attngan eval` as a library: score a model's samples (or a folder of images) with the
registered metrics, in one pass over the images.

Generation follows the paper's protocol: captions of the test split are cycled (each pass over the
test images gives every image its next caption, so 30,000 samples cover CUB's 2,933 test images x
10 captions about once; image order and first caption seeded), one fixed noise draw per sample
from `seed`. Real-image features are computed once
per (data folder, split, image size, extractor weights) and cached.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from attngan.errors import AttnGANError
from attngan.data.layout import raw_caption_lines
from attngan.metrics.extractors import (
    DamsmStream,
    OracleStream,
    classifier_stream,
    fid_stream,
    legacy_fid_stream,
    quantize,
)
from attngan.metrics.registry import REGISTRY, MetricSpec, missing_input

REPORT_FORMAT = "attngan-eval"
REPORT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# What runs when --metrics is not given (MetricSpec.default), in the registry's order.
DEFAULT_METRICS = tuple(name for name, spec in REGISTRY.items() if spec.default)


@dataclass
class EvalOptions:
    metrics: list[str] | None = None     # None: every metric whose inputs are available
    num_images: int = 30000
    splits: int = 10
    batch: int = 32
    seed: int = 0
    device: str = "auto"
    inception: str | None = None         # torchvision inception_v3_google-*.pth
    fid_inception: str | None = None     # pytorch-fid pt_inception-2015-12-05-6726825d.pth
    is_classifier: str | None = None     # an Inception-v3 state dict (N classes) or an oracle folder
    eval_damsm: str | None = None        # a DAMSM run folder for R-precision / localisation
    oracle: str | None = None            # an oracle folder (attngan train-oracle)
    captioner: str | None = None         # a captioner folder or bundled name (attngan train-captioner)
    cache_dir: str | None = None         # real-image features; default <data>/cache/metrics
    split: str = "test"
    real_images: int | None = None       # cap on the real images behind the statistics
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    is_shuffle_seed: int | None = None   # IS: shuffle before the splits (torch-fidelity: 2020); None: improved-gan
    fid_resize: str = "pytorch-fid"      # fid/kid: "pytorch-fid" or "tf1" (torch-fidelity's TF1 resize)
    real_transform: str = "center"       # real images: "center" crop, or "original" (train crop + flip, seeded)
    rp_protocol: str = "dmgan"           # R-precision sampling: "dmgan" or "set" (metrics/r_precision.py)
    progress: bool = True
    strict: bool = True                  # a requested metric without its inputs is an error (else skipped)


# Scored images.

@dataclass
class ScoredBatch:
    images: torch.Tensor                  # B x 3 x H x W in [-1, 1], quantised to 8 bits
    captions: list[str] | None            # the text each image was generated from
    full_captions: list[str] | None       # the whole caption (before words_num subsampling)
    class_ids: np.ndarray | None
    # Every stage's images, smallest first, unquantised (None: `images` is the only one). Only
    # streams with `reads_stages` look at them; `images` is always the top stage.
    stages: list[torch.Tensor] | None = None
    # The word ids and lengths G was conditioned on (generated images only).
    caption_ids: torch.Tensor | None = None
    caption_lens: torch.Tensor | None = None


class GeneratedImages:
    """Samples of a pipeline for the test split's captions, cycled as the paper's protocol."""

    def __init__(self, pipe, dataset, num_images: int, batch: int, seed: int):
        self.pipe, self.ds, self.num_images, self.batch = pipe, dataset, num_images, batch
        n, cpi = len(dataset), dataset.cfg.captions_per_image
        idx = np.arange(num_images)
        # Images in a seeded order, so a run shorter than the test split still spans its classes;
        # each pass over the images gives every image its next caption, starting from a seeded
        # one (CUB-style caption files put different parts first in different lines).
        rng = np.random.default_rng(seed)
        order, first = rng.permutation(n), rng.integers(cpi, size=n)
        self.items = order[idx % n]
        self.caption_k = (idx // n + first[self.items]) % cpi
        # One draw for the whole run, so a sample's noise does not depend on the batch size.
        g = torch.Generator().manual_seed(seed)
        self.z = torch.randn(num_images, pipe.config.gan.z_dim, generator=g)
        self.eps = torch.randn(num_images, pipe.config.gan.condition_dim, generator=g)
        self.image_size = pipe.config.data.image_size
        data, gan = pipe.config.data, pipe.config.gan
        # The DCGAN variant draws one image, at the top stage's size.
        self.stage_ids = [data.branch_num - 1] if gan.dcgan else list(range(data.branch_num))
        self.stage_sizes = [data.base_size * 2 ** i for i in self.stage_ids]
        self.raw_lines = raw_caption_lines(dataset)
        self.description = (f"{num_images} samples of {len(dataset)} {dataset.split} images x "
                            f"{cpi} captions (cycled), seed {seed}")

    def __len__(self) -> int:
        return self.num_images

    def __iter__(self) -> Iterator[ScoredBatch]:
        vocab = self.pipe.vocab
        for s in range(0, self.num_images, self.batch):
            e = min(s + self.batch, self.num_images)
            caps, lens, texts, full = [], [], [], []
            for i, k in zip(self.items[s:e], self.caption_k[s:e]):
                ids, n = self.ds.padded_caption(int(i), int(k))
                caps.append(ids)
                lens.append(n)
                texts.append(vocab.decode(ids[:n].tolist()))
                raw = self.raw_lines[int(i)] if self.raw_lines is not None else None
                full.append(raw[int(k) % len(raw)] if raw else self.ds.caption_text(int(i), int(k)))
            out = self.pipe.generate_from_ids(torch.stack(caps), torch.tensor(lens), noise=self.z[s:e],
                                              ca_noise=self.eps[s:e])
            yield ScoredBatch(quantize(out.images[-1]), texts, full, self.ds.class_ids[self.items[s:e]],
                              stages=out.images, caption_ids=torch.stack(caps), caption_lens=torch.tensor(lens))


class FolderImages:
    """Images of a folder (other systems' samples), sorted by name; captions from captions.json.

    captions.json maps file name -> caption, or -> {"caption": str, "class_id": int}; class ids
    let R-precision draw negatives from other classes (without them: from other captions).
    """

    def __init__(self, folder: str | Path, batch: int, num_images: int | None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise AttnGANError(f"image folder not found: {self.folder}")
        files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise AttnGANError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        self.files = files[:num_images] if num_images else files
        self.batch = batch
        # True when captions.json gives the data set's class ids (not stand-ins made from the text).
        self.class_ids_given = False
        self.captions, self.class_ids = self._read_captions()
        from PIL import Image

        with Image.open(self.files[0]) as im:
            if im.width != im.height:
                raise AttnGANError(f"{self.files[0]} is {im.width}x{im.height}; square images are expected")
            self.image_size = im.width
        # One set of images of unknown origin: scored as a top stage.
        self.stage_ids, self.stage_sizes = [None], [self.image_size]
        self.description = f"{len(self.files)} images of {self.folder}"

    def _read_captions(self) -> tuple[list[str] | None, np.ndarray | None]:
        path = self.folder / "captions.json"
        if not path.is_file():
            return None, None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AttnGANError(f"cannot parse {path}: {e}") from None
        if not isinstance(raw, dict):
            raise AttnGANError(f"{path} must map file names to captions")
        captions, classes = [], []
        for f in self.files:
            entry = raw.get(f.name)
            if entry is None:
                raise AttnGANError(f"{path} has no caption for {f.name}")
            if isinstance(entry, dict):
                captions.append(str(entry.get("caption", "")))
                classes.append(entry.get("class_id"))
            else:
                captions.append(str(entry))
                classes.append(None)
        if any(not c.strip() for c in captions):
            raise AttnGANError(f"{path} has an empty caption")
        if all(c is not None for c in classes):
            self.class_ids_given = True
            return captions, np.asarray(classes, dtype=np.int64)
        # No classes: captions with the same text stand for one class, so a duplicate caption is
        # never taken as a negative for its twin.
        ids: dict[str, int] = {}
        return captions, np.asarray([ids.setdefault(c, len(ids)) for c in captions], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[ScoredBatch]:
        from PIL import Image

        s = self.image_size
        for b in range(0, len(self.files), self.batch):
            arrs = []
            for f in self.files[b:b + self.batch]:
                try:
                    with Image.open(f) as im:
                        im = im.convert("RGB")
                        if im.size != (s, s):
                            im = im.resize((s, s), Image.BICUBIC)
                        arrs.append(np.asarray(im, dtype=np.uint8))
                except OSError as e:
                    raise AttnGANError(f"cannot read image {f}: {e}") from None
            x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 127.5 - 1
            caps = self.captions[b:b + self.batch] if self.captions else None
            cls = self.class_ids[b:b + self.batch] if self.class_ids is not None else None
            yield ScoredBatch(x, caps, caps, cls)


# Context passed to the metric functions.

@dataclass
class EvalContext:
    options: EvalOptions
    device: torch.device
    data_root: Path
    data_cfg: Any                              # DataConfig of the real images
    vocab: Any                                 # vocabulary of the data folder's captions
    image_size: int
    stage_ids: list[int | None] = field(default_factory=list)   # the scored stages (None: a folder)
    stage_sizes: list[int] = field(default_factory=list)
    streams: dict[str, Any] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    generated: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    captions: list[str] = field(default_factory=list)          # as the images were generated from
    full_captions: list[str] = field(default_factory=list)
    class_ids: np.ndarray | None = None
    class_ids_given: bool = True                               # the data set's classes (not stand-ins)
    oracle: Any = None
    damsm: DamsmStream | None = None
    damsm_gamma1: float = 4.0
    timings: dict[str, float] = field(default_factory=dict)
    _real: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    # Real images.

    def cache_dir(self) -> Path:
        if self.options.cache_dir:
            path = Path(self.options.cache_dir)
        else:
            from attngan.data.cache import resolve_cache_dir

            path = resolve_cache_dir(self.data_root, None) / "metrics"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def real_dataset(self, size: int | list[int], center: bool = False):
        """The split's real images as the data loader makes them, at one size or (a list) at
        every stage size: a centre crop at the largest (or, with --real-transform original and
        not `center`, the train crop), the smaller ones downscaled from it."""
        from attngan.data.dataset import TextImageDataset

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
        from attngan.data.cache import fingerprint
        from attngan.data.layout import read_image_list

        stream = self.streams[stream_name]
        # The file list with sizes and mtimes: a data set regenerated in place gets new statistics.
        files = fingerprint(read_image_list(self.data_root, self.options.split, self.data_cfg.dataset), self.image_size)
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
        from attngan.data.dataset import make_loader

        ds = self.real_dataset(self.image_size if sizes is None else sizes)
        if self.options.real_images:
            ds = torch.utils.data.Subset(ds, range(min(self.options.real_images, len(ds))))
        # The seed draws the crops and flips of --real-transform original (centre crops ignore it).
        loader = make_loader(ds, self.options.batch, shuffle=False, workers=0, drop_last=False, seed=self.options.seed)
        parts: dict[str, list[np.ndarray]] = {}
        for batch in tqdm(loader, desc=f"real {self.options.split} images ({stream.name})",
                          disable=not self.options.progress, leave=False):
            images = quantize(batch["images"][0]) if sizes is None else [quantize(x) for x in batch["images"]]
            for k, v in stream(images, None).items():
                parts.setdefault(k, []).append(v)
        return {k: np.concatenate(v) for k, v in parts.items()}

    def caption_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """Sentence codes of every caption of the split and their images' classes: the pool
        DM-GAN's R-precision draws mismatched captions from (`get_mis_caption`)."""
        from attngan.data.dataset import TextImageDataset

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
                   "captions": words, "weights": self.damsm.digest, "words_num": self.damsm.words_num}
            tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
            path = self.cache_dir() / f"caption-pool-{self.options.split}-{tag}.npz"
            if path.is_file():
                with np.load(path) as z:
                    self._real["caption_pool"] = {k: z[k] for k in z.files}
            else:
                emb, cls = self.damsm.encode_pool(ds, self.options.batch * 8)
                self._real["caption_pool"] = {"emb": np.asarray(emb), "cls": np.asarray(cls)}
                _atomic_savez(path, self._real["caption_pool"])
        pool = self._real["caption_pool"]
        return pool["emb"], pool["cls"]

    def real_localisation(self) -> tuple[dict[str, dict[str, float]], int]:
        """DAMSM part-word attention vs SynthBirds part masks on real split images."""
        from attngan.losses import damsm_attention
        from attngan.metrics.binding import attention_localisation
        from attngan.metrics.binding import load_part_masks

        damsm = self.damsm
        size = damsm.image_encoder.image_size
        ds = self.real_dataset(size, center=True)   # the part masks are of the centre crop
        n = min(self.options.num_images, len(ds))
        masks_for = load_part_masks(self.data_root, self.options.split, size)
        sums: dict[str, list[float]] = {}
        for s in tqdm(range(0, n, self.options.batch), desc="attention localisation",
                      disable=not self.options.progress, leave=False):
            items = [ds[i] for i in range(s, min(s + self.options.batch, n))]
            images = torch.stack([it["images"][0] for it in items])
            texts = [ds.caption_text(i, 0) for i in range(s, s + len(items))]
            ids, lens = damsm.encode_captions(texts)
            with torch.inference_mode():
                words, _ = damsm.text_encoder(ids.to(self.device), lens.to(self.device))
                regions, _ = damsm.image_encoder(images.to(self.device))
                _, attn = damsm_attention(words, regions, self.damsm_gamma1, ids.to(self.device) == 0)
            tokens = [[damsm.vocab.id_to_word[int(t)] for t in row[: int(m)]] for row, m in zip(ids, lens)]
            masks = [masks_for(it["key"]) for it in items]
            for part, v in attention_localisation(attn.float().cpu(), tokens, masks).items():
                acc = sums.setdefault(part, [0.0, 0.0, 0])
                acc[0] += v["share"] * v["n"]
                acc[1] += v["chance"] * v["n"]
                acc[2] += v["n"]
        return {p: {"share": a[0] / a[2], "chance": a[1] / a[2], "n": a[2]} for p, a in sums.items()}, n


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from attngan.fileio import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a name, np.savez would append ".npz"
            np.savez(f, **arrays)

    atomic_write(path, write)


# Which metrics can run.

def select_metrics(o: EvalOptions, has_damsm: bool, has_captions: bool, synth: bool
                   ) -> tuple[list[MetricSpec], dict[str, str]]:
    """The metrics to run and a note for each one skipped; a requested one that cannot run fails."""
    inputs = {"has_damsm": has_damsm, "has_captions": has_captions, "synth": synth}
    if o.metrics:
        unknown = [m for m in o.metrics if m not in REGISTRY]
        if unknown:
            raise AttnGANError(f"unknown metric '{unknown[0]}'; choose from {', '.join(REGISTRY)}")
        for m in o.metrics:
            why = missing_input(REGISTRY[m], o, **inputs)
            if why and o.strict:
                raise AttnGANError(f"metric '{m}' {why}")
    chosen, skipped = [], {}
    for m in dict.fromkeys(o.metrics) if o.metrics else DEFAULT_METRICS:
        why = missing_input(REGISTRY[m], o, **inputs)
        if why:
            skipped[m] = f"skipped: {why}"
        else:
            chosen.append(REGISTRY[m])
    return chosen, skipped


# The run.

def evaluate(data_dir: str | Path, options: EvalOptions, model_dir: str | Path | None = None,
             images_dir: str | Path | None = None) -> dict[str, Any]:
    """Score a model's samples (model_dir) or a folder of images (images_dir); returns the report."""
    from attngan.config import DataConfig
    from attngan.data.vocab import load_vocab
    from attngan.perf import resolve_device

    o = options
    t_start = time.perf_counter()
    if model_dir is None and images_dir is None:
        raise AttnGANError("give --model MODEL_DIR (to generate) or --images DIR (to score a folder)")
    if o.num_images < 1 or o.batch < 1 or o.splits < 1:
        raise AttnGANError("--num-images, --batch and --splits must be at least 1")
    for flag, value, allowed in (("--fid-resize", o.fid_resize, ("pytorch-fid", "tf1")),
                                 ("--real-transform", o.real_transform, ("center", "original")),
                                 ("--rp-protocol", o.rp_protocol, ("dmgan", "set"))):
        if value not in allowed:
            raise AttnGANError(f"{flag} must be one of {', '.join(allowed)}, got '{value}'")
    if o.is_shuffle_seed is not None and not 0 <= o.is_shuffle_seed < 2 ** 32:
        raise AttnGANError(f"--is-shuffle-seed must be in [0, 2**32), got {o.is_shuffle_seed}")
    from attngan.data.shards import materialize_split

    root = materialize_split(data_dir, o.split)  # shards: their split as a local image folder
    if not root.is_dir():
        raise AttnGANError(f"data folder not found: {root}")
    device = resolve_device(o.device)
    torch.manual_seed(o.seed)

    pipe = None
    if model_dir is not None:
        from attngan.pipeline import AttnGANPipeline

        pipe = AttnGANPipeline.from_pretrained(model_dir, device=str(device))
    data_cfg = pipe.config.data if pipe is not None else DataConfig(dataset=_detect_dataset(root))
    # Every test image counts for the real statistics, even one with too few captions.
    data_cfg = replace(data_cfg, short_captions="pad", cache=False)
    vocab = pipe.vocab if pipe is not None else load_vocab(root)

    if images_dir is not None:
        source = FolderImages(images_dir, o.batch, o.num_images)
        has_captions = source.captions is not None
    else:
        from attngan.data.dataset import TextImageDataset

        test = TextImageDataset(root, o.split, data_cfg, vocab, image_sizes=[data_cfg.image_size], train=False)
        source = GeneratedImages(pipe, test, o.num_images, o.batch, o.seed)
        has_captions = True
    if len(source) < o.splits:
        raise AttnGANError(f"{len(source)} images cannot be cut into {o.splits} splits; raise --num-images or lower --splits")
    synth = (root / "synth_birds.json").is_file()
    metrics, skipped = select_metrics(o, pipe is not None or bool(o.eval_damsm), has_captions, synth)
    if not metrics:
        raise AttnGANError("no metric can run: " + "; ".join(f"{k} {v.removeprefix('skipped: ')}" for k, v in skipped.items()))

    ctx = EvalContext(options=o, device=device, data_root=root, data_cfg=data_cfg, vocab=vocab,
                      image_size=source.image_size, stage_ids=list(source.stage_ids),
                      stage_sizes=list(source.stage_sizes), class_ids=None,
                      class_ids_given=getattr(source, "class_ids_given", True))
    _build_streams(ctx, metrics, pipe)

    # One pass over the images feeds every stream.
    t0 = time.perf_counter()
    gen_streams = [ctx.streams[s] for s in dict.fromkeys(s for m in metrics for s in m.streams)]
    parts: dict[str, dict[str, list[np.ndarray]]] = {s.name: {} for s in gen_streams}
    classes = []
    n_done = 0
    # (Metrics that read no stream, e.g. localisation alone, need no generated images.)
    with tqdm(total=len(source), desc="generating + scoring" if pipe and images_dir is None else "scoring",
              unit="img", disable=not o.progress or not gen_streams) as bar:
        for batch in source if gen_streams else ():
            for s in gen_streams:
                # Every other stream reads the top stage only.
                x = (batch.stages or [batch.images]) if getattr(s, "reads_stages", False) else batch.images
                out = s.from_batch(batch) if getattr(s, "reads_batch", False) else s(x, batch.captions)
                for k, v in out.items():
                    parts[s.name].setdefault(k, []).append(v)
            if batch.captions is not None:
                ctx.captions.extend(batch.captions)
                ctx.full_captions.extend(batch.full_captions or batch.captions)
            if batch.class_ids is not None:
                classes.append(np.asarray(batch.class_ids))
            n_done += batch.images.shape[0]
            bar.update(batch.images.shape[0])
    ctx.timings["images_s"] = time.perf_counter() - t0
    ctx.generated = {name: {k: np.concatenate(v) for k, v in d.items()} for name, d in parts.items()}
    ctx.class_ids = np.concatenate(classes) if classes else None

    results: dict[str, dict[str, Any]] = {}
    for spec in metrics:
        t0 = time.perf_counter()
        out = spec.fn(ctx)
        out = {"value": out.pop("value"), "std": out.pop("std"), "n": out.pop("n", n_done), **out,
               "protocol": spec.protocol, "reference": spec.reference, "unit": spec.unit,
               "higher_is_better": spec.higher_is_better}
        results[spec.name] = _clean(out)
        ctx.timings[f"{spec.name}_s"] = time.perf_counter() - t0
    ctx.timings["total_s"] = time.perf_counter() - t_start
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": str(model_dir) if model_dir is not None else None,
        "images": str(images_dir) if images_dir is not None else None,
        "data": str(root), "split": o.split, "source": source.description,
        "num_images": n_done, "image_size": source.image_size, "stage_sizes": ctx.stage_sizes,
        "splits": o.splits, "seed": o.seed,
        "device": str(device), "streams": ctx.descriptions,
        "results": results, "skipped": skipped,
        "timings": {k: round(v, 3) for k, v in ctx.timings.items()},
    }


def _detect_dataset(root: Path) -> str:
    return "birds" if (root / "CUB_200_2011").is_dir() else "coco"


def _build_streams(ctx: EvalContext, metrics: list[MetricSpec], pipe) -> None:
    o, device = ctx.options, ctx.device
    needed = {s for m in metrics for s in m.streams}
    if "sharpness" in needed:
        from attngan.metrics.sharpness import SharpnessStream

        ctx.streams["sharpness"] = SharpnessStream(device)
        ctx.descriptions["sharpness"] = "luminance DCT-II top-octave energy share, every stage"
    if "fid_inception" in needed:
        ctx.streams["fid_inception"] = fid_stream(o.fid_inception, device, resize=o.fid_resize)
        ctx.descriptions["fid_inception"] = f"FID Inception {Path(o.fid_inception).name}, {o.fid_resize} resize"
    if "tv_inception_dmgan" in needed:
        ctx.streams["tv_inception_dmgan"] = legacy_fid_stream(o.inception, device)
        ctx.descriptions["tv_inception_dmgan"] = (f"torchvision Inception-v3 {Path(o.inception).name}, DM-GAN "
                                                  "eval/FID input (PIL bilinear 299, [0, 1], transform_input)")
    if "is_probs" in needed:
        path = o.is_classifier or o.oracle or o.fid_inception
        stream, what = classifier_stream(path, device)
        ctx.streams["is_probs"] = stream
        ctx.descriptions["is_probs"] = f"{what}: {Path(path).name}"
    if "oracle" in needed:
        from attngan.metrics.oracle import load_oracle

        ctx.oracle = load_oracle(o.oracle, device)
        ctx.streams["oracle"] = OracleStream(ctx.oracle, device)
        ctx.descriptions["oracle"] = f"SynthBirds oracle {Path(o.oracle).name} (valid={ctx.oracle.cfg.valid})"
    if "captioner" in needed:
        from attngan.captioner import Captioner
        from attngan.metrics.roundtrip import CaptionerStream

        captioner = Captioner.from_pretrained(o.captioner, device=str(device))
        ctx.streams["captioner"] = CaptionerStream(captioner)
        c = captioner.config
        ctx.descriptions["captioner"] = (f"captioner {o.captioner} ({c.name}, beam {c.beam_size}"
                                         + (f", must mention {c.mention}" if c.mention else "")
                                         + "), trained on real images only")
    if "damsm" in needed or any(m.name == "localisation" for m in metrics):
        if o.eval_damsm:
            from attngan.io import load_damsm

            cfg, vocab, text_enc, img_enc = load_damsm(o.eval_damsm, device)
            what = f"evaluation DAMSM {o.eval_damsm}"
            digest = f"damsm:{Path(o.eval_damsm).resolve()}"
        else:
            cfg, vocab, text_enc, img_enc = pipe.config, pipe.vocab, pipe.text_encoder, pipe.image_encoder
            what = "the model's own DAMSM (the encoders G was trained against: optimistic)"
            digest = "model"
        ctx.damsm = DamsmStream(text_enc, img_enc, vocab, cfg.damsm.words_num, device, digest,
                                protocol=o.rp_protocol, own=not o.eval_damsm)
        ctx.damsm_gamma1 = cfg.damsm.gamma1
        ctx.streams["damsm"] = ctx.damsm
        ctx.descriptions["damsm"] = what


def _clean(x: Any) -> Any:
    """NaN -> None (JSON has no NaN); numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


# Writing.

def format_markdown(report: dict[str, Any]) -> str:
    """The paper's table layout: metric, mean +/- std, protocol, number of images."""
    lines = [
        f"# Evaluation: {report.get('model') or report.get('images')}",
        "",
        f"{report['source']}; data `{report['data']}` ({report['split']} split), seed {report['seed']}, "
        f"{report['splits']} splits.",
        "",
        "| Metric | Value | Protocol | n images |",
        "| --- | --- | --- | --- |",
    ]
    for name, r in report["results"].items():
        spec = REGISTRY[name]
        arrow = "higher is better" if r["higher_is_better"] else "lower is better"
        if r.get("target") is not None:
            arrow = f"{r['target']:g} is best"
        lines.append(f"| {spec.title} (`{name}`, {arrow}) | {_value(r)} | {r['protocol']} | {r['n']} |")
    for name, note in report["skipped"].items():
        lines.append(f"| {REGISTRY[name].title} (`{name}`) | n/a | {note} | 0 |")
    details = []
    for name, r in report["results"].items():
        if "real_ceiling" in r:
            details.append(_roundtrip_details(name, r))
        elif "per_attribute" in r:
            per = ", ".join(f"{p} {_num(v)}%" for p, v in r["per_attribute"].items())
            details.append(f"- `{name}`: per attribute {per}; swap rate {_num(r.get('swap_rate'))}% "
                           f"of {r.get('swap_pairs')} pairs" + (" — **void**: oracle below 97%" if r.get("void") else ""))
        if "per_part" in r:
            per = ", ".join(f"{p} {_num(v['share'])}% (chance {_num(v['chance'])}%)" for p, v in r["per_part"].items())
            details.append(f"- `{name}`: {per}")
        if "per_stage" in r:
            details += [f"- `{name}` per stage (top-octave share of luminance energy; ratio = generated / real):",
                        "", "| Stage | Size | Share | Real share | Ratio | Previous stage upsampled: share | ratio |",
                        "| --- | --- | --- | --- | --- | --- | --- |"]
            for row in r["per_stage"]:
                stage = "top" if row["stage"] is None else row["stage"]
                details.append(f"| {stage} | {row['size']} | {_share(row['hf_share'])} | "
                               f"{_share(row['real_hf_share'])} | {_ratio(row['ratio'])} | "
                               f"{_share(row['upsampled_prev_hf_share'])} | {_ratio(row['upsampled_prev_ratio'])} |")
            details.append("")
    if details:
        lines += ["", *details]
    if report.get("streams"):
        lines += ["", "Extractors: " + "; ".join(f"{k}: {v}" for k, v in report["streams"].items())]
    return "\n".join(lines) + "\n"


def _roundtrip_details(name: str, r: dict[str, Any]) -> str:
    def per(d: dict[str, Any]) -> str:
        return ", ".join(f"{p} {_num(v)}%" for p, v in d.items())

    ceil, chance = r["real_ceiling"], r["real_shuffled"]
    return (f"- `{name}`: generated images: per attribute {per(r['per_attribute'])}; every attribute back "
            f"{_num(r.get('all_back'))}%; BLEU-4 {_num(r.get('bleu4'))}, CIDEr-D {_num(r.get('cider_d'))} vs "
            f"the prompts. Ceiling (real test images, own captions, {ceil['images']} images): "
            f"{_num(ceil['recall'])}% ({per(ceil['per_attribute'])}); BLEU-4 {_num(ceil['bleu4'])}, "
            f"CIDEr-D {_num(ceil['cider_d'])}. Chance (another image's captions): {_num(chance['recall'])}%")


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _share(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _ratio(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _value(r: dict[str, Any]) -> str:
    if r["value"] is None:
        return "n/a"
    unit = r.get("unit", "")
    v = f"{r['value']:.2f}" if abs(r["value"]) >= 0.1 or r["value"] == 0 else f"{r['value']:.4g}"
    if r.get("std") is not None:
        s = f"{r['std']:.2f}" if abs(r["std"]) >= 0.01 or r["std"] == 0 else f"{r['std']:.2g}"
        v = f"{v} ± {s}"
    return f"{v}{unit}" + (" (void)" if r.get("void") else "")


def write_report(report: dict[str, Any], out: str | Path, log: str | Path | None = None) -> tuple[Path, Path]:
    """report.json and report.md beside it (atomic); one JSON line appended to `log` if given."""
    from attngan.fileio import atomic_write_bytes

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    md = out.with_suffix(".md")
    atomic_write_bytes(md, format_markdown(report).encode("utf-8"))
    if log:
        line = {k: report[k] for k in ("created", "model", "images", "data", "num_images", "seed")}
        line["results"] = {k: {"value": v["value"], "std": v["std"]} for k, v in report["results"].items()}
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, allow_nan=False) + "\n")
    return out, md
