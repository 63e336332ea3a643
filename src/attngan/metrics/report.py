"""`attngan eval`'s report: the JSON it writes (`jsonable`), the Markdown table beside it
(`format_markdown`), and its results as rows (`report_rows`) for Python callers such as the demo.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from attngan.fileio import atomic_write_bytes
from attngan.metrics.registry import REGISTRY


def jsonable(x: Any) -> Any:
    """NaN -> None (JSON has no NaN); numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x

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
        # Each metric writes its own lines (MetricSpec.details).
        if REGISTRY[name].details is not None:
            details += REGISTRY[name].details(name, r)
    if details:
        lines += ["", *details]
    if report.get("streams"):
        lines += ["", "Extractors: " + "; ".join(f"{k}: {v}" for k, v in report["streams"].items())]
    return "\n".join(lines) + "\n"


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


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's results as rows {"metric" (title), "name", **result}, then one row per skipped
    metric with its note as "protocol". A skipped metric and a void result (e.g. an oracle below
    its accuracy bar) have value None."""
    rows = [{"metric": REGISTRY[name].title, "name": name, **r, **({"value": None} if r.get("void") else {})}
            for name, r in report["results"].items()]
    rows += [{"metric": REGISTRY[name].title, "name": name, "value": None, "std": None, "protocol": note, "n": 0}
             for name, note in report["skipped"].items()]
    return rows
