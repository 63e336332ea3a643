"""`attngan eval` as a library: score a model's samples (or a folder of images) with the
registered metrics, in one pass over the images.

`evaluate` returns the report that `attngan eval` writes (metrics/report.py writes it and turns it
into rows); the images come from metrics/sources.py, the metric functions read an `EvalContext`
(metrics/context.py) whose feature streams the registry's `STREAMS` build.
"""

from __future__ import annotations

import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from attngan.config import DataConfig
from attngan.data.dataset import TextImageDataset
from attngan.data.records import detect_source, ground_truth
from attngan.data.vocab import load_vocab
from attngan.errors import AttnGANError
from attngan.io import CONFIG_FILE, resolve
from attngan.metrics.context import EvalContext
from attngan.metrics.extractors import FeatureArrays
from attngan.metrics.options import EvalOptions, check_options
from attngan.metrics.registry import REGISTRY, STREAMS, MetricSpec, default_metrics, missing_input
from attngan.metrics.report import jsonable
from attngan.metrics.sources import FolderImages, GeneratedImages, PromptImages, read_prompts
from attngan.perf import resolve_device
from attngan.pipeline import AttnGANPipeline

REPORT_FORMAT = "attngan-eval"
REPORT_VERSION = 1
# What runs when --metrics is not given (MetricSpec.default), in the registry's order.
DEFAULT_METRICS = default_metrics()


# Which metrics can run.

def select_metrics(o: EvalOptions, has_damsm: bool, has_captions: bool, ground_truth: str | None,
                   generated: bool) -> tuple[list[MetricSpec], dict[str, str]]:
    """The metrics to run and a note for each one skipped; a requested one that cannot run fails.
    `ground_truth` is the data's (DataSource.ground_truth)."""
    inputs = {"has_damsm": has_damsm, "has_captions": has_captions, "ground_truth": ground_truth,
              "generated": generated}
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


# Metrics that score generated images against what their own prompt asks (MetricSpec.prompts), so
# they run on any prompt list; the others compare with the test split's captions or images.
PROMPT_METRICS = tuple(name for name, spec in REGISTRY.items() if spec.prompts)


def _prompt_metrics(o: EvalOptions) -> EvalOptions:
    """The options for a --prompts run: its metrics among PROMPT_METRICS (all of those whose
    inputs are given when none are named)."""
    if o.metrics:
        other = [m for m in o.metrics if m not in PROMPT_METRICS]
        if other:
            raise AttnGANError(f"metric '{other[0]}' compares with the test split, not prompts; with --prompts "
                               f"choose from {', '.join(PROMPT_METRICS)}")
        return o
    return replace(o, metrics=[m for m in DEFAULT_METRICS if m in PROMPT_METRICS], strict=False)


# What the data source defaults (DataSource.evaluation_defaults).

# The options a data source may default, each with the kind of saved folder it names (None: a
# folder, no bundled name).
SOURCE_DEFAULTS = {"judge": None, "captioner": "captioner", "eval_damsm": "damsm"}


def _installed(value: str, kind: str | None) -> bool:
    """Whether a default names a folder that is there (a shipped one may be left out of an
    installation, and the evaluation then goes on without it)."""
    try:
        folder = resolve(value, kind) if kind else Path(value)
    except AttnGANError:
        return False
    return (folder / CONFIG_FILE).is_file()


def _with_source_defaults(o: EvalOptions, defaults: dict[str, Any]) -> EvalOptions:
    """The options with the data source's defaults for the ones the user left unnamed."""
    unknown = sorted(set(defaults) - set(SOURCE_DEFAULTS))
    if unknown:
        raise TypeError(f"evaluation_defaults gave '{unknown[0]}'; it may give "
                        f"{', '.join(SOURCE_DEFAULTS)} (the data's ground truth is ground_truth's answer)")
    for name, kind in SOURCE_DEFAULTS.items():
        value = defaults.get(name)
        if value is not None and getattr(o, name) is None and _installed(str(value), kind):
            o = replace(o, **{name: str(value)})
    return o


# The run.

