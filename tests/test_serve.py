"""The web app and JSON API (attngan.serve) against a tiny random-initialised model."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
import httpx  # noqa: E402

with warnings.catch_warnings():  # starlette nudges towards httpx2; httpx is what is installed
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from attngan import cli  # noqa: E402
from attngan.errors import AttnGANError  # noqa: E402
from attngan.pipeline import AttnGANPipeline, PipelineOutput  # noqa: E402
from attngan.serve.app import EXAMPLES, MAX_BODY_BYTES, SCENE_EXAMPLES, Served, create_app  # noqa: E402
from attngan.serve.batching import Job, MicroBatcher  # noqa: E402
from helpers import save_random_tiny_model  # noqa: E402

CAPTION = "a bird with wings that are black and a white belly"
BIRD_EXAMPLES = EXAMPLES["birds"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return save_random_tiny_model(tmp_path_factory.mktemp("serve") / "tiny-random")


@pytest.fixture(scope="session")
def pipe(model_dir) -> AttnGANPipeline:
    return AttnGANPipeline.from_pretrained(model_dir, device="cpu")


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(create_app(pipe), raise_server_exceptions=False) as c:
        yield c


def decode_png(b64: str) -> np.ndarray:
    raw = base64.b64decode(b64, validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(io.BytesIO(raw))
    im.load()
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def assert_clean_error(r: httpx.Response, status: int, model_dir: Path) -> str:
    """A JSON body {"error": message}, and nothing internal in it."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    assert isinstance(message, str) and message
    for leak in ("Traceback", 'File "', str(model_dir), "site-packages", ".py"):
        assert leak not in r.text
    return message


# The page.

def test_index_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    # The model picker and the example chips are filled from /api/v1/models.
    assert 'id="model"' in page and 'id="examples"' in page
    # Only our own files are referenced, and the browser is told to load nothing else.
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for ref in ("/static/app.js", "/static/style.css"):
        s = client.get(ref)
        assert s.status_code == 200 and s.content
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", s.text), ref
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", ["/static/index.html.bak", "/static/..%2Fapp.py", "/static/%2Fetc%2Fpasswd",
                                  "/static/../app.py", "/nowhere"])
def test_unknown_paths_are_json_404(client, model_dir, path):
    assert_clean_error(client.get(path), 404, model_dir)


# Health, model summary, schema.

def test_health(client):
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"] == "tiny" and body["device"] == "cpu"
    assert body["models"] == ["tiny"]
    assert body["queue"]["capacity"] == 64 and body["queue"]["max_batch"] == 8
    assert body["queue"]["pending"] == 0


def test_model_summary_matches_the_pipeline(client, pipe):
    m = client.get("/api/v1/model").json()
    out = pipe([CAPTION], seed=0)
    assert m["vocabulary_size"] == len(pipe.vocab)
    assert [s["width"] for s in m["stages"]] == [x.shape[-1] for x in out.images] == [32, 64]
    assert [s["label"] for s in m["stages"]] == ["32x32", "64x64"]
    assert [a["map_resolution"] for a in m["attention_stages"]] == [a.shape[-1] for a in out.attention]
    assert m["attention_stages"][0]["stage"] == 1
    assert m["limits"]["caption_chars"] == 300 and m["limits"]["n"] == 8
    assert m["examples"] == list(BIRD_EXAMPLES) and m["subject"] == "bird"
    assert m["config"]["dataset"] == "birds" and m["captioner"] is None
    assert client.get("/api/v1/models").json() == {"default": "tiny", "models": [m]}


