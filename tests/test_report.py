"""The demo report's presentation: heat maps of word attention, bar charts of the numbers, and a
page that opens on pictures (checked in Chromium on a report built from a random tiny model).

Screenshot of the first screen for the README (the two bundled models, no training):
    ATTNGAN_REPORT_SCREENSHOT=docs/demo-report.png .venv/bin/python -m pytest -q -m browser \\
        tests/test_report.py -k screenshot
"""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CHROMIUM = "/usr/bin/chromium"


def test_one_hot_attention_lights_its_cell_and_dims_the_rest():
    from attngan.viz import attention_overlay, dimmed

    image = Image.new("RGB", (64, 64), (40, 160, 220))
    att = torch.zeros(4, 4)
    att[1, 2] = 1.0  # rows 16..31, columns 32..47 once upsampled
    out = np.asarray(attention_overlay(image, att), np.float32)
    back = dimmed(image)
    assert back.max() < np.asarray(image, np.float32).max() * 0.5  # the background is dimmed
    lift = (out - back).sum(-1)
    hot = np.argwhere(lift > 150)
    assert len(hot) > 20
    assert hot[:, 0].min() >= 16 and hot[:, 0].max() <= 31 and hot[:, 1].min() >= 32 and hot[:, 1].max() <= 47
    assert lift[23:25, 39:41].min() > 300  # the cell's centre glows brightest
    # Bilinear upsampling spreads the cell half a cell further; beyond that the image is only dimmed.
    far = np.ones((64, 64), bool)
    far[8:40, 24:56] = False
    assert np.abs(out[far] - back[far]).max() <= 0.5
    # The same renderer at another size and with the entry elsewhere moves the light with it.
    att2 = torch.zeros(8, 8)
    att2[7, 0] = 1.0
    lift2 = (np.asarray(attention_overlay(image, att2), np.float32) - back).sum(-1)
    hot2 = np.argwhere(lift2 > 150)
    assert hot2[:, 0].min() >= 56 and hot2[:, 1].max() <= 7


def test_a_captions_words_share_one_heat_scale():
    from attngan.viz import _HEAT_STOPS, attention_overlay, attention_overlays, dimmed

    image = Image.new("RGB", (64, 64), (40, 160, 220))
    back = dimmed(image)
    assert back[0, 0] == pytest.approx([36.0, 60.0, 72.0])  # half desaturated (mean 140), at 0.4
    att = torch.zeros(3, 4, 4)
    att[0, 1, 2] = 1.0     # a word that drew one region
    att[1] = 1 / 16        # a word spread evenly over the image
    att[2, 2, 1] = 0.5     # a word that drew another region, half as strongly
    word, spread, half = (np.asarray(o, np.float32) for o in attention_overlays(image, att))
    # 4 -> 64 px bilinearly: the pixels nearest a cell's centre (23/24) keep 0.96875^2 of it, the
    # peak of all the maps, drawn at the map's top colour and 0.9 opacity over the dimmed image.
    top = 0.1 * back[0, 0] + 0.9 * _HEAT_STOPS[-1]
    assert word[23:25, 39:41].reshape(-1, 3) == pytest.approx(np.tile(top, (4, 1)), abs=0.6)
    # Half the peak on the shared scale: the middle stop at 0.45 opacity (not the top colour, as
    # the same map drawn alone would be).
    mid = 0.55 * back[0, 0] + 0.45 * _HEAT_STOPS[2]
    assert half[39:41, 23:25].reshape(-1, 3) == pytest.approx(np.tile(mid, (4, 1)), abs=0.6)
    alone = np.asarray(attention_overlay(image, att[2]), np.float32)
    assert alone[39:41, 23:25].reshape(-1, 3) == pytest.approx(np.tile(top, (4, 1)), abs=0.6)
    # The even word stays the dimmed image, barely tinted; the others are dimmed away from their cells.
    assert np.abs(spread - back).max() < 12
    assert np.abs(word[48:, :16] - back[48:, :16]).max() <= 0.5
    assert np.abs(half[:16, 48:] - back[:16, 48:]).max() <= 0.5


