"""Evaluation metrics: IS, FID (pytorch-fid and legacy protocols), KID, R-precision, SynthBirds
attribute binding and attention localisation, and per-stage high-frequency detail (`sharpness`).

`registry.REGISTRY` maps each metric name to its function, protocol and reference implementation;
`evaluation.evaluate` runs them in one pass over generated (or given) images and returns the
report that `attngan eval` writes. `evaluate` below is the same run for Python callers (the demo's
HTML report): one row per metric. Submodules import torch; this module does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["evaluate"]


def evaluate(model_dir: str | Path | None = None, data_dir: str | Path | None = None, *,
             images_dir: str | Path | None = None, metrics: list[str] | None = None,
             **options: Any) -> list[dict[str, Any]]:
    """Score a model folder's samples (or a folder of images); one row per metric.

    Rows: {"metric" (title), "name", "value" (None when skipped or void), "std", "protocol", "n",
    "unit", ...extras}. `options` are `EvalOptions` fields (num_images, splits, seed, device,
    inception, fid_inception, is_classifier, eval_damsm, oracle, cache_dir, ...). Unlike the CLI, a
    requested metric whose weights are missing becomes a row with a note instead of an error.
    """
    from attngan.errors import AttnGANError
    from attngan.metrics.evaluation import EvalOptions
    from attngan.metrics.evaluation import evaluate as run
    from attngan.metrics.registry import REGISTRY

    if data_dir is None:
        raise AttnGANError("evaluate() needs data_dir (the dataset folder)")
    known = set(EvalOptions.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise AttnGANError(f"unknown evaluation option '{unknown[0]}'")
    opts = EvalOptions(metrics=metrics, strict=False, **{k: str(v) if isinstance(v, Path) else v
                                                        for k, v in options.items()})
    report = run(data_dir, opts, model_dir=model_dir, images_dir=images_dir)
    rows = report_rows(report)
    for name, note in report["skipped"].items():
        rows.append({"metric": REGISTRY[name].title, "name": name, "value": None, "std": None,
                     "protocol": note, "n": 0})
    return rows


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """An `attngan eval` report's results as rows {"metric" (title), "name", **result}; a void
    result (e.g. an oracle below its accuracy bar) has value None."""
    from attngan.metrics.registry import REGISTRY

    return [{"metric": REGISTRY[name].title, "name": name, **r, **({"value": None} if r.get("void") else {})}
            for name, r in report["results"].items()]
