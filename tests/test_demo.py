"""`attngan demo` at a tiny size: the report's structure, reuse, determinism; not quality.

Every fixture is made here: a 150-image SynthBirds set, an evaluation DAMSM trained one epoch on
it, an oracle trained a few epochs, and a randomly initialised three-stage "shipped" model; for
the scenes part, a randomly initialised two-stage scenes model and scenes captioner (the judge is
the shipped one).
"""

from __future__ import annotations

import base64
import html
import io
import json
import multiprocessing
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

DATA = {"images": 150, "classes": 12, "size": 64}
OWN = {"damsm_epochs": 1, "kimg": 0.064}  # two AttnGAN steps of 32 images
NUM_EVAL = 32
SCENES_PER_SPLIT = 3  # test prompts of each kind: a 30-image SynthScenes set at 64 px
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from attngan.data.synth_birds import generate_synth_birds

    return generate_synth_birds(tmp_path_factory.mktemp("synth") / "birds", seed=0, progress=False, **DATA)


@pytest.fixture(scope="module")
def eval_damsm(synth, tmp_path_factory) -> Path:
    from attngan.apps.demo.settings import demo_config
    from attngan.training.damsm_loop import train_damsm

    out = tmp_path_factory.mktemp("eval_damsm") / "damsm_eval"
    train_damsm(demo_config(seed=1), synth, out, device="cpu", max_epochs=1, progress=False, eval_items=64)
    return out


@pytest.fixture(scope="module")
def oracle(synth, tmp_path_factory) -> Path:
    from attngan.training.oracle_loop import train_oracle

    out = tmp_path_factory.mktemp("oracle") / "oracle"
    train_oracle(synth, out, minutes=0, max_epochs=3, width=16, batch=16, seed=0, progress=False, device="cpu")
    return out


@pytest.fixture(scope="module")
def shipped(synth, tmp_path_factory) -> Path:
    """A random 32 -> 64 -> 128 px model whose card, like the tiny bundle's, names no data or eval."""
    from attngan.config import preset
    from attngan.networks import build_generator, build_image_encoder, build_text_encoder
    from attngan.data.vocab import load_vocab
    from attngan.io import save_model_folder

    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.data.branch_num = 3
    vocab = load_vocab(synth)
    out = tmp_path_factory.mktemp("shipped") / "three-stage"
    save_model_folder(out, cfg, vocab, build_generator(cfg, cfg.text.embedding_dim),
                      build_text_encoder(cfg, len(vocab)), build_image_encoder(cfg),
                      extra={"model_card": {"name": "three-stage-test"}})
    return out


@pytest.fixture(scope="module")
def scenes_model(tmp_path_factory) -> Path:
    """A random two-stage scenes model over SynthScenes' vocabulary; its card names 64 px data."""
    from attngan.config import preset
    from attngan.data.scene_captions import VOCABULARY
    from attngan.io import save_model_folder
    from attngan.networks import build_generator, build_image_encoder, build_text_encoder
    from attngan.text import Vocabulary

    torch.manual_seed(0)
    cfg = preset("coco-tiny")
    vocab = Vocabulary(["<end>", *VOCABULARY])
    out = tmp_path_factory.mktemp("scenes_model") / "two-stage"
    save_model_folder(out, cfg, vocab, build_generator(cfg, cfg.text.embedding_dim),
                      build_text_encoder(cfg, len(vocab)), build_image_encoder(cfg),
                      extra={"model_card": {"name": "scenes-test", "data": {"size": 64, "seed": 0}}})
    return out


@pytest.fixture(scope="module")
def scenes_captioner(tmp_path_factory) -> Path:
    """A random small captioner over SynthScenes' vocabulary (its captions are arbitrary words)."""
    from attngan.captioner import captioner_vocabulary, save_captioner_folder
    from attngan.config import load_captioner_config
    from attngan.data.scene_captions import VOCABULARY
    from attngan.networks.captioner import build_captioner

    cfg = load_captioner_config("captioner", {"width": 8, "embed_dim": 32, "hidden_dim": 64, "attention_dim": 32,
                                              "dropout": 0.0, "max_len": 12})
    vocab = captioner_vocabulary(["<end>", *VOCABULARY])
    torch.manual_seed(0)
    return save_captioner_folder(tmp_path_factory.mktemp("scenes_captioner") / "captioner", cfg, vocab,
                                 build_captioner(cfg, len(vocab)).eval())


