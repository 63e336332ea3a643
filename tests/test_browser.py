"""The page in a real browser: Debian's headless Chromium driven through Playwright.

Never downloads a browser (no `playwright install`): it uses /usr/bin/chromium or skips.

Screenshot for the README:
    ATTNGAN_SCREENSHOT=docs/serve-screenshot.png [ATTNGAN_SCREENSHOT_MODEL=MODEL_DIR|bundled] \\
        .venv/bin/python -m pytest -q -m browser tests/test_browser.py -k screenshot
(without ATTNGAN_SCREENSHOT_MODEL the page shows a random-initialised tiny model).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
uvicorn = pytest.importorskip("uvicorn")

from attngan.pipeline import AttnGANPipeline  # noqa: E402
from attngan.serve.app import EXAMPLES, SCENE_EXAMPLES, Served, create_app  # noqa: E402
from helpers import save_random_tiny_model  # noqa: E402

BIRD_EXAMPLES = EXAMPLES["birds"]


class ServerThread:
    """uvicorn on a free loopback port, in a thread of this process."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return AttnGANPipeline.from_pretrained(save_random_tiny_model(tmp_path_factory.mktemp("browser") / "tiny"),
                                           device="cpu")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _loaded_sizes(page, selector: str) -> list[int]:
    """naturalWidth of every matching image, once each has finished loading."""
    page.wait_for_function(
        "sel => { const ims = [...document.querySelectorAll(sel)];"
        " return ims.length > 0 && ims.every(im => im.complete); }", arg=selector, timeout=30_000)
    return page.eval_on_selector_all(selector, "ims => ims.map(im => im.naturalWidth)")


