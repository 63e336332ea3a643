"""A self-contained HTML report (images embedded as data URIs, so it opens offline anywhere).

The page is about one or more sections (a model each: its prompts, metrics, training curves,
timings and the commands that reproduce it) and opens on pictures: a figure of every prompt beside
each section's top-stage image and what the captioner reads in it; then each section's stages and
word attention; then the numbers, as bar charts (inline SVG) and a full table whose protocols fold
away; then how each section was made. Everything wraps to the window: rows of images are flex rows
that wrap, images and charts never exceed their column, and long text (protocols, commands)
breaks, so the page has no horizontal scrolling at 1400 px or narrower.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
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
class SceneNote:
    """One scene prompt beyond its pictures: where it comes from and what a judge finds in its image."""
    paper: str                               # the prompt as first written (e.g. the paper's sentence)
    changes: list[str]                       # each word replaced or dropped for the data set's vocabulary, and why
    composition: str                         # "seen", or "novel": it holds a pair never together in training
    held_out: list[str]                      # those pairs, in words
    found: list[str]                         # what the judge reads in the top-stage image
    checks: list[tuple[str, bool]]           # each statement of the prompt, right or wrong in the image

    @property
    def right(self) -> bool:
        return bool(self.checks) and all(ok for _, ok in self.checks)


@dataclass
class SceneSection:
    """A scenes part after the sections: a model's prompts with a judge's verdicts, and its metrics
    for the seen and the novel compositions side by side."""
    section: Section                         # prompts (stages, attention, caption), metrics, commands, timings
    notes: list[SceneNote]                   # one per prompt of section.prompts
    remarks: list[str] = field(default_factory=list)  # what this part lacks, and why


@dataclass
class Report:
    title: str
    summary: str
    sections: list[Section]
    timings: dict[str, float] = field(default_factory=dict)
    scenes: SceneSection | None = None       # shown after the sections, with its own table


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
        if "detail" not in r:  # an older card's row: the top-octave energy ratio, which noise passes
            rows.append({"metric": f"  {stage} ({r['size']} px) energy ratio", "value": f"{r['ratio']:.3f}",
                         "protocol": "top-octave energy vs real images (an older measure: noise of the "
                                     "same energy scores as high; not evidence of detail)",
                         "images": m.get("n", "")})
            continue
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


# Bar charts of the numbers people compare, one per metric group. Each group is a list of bars
# (a label each) with one value per series: the sections for the metrics' charts (CHART_GROUPS),
# or anything else a table compares (seen vs novel compositions, say), built as a ChartGroup and
# drawn with charts_html / bar_chart_svg.

@dataclass
class ChartGroup:
    title: str
    note: str                                # what a bar measures, under the title
    labels: list[str]                        # one row of bars per label
    values: dict[str, list[float | None]]    # series (a section's title, "seen", ...) -> a value per label
    unit: str = "%"
    scale: float | None = 100.0              # the axis runs from 0 to this (None: see axis)

    def axis(self) -> float:
        """The axis' end: the scale, or without one the first of 1, 2, 2.5, 5 x 10^k at or
        above the largest value."""
        if self.scale is not None:
            return self.scale
        top = max((v for vs in self.values.values() for v in vs if v is not None and v > 0), default=1.0)
        step = 10 ** math.floor(math.log10(top))
        return next(m * step for m in (1, 2, 2.5, 5, 10) if m * step >= top)


def _binding_bars(m: dict[str, Any]) -> list[tuple[str, float | None]]:
    per = m.get("per_attribute") or {}
    return ([(f"{p} colour", per.get(p)) for p in ROUNDTRIP_PARTS if p in per]
            + [("all colours right", m.get("value"))])


def _rprecision_bars(m: dict[str, Any]) -> list[tuple[str, float | None]]:
    return [("R-precision", m.get("value"))]


def _roundtrip_bars(m: dict[str, Any]) -> list[tuple[str, float | None]]:
    per = m.get("per_attribute") or {}
    bars = [(f"{p} colour read back", per.get(p)) for p in ROUNDTRIP_PARTS if p in per]
    bars.append(("all attributes", m.get("value")))
    ceiling = m.get("real_ceiling") or {}
    if ceiling.get("recall") is not None:
        bars.append(("real images (ceiling)", ceiling["recall"]))
    return bars


# (metric name, chart title, what a bar measures, the bars of one section's result)
CHART_GROUPS = [
    ("binding", "Attribute binding", "the oracle reads the colour the caption gave each part (%)", _binding_bars),
    ("r_precision", "R-precision", "the true caption ranks first among 100 by the evaluation DAMSM (%)",
     _rprecision_bars),
    ("roundtrip", "Round trip", "the captioner's caption of the image states the prompt's attribute (%)",
     _roundtrip_bars),
]


def metric_charts(sections: list[Section]) -> list[ChartGroup]:
    """The chart groups the sections' metrics fill (a group no section measured is left out)."""
    groups = []
    for name, title, note, bars in CHART_GROUPS:
        found = {s.title: next((m for m in s.metrics if m.get("name") == name), None) for s in sections}
        if not any(found.values()):
            continue
        labels: list[str] = []
        per_series: dict[str, dict[str, float | None]] = {}
        for series, m in found.items():
            per_series[series] = dict(bars(m)) if m else {}
            labels += [label for label in per_series[series] if label not in labels]
        groups.append(ChartGroup(title, note, labels,
                                 {series: [v.get(label) for label in labels] for series, v in per_series.items()}))
    return groups


