"""Evaluation metrics: IS, FID (pytorch-fid and legacy protocols), KID, R-precision, SynthBirds
attribute binding and attention localisation, and per-stage high-frequency detail (`sharpness`).

Each metric is declared in the module of its maths (`MetricSpec`, metrics/spec.py);
`registry.REGISTRY` maps each metric name to its spec, `registry.STREAMS` each feature stream to its
builder; `evaluate` (metrics/evaluation.py) runs the metrics in one pass over generated (or given)
images and returns the report that `attngan eval` writes; `report.report_rows(report)` gives its
rows. The registry and the metric modules import torch only when a metric runs; this module never.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # `attngan.metrics.evaluate` imports torch on first use only: the CLI reads the registry
    # through this package for `attngan eval --help`.
    if name == "evaluate":
        from attngan.metrics.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