def _run(out, shipped, eval_damsm, oracle, scenes_model, scenes_captioner):
    from attngan.apps.demo.app import run_demo

    return run_demo(out, device="cpu", seed=0, model_dir=shipped, eval_damsm_dir=eval_damsm, oracle_dir=oracle,
                    num_eval=NUM_EVAL, progress=False, scenes_model_dir=scenes_model,
                    scenes_captioner_dir=scenes_captioner, scenes_per_split=SCENES_PER_SPLIT, **DATA, **OWN)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory, shipped, eval_damsm, oracle, scenes_model, scenes_captioner) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    _run(out, shipped, eval_damsm, oracle, scenes_model, scenes_captioner)
    return out


def _images(html: str) -> list[tuple[str, str, Image.Image]]:
    """(class, alt, decoded PNG) of every <img> of the page."""
    found = []
    for cls, alt, src in re.findall(r'<img class="([^"]*)" alt="([^"]*)"[^>]* src="([^"]+)"', html):
        assert src.startswith("data:image/png;base64,")
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        im.load()
        assert im.format == "PNG"
        found.append((cls, alt, im))
    return found


def test_card_settings_fall_back_to_the_synthbirds_defaults(shipped, tmp_path):
    from attngan.model_card import DEFAULT_DATA, DEFAULT_EVAL, card_settings

    name, data, ev = card_settings(shipped)
    assert name == "three-stage-test" and data == DEFAULT_DATA
    assert data == {"images": 11788, "classes": 884, "size": 256, "seed": 0}
    assert ev["num_images"] == 400 and ev["seed"] == 0 and ev["metrics"] == DEFAULT_EVAL["metrics"]
    other = tmp_path / "carded"
    shutil.copytree(shipped, other)
    meta = json.loads((other / "config.json").read_text())
    meta["model_card"] = {"name": "synthbirds-128", "data": {"images": 500, "classes": 40, "size": 128, "seed": 2},
                          "eval": {"num_images": 64, "seed": 3, "metrics": ["binding"]}}
    (other / "config.json").write_text(json.dumps(meta))
    assert card_settings(other) == ("synthbirds-128", {"images": 500, "classes": 40, "size": 128, "seed": 2},
                                    {"num_images": 64, "seed": 3, "splits": 10, "metrics": ["binding"]})


def test_card_settings_read_a_bundled_name_through_io_and_refuse_a_non_model(tmp_path):
    from attngan.errors import AttnGANError
    from attngan.io import bundled_dir
    from attngan.model_card import card_settings

    name, _, ev = card_settings("synthbirds-tiny")
    assert name == "synthbirds-tiny" and ev["num_images"] > 0
    assert card_settings(None) == card_settings(bundled_dir("generator"))  # the default bundled model
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(AttnGANError, match="config"):
        card_settings(tmp_path)


def test_exported_bundle_card_names_its_data_and_evaluation(tiny_model_dir, tmp_path):
    from attngan.model_card import card_settings, export_bundle

    data = {"images": 11788, "classes": 884, "size": 256, "seed": 0}
    ev = {"num_images": 400, "seed": 0, "splits": 10, "metrics": ["r_precision", "binding"]}
    folder = export_bundle(tiny_model_dir, tmp_path / "bundle", [{"name": "binding", "value": 50.0}],
                           ["attngan synth-birds"], 0, {"total": 1.0}, name="synthbirds-128", data=data,
                           eval_settings=ev)
    card = json.loads((folder / "config.json").read_text())["model_card"]
    assert card["name"] == "synthbirds-128" and card["data"] == data
    assert card["eval"] == {"num_images": 400, "seed": 0, "metrics": ["r_precision", "binding"]}
    assert card_settings(folder) == ("synthbirds-128", data, ev)