def test_black_lights_the_wing_and_white_the_belly_in_the_shipped_model():
    """The report's first attention figure, as the demo draws it from the bundled model: the hot
    pixels of "black" lie on the generated bird's black wing, those of "white" on its white belly,
    and no other word of the prompt lights anything."""
    from attngan.apps.demo.settings import MORE_PROMPTS, PROMPTS
    from attngan.pipeline import AttnGANPipeline
    from attngan.viz import attention_overlays, dimmed, to_pil, top_words

    pipe = AttnGANPipeline.from_pretrained("synthbirds-128", device="cpu")
    prompts = PROMPTS + MORE_PROMPTS
    assert prompts[0] == "a bird with wings that are black and a white belly"
    out = pipe(prompts, seed=0)  # the demo's call
    tokens = out.tokens[0]
    black, white = tokens.index("black"), tokens.index("white")
    for k, att in enumerate(out.attention):
        image = to_pil(out.images[len(out.images) - len(out.attention) + k][0])
        rgb = np.asarray(image, np.float32)
        wing = rgb.mean(-1) < 60                                            # the black pixels
        belly = (rgb.mean(-1) > 190) & (rgb.max(-1) - rgb.min(-1) < 50)     # the white ones
        assert wing.mean() > 0.05 and belly.mean() > 0.02
        maps = att[0, :len(tokens)]
        hot = [(np.asarray(o, np.float32) - dimmed(image)).sum(-1) > 200 for o in attention_overlays(image, maps)]
        for i, part, other, share in ((black, wing, belly, 0.7), (white, belly, wing, 0.45)):
            assert hot[i].sum() > 0.004 * hot[i].size, tokens[i]
            assert (hot[i] & part).sum() > share * hot[i].sum(), tokens[i]
            assert (hot[i] & other).sum() < 0.05 * hot[i].sum(), tokens[i]
        assert all(h.mean() < 0.01 for i, h in enumerate(hot) if i not in (black, white))
        assert {black, white} <= set(top_words(maps, len(tokens)))  # and both are framed


def test_top_words_are_the_concentrated_ones_and_the_figure_frames_them():
    from attngan.viz import HIGHLIGHT, top_words, word_attention_figure

    T, tokens = 7, ["a", "bird", "with", "black", "wings", "and", "tail"]
    att = torch.full((T, 8, 8), 1 / 64)
    for i, (r, c) in {1: (0, 0), 3: (4, 4), 4: (6, 2)}.items():
        att[i] = 0.0
        att[i, r, c] = 1.0
    assert top_words(att, T) == [1, 3, 4]  # uniform maps carry no concentrated mass
    fig = word_attention_figure(torch.zeros(3, 32, 32), att, tokens, size=96, ncol=4, highlight=True)
    tile_w, tile_h = 96 + 2, 96 + 18 + 2
    assert fig.size == (4 * tile_w + 2, 2 * tile_h + 2)  # the image and 7 words, 4 to a row
    arr = np.asarray(fig)
    framed = []
    for k in range(T):
        r, c = divmod(k + 1, 4)
        x, y = 2 + c * tile_w, 2 + r * tile_h
        framed.append(tuple(arr[y + 2, x + 90]) == HIGHLIGHT)  # the label bar's colour
    assert framed == [i in (1, 3, 4) for i in range(T)]


def _metrics(wing: float, belly: float, rp: float, void_crown: bool = False) -> list[dict]:
    return [
        {"name": "r_precision", "metric": "R-precision", "value": rp, "std": 2.0, "n": 32,
         "protocol": "top-1 of the true caption vs 99 captions of other classes"},
        {"name": "binding", "metric": "Attribute binding", "value": (wing + belly) / 2, "std": None, "n": 32,
         "protocol": "SynthBirds oracle colour of wing/belly/crown/bill == caption",
         "per_attribute": {"wing": wing, "belly": belly, "crown": None if void_crown else 50.0}},
        {"name": "roundtrip", "metric": "Round trip (caption attributes back)", "value": 40.0, "std": None, "n": 32,
         "protocol": "an independent captioner captions each image " * 6,
         "per_attribute": {"wing": 60.0, "belly": 20.0, "size": 10.0}, "real_ceiling": {"recall": 90.0}},
        {"name": "is", "metric": "Inception Score", "value": 3.5, "std": 0.1, "n": 32, "protocol": "exp(E KL)"},
    ]


