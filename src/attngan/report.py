"""A self-contained HTML report (images embedded as data URIs, so it opens offline anywhere).

The page is one or more sections (a model each: its metrics, prompts, training curves, timings
and the commands that reproduce it). Everything wraps to the window: rows of images are flex rows
that wrap, images never exceed their column, and long text (protocols, commands) breaks, so the
page has no horizontal scrolling at 1400 px or narrower.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attngan.fileio import atomic_write_bytes


@dataclass
class Figure:
    png: bytes
    label: str                               # shown under the image and used as its alt text
    cls: str = ""                            # CSS class of the <img>
    width: int | None = None                 # displayed width in CSS px (None: the PNG's own)


@dataclass
class PromptResult:
    caption: str
    stages: list[Figure]                     # one per stage, smallest first, at true resolution
    attention: list[Figure]                  # per-word overlays, one per attentional stage
    tokens: list[str]
    dropped: list[str] = field(default_factory=list)
    retrieved: list[tuple[str, float]] = field(default_factory=list)  # nearest test captions (DAMSM)
    colours_found: bool | None = None        # prompt's colours among the retrieved captions
    captioned: str | None = None             # the captioner's "I think it's ..." for the top image
    attributes_back: dict[str, bool] = field(default_factory=dict)  # prompt attribute -> in the caption


@dataclass
class Section:
    key: str                                 # HTML id
    title: str
    summary: str
    prompts: list[PromptResult]
    metrics: list[dict[str, Any]]            # {"metric", "value", "std", "protocol", "n", ...}
    commands: list[str]
    timings: dict[str, float]
    plots: dict[str, bytes] = field(default_factory=dict)  # caption -> PNG


@dataclass
class Report:
    title: str
    summary: str
    sections: list[Section]
    timings: dict[str, float] = field(default_factory=dict)


def _img(png: bytes, alt: str, cls: str = "", width: int | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    size = f' width="{width}"' if width else ""
    return f'<img class="{cls}" alt="{html.escape(alt)}"{size} src="data:image/png;base64,{data}">'


def _figure(f: Figure) -> str:
    return (f"<figure class='fig-{f.cls or 'plain'}'>{_img(f.png, f.label, f.cls, f.width)}"
            f"<figcaption>{html.escape(f.label)}</figcaption></figure>")


def _table(rows: list[dict[str, Any]], cls: str = "") -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


def metric_rows(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's table format: metric, mean +/- std, protocol, number of images."""
    rows = []
    for m in metrics:
        rows.append({"metric": m["metric"], "value": _shown(m), "protocol": m.get("protocol", ""),
                     "images": m.get("n", "")})
        rows += attribute_rows(m)
        rows += stage_rows(m)
    return rows


def _shown(m: dict[str, Any]) -> str:
    value = m.get("value")
    if value is None:
        return "void"
    return f"{value:.3f} ± {m['std']:.3f}" if m.get("std") is not None else f"{value:.3f}"


# The round trip reports every attribute of the caption grammar; the table shows the parts the
# binding rows show, so that the two can be read side by side.
ROUNDTRIP_PARTS = ("wing", "belly", "crown", "bill")


