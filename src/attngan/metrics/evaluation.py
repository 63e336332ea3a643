"""`attngan eval` as a library: score a model's samples (or a folder of images) with the
registered metrics, in one pass over the images.

`evaluate` returns the report that `attngan eval` writes (metrics/report.py writes it and turns it
into rows); the images come from metrics/sources.py, the metric functions read an `EvalContext`
(metrics/context.py) whose feature streams the registry's `STREAMS` build.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from attngan.errors import AttnGANError
from attngan.metrics.context import EvalContext
from attngan.metrics.registry import REGISTRY, STREAMS, MetricSpec, missing_input
from attngan.metrics.report import jsonable
from attngan.metrics.sources import FolderImages, GeneratedImages

REPORT_FORMAT = "attngan-eval"
REPORT_VERSION = 1
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
    judge: str | None = None             # a SynthScenes judge folder; None: the bundled one on SynthScenes data
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


def _check_options(o: EvalOptions) -> None:
    """The option values that no metric could run with fail here, before anything loads."""
    if o.num_images < 1 or o.batch < 1 or o.splits < 1:
        raise AttnGANError("--num-images, --batch and --splits must be at least 1")
    for flag, value, allowed in (("--fid-resize", o.fid_resize, ("pytorch-fid", "tf1")),
                                 ("--real-transform", o.real_transform, ("center", "original")),
                                 ("--rp-protocol", o.rp_protocol, ("dmgan", "set"))):
        if value not in allowed:
            raise AttnGANError(f"{flag} must be one of {', '.join(allowed)}, got '{value}'")
    if o.is_shuffle_seed is not None and not 0 <= o.is_shuffle_seed < 2 ** 32:
        raise AttnGANError(f"--is-shuffle-seed must be in [0, 2**32), got {o.is_shuffle_seed}")


# Which metrics can run.

def select_metrics(o: EvalOptions, has_damsm: bool, has_captions: bool, synth: bool, generated: bool
                   ) -> tuple[list[MetricSpec], dict[str, str]]:
    """The metrics to run and a note for each one skipped; a requested one that cannot run fails."""
    inputs = {"has_damsm": has_damsm, "has_captions": has_captions, "synth": synth, "generated": generated}
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

def evaluate(data_dir: str | Path, options: EvalOptions | None = None, *, model_dir: str | Path | None = None,
             images_dir: str | Path | None = None, **option_values: Any) -> dict[str, Any]:
    """Score a model's samples (model_dir) or a folder of images (images_dir); returns the report.

    The options are an `EvalOptions`, or its fields as keywords (num_images, splits, seed, device,
    fid_inception, eval_damsm, oracle, strict, ...), which replace those of `options` when both are
    given. `metrics.report.report_rows(report)` gives one row per metric.
    """
    from attngan.config import DataConfig
    from attngan.data.vocab import load_vocab
    from attngan.perf import resolve_device

    o = _with_values(options or EvalOptions(), option_values)
    t_start = time.perf_counter()
    if model_dir is None and images_dir is None:
        raise AttnGANError("give --model MODEL_DIR (to generate) or --images DIR (to score a folder)")
    _check_options(o)
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
    if pipe is not None:
        data_cfg = pipe.config.data
    else:
        dataset = _detect_dataset(root)
        data_cfg = DataConfig(dataset=dataset, captions_per_image=5 if dataset == "coco" else 10)
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
    if o.judge is None and (root / "synth_scenes.json").is_file():
        from attngan.metrics.scenes import bundled_judge_dir

        # SynthScenes data is judged by the shipped judge unless another is named.
        if (bundled_judge_dir() / "config.json").is_file():
            o = replace(o, judge=str(bundled_judge_dir()))
    metrics, skipped = select_metrics(o, pipe is not None or bool(o.eval_damsm), has_captions, synth,
                                      generated=images_dir is None)
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
        results[spec.name] = jsonable(out)
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


def _with_values(options: EvalOptions, values: dict[str, Any]) -> EvalOptions:
    known = {f.name for f in fields(EvalOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AttnGANError(f"unknown evaluation option '{unknown[0]}'")
    # Paths as text, as the CLI gives them (the fields are str).
    return replace(options, **{k: str(v) if isinstance(v, Path) else v for k, v in values.items()})


def _detect_dataset(root: Path) -> str:
    return "birds" if (root / "CUB_200_2011").is_dir() else "coco"


def _build_streams(ctx: EvalContext, metrics: list[MetricSpec], pipe) -> None:
    """The streams the metrics read or use, each built once, in the order of `STREAMS`."""
    needed = {s for m in metrics for s in (*m.streams, *m.uses)}
    missing = sorted(needed - set(STREAMS))
    if missing:
        raise KeyError(f"no builder in registry.STREAMS for the stream '{missing[0]}'")
    for name, spec in STREAMS.items():
        if name in needed:
            ctx.streams[name], ctx.descriptions[name] = spec.build(ctx, pipe)