def test_cli_says_the_demo_is_budgeted_in_work(capsys):
    from attngan.cli import main

    assert main(["demo", "--minutes", "5"]) == 2
    assert "--damsm-epochs and --kimg" in capsys.readouterr().err


@pytest.mark.parametrize("args, says", [(["--seed", str(2**70)], "--seed"), (["--out", "afile/sub"], "is a file")])
def test_demo_rejects_a_bad_seed_or_output_before_any_work(args, says, capsys, tmp_path, monkeypatch):
    from attngan.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["demo", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing rendered or written


def test_missing_shipped_eval_pieces_are_a_clear_error(monkeypatch, tmp_path):
    from attngan import io
    from attngan.apps.demo.pieces import bundled_eval_dirs
    from attngan.errors import AttnGANError

    monkeypatch.setattr(io, "ASSETS", tmp_path / "nowhere")
    with pytest.raises(AttnGANError, match="evaluation DAMSM.*oracle.*--eval-damsm"):
        bundled_eval_dirs()


def test_report_has_both_parts_every_prompt_stage_and_attention(demo_out):
    from attngan.data.synth_captions import caption_attributes
    from attngan.apps.demo.settings import MORE_PROMPTS, PROMPTS

    prompts = PROMPTS + MORE_PROMPTS
    html = (demo_out / "report.html").read_text(encoding="utf-8")
    assert "id='shipped'" in html and "id='own'" in html
    assert "http://" not in html and "https://" not in html  # opens offline
    html = html.split("id='scenes'")[0]  # the scenes part, after both sections, is tested below
    shipped_html, own_html = html.split("id='own'")
    for prompt in prompts:
        assert prompt in shipped_html and prompt in own_html
    for heading in ("Metrics", "Prompts", "Training", "Timings", "Reproduce", "What the model sees", "I think it"):
        assert heading in own_html, heading

    report = json.loads((demo_out / "report.json").read_text())
    shipped, own = report["sections"]
    assert (shipped["key"], own["key"]) == ("shipped", "own")
    for section, sizes in ((shipped, [32, 64, 128]), (own, [32, 64])):
        assert [p["caption"] for p in section["prompts"]] == prompts
        for p in section["prompts"]:
            assert p["stages"] == [f"stage {i + 1} · {s}×{s} px" for i, s in enumerate(sizes)]
            assert len(p["attention"]) == len(sizes) - 1  # every attentional stage
            assert [a.split(" (")[0] for a in p["attention"]] == [
                f"word attention at stage {i + 1}" for i in range(1, len(sizes))]
            assert len(p["retrieved"]) == 3
            # The bundled captioner's reading of the top image, and which prompted attributes it names.
            assert p["captioned"] and set(p["attributes_back"]) == set(caption_attributes(p["caption"]))
        names = {m["name"] for m in section["metrics"]}
        assert {"r_precision", "binding", "attention_colour", "is", "fid_oracle", "roundtrip"} <= names
        assert all(m["n"] == NUM_EVAL for m in section["metrics"] if m["value"] is not None)
        # Localisation measures a DAMSM on real images, not the generator: not in the table.
        assert "localisation" not in names
    assert set(own["plots"]) >= {"DAMSM losses"}
    assert {"data", "evaluation", "prompts"} <= set(shipped["timings"])
    assert {"damsm", "attngan", "evaluation", "prompts"} <= set(own["timings"])

    # The commands that reproduce each part: data and evaluation; then DAMSM, AttnGAN, evaluation,
    # all counted in work (epochs, kimg), never in minutes.
    assert shipped["commands"][0].startswith("attngan synth-birds --out ")
    assert "--images 150 --classes 12 --size 64 --seed 0" in shipped["commands"][0]
    assert shipped["commands"][1].startswith("attngan eval --model ")
    assert [c.split(" --")[0] for c in own["commands"]] == ["attngan train-damsm", "attngan train", "attngan eval"]
    assert "localisation" not in " ".join(shipped["commands"] + own["commands"])
    assert "--epochs 1 --minutes 0" in own["commands"][0] and "--kimg 0.064 --minutes 0" in own["commands"][1]

    # Every image decodes; each stage image holds that stage's true pixels and says so.
    images = _images(html)  # (the birds' half of the page)
    stage_imgs = [(alt, im) for cls, alt, im in images if cls.startswith("stage")]
    assert len(stage_imgs) == len(prompts) * (3 + 2)
    for alt, im in stage_imgs:
        w, h = map(int, re.search(r"(\d+)×(\d+) px", alt).groups())
        assert im.size == (w, h)
    assert sum(cls == "attention" for cls, _, _ in images) == len(prompts) * (2 + 1)
    for sub in ("data/synth_birds.json", "own/damsm/best", "own/attngan/model/config.json",
                "shipped/demo_eval.json", "own/demo_eval.json"):
        assert (demo_out / sub).exists(), sub


def test_a_second_run_reuses_every_piece_and_says_so(demo_out, tmp_path, shipped, eval_damsm, oracle,
                                                     scenes_model, scenes_captioner):
    again = tmp_path / "again"
    shutil.copytree(demo_out, again)
    _run(again, shipped, eval_damsm, oracle, scenes_model, scenes_captioner)
    first = json.loads((demo_out / "report.json").read_text())
    report = json.loads((again / "report.json").read_text())
    for before, section in zip(first["sections"], report["sections"]):
        assert section["commands"] and all(c.startswith("# ") and "reused" in c for c in section["commands"])
        assert section["metrics"] == before["metrics"]
        assert all(v >= 0 for v in section["timings"].values())
    shipped_cmds, own_cmds = (s["commands"] for s in report["sections"])
    assert shipped_cmds[0].startswith(f"# {again / 'data'}: already rendered")
    for sub in ("damsm", "attngan"):
        assert any(c.startswith(f"# {again / 'own' / sub}: already trained") for c in own_cmds), sub
    scenes = report["scenes"]
    assert [c.split(":")[0] for c in scenes["commands"]] == [f"# {again / 'scenes' / 'data'}",
                                                             f"# {again / 'scenes' / 'demo_scenes_eval.json'}"]
    assert all("reused" in c for c in scenes["commands"]) and scenes["metrics"] == first["scenes"]["metrics"]


def _spin() -> None:
    while True:
        pass


def test_training_part_is_deterministic_under_contention(synth, eval_damsm, oracle, tmp_path):
    from attngan.apps.demo.pieces import digest, train_your_own
    from attngan.model_card import DEFAULT_EVAL

    ev = dict(DEFAULT_EVAL, num_images=NUM_EVAL)
    kw = dict(seed=0, ev=ev, device="cpu", progress=False, **OWN)
    idle = train_your_own(tmp_path / "idle", synth, eval_damsm, oracle, **kw)
    # Two busy loops compete for the (two) cores while the same run repeats.
    ctx = multiprocessing.get_context("fork")
    spinners = [ctx.Process(target=_spin, daemon=True) for _ in range(2)]
    for p in spinners:
        p.start()
    try:
        busy = train_your_own(tmp_path / "busy", synth, eval_damsm, oracle, **kw)
    finally:
        for p in spinners:
            p.kill()
            p.join()
    assert digest(idle["model_dir"]) == digest(busy["model_dir"])  # the same weights, bit for bit
    assert len(idle["metrics"]) == len(busy["metrics"]) >= 5
    for a, b in zip(idle["metrics"], busy["metrics"]):
        assert a["name"] == b["name"]
        for key in ("value", "std", "per_attribute", "swap_rate"):
            assert _close(a.get(key), b.get(key)), (a["name"], key, a.get(key), b.get(key))


def _close(a, b, tol: float = 1e-6, rel: float = 0.0) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol, rel) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= max(tol, rel * max(abs(a), abs(b))) or (a != a and b != b)
    return a == b


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
def test_report_renders_at_1400_px_without_horizontal_scrolling(demo_out):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        # A page of several MB of embedded images: a busy machine takes longer than the default 30 s.
        page.goto((demo_out / "report.html").resolve().as_uri(), timeout=180_000)
        page.wait_for_function("() => [...document.images].every(im => im.complete)", timeout=180_000)
        widths = page.eval_on_selector_all("img", "ims => ims.map(im => im.naturalWidth)")
        scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
        top = page.eval_on_selector_all("#shipped img.stage-top",
                                        "ims => ims.map(im => im.getBoundingClientRect().width)")
        browser.close()
    assert widths and all(w > 0 for w in widths)
    assert scroll_width <= 1400
    assert len(top) == 6 and all(w >= 192 for w in top), top
    assert all(r.startswith(("file:", "data:")) for r in requests), requests