def test_openapi_schema(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/v1/generate", "/api/v1/health", "/api/v1/model"} <= set(schema["paths"])
    props = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert set(props) == {"caption", "seed", "n", "attention", "model"}
    assert props["caption"]["maxLength"] == 300


# Generation.

def test_generate_images_stages_and_attention(client, pipe):
    r = client.post("/api/v1/generate", json={"caption": CAPTION + " in a purple zzyzx", "seed": 7, "n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seed"] == 7 and body["n"] == 2 and body["model"] == "tiny"
    assert body["tokens"] == CAPTION.split() + ["a"]  # 'in' is not in the vocabulary
    assert body["dropped"] == ["in", "purple", "zzyzx"]
    assert body["truncated"] == []
    assert set(body["timing"]) == {"total_ms", "queue_ms", "inference_ms", "render_ms", "batch_images"}
    assert body["timing"]["batch_images"] == 2 and body["timing"]["total_ms"] > 0
    assert len(body["samples"]) == 2
    for sample in body["samples"]:
        # Each stage is labelled by the resolution its PNG really has (the original mislabelled them).
        for st in sample["stages"]:
            img = decode_png(st["png"])
            assert img.shape == (st["height"], st["width"], 3)
            assert st["label"] == f"{img.shape[1]}x{img.shape[0]}"
        assert [st["width"] for st in sample["stages"]] == [32, 64]
        (att,) = sample["attention"]
        assert att["stage"] == 1 and att["map_resolution"] == 32
        assert [w["word"] for w in att["words"]] == body["tokens"]
        assert [w["index"] for w in att["words"]] == list(range(len(body["tokens"])))
        for w in att["words"]:
            assert decode_png(w["png"]).shape == (att["overlay_resolution"],) * 2 + (3,)
    # Two samples of one caption differ (their noise does).
    a, b = (decode_png(s["stages"][-1]["png"]) for s in body["samples"])
    assert np.abs(a - b).max() > 0


def test_generate_matches_the_pipeline_and_seeds_reproduce(client, pipe):
    body = client.post("/api/v1/generate", json={"caption": CAPTION, "seed": 11, "n": 3}).json()
    again = client.post("/api/v1/generate", json={"caption": CAPTION, "seed": 11, "n": 3}).json()
    other = client.post("/api/v1/generate", json={"caption": CAPTION, "seed": 12, "n": 3}).json()
    # The same request as `attngan generate CAPTION --seed 11 --n 3` would make.
    ref = pipe([CAPTION] * 3, seed=11)
    for k in range(3):
        for s, stage in enumerate(ref.images):
            expected = np.asarray(ref.to_pil(s)[k], dtype=np.int16)
            got = decode_png(body["samples"][k]["stages"][s]["png"])
            assert np.abs(got - expected).max() <= 1
        assert body["samples"][k]["stages"][-1]["png"] == again["samples"][k]["stages"][-1]["png"]
        assert body["samples"][k]["stages"][-1]["png"] != other["samples"][k]["stages"][-1]["png"]


def test_each_sample_gets_the_caption_of_its_own_image(pipe):
    # Samples render as separate tasks and the captions come from one batch beside them: sample k
    # must carry the reading of image k.
    seen = []

    class Reader:
        config = type("ReaderConfig", (), {"name": "reader"})

        def __call__(self, images):
            seen.append(images.clone())
            return [f"image {k}" for k in range(images.shape[0])]

    app = create_app({"birds": Served(pipe, Reader())})
    try:
        with TestClient(app) as c:
            body = c.post("/api/v1/generate", json={"caption": CAPTION, "seed": 3, "n": 4}).json()
    finally:
        app.state.shutdown()
    (batch,) = seen
    assert [s["index"] for s in body["samples"]] == [0, 1, 2, 3]
    for k, sample in enumerate(body["samples"]):
        assert sample["caption"] == f"image {k}"
        want = ((batch[k].permute(1, 2, 0) + 1) * 127.5).numpy()
        assert np.abs(decode_png(sample["stages"][-1]["png"]) - want).max() <= 1


def test_word_overlays_are_the_shared_heat_maps(client, pipe):
    """The page's word overlays are viz.attention_overlays' heat maps (one scale for the caption's
    words), as the demo report draws them."""
    from attngan.serve.app import MIN_OVERLAY_PX
    from attngan.viz import attention_overlays, to_pil

    body = client.post("/api/v1/generate", json={"caption": CAPTION, "seed": 5}).json()
    ref = pipe([CAPTION], seed=5)
    (att,) = body["samples"][0]["attention"]
    base = to_pil(ref.images[att["stage"]][0]).resize((MIN_OVERLAY_PX,) * 2, Image.BICUBIC)
    overlays = attention_overlays(base, ref.attention[0][0, :len(att["words"])])
    for w in att["words"]:
        want = np.asarray(overlays[w["index"]], dtype=np.int16)
        got = decode_png(w["png"])
        assert np.abs(got - want).max() <= 3, w["word"]
        assert got.mean() < np.asarray(base, dtype=np.int16).mean()  # drawn over the dimmed image


def test_random_seed_is_returned_and_reproduces(client):
    first = client.post("/api/v1/generate", json={"caption": "a red bird", "attention": False}).json()
    seed = first["seed"]
    assert isinstance(seed, int) and seed >= 0
    assert first["samples"][0]["attention"] == []
    again = client.post("/api/v1/generate", json={"caption": "a red bird", "seed": seed, "attention": False}).json()
    assert again["samples"][0]["stages"][-1]["png"] == first["samples"][0]["stages"][-1]["png"]


def test_long_caption_keeps_the_first_words(client, pipe):
    words = (CAPTION + " and a blue crown and a short yellow bill and a long brown tail").split()
    assert len(words) > pipe.words_num
    body = client.post("/api/v1/generate", json={"caption": " ".join(words), "seed": 0}).json()
    assert body["tokens"] == words[: pipe.words_num]
    assert body["truncated"] == words[pipe.words_num:]
    assert len(body["samples"][0]["attention"][0]["words"]) == pipe.words_num


# Several models: a bird model and a scene model, picked per request.

SCENE_WORDS = sorted({w for text in SCENE_EXAMPLES for w in text.split()} | {"blue", "sky", "in", "cow"})


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory) -> Path:
    """A random model of the scenes preset: three stages (32 -> 128 px) where the bird one has two,
    of the COCO layout's data set, over the scene examples' words."""
    from attngan.text import Vocabulary

    return save_random_tiny_model(tmp_path_factory.mktemp("serve") / "scenes-random", seed=1,
                                  vocab=Vocabulary(["<end>", *SCENE_WORDS]), preset_name="synthscenes-128",
                                  name="scenes-random")


@pytest.fixture(scope="session")
def scenes_pipe(scenes_dir) -> AttnGANPipeline:
    return AttnGANPipeline.from_pretrained(scenes_dir, device="cpu")


@pytest.fixture(scope="module")
def two_models(pipe, scenes_pipe):
    app = create_app({"birds": Served(pipe), "scenes": Served(scenes_pipe, None, "no captioner here")},
                     batch_wait_ms=0)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_the_scene_examples_are_sentences_of_the_scene_grammar():
    """Every scene example is in SynthScenes' words, and the scene parser reads an object, its
    place and a background out of each (what the scene metrics would score it on)."""
    from attngan.data.scene_captions import VOCABULARY, parse_scene_caption
    from attngan.text import tokenize

    assert len(SCENE_EXAMPLES) >= 5 and "a red bus is floating on a lake" in SCENE_EXAMPLES
    for text in SCENE_EXAMPLES:
        assert set(tokenize(text)) <= set(VOCABULARY), text
        parsed = parse_scene_caption(text)
        assert parsed["objects"] and all(o["category"] and o["place"] for o in parsed["objects"]), text
    assert EXAMPLES["coco"] == SCENE_EXAMPLES


@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / "src/attngan/assets/synthscenes-128/config.json")
                    .is_file(), reason="the synthscenes-128 bundle is not in src/attngan/assets")
