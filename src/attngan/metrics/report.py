"""`attngan eval`'s report: the JSON it writes (`jsonable`), the Markdown table beside it
(`format_markdown`), and its results as rows (`report_rows`) for Python callers such as the demo.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

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
        if "seen" in r or "novel" in r:
            details.append(_seen_novel_details(name, r))
        if "real_ceiling" in r:
            details.append(_roundtrip_details(name, r))
        elif "per_attribute" in r:
            per = ", ".join(f"{p} {_num(v)}%" for p, v in r["per_attribute"].items())
            details.append(f"- `{name}`: per attribute {per}; swap rate {_num(r.get('swap_rate'))}% "
                           f"of {r.get('swap_pairs')} pairs" + (" — **void**: oracle below 97%" if r.get("void") else ""))
        if "per_part" in r:
            per = ", ".join(f"{p} {_num(v['share'])}% (chance {_num(v['chance'])}%)" for p, v in r["per_part"].items())
            details.append(f"- `{name}`: {per}")
        if "per_attention_stage" in r:
            per = ", ".join(f"stage {row['stage'] + 1} {_num(row['share'])}% (chance {_num(row['chance'])}%)"
                            for row in r["per_attention_stage"])
            details.append(f"- `{name}`: {per}")
        if "per_part_noun" in r:
            per = ", ".join(f"{p} {_num(v['share'])}%" for p, v in r["per_part_noun"].items())
            details.append(f"- `{name}`, the part nouns' attention: {per}")
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


def _seen_novel_details(name: str, r: dict[str, Any]) -> str:
    """SynthScenes: the seen and novel compositions' values (and chance, the judge's readings beside)."""
    unit = r.get("unit", "")

    def v(x: Any) -> str:
        return "n/a" if x is None else f"{x:.2f}{unit}"

    line = (f"- `{name}`: seen {v(r.get('seen'))} ({r.get('n_seen')}), novel {v(r.get('novel'))} "
            f"({r.get('n_novel')})")
    if r.get("chance"):
        c = r["chance"]
        line += f"; chance seen {v(c.get('seen'))}, novel {v(c.get('novel'))}"
    for extra in ("objects_precision", "object_place"):
        if extra in r:
            e = r[extra]
            line += f"; {extra.replace('_', ' ')} {v(e.get('all'))} (seen {v(e.get('seen'))}, novel {v(e.get('novel'))})"
    if r.get("novel_seen_ratio") is not None:
        line += f"; novel/seen ratio {r['novel_seen_ratio']:.3f}"
    return line + (" — **void**: judge below its bars" if r.get("void") else "")


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


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's results as rows {"metric" (title), "name", **result}, then one row per skipped
    metric with its note as "protocol". A skipped metric and a void result (e.g. an oracle below
    its accuracy bar) have value None."""
    rows = [{"metric": REGISTRY[name].title, "name": name, **r, **({"value": None} if r.get("void") else {})}
            for name, r in report["results"].items()]
    rows += [{"metric": REGISTRY[name].title, "name": name, "value": None, "std": None, "protocol": note, "n": 0}
             for name, note in report["skipped"].items()]
    return rows