# The scenes part.

def test_scene_prompts_use_synthscenes_words_and_say_what_they_replaced():
    import re as _re

    from attngan.apps.demo.settings import SCENE_PROMPTS
    from attngan.data.scene_captions import VOCABULARY, parse_scene_caption

    assert len(SCENE_PROMPTS) == 5
    for paper, asked, changes in SCENE_PROMPTS:
        words = _re.findall(r"[a-z]+", asked.lower())
        assert set(words) <= set(VOCABULARY), (asked, set(words) - set(VOCABULARY))
        assert parse_scene_caption(asked)["objects"], asked
        # Every word of the paper's sentence that SynthScenes lacks is named in a change, with its reason.
        missing = set(_re.findall(r"[a-z]+", paper.lower())) - set(VOCABULARY)
        assert bool(missing) == bool(changes) == (paper != asked), paper
        for word in missing:
            assert any(word in c.lower() and ":" in c for c in changes), (paper, word)


def test_judge_verdict_and_caption_statements_on_known_readings():
    from attngan.apps.demo.scenes import held_out_words, judge_verdict, statements_back
    from attngan.metrics.scenes import bundled_judge_dir, prompt_requests
    from attngan.networks.scene_judge import load_judge

    cfg = load_judge(bundled_judge_dir()).cfg
    bus, kite = cfg.categories.index("bus"), cfg.categories.index("kite")
    count = torch.zeros(len(cfg.categories), dtype=torch.long)
    count[bus], count[kite] = 1, 2
    colour = torch.zeros(len(cfg.categories), dtype=torch.long)
    colour[bus], colour[kite] = cfg.colours.index("red"), cfg.colours.index("blue")
    sky = torch.zeros(len(cfg.categories))
    sky[kite] = 0.9
    reading = {"background": torch.tensor(cfg.backgrounds.index("lake")), "count": count, "colour": colour, "sky": sky}
    request = prompt_requests(["A red bus is floating on a lake"])[0]
    assert request["composition"] == "novel" and held_out_words(request) == ["a bus on the lake"]
    found, checks = judge_verdict(request, reading, cfg)
    assert found == ["background: lake", "1 red bus on the ground", "2 blue kites in the sky"]
    assert checks == [("bus: there", True), ("bus: red", True), ("bus: exactly 1", True), ("bus: on the ground", True),
                      ("background: lake", True)]
    colour[bus] = cfg.colours.index("pink")
    sky[bus] = 0.8
    _, checks = judge_verdict(request, reading, cfg)
    assert [c for c, ok in checks if not ok] == ["bus: red", "bus: on the ground"]
    herd = prompt_requests(["A herd of cows grazing on the grass"])[0]
    _, checks = judge_verdict(herd, reading, cfg)
    assert checks == [("cow: there", False), ("cow: on the ground", False), ("background: grass", False)]
    assert statements_back(request, "a red bus on the street") == {
        "bus": True, "red bus": True, "bus on the lake": False, "background: lake": False}
    assert statements_back(request, None) == {}