def test_charts_group_the_metrics_per_section_and_scale_the_bars():
    from attngan.report import Section, bar_chart_svg, metric_charts

    a = Section("shipped", "The shipped model: m", "", [], _metrics(80.0, 40.0, 25.0), [], {})
    b = Section("own", "Train your own", "", [], _metrics(20.0, 100.0, 50.0, void_crown=True), [], {})
    groups = {g.title: g for g in metric_charts([a, b])}
    assert list(groups) == ["Attribute binding", "R-precision", "Round trip"]
    binding = groups["Attribute binding"]
    assert binding.labels == ["wing colour", "belly colour", "crown colour", "all colours right"]
    assert binding.values == {a.title: [80.0, 40.0, 50.0, 60.0], b.title: [20.0, 100.0, None, 60.0]}
    assert groups["Round trip"].labels == ["wing colour read back", "belly colour read back", "all attributes",
                                           "real images (ceiling)"]
    svg = bar_chart_svg(binding)
    assert svg.startswith("<svg") and "<script" not in svg and "http" not in svg
    widths = [float(w) for w in re.findall(r"<rect x='\d+' y='[\d.]+' width='([\d.]+)' height='\d+' "
                                           r"fill='[^']+'><title>", svg)]
    # Bars in order (wing, belly, crown, all; each section's), their lengths proportional to the
    # values on a 0-100 axis; the void crown of the second section has no bar.
    values = [80.0, 20.0, 40.0, 100.0, 50.0, 60.0, 60.0]
    full = widths[3]  # the 100% bar spans the axis
    assert full > 100 and widths == pytest.approx([full * v / 100 for v in values])
    assert "n/a" in svg
    assert metric_charts([Section("x", "X", "", [], [{"name": "is", "value": 1.0}], [], {})]) == []


def test_any_comparison_charts_and_scales_its_axis_to_the_values():
    from attngan.report import ChartGroup, bar_chart_svg, charts_html

    def bars(svg):
        return [float(w) for w in re.findall(r"width='([\d.]+)' height='\d+' fill='[^']+'><title>", svg)]

    # Seen vs novel compositions: two series that are not sections, a missing value, percentages.
    seen = ChartGroup("Seen vs novel", "objects the judge finds (%)", ["count", "colour"],
                      {"seen": [80.0, 60.0], "novel": [40.0, None]})
    assert seen.axis() == 100.0
    svg = bar_chart_svg(seen)
    assert bars(svg) == pytest.approx([240.0, 120.0, 180.0]) and "n/a" in svg
    assert ">seen</text>" in svg and ">novel</text>" in svg and ">80.0%</text>" in svg  # legend, values
    # Without a scale the axis ends at the first round number above the largest value.
    fid = ChartGroup("FID", "lower is better", ["oracle FID"], {"seen": [31.0], "novel": [47.5]}, unit="", scale=None)
    assert fid.axis() == 50.0
    svg = bar_chart_svg(fid)
    assert bars(svg) == pytest.approx([300 * 31 / 50, 300 * 47.5 / 50]) and ">47.5</text>" in svg
    assert re.findall(r"class='tick'>([\d.]+)<", svg) == ["0", "12.5", "25", "37.5", "50"]
    small = ChartGroup("ratio", "", ["a"], {"x": [0.12], "y": [0.3]}, unit="", scale=None)
    assert small.axis() == pytest.approx(0.5) and ">0.120</text>" in bar_chart_svg(small)
    page = charts_html([seen, fid])
    assert page.startswith("<div class='charts'>") and page.count("<svg class='chart'") == 2
    assert "<strong>Seen vs novel</strong>: objects the judge finds (%)" in page
    assert charts_html([]) == ""


def _report(tmp_path: Path) -> Path:
    """The demo's report for a random tiny model (both parts), with invented numbers."""
    from helpers import save_random_tiny_model

    from attngan.apps.demo.prompts import prompt_results
    from attngan.apps.demo.settings import MORE_PROMPTS, PROMPTS
    from attngan.report import Report, Section, write_report

    model = save_random_tiny_model(tmp_path / "tiny")
    sections = []
    for key, title, seed, m in (("shipped", "The shipped model: tiny", 0, _metrics(80.0, 40.0, 25.0)),
                                ("own", "Train your own", 1, _metrics(20.0, 100.0, 50.0))):
        prompts = prompt_results(model, None, None, "cpu", seed)
        assert [p.caption for p in prompts] == PROMPTS + MORE_PROMPTS and not prompts[0].retrieved
        for p in prompts:
            p.captioned = "a bird with " + " ".join(p.tokens[-3:])
        sections.append(Section(key, title, "a summary " * 40, prompts, m, ["attngan eval --model " + "x" * 300],
                                {"prompts": 1.0}, {"curve": prompts[0].stages[0].png}))
    return write_report(Report("AttnGAN demo", "what this is", sections, {"total": 2.0}), tmp_path / "out")