def test_the_shipped_scene_model_draws_every_example_it_offers():
    """The page's scene examples, through the API, on the shipped scene model: every word known,
    every stage (each twice the one before), every attentional stage's map of every word."""
    scenes = AttnGANPipeline.from_pretrained("synthscenes-128", device="cpu")
    stages = scenes.config.data.branch_num
    app = create_app({"synthscenes-128": Served(scenes)})
    with TestClient(app, raise_server_exceptions=False) as c:
        info = c.get("/api/v1/model").json()
        assert info["subject"] == "scene" and info["examples"] == list(SCENE_EXAMPLES)
        for k, text in enumerate(info["examples"]):
            r = c.post("/api/v1/generate", json={"caption": text, "seed": k, "attention": k == 0})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model"] == "synthscenes-128" and body["dropped"] == [] and body["truncated"] == []
            assert body["tokens"] == text.split()
            (sample,) = body["samples"]
            widths = [st["width"] for st in sample["stages"]]
            assert widths == [scenes.config.data.base_size * 2**s for s in range(stages)]
            final = decode_png(sample["stages"][-1]["png"])
            assert final.std() > 1  # a picture, not a flat colour
            if k == 0:
                assert [a["stage"] for a in sample["attention"]] == list(range(1, stages))
                for att in sample["attention"]:
                    assert [w["word"] for w in att["words"]] == body["tokens"]


def test_the_api_switches_models_by_name(two_models, pipe, scenes_pipe):
    c = two_models
    summary = c.get("/api/v1/models").json()
    assert summary["default"] == "birds" and [m["name"] for m in summary["models"]] == ["birds", "scenes"]
    birds, scenes = summary["models"]
    assert [s["width"] for s in birds["stages"]] == [32, 64]
    assert [s["width"] for s in scenes["stages"]] == [32, 64, 128]
    assert [a["stage"] for a in scenes["attention_stages"]] == [1, 2]
    assert (birds["subject"], scenes["subject"]) == ("bird", "scene")
    assert birds["examples"] == list(BIRD_EXAMPLES) and scenes["examples"] == list(SCENE_EXAMPLES)
    assert scenes["captioner"] is None and scenes["captioner_note"] == "no captioner here"
    assert c.get("/api/v1/model", params={"model": "scenes"}).json() == scenes
    assert c.get("/api/v1/model").json() == birds
    assert c.get("/api/v1/health").json()["models"] == ["birds", "scenes"]

    caption = "a red bus is floating on a lake"
    default = c.post("/api/v1/generate", json={"caption": CAPTION, "seed": 3}).json()
    assert default["model"] == "birds" and len(default["samples"][0]["stages"]) == 2
    body = c.post("/api/v1/generate", json={"caption": caption, "seed": 3, "model": "scenes"}).json()
    assert body["model"] == "scenes" and body["tokens"] == caption.split() and body["dropped"] == []
    (sample,) = body["samples"]
    assert [st["width"] for st in sample["stages"]] == [32, 64, 128] and len(sample["attention"]) == 2
    # The images are the scene model's own, as `attngan generate --model ... --seed 3` draws them.
    ref = scenes_pipe([caption], seed=3)
    for s in range(3):
        expected = np.asarray(ref.to_pil(s)[0], dtype=np.int16)
        assert np.abs(decode_png(sample["stages"][s]["png"]) - expected).max() <= 1
    # The same caption to the bird model: its words, its vocabulary.
    birds_body = c.post("/api/v1/generate", json={"caption": caption, "seed": 3, "model": "birds"}).json()
    assert birds_body["model"] == "birds" and "bus" in birds_body["dropped"]