def test_seen_novel_rows_show_both_kinds_chance_and_the_ratio():
    from attngan.report import seen_novel_chart, seen_novel_rows

    metrics = [
        {"metric": "Composition", "name": "composition", "value": 30.0, "std": None, "seen": 40.0, "novel": 20.0,
         "n_seen": 5, "n_novel": 5, "chance": {"all": 1.0, "seen": 2.0, "novel": 0.0}, "novel_seen_ratio": 0.5,
         "unit": "%", "higher_is_better": True},
        {"metric": "FID (judge features)", "name": "fid_judge", "value": 61.5, "std": None, "seen": 70.0,
         "novel": 80.25, "n_seen": 5, "n_novel": 5, "unit": "", "higher_is_better": False},
        {"metric": "Scene objects", "name": "scene_objects", "value": None, "std": None, "void": True,
         "note": "void: the judge is below its bars", "unit": "%"},
    ]
    rows = seen_novel_rows(metrics)
    assert rows[0] == {"metric": "Composition", "all": "30.0%", "seen": "40.0%", "novel": "20.0%",
                       "chance seen / novel": "2.0% / 0.0%", "scored seen / novel": "5 / 5"}
    assert rows[1]["metric"].strip().startswith("novel / seen") and rows[1]["all"] == "0.50"
    assert rows[2]["metric"] == "FID (judge features) (lower is better)" and rows[2]["novel"] == "80.25"
    assert rows[3]["all"] == "void" and "below its bars" in rows[3]["scored seen / novel"]
    chart = seen_novel_chart(metrics)
    assert chart.labels == ["Composition"] and chart.values == {"seen": [40.0], "novel": [20.0]}