def attribute_rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-part rows of their own: binding's colour accuracies (a part the oracle cannot read is
    void) and the round trip's read-back shares. Labels differ per metric: the comparison table
    keys rows by label."""
    rows = []
    roundtrip = m.get("name") == "roundtrip"
    for part, v in (m.get("per_attribute") or {}).items():
        if roundtrip and part not in ROUNDTRIP_PARTS:
            continue
        shown = "void" if v is None else f"{v:.3f}"
        if roundtrip:
            rows.append({"metric": f"  {part} colour read back", "value": shown,
                         "protocol": f"the captioner's caption names the prompt's {part} colour",
                         "images": (m.get("prompted") or {}).get(part, "")})
        else:
            rows.append({"metric": f"  {part} colour accuracy", "value": shown,
                         "protocol": f"oracle-read {part} colour == caption's, captions that mention it",
                         "images": (m.get("mentioned") or {}).get(part, "")})
    return rows


def stage_rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The sharpness metric's per-stage ratios, each beside its upsampled-previous-stage baseline."""
    rows = []
    for r in m.get("per_stage") or []:
        stage = "top" if r.get("stage") is None else f"stage {r['stage'] + 1}"
        base, noise = r.get("upsampled_prev_detail"), r.get("matched_noise_detail")
        rows.append({"metric": f"  {stage} ({r['size']} px) detail", "value": f"{r['detail']:.3f}",
                     "protocol": "structure-following top-octave energy vs real images at this size"
                                 + ("" if base is None else f"; previous stage upsampled: {base:.3f}, "
                                                            f"plus noise of the same energy: {noise:.3f}"),
                     "images": m.get("n", "")})
    return rows


def comparison_rows(sections: list[Section]) -> list[dict[str, str]]:
    """One row per metric (and binding part), one column per section, keyed by section title."""
    order: list[str] = []
    values: dict[str, dict[str, str]] = {}
    for s in sections:
        for row in metric_rows(s.metrics):
            if row["metric"] not in values:
                order.append(row["metric"])
                values[row["metric"]] = {}
            values[row["metric"]][s.title] = row["value"]
    return [{"metric": m, **{s.title: values[m].get(s.title, "") for s in sections}} for m in order]


CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1240px;
color:#1d2430;padding:0 1rem;overflow-wrap:anywhere}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #c9d0de;padding-bottom:.3rem;margin-top:2.6rem}
h3{margin-top:1.8rem}
img{max-width:100%;height:auto}
nav a{margin-right:1rem}
.prompt{border:1px solid #e3e6ee;border-radius:8px;padding:1rem;margin:1rem 0}
.row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0;max-width:100%}
figcaption{font-size:.85rem;color:#556;margin-top:.2rem}
img.stage,img.stage-top{image-rendering:pixelated;border:1px solid #ccd;background:#fff}
.attention-list figure{margin-top:.6rem}
table{border-collapse:collapse;margin:.6rem 0;max-width:100%}
td,th{border:1px solid #d5d9e2;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f2f4f8}
.caption{font-size:1.1rem;font-weight:600;margin-bottom:.5rem}
.think{color:#3a4a6a;margin:.6rem 0}.think ol{margin:.3rem 0}
.ok{color:#18794e}.no{color:#b42318}
.plots figure{flex:1 1 420px}
pre{background:#f2f4f8;padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere;font-size:.85rem}
code{background:#f2f4f8;padding:.1rem .3rem}
.muted{color:#667}
"""


def _prompt_html(p: PromptResult, key: str, i: int) -> str:
    dropped = (f"<p class='muted'>dropped (out of vocabulary): {html.escape(', '.join(p.dropped))}</p>"
               if p.dropped else "")
    stages = "<div class='row stages'>" + "".join(_figure(f) for f in p.stages) + "</div>"
    att = ""
    if p.attention:
        att = "<div class='attention-list'>" + "".join(_figure(f) for f in p.attention) + "</div>"
    think = ""
    if p.captioned is not None:
        back = ""
        if p.attributes_back:
            marks = " ".join(f"<span class='{'ok' if ok else 'no'}'>{html.escape(a)} {'✓' if ok else '✗'}</span>"
                             for a, ok in p.attributes_back.items())
            back = f"<div class='muted'>the prompt's attributes in this caption: {marks}</div>"
        think += ("<div class='think captioned'><strong>What the model sees</strong>: I think it's: "
                  f"“{html.escape(p.captioned)}” <span class='muted'>(an independent captioner, trained on "
                  f"real images only, describing the top-stage image)</span>{back}</div>")
    if p.retrieved:
        items = "".join(f"<li>“{html.escape(c)}” <span class='muted'>({s:.2f})</span></li>"
                        for c, s in p.retrieved)
        verdict = ""
        if p.colours_found is not None:
            verdict = ("<span class='ok'>the prompt's wing/belly colours are among them</span>" if p.colours_found
                       else "<span class='no'>the prompt's wing/belly colours are not among them</span>")
        think += ("<div class='think retrieval'><strong>Retrieval</strong> (not captioning: it can only "
                  "return existing captions): the nearest test captions to the top-stage image by the "
                  f"evaluation DAMSM<ol>{items}</ol>{verdict}</div>")
    return (f"<div class='prompt' id='{key}-prompt-{i}'><div class='caption'>“{html.escape(p.caption)}”</div>"
            f"{dropped}{stages}{att}{think}</div>")


def _section_html(s: Section) -> str:
    parts = [f"<section id='{html.escape(s.key)}'><h2>{html.escape(s.title)}</h2>",
             f"<p>{html.escape(s.summary)}</p>", "<h3>Metrics</h3>", _table(metric_rows(s.metrics), "metrics")]
    if s.prompts:
        parts.append("<h3>Prompts</h3><p class='muted'>Every stage at its true resolution, enlarged without "
                     "smoothing; then, for every stage that attends over the words, each word's attention "
                     "over the image regions.</p>")
        parts += [_prompt_html(p, s.key, i) for i, p in enumerate(s.prompts)]
    if s.plots:
        parts.append("<h3>Training</h3><div class='row plots'>"
                     + "".join(_figure(Figure(png, name)) for name, png in s.plots.items()) + "</div>")
    parts.append("<h3>Timings</h3>" + _table([{"step": k, "seconds": f"{v:.1f}"} for k, v in s.timings.items()]))
    parts.append("<h3>Reproduce</h3><pre>" + html.escape("\n".join(s.commands)) + "</pre></section>")
    return "\n".join(parts)


def render_html(r: Report) -> str:
    nav = "".join(f"<a href='#{html.escape(s.key)}'>{html.escape(s.title)}</a>" for s in r.sections)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(r.title)}"
             f"</title><style>{CSS}</style></head><body>", f"<h1>{html.escape(r.title)}</h1>",
             f"<p class='muted'>{html.escape(r.summary)}</p>", f"<nav>{nav}</nav>"]
    if len(r.sections) > 1:
        parts.append("<h3>Side by side</h3>" + _table(comparison_rows(r.sections), "comparison"))
    parts += [_section_html(s) for s in r.sections]
    if r.timings:
        parts.append("<h2>Total time</h2>" + _table([{"part": k, "seconds": f"{v:.1f}"} for k, v in r.timings.items()]))
    parts.append("</body></html>")
    return "\n".join(parts)


def report_json(r: Report) -> dict[str, Any]:
    return {"title": r.title, "timings": r.timings,
            "sections": [{"key": s.key, "title": s.title, "metrics": s.metrics, "commands": s.commands,
                          "timings": s.timings, "plots": list(s.plots),
                          "prompts": [{"caption": p.caption, "tokens": p.tokens, "dropped": p.dropped,
                                       "retrieved": p.retrieved, "colours_found": p.colours_found,
                                       "captioned": p.captioned, "attributes_back": p.attributes_back,
                                       "stages": [f.label for f in p.stages],
                                       "attention": [f.label for f in p.attention]} for p in s.prompts]}
                         for s in r.sections]}


def write_report(r: Report, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    path = out_dir / "report.html"
    atomic_write_bytes(path, render_html(r).encode("utf-8"))
    atomic_write_bytes(out_dir / "report.json", json.dumps(report_json(r), indent=2).encode("utf-8"))
    return path


def line_plot(series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str) -> bytes:
    """PNG of several (x, y) curves (matplotlib, headless)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name, marker="o" if len(x) < 12 else None)
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
