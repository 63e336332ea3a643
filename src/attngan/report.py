"""A self-contained HTML report (images embedded as data URIs, so it opens offline anywhere)."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attngan.fileio import atomic_write_bytes


@dataclass
class PromptResult:
    caption: str
    stages: list[bytes]                      # PNG per stage, smallest first
    attention: bytes | None                  # PNG: per-word overlays on the last attentional stage
    tokens: list[str]
    dropped: list[str] = field(default_factory=list)
    retrieved: list[tuple[str, float]] = field(default_factory=list)  # "I think it's ..."
    colours_found: bool | None = None        # prompt's colours among the retrieved captions


@dataclass
class Report:
    title: str
    summary: str
    prompts: list[PromptResult]
    metrics: list[dict[str, Any]]            # {"metric", "value", "std", "protocol", "n"}
    plots: dict[str, bytes]                  # caption -> PNG
    timings: dict[str, float]
    commands: list[str]
    extra_tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    gallery: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)


def _img(png: bytes, alt: str, cls: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


def metric_rows(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's table format: metric, mean +/- std, protocol, number of images."""
    rows = []
    for m in metrics:
        value = m.get("value")
        shown = "void" if value is None else (f"{value:.3f} ± {m['std']:.3f}" if m.get("std") is not None
                                              else f"{value:.3f}")
        rows.append({"metric": m["metric"], "value": shown, "protocol": m.get("protocol", ""),
                     "images": m.get("n", "")})
        rows += attribute_rows(m)
    return rows


def attribute_rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    """Binding's per-part accuracies as rows of their own (a part the oracle cannot read is void)."""
    rows = []
    for part, v in (m.get("per_attribute") or {}).items():
        shown = "void" if v is None else f"{v:.3f}"
        n = (m.get("mentioned") or {}).get(part, "")
        rows.append({"metric": f"  {part} colour accuracy", "value": shown,
                     "protocol": f"oracle-read {part} colour == caption's, captions that mention it",
                     "images": n})
    return rows


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#1d2430;padding:0 1rem}h1{margin-bottom:.2rem}h2{border-bottom:1px solid #dde;padding-bottom:.3rem;
margin-top:2.2rem}.prompt{border:1px solid #e3e6ee;border-radius:8px;padding:1rem;margin:1rem 0}
.stages img{image-rendering:pixelated;height:128px;margin-right:6px;border:1px solid #ccd}
.stages img.last{height:256px}.att img{max-width:100%;margin-top:.5rem}table{border-collapse:collapse;
margin:.6rem 0}td,th{border:1px solid #d5d9e2;padding:.3rem .6rem;text-align:left}th{background:#f2f4f8}
.caption{font-size:1.1rem;font-weight:600}.think{color:#3a4a6a;margin:.4rem 0}.ok{color:#18794e}
.no{color:#b42318}.plots img{max-width:48%;margin-right:1%}code{background:#f2f4f8;padding:.1rem .3rem}
.gallery img{width:96px;height:96px;image-rendering:pixelated;margin:2px}.muted{color:#667}
"""


def render_html(r: Report) -> str:
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(r.title)}"
             f"</title><style>{CSS}</style></head><body>", f"<h1>{html.escape(r.title)}</h1>",
             f"<p class='muted'>{html.escape(r.summary)}</p>", "<h2>Prompts</h2>"]
    for i, p in enumerate(r.prompts):
        stages = "".join(_img(png, f"prompt {i} stage {s}", "last" if s == len(p.stages) - 1 else "")
                         for s, png in enumerate(p.stages))
        think = ""
        if p.retrieved:
            items = "".join(f"<li>I think it's “{html.escape(c)}” <span class='muted'>({s:.2f})</span></li>"
                            for c, s in p.retrieved)
            verdict = ""
            if p.colours_found is not None:
                verdict = ("<span class='ok'>the prompt's colours are among them</span>" if p.colours_found
                           else "<span class='no'>the prompt's colours are not among them</span>")
            think = f"<div class='think'>What an independent DAMSM retrieves: <ol>{items}</ol>{verdict}</div>"
        dropped = (f"<p class='muted'>dropped (out of vocabulary): {html.escape(', '.join(p.dropped))}</p>"
                   if p.dropped else "")
        att = f"<div class='att'>{_img(p.attention, f'prompt {i} attention')}</div>" if p.attention else ""
        parts.append(f"<div class='prompt'><div class='caption'>“{html.escape(p.caption)}”</div>{dropped}"
                     f"<div class='stages'>{stages}</div>{att}{think}</div>")
    parts.append("<h2>Metrics</h2>" + _table(metric_rows(r.metrics)))
    for name, rows in r.extra_tables.items():
        parts.append(f"<h3>{html.escape(name)}</h3>" + _table(rows))
    if r.gallery:
        parts.append("<h2>More samples (test-split captions, unseen species)</h2><div class='gallery'>"
                     + "".join(_img(png, cap) for cap, png in r.gallery) + "</div>")
    if r.plots:
        parts.append("<h2>Training</h2><div class='plots'>"
                     + "".join(_img(png, name) for name, png in r.plots.items()) + "</div>")
    parts.append("<h2>Timings</h2>" + _table([{"step": k, "seconds": v} for k, v in r.timings.items()]))
    parts.append("<h2>Reproduce</h2><pre>" + html.escape("\n".join(r.commands)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(r: Report, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    path = out_dir / "report.html"
    atomic_write_bytes(path, render_html(r).encode("utf-8"))
    atomic_write_bytes(out_dir / "report.json", json.dumps(
        {"title": r.title, "metrics": r.metrics, "timings": r.timings, "commands": r.commands,
         "extra_tables": r.extra_tables,
         "prompts": [{"caption": p.caption, "tokens": p.tokens, "dropped": p.dropped,
                      "retrieved": p.retrieved, "colours_found": p.colours_found} for p in r.prompts]},
        indent=2).encode("utf-8"))
    return path


def line_plot(series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str) -> bytes:
    """PNG of several (x, y) curves (matplotlib, headless)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