def test_report_has_the_scenes_part(demo_out, scenes_model):
    from attngan.apps.demo.settings import SCENE_METRICS, SCENE_PROMPTS
    from attngan.report import seen_novel_rows

    page = (demo_out / "report.html").read_text(encoding="utf-8")
    scenes_html = page.split("<section id='scenes'>")[1]
    for paper, asked, changes in SCENE_PROMPTS:
        assert f"“{html.escape(paper)}”" in scenes_html and f"“{html.escape(asked)}”" in scenes_html
        for change in changes:
            assert html.escape(change) in scenes_html
    assert scenes_html.count("I think it") == len(SCENE_PROMPTS)  # the captioner's line, each prompt
    assert scenes_html.count("<strong>The judge</strong> finds: background: ") == len(SCENE_PROMPTS)
    assert "Seen vs novel compositions" in scenes_html and "<th>seen</th><th>novel</th>" in scenes_html
    assert html.escape("R-precision's encoders: ") in scenes_html  # which DAMSM scored it, as it says

    report = json.loads((demo_out / "report.json").read_text())
    scenes = report["scenes"]
    assert scenes["key"] == "scenes" and scenes["remarks"] == []
    assert [p["paper"] for p in scenes["prompts"]] == [p for p, _, _ in SCENE_PROMPTS]
    for p in scenes["prompts"]:
        # Every stage of the model (two here: nothing assumes a number), each attentional stage's
        # maps of the object and place words, the caption, and the verdict's checks.
        assert p["stages"] == ["stage 1 · 32×32 px", "stage 2 · 64×64 px"]
        assert len(p["attention"]) == 1 and p["attention"][0].endswith("object and place words")
        assert p["captioned"] and p["checks"] and p["found"][0].startswith("background: ")
        assert p["right"] == all(ok for _, ok in p["checks"])
    assert [p["composition"] for p in scenes["prompts"]] == ["novel", "novel", "seen", "seen", "seen"]
    assert {m["name"] for m in scenes["metrics"]} == set(SCENE_METRICS)
    for m in scenes["metrics"]:
        assert (m["n_seen"], m["n_novel"]) == (SCENES_PER_SPLIT, SCENES_PER_SPLIT) or m["name"] in (
            "scene_objects", "scene_colour", "scene_count"), m["name"]  # those score each object
    # The round trip through the scenes captioner has a row of numbers: all, seen, novel and chance.
    roundtrip = next(m for m in scenes["metrics"] if m["name"] == "roundtrip")
    assert all(isinstance(roundtrip[k], float) for k in ("value", "seen", "novel"))
    assert set(roundtrip["chance"]) == {"all", "seen", "novel"} and roundtrip["real_ceiling"]["images"] > 0
    row = next(r for r in seen_novel_rows(scenes["metrics"]) if r["metric"] == roundtrip["metric"])
    assert all(re.fullmatch(r"\d+\.\d%", row[k]) for k in ("all", "seen", "novel")), row
    assert row["scored seen / novel"] == f"{SCENES_PER_SPLIT} / {SCENES_PER_SPLIT}"
    assert f"<td>{html.escape(roundtrip['metric'])}</td><td>{row['all']}</td>" in scenes_html
    assert scenes["commands"][0].startswith("attngan synth-scenes --out ")
    assert "--images 30 --size 64 --seed 1" in scenes["commands"][0]  # not the training set's seed
    assert scenes["commands"][1].startswith("attngan eval --model ") and "--num-images 6" in scenes["commands"][1]
    assert {"data", "evaluation", "prompts"} <= set(scenes["timings"]) and "scenes" in report["timings"]
    attention = [im for cls, _, im in _images(scenes_html) if cls == "attention"]
    assert len(attention) == len(SCENE_PROMPTS)