def test_unknown_words_and_models_are_clear_errors(two_models, model_dir):
    c = two_models
    # A bird caption to the scene model: its unknown words named, as for the bird model.
    r = c.post("/api/v1/generate", json={"caption": "wings belly crown", "model": "scenes"})
    message = assert_clean_error(r, 422, model_dir)
    assert message.startswith("'caption' for scenes:") and "vocabulary" in message
    assert r.json()["dropped"] == ["wings", "belly", "crown"]
    # The paper's own sentence: the words SynthScenes lacks are left out and named.
    body = c.post("/api/v1/generate", json={"caption": "a red double decker bus is floating on a lake",
                                            "model": "scenes", "attention": False}).json()
    assert body["dropped"] == ["double", "decker"] and body["tokens"] == SCENE_EXAMPLES[0].split()
    for model in ("nope", "synthbirds-999", "", "Birds"):
        r = c.post("/api/v1/generate", json={"caption": "a red bus", "model": model})
        message = assert_clean_error(r, 422, model_dir)
        assert message == "'model': no such model on this server; it serves birds, scenes"
    for bad in (5, ["birds"], "x" * 201):
        r = c.post("/api/v1/generate", json={"caption": "a red bus", "model": bad})
        assert "'model'" in assert_clean_error(r, 422, model_dir)
    r = c.get("/api/v1/model", params={"model": "nope"})
    assert "no such model" in assert_clean_error(r, 404, model_dir)


def test_requests_for_different_models_are_never_batched_together(pipe, scenes_pipe):
    """Concurrent requests for both models, with a batch wait that lets them all meet: each answer
    is its own model's images, equal to those it draws alone, and no batch held two models."""
    calls: list[str] = []

    class Named(FailingPipeline):
        def __init__(self, inner, name):
            super().__init__(inner, RuntimeError("unused"))
            self.name = name

        def generate_from_ids(self, ids, *args, **kwargs):
            calls.append(self.name)
            return self._pipe.generate_from_ids(ids, *args, **kwargs)

    birds, scenes = Named(pipe, "birds"), Named(scenes_pipe, "scenes")
    app = create_app({"birds": Served(birds), "scenes": Served(scenes)}, max_batch=8, batch_wait_ms=500)
    bodies = [{"caption": "a red bus on the lake", "seed": 1, "model": "scenes", "attention": False},
              {"caption": "a red bus on the lake", "seed": 1, "model": "scenes", "attention": False, "n": 2},
              {"caption": "a red bird", "seed": 2, "model": "birds", "attention": False},
              {"caption": "a red bird", "seed": 2, "attention": False, "n": 2},
              {"caption": "two white boats sailing on the lake", "seed": 3, "model": "scenes", "attention": False}]
    calls.clear()
    responses = asyncio.run(_post_all(app, bodies))
    app.state.shutdown()
    batches = len(calls)
    assert 2 <= batches < len(bodies)  # several requests shared a batch, one model's only
    for b, r in zip(bodies, responses):
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["model"] == b.get("model", "birds")
        ref = (scenes_pipe if got["model"] == "scenes" else pipe)([b["caption"]] * got["n"], seed=b["seed"])
        assert got["timing"]["batch_images"] <= 8
        for k, sample in enumerate(got["samples"]):
            assert len(sample["stages"]) == len(ref.images)
            expected = np.asarray(ref.to_pil(-1)[k], dtype=np.int16)
            assert np.abs(decode_png(sample["stages"][-1]["png"]) - expected).max() <= 1


# The command's models and the captioner of each.

def _scene_captioner(folder: Path, name: str = "scenes-reader") -> Path:
    """A random captioner of scene images (its config's data set: coco)."""
    from attngan.captioner import captioner_vocabulary, save_captioner_folder
    from attngan.config import load_captioner_config
    from attngan.networks.captioner import build_captioner

    cfg = load_captioner_config("captioner", {"width": 8, "embed_dim": 32, "hidden_dim": 64,
                                              "attention_dim": 32, "dropout": 0.0, "name": name})
    cfg.data.dataset = "coco"
    vocab = captioner_vocabulary(SCENE_WORDS)
    torch.manual_seed(0)
    return save_captioner_folder(folder, cfg, vocab, build_captioner(cfg, len(vocab)).eval())


def test_serve_offers_the_bird_and_the_scene_model_by_default():
    from attngan.captioner import bundled_captioner_names
    from attngan.commands.serve import load_models
    from attngan.io import bundled_model_names

    models = load_models(None, None, False, "cpu")
    assert list(models) == [n for n in ("synthbirds-128", "synthscenes-128") if n in bundled_model_names()]
    birds = models["synthbirds-128"]
    assert birds.captioner.config.name == "synthbirds-captioner" and birds.note is None
    if "synthscenes-128" in models:
        scenes = models["synthscenes-128"]
        assert scenes.pipeline.config.data.dataset == "coco"
        if "synthscenes-captioner" in bundled_captioner_names():
            assert scenes.captioner.config.data.dataset == "coco" and scenes.note is None
        else:  # the page says why there is no "I think it's ..." line
            assert scenes.captioner is None and scenes.note == "synthscenes-captioner is not installed"
    app = create_app(models)
    try:
        with TestClient(app) as c:
            summary = c.get("/api/v1/models").json()
            assert summary["default"] == "synthbirds-128" and [m["name"] for m in summary["models"]] == list(models)
            assert summary["models"][0]["captioner"] == "synthbirds-captioner"
    finally:
        app.state.shutdown()