def evaluate(data_dir: str | Path, options: EvalOptions | None = None, *, model_dir: str | Path | None = None,
             images_dir: str | Path | None = None, **option_values: Any) -> dict[str, Any]:
    """Score a model's samples (model_dir) or a folder of images (images_dir); returns the report.

    The options are an `EvalOptions`, or its fields as keywords (num_images, splits, seed, device,
    fid_inception, eval_damsm, oracle, strict, ...), which replace those of `options` when both are
    given. `metrics.report.report_rows(report)` gives one row per metric.
    """
    o = _with_values(options or EvalOptions(), option_values)
    t_start = time.perf_counter()
    if model_dir is None and images_dir is None:
        raise AttnGANError("give --model MODEL_DIR (to generate) or --images DIR (to score a folder)")
    if o.prompts and model_dir is None:
        raise AttnGANError("--prompts generates images for its prompts: give --model, not --images")
    check_options(o)
    prompts = None
    if o.prompts:
        prompts = read_prompts(o.prompts)
        o = _prompt_metrics(o)

    data_source = detect_source(data_dir)
    root = data_source.folder(Path(data_dir), o.split)  # shards: their split as a local image folder
    device = resolve_device(o.device)
    torch.manual_seed(o.seed)

    pipe = None
    if model_dir is not None:
        pipe = AttnGANPipeline.from_pretrained(model_dir, device=str(device))
    # Without a model the data settings are the defaults: the data source reads the folder's layout.
    data_cfg = pipe.config.data if pipe is not None else DataConfig()
    # Every test image counts for the real statistics, even one with too few captions.
    data_cfg = replace(data_cfg, short_captions="pad", cache=False)
    vocab = pipe.vocab if pipe is not None else load_vocab(root)

    if images_dir is not None:
        source = FolderImages(images_dir, o.batch, o.num_images)
        has_captions = source.captions is not None
    elif prompts is not None:
        source = PromptImages(pipe, prompts, o.num_images, o.batch, o.seed, name=Path(o.prompts).name)
        has_captions = True
    else:
        test = TextImageDataset(root, o.split, data_cfg, vocab, image_sizes=[data_cfg.image_size], train=False)
        source = GeneratedImages(pipe, test, o.num_images, o.batch, o.seed)
        has_captions = True
    if len(source) < o.splits:
        raise AttnGANError(f"{len(source)} images cannot be cut into {o.splits} splits; raise --num-images or lower --splits")
    # The data's ground truth decides the metrics that read it; its own instruments (SynthScenes:
    # the shipped judge, captioner and evaluation DAMSM) are the defaults.
    truth = ground_truth(data_dir, data_source)
    o = _with_source_defaults(o, data_source.evaluation_defaults(Path(data_dir)))
    metrics, skipped = select_metrics(o, pipe is not None or bool(o.eval_damsm), has_captions, truth,
                                      generated=images_dir is None)
    if not metrics:
        raise AttnGANError("no metric can run: " + "; ".join(f"{k} {v.removeprefix('skipped: ')}" for k, v in skipped.items()))

    ctx = EvalContext(options=o, device=device, data_root=root, data_cfg=data_cfg, vocab=vocab,
                      image_size=source.image_size, ground_truth=truth, stage_ids=list(source.stage_ids),
                      stage_sizes=list(source.stage_sizes), class_ids=None,
                      class_ids_given=getattr(source, "class_ids_given", True))
    _build_streams(ctx, metrics, pipe)

    # One pass over the images feeds every stream.
    t0 = time.perf_counter()
    gen_streams = [ctx.streams[s] for s in dict.fromkeys(s for m in metrics for s in m.streams)]
    feats = {s.name: FeatureArrays() for s in gen_streams}
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
                feats[s.name].add(out)
            if batch.captions is not None:
                ctx.captions.extend(batch.captions)
                ctx.full_captions.extend(batch.full_captions or batch.captions)
            if batch.attributes is not None:
                ctx.attributes.extend(batch.attributes)
            if batch.class_ids is not None:
                classes.append(np.asarray(batch.class_ids))
            n_done += batch.images.shape[0]
            bar.update(batch.images.shape[0])
    ctx.timings["images_s"] = time.perf_counter() - t0
    ctx.generated = {name: f.arrays() for name, f in feats.items()}
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
        "prompts": o.prompts,
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


def _build_streams(ctx: EvalContext, metrics: list[MetricSpec], pipe: AttnGANPipeline | None) -> None:
    """The streams the metrics read or use, each built once, in the order of `STREAMS`."""
    needed = {s for m in metrics for s in (*m.streams, *m.uses)}
    missing = sorted(needed - set(STREAMS))
    if missing:
        raise KeyError(f"no builder in registry.STREAMS for the stream '{missing[0]}'")
    for name, spec in STREAMS.items():
        if name in needed:
            ctx.streams[name], ctx.descriptions[name] = spec.build(ctx, pipe)