def test_report_orders_pictures_then_numbers_with_protocols_folded(tmp_path):
    path = _report(tmp_path)
    page = path.read_text(encoding="utf-8")
    order = [page.index(x) for x in ("id='pictures'", "id='shipped'", "id='own'", "id='numbers'",
                                     "id='shipped-details'", "id='own-details'")]
    assert order == sorted(order)
    pictures = page[order[0]:order[1]]
    assert pictures.count('<img class="hero"') == 2 * 6 and pictures.count("I think it's: “a bird with") == 12
    assert page.index("<svg class='chart'") > order[3] and "<script" not in page
    numbers = page[order[3]:order[4]]
    assert numbers.count("<details><summary>protocol</summary>") >= 4
    assert "an independent captioner captions each image" in numbers.split("<details>", 1)[1]


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
def test_report_opens_on_pictures_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    from attngan.apps.demo.settings import ATTENTION_COLUMNS, ATTENTION_TILE_PX

    path = _report(tmp_path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.resolve().as_uri())
        page.wait_for_function("() => [...document.images].every(im => im.complete)", timeout=30_000)
        box = page.eval_on_selector("#pictures img", "im => { const r = im.getBoundingClientRect();"
                                    " return [r.left, r.top, r.width, r.height]; }")
        scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
        wide = page.evaluate("() => [...document.querySelectorAll('body *')]"
                             ".filter(e => e.getBoundingClientRect().right > window.innerWidth).length")
        src = page.get_attribute("#pictures img", "src")
        charts = page.eval_on_selector_all("svg.chart", "ss => ss.map(s => s.getBoundingClientRect().width)")
        heat = page.eval_on_selector_all("img.attention",
                                         "ims => ims.map(im => [im.getBoundingClientRect().width, im.naturalWidth])")
        shot = Image.open(io.BytesIO(page.screenshot()))
        browser.close()
    left, top, width, height = box
    assert top < 900 and top + height <= 900 and width >= 192, box
    assert scroll_width <= 1400 and wide == 0
    assert len(charts) == 3 and all(w > 200 for w in charts)
    # Every word's heat map is shown at its full size (not shrunk to fit), 7 tiles to a row.
    assert len(heat) == 2 * 6 and all(w == n >= ATTENTION_COLUMNS * ATTENTION_TILE_PX for w, n in heat), heat
    assert all(r.startswith(("file:", "data:")) for r in requests), requests
    # The first screen shows the picture itself: the screenshot's pixels there are the image's
    # (the model is untrained, so its image is a near-uniform grey; the page around it is white).
    assert shot.size == (1400, 900)
    region = np.asarray(shot.convert("RGB").crop((int(left) + 2, int(top) + 2, int(left + width) - 2,
                                                  int(top + height) - 2)), np.float32)
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"), np.float32)
    assert np.abs(region.mean((0, 1)) - png.mean((0, 1))).max() < 3
    assert np.asarray(shot.convert("RGB"), np.float32)[890, 5].min() > 250


@pytest.mark.browser
@pytest.mark.skipif(not os.environ.get("ATTNGAN_REPORT_SCREENSHOT"),
                    reason="set ATTNGAN_REPORT_SCREENSHOT=path to save one")
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
def test_report_screenshot(tmp_path):
    """The report's first screen for the README, from the two bundled models and their cards'
    numbers (no training, no data set: the prompts go without retrieval)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    import json

    from attngan.apps.demo.prompts import captioner_folder, prompt_results
    from attngan.pipeline import resolve_model
    from attngan.report import Report, Section, write_report

    out = Path(os.environ["ATTNGAN_REPORT_SCREENSHOT"])
    sections = []
    for name in ("synthbirds-128", "synthbirds-tiny"):
        folder = resolve_model(name)
        card = json.loads((folder / "config.json").read_text(encoding="utf-8"))["model_card"]
        prompts = prompt_results(folder, None, None, "cpu", 0, captioner_folder(None))
        sections.append(Section(name.replace("-", "_"), f"The shipped model: {name}", "", prompts,
                                card.get("metrics") or [], [], {}))
    path = write_report(Report("AttnGAN demo on SynthBirds", "The two bundled models, as the demo report shows "
                               "them.", sections), tmp_path / "report")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
        page.goto(path.resolve().as_uri())
        page.wait_for_function("() => [...document.images].every(im => im.complete)", timeout=30_000)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp.png")
        page.screenshot(path=str(tmp))
        browser.close()
    os.replace(tmp, out)
    assert Image.open(out).size == (1400, 900)