def test_captioners_go_to_the_models_of_their_data_set(model_dir, scenes_dir, tmp_path):
    from attngan.commands.serve import load_models

    reader = _scene_captioner(tmp_path / "reader")
    models = load_models([str(model_dir), str(scenes_dir)], [str(reader)], False, "cpu")
    assert list(models) == ["tiny", "scenes-random"]
    assert models["tiny"].captioner.config.name == "synthbirds-captioner"  # the bundled one of birds
    assert models["scenes-random"].captioner.config.name == "scenes-reader" and models["scenes-random"].note is None
    off = load_models([str(model_dir), str(scenes_dir)], [str(reader)], True, "cpu")
    assert all(m.captioner is None and m.note is None for m in off.values())
    with pytest.raises(AttnGANError, match=r"reads coco images, and no model served is of that data set \(birds\)"):
        load_models([str(model_dir)], [str(reader)], False, "cpu")
    with pytest.raises(AttnGANError, match="two captioners read coco images"):
        load_models([str(scenes_dir)], [str(reader), str(_scene_captioner(tmp_path / "again"))], False, "cpu")
    with pytest.raises(AttnGANError, match="two of the models to serve are called 'tiny'"):
        load_models([str(model_dir), str(model_dir)], None, True, "cpu")


def test_a_model_without_a_captioner_says_why(scenes_dir, monkeypatch):
    from attngan.commands import serve as command
    from attngan.serve import app as serve_app

    monkeypatch.setitem(serve_app.CAPTIONERS, "coco", "nowhere-captioner")
    (model,) = command.load_models([str(scenes_dir)], None, False, "cpu").values()
    assert model.captioner is None and model.note == "nowhere-captioner is not installed"


# Bad input: a 4xx with a clear message, nothing internal.

BAD_BODIES = [
    ("{not json", 400, "not valid JSON"),
    ("", 422, "JSON object"),
    ("[1, 2]", 422, "JSON object"),
    ('"a bird"', 422, "JSON object"),
    ("{}", 422, "'caption' is required"),
    ('{"caption": 5}', 422, "'caption'"),
    ('{"caption": null}', 422, "'caption'"),
    ('{"caption": ["a", "bird"]}', 422, "'caption'"),
    ('{"caption": "a bird", "n": "2"}', 422, "'n'"),
    ('{"caption": "a bird", "n": 2.5}', 422, "'n'"),
    ('{"caption": "a bird", "n": true}', 422, "'n'"),
    ('{"caption": "a bird", "n": 0}', 422, "'n'"),
    ('{"caption": "a bird", "n": 9}', 422, "'n'"),
    ('{"caption": "a bird", "seed": "7"}', 422, "'seed'"),
    ('{"caption": "a bird", "seed": -1}', 422, "'seed'"),
    ('{"caption": "a bird", "seed": 1e30}', 422, "'seed'"),
    ('{"caption": "a bird", "attention": "yes"}', 422, "'attention'"),
    ('{"caption": "a bird", "attention": 1}', 422, "'attention'"),
    ('{"caption": "a bird", "path": "/etc/passwd"}', 422, "unknown field 'path'"),
    ('{"caption": ""}', 422, "empty"),
    ('{"caption": "   \\n\\t "}', 422, "empty"),
    ('{"caption": "!!! ??? ..."}', 422, "no words"),
    ('{"caption": "' + "a bird " * 43 + '"}', 422, "at most 300 characters"),
]


@pytest.mark.parametrize("body,status,fragment", BAD_BODIES)
def test_bad_requests(client, model_dir, body, status, fragment):
    r = client.post("/api/v1/generate", content=body.encode(), headers={"content-type": "application/json"})
    message = assert_clean_error(r, status, model_dir)
    assert fragment in message


@pytest.mark.parametrize("headers", [{}, {"content-type": "text/plain"},
                                     {"content-type": "application/x-www-form-urlencoded"}])
def test_body_must_be_sent_as_json(client, model_dir, headers):
    r = client.post("/api/v1/generate", content=b'{"caption": "a red bird"}', headers=headers)
    assert "Content-Type: application/json" in assert_clean_error(r, 415, model_dir)


def test_body_that_is_not_utf8(client, model_dir):
    r = client.post("/api/v1/generate", content=b'{"caption": "a red bird\xff"}',
                    headers={"content-type": "application/json"})
    assert "not valid JSON" in assert_clean_error(r, 400, model_dir)


def test_caption_of_exactly_300_characters_is_accepted(client):
    caption = ("a bird with wings " * 20)[:300]
    assert len(caption) == 300
    assert client.post("/api/v1/generate", json={"caption": caption, "seed": 1, "attention": False}).status_code == 200


def test_all_out_of_vocabulary_caption(client, model_dir):
    r = client.post("/api/v1/generate", json={"caption": "Purple zzyzx gleeps!"})
    message = assert_clean_error(r, 422, model_dir)
    assert "vocabulary" in message
    assert r.json()["dropped"] == ["purple", "zzyzx", "gleeps"]


def test_body_size_is_bounded(client, model_dir):
    big = b'{"caption": "' + b"a" * MAX_BODY_BYTES + b'"}'
    assert_clean_error(client.post("/api/v1/generate", content=big), 413, model_dir)
    # Without Content-Length (chunked upload) too.
    chunks = iter([b'{"caption": "', b"a" * MAX_BODY_BYTES, b'"}'])
    assert_clean_error(client.post("/api/v1/generate", content=chunks), 413, model_dir)
    r = client.post("/api/v1/generate", content=b"x", headers={"content-length": "nonsense"})
    assert r.status_code in (400, 413)


