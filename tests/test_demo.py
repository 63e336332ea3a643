"""`attngan demo` at a tiny budget: checks the report's structure, not its quality."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    from attngan.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "run"
    run_demo(out, minutes=0.4, device="cpu", seed=0, images=150, progress=False)
    return out


def test_report_structure(demo_out):
    from attngan.demo import MORE_PROMPTS, PROMPTS

    html = (demo_out / "report.html").read_text(encoding="utf-8")
    for prompt in PROMPTS + MORE_PROMPTS:
        assert prompt in html
    # Every image is embedded (opens offline) and decodes as a PNG.
    srcs = re.findall(r'src="([^"]+)"', html)
    assert len(srcs) >= 3 * len(PROMPTS)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        im = Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1])))
        im.verify()
        assert im.format == "PNG"
    assert "http://" not in html and "https://" not in html
    for heading in ("Metrics", "Training", "Timings", "Reproduce", "I think it"):
        assert heading in html
    report = json.loads((demo_out / "report.json").read_text())
    names = {m.get("name") for m in report["metrics"]}
    assert {"r_precision", "binding"} <= names
    assert len(report["prompts"]) == len(PROMPTS + MORE_PROMPTS)
    assert all(len(p["retrieved"]) == 3 for p in report["prompts"])
    assert "attngan train --config tiny" in "\n".join(report["commands"])
    # The trained pieces are cached for the next run.
    for sub in ("data/synth_birds.json", "damsm/best", "damsm_eval/best", "attngan/model", "oracle/config.json"):
        assert (demo_out / sub).exists(), sub


def test_a_second_run_reuses_every_piece_and_says_so(demo_out, tmp_path):
    from attngan.demo import run_demo

    again = tmp_path / "again"
    shutil.copytree(demo_out, again)
    run_demo(again, minutes=0.4, device="cpu", seed=0, images=150, progress=False)
    report = json.loads((again / "report.json").read_text())
    commands = report["commands"]
    manifest = json.loads((again / "data" / "synth_birds.json").read_text())
    assert f"--classes {manifest['counts']['classes']} --size {manifest['size']}" in commands[0]
    for sub in ("damsm", "damsm_eval", "attngan", "oracle"):
        assert any(c.startswith(f"# {again / sub}: already trained, reused") for c in commands), sub
    assert not any(c.startswith("attngan train") for c in commands)
    assert all(v >= 0 for v in report["timings"].values())


@pytest.mark.browser
def test_report_renders_in_chromium(demo_out):
    if not shutil.which("chromium") and not shutil.os.path.exists("/usr/bin/chromium"):
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        page.goto((demo_out / "report.html").resolve().as_uri())
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
        browser.close()
    assert widths and all(w > 0 for w in widths)