def test_page_generates_and_shows_stages_and_attention(pipe, browser):
    app = create_app(pipe)
    with ServerThread(app) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requests, problems = [], []
        page.on("request", lambda r: requests.append(r.url))
        # The deliberate 422 below is the only failed load the console may report.
        page.on("console", lambda m: problems.append(m.text)
                if m.type == "error" and "status of 422" not in m.text else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(url)
        page.wait_for_function("() => document.getElementById('model-info').textContent.includes('tiny')")
        assert "32x32" in page.text_content("#model-info")

        caption = "a bird with wings that are blue and a red belly with a purple zzyzx"
        page.fill("#caption", caption)
        page.fill("#seed", "3")
        page.select_option("#n", "2")
        page.click("#generate")
        page.wait_for_selector("img.attention-overlay", timeout=60_000)

        stage_widths = _loaded_sizes(page, "img.stage-image")
        assert stage_widths and all(w > 0 for w in stage_widths)
        assert set(stage_widths) == {32, 64}  # the two stages of the tiny model
        overlay_widths = _loaded_sizes(page, "img.attention-overlay")
        tokens = page.eval_on_selector_all("#tokens .tok", "els => els.map(e => e.textContent)")
        assert len(overlay_widths) == len(tokens) and all(w > 0 for w in overlay_widths)
        labels = page.eval_on_selector_all("#att-grid figure .w", "els => els.map(e => e.textContent)")
        assert labels == tokens == caption.split()[:-2]  # 'purple' and 'zzyzx' are unknown
        dropped = page.eval_on_selector_all("#dropped .tok", "els => els.map(e => e.textContent)")
        assert dropped == ["purple", "zzyzx"]
        assert _loaded_sizes(page, "#final")[0] == 64
        assert page.is_visible("#samples") and page.locator("#samples .thumb").count() == 2
        assert "seed 3" in page.text_content("#meta")
        # Download links carry the PNGs themselves.
        hrefs = page.eval_on_selector_all("a.download", "as => as.map(a => [a.href, a.download])")
        assert hrefs and all(h.startswith("data:image/png;base64,") and d.endswith(".png") for h, d in hrefs)

        # Another sample, then an example prompt (a click generates it).
        first_final = page.get_attribute("#final", "src")
        page.click("#samples .thumb >> nth=1")
        assert page.get_attribute("#final", "src") != first_final
        page.click(f"button.example:has-text('{BIRD_EXAMPLES[2]}')")
        page.wait_for_function("() => document.getElementById('tokens').textContent.includes('yellow')", timeout=60_000)
        assert page.input_value("#caption") == BIRD_EXAMPLES[2]
        # One model: no picker.
        assert not page.is_visible("#model")

        # A caption the model cannot read gives a readable error, not a broken page.
        page.fill("#caption", "zzyzx qwerty")
        page.click("#generate")
        page.wait_for_selector("#status.error", timeout=30_000)
        assert "vocabulary" in page.text_content("#status")

        # Nothing was fetched from anywhere but this server.
        assert requests and all(r.startswith(url) or r.startswith("data:") for r in requests), requests
        assert not problems, problems
        page.close()
    app.state.shutdown()


def _texts(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")


def test_page_switches_between_a_bird_and_a_scene_model(pipe, browser, tmp_path_factory):
    from attngan.text import Vocabulary

    words = sorted({w for text in SCENE_EXAMPLES for w in text.split()})
    scenes_dir = save_random_tiny_model(tmp_path_factory.mktemp("browser") / "scenes", seed=1,
                                        vocab=Vocabulary(["<end>", *words]), preset_name="synthscenes-128",
                                        name="scenes-random")
    scenes = AttnGANPipeline.from_pretrained(scenes_dir, device="cpu")
    app = create_app({"tiny": Served(pipe), "scenes-random": Served(scenes, None, "its captioner is not installed")})
    with ServerThread(app) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems = []
        page.on("console", lambda m: problems.append(m.text)
                if m.type == "error" and "status of 422" not in m.text else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(url)
        page.wait_for_function("() => document.querySelectorAll('#model option').length === 2")
        assert page.is_visible("#model") and page.input_value("#model") == "tiny"
        assert _texts(page, "button.example") == list(BIRD_EXAMPLES)
        assert page.text_content("label[for=caption]") == "Describe a bird"

        # The scene model: its examples, its words, its three stages, and why no caption is shown.
        page.select_option("#model", "scenes-random")
        page.wait_for_function("() => document.getElementById('model-info').textContent.includes('scenes-random')")
        assert "128x128" in page.text_content("#model-info")
        assert _texts(page, "button.example") == list(SCENE_EXAMPLES)
        assert page.text_content("label[for=caption]") == "Describe a scene"
        assert page.title() == "AttnGAN · text to scene"
        page.fill("#seed", "1")
        page.select_option("#n", "1")
        page.click(f"button.example:has-text('{SCENE_EXAMPLES[0]}')")
        page.wait_for_function("() => document.getElementById('meta').textContent.startsWith('scenes-random')",
                               timeout=60_000)
        assert _texts(page, "#tokens .tok") == SCENE_EXAMPLES[0].split()
        assert _loaded_sizes(page, "#stages img") == [32, 64, 128]
        assert page.eval_on_selector_all("#att-tabs .tab", "els => els.length") == 2
        assert "its captioner is not installed" in page.text_content("#final-think")
        # A bird sentence to the scene model: the words it lacks are named; none known is an error.
        page.fill("#caption", "a red bus with wings")
        page.click("#generate")
        page.wait_for_function("() => document.getElementById('dropped').textContent.includes('wings')",
                               timeout=60_000)
        assert _texts(page, "#dropped .tok") == ["with", "wings"]
        page.fill("#caption", "wings belly")
        page.click("#generate")
        page.wait_for_selector("#status.error", timeout=30_000)
        assert "'caption' for scenes-random" in page.text_content("#status")
        assert "vocabulary" in page.text_content("#status")

        # Back to the bird model: its examples, and its own two stages.
        page.select_option("#model", "tiny")
        assert _texts(page, "button.example") == list(BIRD_EXAMPLES)
        page.fill("#caption", "a red bird")
        page.click("#generate")
        page.wait_for_function("() => document.getElementById('meta').textContent.startsWith('tiny')",
                               timeout=60_000)
        assert _loaded_sizes(page, "#stages img") == [32, 64]
        assert page.is_hidden("#final-think")
        assert not problems, problems
        page.close()
    app.state.shutdown()


@pytest.mark.skipif(not os.environ.get("ATTNGAN_SCREENSHOT"), reason="set ATTNGAN_SCREENSHOT=path to save one")
def test_screenshot(pipe, browser):
    out = Path(os.environ["ATTNGAN_SCREENSHOT"])
    model = os.environ.get("ATTNGAN_SCREENSHOT_MODEL")
    models = pipe
    if model:  # "bundled": the shipped models and captioners, as `attngan serve` shows them
        from attngan.commands.serve import load_models

        models = load_models(None if model == "bundled" else [model], None, False, "cpu")
    app = create_app(models)
    with ServerThread(app) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        page.goto(url)
        page.wait_for_function("() => document.getElementById('model-info').textContent.length > 20")
        page.fill("#seed", "0")
        page.select_option("#n", "4")
        page.click(f"button.example:has-text('{BIRD_EXAMPLES[0]}')")
        page.wait_for_selector("img.attention-overlay", timeout=60_000)
        _loaded_sizes(page, "img.attention-overlay")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp.png")
        page.screenshot(path=str(tmp), full_page=True)
        os.replace(tmp, out)
        page.close()
    app.state.shutdown()
    assert out.stat().st_size > 10_000