def _scenes_json(out, pieces, threads: int):
    from attngan.apps.demo.scenes import scenes_part
    from attngan.report import scenes_json, seen_novel_rows

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        section = scenes_part(out, pieces, seed=0, device="cpu", progress=False)
    finally:
        torch.set_num_threads(before)
    return scenes_json(section), seen_novel_rows(section.section.metrics)


def test_scenes_part_gives_the_same_numbers_with_other_threads_on_a_busy_machine(scenes_model, scenes_captioner,
                                                                                 tmp_path):
    from attngan.apps.demo.scenes import scene_pieces

    pieces = scene_pieces(scenes_model, scenes_captioner, per_split=SCENES_PER_SPLIT)
    idle, idle_rows = _scenes_json(tmp_path / "idle", pieces, threads=1)
    ctx = multiprocessing.get_context("fork")
    spinners = [ctx.Process(target=_spin, daemon=True) for _ in range(2)]
    for p in spinners:
        p.start()
    try:
        busy, busy_rows = _scenes_json(tmp_path / "busy", pieces, threads=2)
    finally:
        for p in spinners:
            p.kill()
            p.join()
    from attngan.apps.demo.settings import SCENE_METRICS

    assert idle_rows == busy_rows  # the table as the report shows it
    assert [m["name"] for m in idle["metrics"]] == [m["name"] for m in busy["metrics"]] == SCENE_METRICS
    for a, b in zip(idle["metrics"], busy["metrics"]):
        assert a.keys() == b.keys() and a["name"] == b["name"]
        for key in a:
            # Other thread counts sum in another order: equal to float rounding.
            assert _close(a[key], b[key], rel=1e-6), (a["name"], key, a[key], b[key])
    for a, b in zip(idle["prompts"], busy["prompts"]):
        assert {k: a[k] for k in ("captioned", "found", "checks", "tokens")} == {
            k: b[k] for k in ("captioned", "found", "checks", "tokens")}


def test_scenes_part_without_a_captioner_or_a_model_says_so(scenes_model, tmp_path, monkeypatch):
    from attngan import io as attn_io
    from attngan.apps.demo.scenes import scene_pieces, scenes_part
    from attngan.report import scenes_html

    monkeypatch.setattr(attn_io, "ASSETS", tmp_path / "no-assets")  # an installation without them
    pieces = scene_pieces(scenes_model, per_split=1)
    assert pieces.captioner_dir is None and "no “I think it's” line" in pieces.remarks[0]
    section = scenes_part(tmp_path / "out", pieces, device="cpu", progress=False)
    page, remark = scenes_html(section), html.escape(pieces.remarks[0])
    assert remark in page and "I think it" not in page.replace(remark, "")
    assert all(p.captioned is None for p in section.section.prompts) and section.notes[0].checks

    nothing = scene_pieces(per_split=1)
    assert nothing.model_dir is None and not nothing.runs and "--scenes-model" in nothing.remarks[0]
    empty = scenes_part(tmp_path / "none", nothing, device="cpu", progress=False)
    assert not empty.section.prompts and not (tmp_path / "none").exists()
    assert html.escape(nothing.remarks[0]) in scenes_html(empty)


@pytest.mark.parametrize("args, says", [(["--scenes-per-split", "0"], "--scenes-per-split"),
                                        (["--scenes-model", "nowhere"], "nowhere is not a model folder")])
def test_demo_rejects_bad_scenes_options_before_any_work(args, says, capsys, tmp_path, monkeypatch):
    from attngan.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing rendered or written