def test_wrong_method(client, model_dir):
    r = client.get("/api/v1/generate")
    assert_clean_error(r, 405, model_dir)
    assert "POST" in r.headers["allow"]


class FailingPipeline:
    """The real pipeline, whose generator call fails once armed."""

    def __init__(self, pipe, exc: Exception):
        self._pipe, self.exc, self.armed = pipe, exc, False

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def generate_from_ids(self, *args, **kwargs):
        if self.armed:
            raise self.exc
        return self._pipe.generate_from_ids(*args, **kwargs)


def test_internal_errors_are_generic_500(pipe, model_dir):
    failing = FailingPipeline(pipe, RuntimeError(f"CUDA exploded in {model_dir}/secret.py line 3"))
    with TestClient(create_app(failing), raise_server_exceptions=False) as c:
        failing.armed = True
        r = c.post("/api/v1/generate", json={"caption": CAPTION})
        message = assert_clean_error(r, 500, model_dir)
        assert "exploded" not in message and "secret" not in r.text
        # The worker survives the failure.
        failing.armed = False
        assert c.post("/api/v1/generate", json={"caption": CAPTION, "attention": False}).status_code == 200


def test_user_fixable_pipeline_errors_are_422(pipe, model_dir):
    failing = FailingPipeline(pipe, AttnGANError("Generator: a caption has no words"))
    with TestClient(create_app(failing), raise_server_exceptions=False) as c:
        failing.armed = True
        message = assert_clean_error(c.post("/api/v1/generate", json={"caption": CAPTION}), 422, model_dir)
        assert "no words" in message


# Micro-batching and the queue bound.

REQUESTS = [  # different lengths (padding), seeds and sample counts, some out-of-vocabulary words
    {"caption": BIRD_EXAMPLES[0], "seed": 1, "n": 1},
    {"caption": "a red bird", "seed": 2, "n": 2},
    {"caption": BIRD_EXAMPLES[1], "seed": 3, "n": 1},
    {"caption": "bird", "seed": 4, "n": 3},
    {"caption": "this small bird has a blue crown and a short pointed bill", "seed": 5, "n": 1},
    {"caption": BIRD_EXAMPLES[2] + " and an xyzzy tail", "seed": 6, "n": 2},
]