SERIES_COLOURS = ("#2f6fb0", "#e07b1f", "#3a9a5b", "#8e5bb5")


def bar_chart_svg(g: ChartGroup) -> str:
    """A horizontal grouped bar chart as inline SVG (no script, no external resource): one row of
    bars per label, one bar per series, a legend when there are several series; a missing value
    reads n/a."""
    series = list(g.values)
    scale = g.axis()
    digits = 1 if scale >= 10 else 2 if scale >= 1 else 3
    label_w, bar_w, value_w, bar_h, gap = 170, 300, 64, 14, 10
    width = label_w + bar_w + value_w
    legend_h = 22 if len(series) > 1 else 0
    row_h = len(series) * bar_h + gap
    height = legend_h + len(g.labels) * row_h + 18
    top = legend_h
    out = [f"<svg class='chart' viewBox='0 0 {width} {height}' width='{width}' "
           f"height='{height}' role='img' aria-label='{html.escape(g.title)}'><title>{html.escape(g.title)}</title>"]
    if len(series) > 1:
        x = label_w
        for k, name in enumerate(series):
            out.append(f"<rect x='{x}' y='4' width='12' height='12' fill='{SERIES_COLOURS[k % len(SERIES_COLOURS)]}'/>"
                       f"<text x='{x + 16}' y='14' class='legend'>{html.escape(_short(name))}</text>")
            x += 16 + 7 * len(_short(name)) + 18
    for t in range(5):  # gridlines at 0, 25, 50, 75, 100 % of the scale
        x = label_w + bar_w * t / 4
        out.append(f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{height - 16}' class='grid'/>"
                   f"<text x='{x:.1f}' y='{height - 4}' class='tick'>{scale * t / 4:g}</text>")
    for i, label in enumerate(g.labels):
        y0 = top + i * row_h + gap / 2
        out.append(f"<text x='{label_w - 6}' y='{y0 + len(series) * bar_h / 2 + 4:.1f}' class='label'>"
                   f"{html.escape(label)}</text>")
        for k, name in enumerate(series):
            v = g.values[name][i]
            y = y0 + k * bar_h
            colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
            if v is None:
                out.append(f"<text x='{label_w + 4}' y='{y + bar_h - 3}' class='value'>n/a</text>")
                continue
            w = bar_w * min(max(v / scale, 0.0), 1.0)
            shown = f"{v:.{digits}f}{g.unit}"
            out.append(f"<rect x='{label_w}' y='{y + 1}' width='{w:.1f}' height='{bar_h - 2}' fill='{colour}'>"
                       f"<title>{html.escape(name)}: {shown}</title></rect>"
                       f"<text x='{label_w + w + 4:.1f}' y='{y + bar_h - 3}' class='value'>{shown}</text>")
    out.append("</svg>")
    return "".join(out)


def charts_html(groups: list[ChartGroup]) -> str:
    """Bar charts side by side (wrapping to the window), each titled, with what a bar measures;
    an empty string for no groups. The page's CSS styles them."""
    if not groups:
        return ""
    return "<div class='charts'>" + "".join(
        f"<figure><figcaption><strong>{html.escape(g.title)}</strong>: {html.escape(g.note)}</figcaption>"
        f"{bar_chart_svg(g)}</figure>" for g in groups) + "</div>"


def _short(title: str) -> str:
    return title.split(": ", 1)[-1]


CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2rem auto;max-width:1240px;
color:#1d2430;padding:0 1rem;overflow-wrap:anywhere}
h1{margin:.2rem 0}h2{border-bottom:2px solid #c9d0de;padding-bottom:.3rem;margin-top:2.6rem}
h3{margin-top:1.8rem}
img{max-width:100%;height:auto}
nav a{margin-right:1rem}
.lead{margin:.3rem 0 .6rem}
.hero{display:flex;flex-wrap:wrap;gap:14px;margin:.8rem 0}
.hero-card{flex:1 1 260px;border:1px solid #e3e6ee;border-radius:8px;padding:.7rem;margin:0;background:#fafbfd}
.hero-card>figcaption{font-size:1.05rem;font-weight:600;color:#1d2430;margin:0 0 .5rem}
.hero-card .row{gap:10px;flex-wrap:nowrap}
.hero-card figure{flex:0 1 224px}
img.hero{image-rendering:pixelated;border:1px solid #ccd;background:#fff;display:block}
.hero-card figure figcaption{font-size:.85rem}
.who{display:block;font-weight:600;color:#334}
.prompt{border:1px solid #e3e6ee;border-radius:8px;padding:1rem;margin:1rem 0}
.row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0;max-width:100%}
figcaption{font-size:.85rem;color:#556;margin-top:.2rem}
img.stage,img.stage-top{image-rendering:pixelated;border:1px solid #ccd;background:#fff}
.attention-list figure{margin-top:.6rem}
.charts{display:flex;flex-wrap:wrap;gap:18px 28px}
.charts figure{flex:0 1 534px}
svg.chart{max-width:100%;height:auto;display:block}
svg.chart text{font-size:12px;fill:#334}
svg.chart .label{text-anchor:end}svg.chart .tick{text-anchor:middle;fill:#778;font-size:10px}
svg.chart .grid{stroke:#e3e6ee}
table{border-collapse:collapse;margin:.6rem 0;max-width:100%}
td,th{border:1px solid #d5d9e2;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f2f4f8}
details summary{cursor:pointer;color:#556;font-size:.85rem}
details p{margin:.3rem 0;font-size:.85rem;color:#445}
.caption{font-size:1.1rem;font-weight:600;margin-bottom:.5rem}
.think{color:#3a4a6a;margin:.6rem 0}.think ol{margin:.3rem 0}
.ok{color:#18794e}.no{color:#b42318}
.plots figure{flex:1 1 420px}
pre{background:#f2f4f8;padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere;font-size:.85rem}
code{background:#f2f4f8;padding:.1rem .3rem}
.muted{color:#667}
"""

HERO_PX = 224  # the opening figure's images: large enough to see each part's colour


def _pictures_html(sections: list[Section]) -> str:
    """The opening figure: each prompt, its top-stage image from every section side by side, and
    what the captioner reads in it."""
    shown = [s for s in sections if s.prompts]
    if not shown:
        return ""
    cards = []
    for i, p in enumerate(shown[0].prompts):
        figs = []
        for s in shown:
            if i >= len(s.prompts):
                continue
            q = s.prompts[i]
            img = _img(q.stages[-1].png, f"{s.title}: {q.caption}", "hero", HERO_PX) if q.stages else ""
            said = (f"I think it's: “{html.escape(q.captioned)}”" if q.captioned is not None else "")
            figs.append(f"<figure>{img}<figcaption><span class='who'>{html.escape(_short(s.title))}</span>"
                        f"{said}</figcaption></figure>")
        # Wide enough for the sections' images side by side (the cards wrap, the images do not).
        basis = len(figs) * (HERO_PX + 10) + 20
        cards.append(f"<figure class='hero-card' style='flex-basis:{basis}px'><figcaption>“{html.escape(p.caption)}”"
                     f"</figcaption><div class='row'>{''.join(figs)}</div></figure>")
    note = ("Each prompt and the top-stage image it gave, with what an independent captioner (trained "
            "on real images only) reads in that image.")
    return (f"<section id='pictures'><p class='muted lead'>{note}</p><div class='hero'>{''.join(cards)}</div>"
            "</section>")


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


def _section_pictures_html(s: Section) -> str:
    parts = [f"<section id='{html.escape(s.key)}'><h2>{html.escape(s.title)}</h2>", f"<p>{html.escape(s.summary)}</p>"]
    if s.prompts:
        parts.append("<h3>Prompts</h3><p class='muted'>Every stage at its true resolution, enlarged without "
                     "smoothing; then, for every stage that attends over the words, each word's attention "
                     "as a heat map over the dimmed image (bright: the regions the word drew), on one scale "
                     "for all the prompt's words, so a word that spread its attention evenly stays dark; "
                     "the words that attend most framed.</p>")
        parts += [_prompt_html(p, s.key, i) for i, p in enumerate(s.prompts)]
    parts.append("</section>")
    return "\n".join(parts)


def _numbers_table(sections: list[Section]) -> str:
    """Every metric row, one value column per section; each row's protocol folded under it."""
    order: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    for s in sections:
        for row in metric_rows(s.metrics):
            r = rows.setdefault(row["metric"], {"protocol": row.get("protocol", ""), "images": row.get("images", "")})
            if row["metric"] not in order:
                order.append(row["metric"])
            r[s.title] = row["value"]
    head = "<th>metric</th>" + "".join(f"<th>{html.escape(s.title)}</th>" for s in sections)
    body = []
    for label in order:
        r = rows[label]
        about = html.escape(str(r["protocol"] or ""))
        n = f" · {r['images']} images" if r["images"] not in ("", None) else ""
        folded = f"<details><summary>protocol</summary><p>{about}{html.escape(n)}</p></details>" if about else ""
        body.append(f"<tr><td>{html.escape(label)}{folded}</td>"
                    + "".join(f"<td>{html.escape(_fmt(r.get(s.title)))}</td>" for s in sections) + "</tr>")
    return f"<table class='metrics'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _numbers_html(sections: list[Section]) -> str:
    if not any(s.metrics for s in sections):
        return ""
    parts = ["<section id='numbers'><h2>Numbers</h2>", charts_html(metric_charts(sections))]
    parts.append("<h3>Metrics</h3>" + _numbers_table(sections) + "</section>")
    return "\n".join(parts)


def _section_details_html(s: Section) -> str:
    parts = [f"<section id='{html.escape(s.key)}-details'><h2>How it was made: {html.escape(_short(s.title))}</h2>"]
    if s.plots:
        parts.append("<h3>Training</h3><div class='row plots'>"
                     + "".join(_figure(Figure(png, name)) for name, png in s.plots.items()) + "</div>")
    if s.timings:
        parts.append("<h3>Timings</h3>" + _table([{"step": k, "seconds": f"{v:.1f}"} for k, v in s.timings.items()]))
    if s.commands:
        parts.append("<h3>Reproduce</h3><pre>" + html.escape("\n".join(s.commands)) + "</pre>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(r: Report) -> str:
    """Pictures first (the opening figure, then each section's stages and attention), then the
    numbers (charts, then the full table), then how each section was made."""
    links = [("pictures", "Pictures")] + [(s.key, s.title) for s in r.sections] + [("numbers", "Numbers")]
    links += [(r.scenes.section.key, r.scenes.section.title)] if r.scenes is not None else []
    nav = "".join(f"<a href='#{html.escape(k)}'>{html.escape(t)}</a>" for k, t in links)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(r.title)}"
             f"</title><style>{CSS}</style></head><body>", f"<h1>{html.escape(r.title)}</h1>",
             f"<p class='muted'>{html.escape(r.summary)}</p>", f"<nav>{nav}</nav>", _pictures_html(r.sections)]
    parts += [_section_pictures_html(s) for s in r.sections]
    parts.append(_numbers_html(r.sections))
    parts += [_section_details_html(s) for s in r.sections]
    if r.scenes is not None:
        parts.append(scenes_html(r.scenes))
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
                         for s in r.sections],
            **({"scenes": scenes_json(r.scenes)} if r.scenes is not None else {})}


# The scenes part: each prompt where it comes from, its pictures and the judge's verdict; then
# every metric for the seen and the novel compositions side by side.

SEEN_NOVEL_EXTRAS = {"objects_precision": "precision: found categories the prompt names",
                     "object_place": "object in its place (sky or ground)"}


def _kind_value(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1f}%" if unit == "%" else f"{v:.2f}"


def seen_novel_rows(metrics: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per metric: all prompts, the seen and the novel ones, chance for each kind (where
    the metric has one) and how many of each kind it scored (images, or
    objects where it scores each object); a metric's side readings (precision, object
    place) and composition's novel/seen ratio are rows of their own. A void or skipped metric
    says why."""
    rows = []
    for m in metrics:
        unit = m.get("unit", "")
        label = m["metric"] + ("" if m.get("higher_is_better", True) else " (lower is better)")
        if m.get("value") is None:
            rows.append({"metric": label, "all": "void" if m.get("void") else "n/a", "seen": "", "novel": "",
                         "chance seen / novel": "", "scored seen / novel": m.get("note") or m.get("protocol", "")})
            continue
        shown = _kind_value(m["value"], unit)
        if m.get("std") is not None:
            shown = f"{shown.removesuffix('%')} ± {_kind_value(m['std'], unit)}"
        chance = m.get("chance") or {}
        rows.append({"metric": label, "all": shown, "seen": _kind_value(m.get("seen"), unit),
                     "novel": _kind_value(m.get("novel"), unit),
                     "chance seen / novel": (f"{_kind_value(chance.get('seen'), unit)} / "
                                             f"{_kind_value(chance.get('novel'), unit)}") if chance else "",
                     "scored seen / novel": f"{m.get('n_seen', '')} / {m.get('n_novel', '')}"})
        for extra, words in SEEN_NOVEL_EXTRAS.items():
            e, c = m.get(extra), m.get(f"{extra}_chance") or {}
            if isinstance(e, dict):
                rows.append({"metric": f"  {words}", "all": _kind_value(e.get("all"), unit),
                             "seen": _kind_value(e.get("seen"), unit), "novel": _kind_value(e.get("novel"), unit),
                             "chance seen / novel": (f"{_kind_value(c.get('seen'), unit)} / "
                                                     f"{_kind_value(c.get('novel'), unit)}") if c else "",
                             "scored seen / novel": ""})
        if m.get("novel_seen_ratio") is not None:
            rows.append({"metric": "  novel / seen (1.00: composes as well as it remembers)",
                         "all": f"{m['novel_seen_ratio']:.2f}", "seen": "", "novel": "", "chance seen / novel": "",
                         "scored seen / novel": ""})
    return rows


def seen_novel_chart(metrics: list[dict[str, Any]]) -> ChartGroup | None:
    """The percentage metrics as bars, seen beside novel (None where no metric has both)."""
    shown = [m for m in metrics if m.get("unit") == "%" and m.get("value") is not None
             and (m.get("seen") is not None or m.get("novel") is not None)]
    if not shown:
        return None
    return ChartGroup("Seen vs novel compositions",
                      "each metric for the test prompts whose every pair occurs in training (seen) and for "
                      "those holding a pair never together in training (novel), %",
                      [_bar_label(m["metric"]) for m in shown],
                      {"seen": [m.get("seen") for m in shown], "novel": [m.get("novel") for m in shown]})


def _bar_label(title: str) -> str:
    """A metric's title short enough for a bar's label (the table has the whole title)."""
    short = title.split(" (")[0]
    return short.removeprefix("Scene ") if len(short) > 22 else short


SCENES_CSS = (".scene-prompt{border-left:4px solid #c9d0de;padding-left:.8rem;margin:1.4rem 0}"
              ".scene-prompt .prompt{margin:.4rem 0}.verdict ul,.paper ul{margin:.2rem 0}")


def _paper_html(n: SceneNote) -> str:
    kind = ("<span class='no'>novel</span>: " + html.escape("; ".join(n.held_out)) + " never together in training"
            if n.composition == "novel" else "seen: every pair in it occurs in training")
    changes = ("<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in n.changes) + "</ul>" if n.changes
               else " (no word changed)")
    return (f"<div class='paper muted'>first written as “{html.escape(n.paper)}”{changes}"
            f"<div>composition {kind}</div></div>")


def _verdict_html(n: SceneNote) -> str:
    found = html.escape("; ".join(n.found)) if n.found else "nothing"
    checks = "".join(f"<li class='{'ok' if ok else 'no'}'>{html.escape(what)} {'✓' if ok else '✗'}</li>"
                     for what, ok in n.checks)
    hits = sum(ok for _, ok in n.checks)
    overall = (f"<span class='ok'>right</span> (all {len(n.checks)} statements)" if n.right else
               f"<span class='no'>wrong</span> ({hits} of {len(n.checks)} statements right)")
    return (f"<div class='think verdict'><strong>The judge</strong> finds: {found}. Against the prompt: "
            f"{overall}<ul>{checks}</ul></div>")


def scenes_html(sc: SceneSection) -> str:
    """The scenes part: each prompt (its origin, stages, attention, caption, the judge's verdict),
    then the seen/novel chart and table, then how it was made."""
    s = sc.section
    parts = [f"<style>{SCENES_CSS}</style><section id='{html.escape(s.key)}'><h2>{html.escape(s.title)}</h2>",
             f"<p>{html.escape(s.summary)}</p>"]
    parts += [f"<p class='muted remark'>{html.escape(r)}</p>" for r in sc.remarks]
    if s.prompts:
        parts.append("<h3>Prompts</h3><p class='muted'>Each sentence as first written and as asked for, "
                     "every stage, the attention of its object and place words, what the captioner reads in "
                     "the top-stage image, and what the judge finds in it.</p>")
        for i, (p, n) in enumerate(zip(s.prompts, sc.notes)):
            parts.append(f"<div class='scene-prompt'>{_paper_html(n)}{_prompt_html(p, s.key, i)}"
                         f"{_verdict_html(n)}</div>")
    if s.metrics:
        chart = seen_novel_chart(s.metrics)
        parts.append("<h3>Seen vs novel compositions</h3>")
        if chart is not None:
            parts.append(f"<div class='charts'><figure><figcaption><strong>{html.escape(chart.title)}</strong>: "
                         f"{html.escape(chart.note)}</figcaption>{bar_chart_svg(chart)}</figure></div>")
        parts.append(_table(seen_novel_rows(s.metrics), "metrics seen-novel"))
    parts.append("</section>")
    return "\n".join(parts) + _section_details_html(s)


def scenes_json(sc: SceneSection) -> dict[str, Any]:
    """The scenes part as report.json holds a section, with each prompt's note and the remarks."""
    out = report_json(Report("", "", [sc.section]))["sections"][0]
    for p, n in zip(out["prompts"], sc.notes):
        p.update(paper=n.paper, changes=n.changes, composition=n.composition, held_out=n.held_out,
                 found=n.found, checks=[[what, ok] for what, ok in n.checks], right=n.right)
    out["remarks"] = sc.remarks
    return out


def write_report(r: Report, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    path = out_dir / "report.html"
    atomic_write_bytes(path, render_html(r).encode("utf-8"))
    atomic_write_bytes(out_dir / "report.json", json.dumps(report_json(r), indent=2).encode("utf-8"))
    return path


def line_plot(series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str) -> bytes:
    """PNG of several (x, y) curves (matplotlib, headless)."""
    # Imported here: matplotlib is slow to load and only the plots need it.
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