async def _post_all(app, bodies: list[dict]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
        return await asyncio.gather(*(c.post("/api/v1/generate", json=b) for b in bodies))


def _images(body: dict) -> list[list[np.ndarray]]:
    return [[decode_png(st["png"]) for st in s["stages"]] for s in body["samples"]]


def test_concurrent_requests_are_batched_without_changing_images(pipe):
    sequential_app = create_app(pipe, max_batch=1)
    sequential = [asyncio.run(_post_all(sequential_app, [b]))[0] for b in REQUESTS]
    batched_app = create_app(pipe, max_batch=8, batch_wait_ms=500)
    batched = asyncio.run(_post_all(batched_app, REQUESTS))
    for app in (sequential_app, batched_app):
        app.state.shutdown()
    sizes = []
    for seq, bat in zip(sequential, batched):
        assert seq.status_code == bat.status_code == 200
        s, b = seq.json(), bat.json()
        assert s["timing"]["batch_images"] == s["n"]  # ran alone
        sizes.append(b["timing"]["batch_images"])
        assert b["tokens"] == s["tokens"] and b["dropped"] == s["dropped"]
        # Same seeds -> same images; only float rounding of batched matmuls may move a pixel by 1/255.
        for ims_s, ims_b in zip(_images(s), _images(b)):
            for a, c in zip(ims_s, ims_b):
                assert np.abs(a - c).max() <= 1
        for ws, wb in zip(s["samples"][0]["attention"][0]["words"], b["samples"][0]["attention"][0]["words"]):
            assert ws["word"] == wb["word"]
            assert np.abs(decode_png(ws["png"]) - decode_png(wb["png"])).max() <= 2
    # 10 images at max-batch 8: at least one batch held several requests, none went over 8.
    assert max(sizes) > 3 and max(sizes) <= 8
    stats = batched_app.state.batcher.stats()
    assert stats["images_generated"] == sum(b["n"] for b in REQUESTS)
    assert stats["batches_run"] < len(REQUESTS)


class SlowPipeline(FailingPipeline):
    def __init__(self, pipe, delay: float):
        super().__init__(pipe, RuntimeError("unused"))
        self.delay = delay

    def generate_from_ids(self, *args, **kwargs):
        time.sleep(self.delay)
        return self._pipe.generate_from_ids(*args, **kwargs)


def test_full_queue_answers_503_with_retry_after(pipe, model_dir):
    app = create_app(SlowPipeline(pipe, 0.3), max_batch=1, queue_size=1, batch_wait_ms=0)
    bodies = [{"caption": "a red bird", "seed": i, "attention": False} for i in range(6)]
    responses = asyncio.run(_post_all(app, bodies))
    codes = [r.status_code for r in responses]
    # At most one running, one waiting (and one set aside by the batcher): the rest are refused.
    assert set(codes) <= {200, 503} and codes.count(200) >= 1 and codes.count(503) >= 3, codes
    for r in responses:
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1
            assert "queue is full" in assert_clean_error(r, 503, model_dir)
    # It recovers once the queue drains.
    assert asyncio.run(_post_all(app, bodies[:1]))[0].status_code == 200
    app.state.shutdown()


class RecordingPipeline:
    """Stands in for the pipeline in batcher unit tests: records the batch sizes it was given."""

    def __init__(self):
        self.calls: list[int] = []

    def generate_from_ids(self, ids, lens, noise, ca_noise):
        self.calls.append(ids.shape[0])
        # Row r's image is filled with the first word id of row r: lets the test see who got what.
        images = [ids[:, :1, None, None].float().expand(-1, 3, 4, 4).clone()]
        attention = [torch.ones(ids.shape[0], ids.shape[1], 2, 2) * lens[:, None, None, None]]
        return PipelineOutput(images=images, attention=attention, tokens=[])


def test_batcher_fills_batches_in_order_and_splits_results():
    fake = RecordingPipeline()
    batcher = MicroBatcher(fake, max_batch=8, queue_size=8, wait_ms=50)
    jobs = [Job([w] * length, torch.zeros(n, 2), torch.zeros(n, 2))
            for w, length, n in ((1, 3, 5), (2, 1, 5), (3, 2, 3))]
    futures = [batcher.submit(j) for j in jobs]  # queued before the worker starts: deterministic
    batcher.start()
    results = [f.result(timeout=10) for f in futures]
    batcher.stop()
    # 5 + 5 exceeds 8, so the second job opens the next batch, which the third joins.
    assert fake.calls == [5, 8]
    for job, res in zip(jobs, results):
        assert res.images[0].shape[0] == job.n
        assert torch.all(res.images[0] == job.ids[0])
        assert res.attention[0].shape[1] == len(job.ids)  # padding words of the batch are cut off
        assert torch.all(res.attention[0] == len(job.ids))
    assert [r.batch_images for r in results] == [5, 8, 8]


def test_batcher_keeps_each_batch_to_one_model():
    """Jobs of two models queued A, A, B, A: a batch closes at the first job of another model, which
    opens the next one; every job runs on its own model, in the order they came."""
    a, b = RecordingPipeline(), RecordingPipeline()
    batcher = MicroBatcher(a, max_batch=8, queue_size=8, wait_ms=50)
    jobs = [Job([w], torch.zeros(n, 2), torch.zeros(n, 2), p)
            for w, n, p in ((1, 2, None), (2, 1, a), (3, 2, b), (4, 1, a))]
    futures = [batcher.submit(j) for j in jobs]
    batcher.start()
    results = [f.result(timeout=10) for f in futures]
    batcher.stop()
    assert a.calls == [3, 1] and b.calls == [2]
    assert [r.batch_images for r in results] == [3, 3, 2, 1]
    for job, res in zip(jobs, results):
        assert res.images[0].shape[0] == job.n and torch.all(res.images[0] == job.ids[0])


def test_batcher_refuses_beyond_its_queue():
    from attngan.serve.batching import QueueFull

    batcher = MicroBatcher(RecordingPipeline(), max_batch=1, queue_size=2)
    for _ in range(2):
        batcher.submit(Job([1], torch.zeros(1, 2), torch.zeros(1, 2)))
    with pytest.raises(QueueFull) as e:
        batcher.submit(Job([1], torch.zeros(1, 2), torch.zeros(1, 2)))
    assert e.value.retry_after_s >= 1
    batcher.stop()


# The command.

def test_serve_command_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["serve", "--model", str(tmp_path / "missing"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert cli.main(["serve", "--max-batch", "0"]) == 2
    assert "--max-batch" in capsys.readouterr().err
    assert cli.main(["serve", "--model", "synthbirds-128", "--model", "synthbirds-128", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "two of the models to serve are called 'synthbirds-128'" in err[0], err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--port", str(port)]) == 2
        assert "cannot listen" in capsys.readouterr().err


def test_serve_command_serves_and_stops(model_dir, scenes_dir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "attngan", "serve", "--model", str(model_dir), "--model", str(scenes_dir),
         "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url, banner = None, ""
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
            url, banner = (m.group(1), line) if m else (None, banner)
        assert url, "the server did not print its address"
        assert "models 'tiny', 'scenes-random' on cpu" in banner
        for _ in range(100):  # uvicorn accepts connections shortly after the banner
            try:
                r = httpx.get(url + "api/v1/health", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        r = httpx.post(url + "api/v1/generate", json={"caption": "a red bird", "seed": 0}, timeout=30)
        assert r.status_code == 200 and decode_png(r.json()["samples"][0]["stages"][-1]["png"]).shape == (64, 64, 3)
        r = httpx.post(url + "api/v1/generate", json={"caption": "a red bus", "model": "scenes-random"}, timeout=30)
        assert r.status_code == 200 and decode_png(r.json()["samples"][0]["stages"][-1]["png"]).shape == (128, 128, 3)
        # A request uvicorn itself cannot parse is answered in the API's JSON error shape too.
        host, port = re.search(r"//([\d.]+):(\d+)/", url).groups()
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /api/v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
            raw = b""
            while chunk := s.recv(4096):
                raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head, raw
        assert "error" in json.loads(body), raw
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


# Honest failure: bounded settings, a dead worker, slow clients.

@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e9"])
def test_batch_wait_must_be_finite_and_bounded(value, pipe, capsys):
    assert cli.main(["serve", "--batch-wait-ms", value, "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-wait-ms must be from 0 to 1000" in err[0], err
    with pytest.raises(ValueError):
        MicroBatcher(pipe, wait_ms=float(value))
    with pytest.raises(AttnGANError, match="batch wait"):
        create_app(pipe, batch_wait_ms=float(value))


@pytest.mark.parametrize("argv, message", [
    (["--read-timeout", "0"], "--read-timeout must be greater than 0"),
    (["--read-timeout", "nan"], "--read-timeout must be greater than 0"),
    (["--max-connections", "0"], "--max-connections must be from 1 to"),
    (["--max-connections", str(10**9)], "--max-connections must be from 1 to"),
])
def test_serve_limits_are_checked(argv, message, capsys):
    assert cli.main(["serve", "--port", "0", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_dead_worker_fails_health_and_answers_503(pipe, model_dir, monkeypatch):
    def die(self):
        raise OverflowError("timeout value is too large")

    monkeypatch.setattr(MicroBatcher, "_loop", die)
    app = create_app(pipe)
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            app.state.batcher._thread.join(10)
            r = c.get("/api/v1/health")
            message = assert_clean_error(r, 503, model_dir)
            assert "inference worker stopped" in message and r.json()["status"] == "failed"
            t0 = time.monotonic()
            r = c.post("/api/v1/generate", json={"caption": CAPTION, "seed": 0})
            assert "restarted" in assert_clean_error(r, 503, model_dir)
            assert time.monotonic() - t0 < 5  # answered, not left waiting on a queue nobody reads
    finally:
        app.state.shutdown()


def test_jobs_waiting_when_the_worker_dies_are_failed():
    from attngan.serve.batching import WorkerDied

    class Exploding(RecordingPipeline):
        def generate_from_ids(self, *a):
            raise SystemExit("not an Exception: ends the thread")

    batcher = MicroBatcher(Exploding(), max_batch=2, queue_size=8, wait_ms=0)
    futures = [batcher.submit(Job([1], torch.zeros(n, 2), torch.zeros(n, 2))) for n in (2, 1, 1)]
    batcher.start()
    for f in futures:  # the running batch, the carried job and the queued one all hear of it
        with pytest.raises((WorkerDied, SystemExit)):
            f.result(timeout=10)
    assert not batcher.alive
    with pytest.raises(WorkerDied):
        batcher.submit(Job([1], torch.zeros(1, 2), torch.zeros(1, 2)))
    batcher.stop()


def _held_open(socks) -> int:
    """How many of these client sockets the server still holds open (no EOF, no reset yet)."""
    held = 0
    for s in socks:
        s.setblocking(False)
        try:
            held += s.recv(1, socket.MSG_PEEK) != b""  # data would be an answer: still open
        except BlockingIOError:
            held += 1
        except OSError:
            pass
        s.setblocking(True)
    return held


def test_slow_header_connections_are_timed_out_and_capped(model_dir, tmp_path):
    """400 connections that send half a header to a server allowed 256 open files: the server
    never runs out of descriptors (it holds fewer connections than its file limit, counted from
    the client side), closes them after --read-timeout, and still answers."""
    import resource

    def low_file_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "attngan", "serve", "--model", str(model_dir), "--port", "0",
             "--device", "cpu", "--no-captioner", "--read-timeout", "1"],
            stdout=log, stderr=subprocess.STDOUT, text=True, preexec_fn=low_file_limit,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    socks = []
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"open http://127\.0\.0\.1:(\d+)/", log_path.read_text())
            port = int(m.group(1)) if m else time.sleep(0.1)
        assert port, log_path.read_text()
        url = f"http://127.0.0.1:{port}/api/v1/health"
        for _ in range(100):
            try:
                assert httpx.get(url, timeout=5).status_code == 200
                break
            except httpx.TransportError:
                time.sleep(0.1)
        most_held = 0
        for i in range(400):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(s)
            if i % 50 == 49:
                time.sleep(0.2)  # let the server accept (and close what is over its cap)
                most_held = max(most_held, _held_open(socks))
        # The cap (the file limit less 128) plus the listen backlog (64) that is not yet accepted.
        assert 0 < most_held <= 128 + 64 < 256
        # Every slow connection is closed by the server: by the cap at once, or by the timeout.
        end = time.monotonic() + 10
        for s in socks:
            s.settimeout(max(0.01, end - time.monotonic()))
            try:
                assert s.recv(100) == b""
            except ConnectionResetError:  # closed at once, before it was read
                pass
        r = httpx.get(url, timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        # Nothing leaked: the server answers more fresh connections than it has files.
        assert all(httpx.get(url, timeout=5, headers={"Connection": "close"}).status_code == 200
                   for _ in range(300))
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Too many open files" not in log_path.read_text()
