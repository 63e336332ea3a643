"""The captioner on SynthScenes: training on the COCO layout, the bundled name, and the round trip
read back with the scene caption parser (seen / novel, ceiling, chance), with its controls: a
captioner that always writes one caption scores at chance, one that writes each image's own
ground truth scores 100%.

One small SynthScenes set is rendered here at 64 px (nothing is downloaded); the captioner trained
on it runs a few steps only, so its captions are meaningless but every code path runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from attngan.errors import AttnGANError

SMALL = {"width": 8, "embed_dim": 16, "hidden_dim": 32, "attention_dim": 16, "dropout": 0.0,
         "batch_size": 16, "eval_images": 16}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from attngan.data.synth_scenes import generate_synth_scenes

    return generate_synth_scenes(tmp_path_factory.mktemp("scap") / "scenes", images=240, size=64, seed=4,
                                 progress=False)


def _falling(real, values):
    """The loop's test-split scorer with its read-back replaced by `values` (epoch 1 best)."""
    calls = []

    def scorer(*args, **kwargs):
        out = real(*args, **kwargs)
        v = values[min(len(calls), len(values) - 1)]
        calls.append(v)
        return {**out, "recall_all": v, "recall_objects": v, "val_cider_d": v}
    return scorer, calls


@pytest.fixture(scope="module")
def trained(scenes, tmp_path_factory):
    """A scenes captioner run of two epochs of two steps, its test-split scores made to fall."""
    from attngan.config import load_captioner_config
    from attngan.training import captioner_loop

    scorer, calls = _falling(captioner_loop.evaluate_captioner, [0.9, 0.1])
    mp = pytest.MonkeyPatch()
    mp.setattr(captioner_loop, "evaluate_captioner", scorer)
    try:
        cfg = load_captioner_config("synthscenes-captioner", SMALL)
        run = tmp_path_factory.mktemp("scap_run") / "run"
        final = captioner_loop.train_captioner(cfg, scenes, run, device="cpu", max_epochs=2, progress=False,
                                               max_steps=2)
    finally:
        mp.undo()
    return SimpleNamespace(run=run, final=final, calls=calls)


def _test_renders(scenes: Path):
    """The test split's renders (64 px, as written) with their ground truth, in key order."""
    from attngan.data.synth_scenes import load_manifest

    out = []
    for key, t in sorted(load_manifest(scenes)["images"].items()):
        if t["split"] == "test":
            with Image.open(scenes / t["file_name"]) as im:
                out.append((key, np.asarray(im.convert("RGB")), t))
    return out


# Training.

def test_the_preset_reads_the_coco_layout(scenes, tmp_path, capsys):
    from attngan.cli import main

    assert main(["train-captioner", "--config", "synthscenes-captioner", "--data", str(scenes), "--out",
                 str(tmp_path / "run"), "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["name"] == "synthscenes-captioner"
    assert (cfg["data"]["dataset"], cfg["data"]["captions_per_image"], cfg["epochs"]) == ("coco", 5, 10)
    assert cfg["mention"] == ""   # the birds captioner's constraints name bird parts


def test_training_on_scenes_ships_the_last_epoch_with_every_parser_word(scenes, trained):
    from attngan.captioner import load_captioner_folder
    from attngan.data.scene_captions import VOCABULARY
    from attngan.data.vocab import load_vocab
    from attngan.training.captioner_loop import CAPTIONER_SELECTION, CaptionedImages

    assert trained.calls == [0.9, 0.1]
    cfg, meta, vocab, _ = load_captioner_folder(trained.run, "cpu")
    assert meta["metrics"]["epoch"] == 2 and meta["metrics"]["selection"] == CAPTIONER_SELECTION
    # The parser's words, those the rendered captions never use included, are in the vocabulary.
    missing_from_data = set(VOCABULARY) - set(load_vocab(scenes).word_to_id)
    assert missing_from_data and set(VOCABULARY) <= set(vocab.word_to_id)
    # The logged read-back is the scene parser's (objects, colours, place), not the birds grammar's.
    first = json.loads((trained.run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"recall_objects", "recall_colours", "recall_place", "objects_precision"} <= set(first)
    assert not any(k in first for k in ("recall_wing", "recall_belly"))
    # COCO layout: five captions an image, each image's own.
    ds = CaptionedImages(scenes, "test", cfg, vocab, train=False)
    truth = {key: t for key, _, t in _test_renders(scenes)}
    assert len(ds) == len(truth) and all(ds.texts[i] == truth[k]["captions"] for i, k in enumerate(ds.keys))


def test_caption_command_with_a_model_folder(scenes, trained, capsys):
    from attngan.cli import main

    png = scenes / "val2014" / f"{_test_renders(scenes)[0][0]}.jpg"
    assert main(["caption", str(png), "--model", str(trained.run / "best")]) == 0
    assert capsys.readouterr().out.startswith(f"{png}: I think it's: ")


# The bundled name.

@pytest.fixture()
def bundled_scenes(trained, tmp_path, monkeypatch):
    """An installation whose assets hold the shipped birds captioner and the scenes one trained
    above under the bundled scenes name."""
    from attngan import io

    assets = tmp_path / "assets"
    shutil.copytree(io.ASSETS / "synthbirds-captioner", assets / "synthbirds-captioner")
    shutil.copytree(trained.run / "best", assets / "synthscenes-captioner")
    monkeypatch.setattr(io, "ASSETS", assets)
    return assets


def test_the_bundled_scenes_captioner_loads_by_name_and_birds_stays_the_default(scenes, bundled_scenes, capsys):
    from attngan import io
    from attngan.captioner import SCENES_CAPTIONER, Captioner
    from attngan.cli import main

    assert list(io.KINDS["captioner"].bundled)[0] == "synthbirds-captioner"
    assert io.KINDS["captioner"].bundled[SCENES_CAPTIONER] == "synthscenes-captioner"
    assert io.resolve(None, "captioner") == bundled_scenes / "synthbirds-captioner"
    cap = Captioner.from_pretrained("synthscenes-captioner", device="cpu")
    assert cap.config.name == "synthscenes-captioner"
    png = scenes / "val2014" / f"{_test_renders(scenes)[0][0]}.jpg"
    assert main(["caption", str(png), "--model", "synthscenes-captioner"]) == 0
    assert capsys.readouterr().out.startswith(f"{png}: I think it's: ")


def test_a_missing_scenes_bundle_is_a_one_line_error(tmp_path, monkeypatch):
    from attngan import io
    from attngan.captioner import Captioner

    monkeypatch.setattr(io, "ASSETS", tmp_path)
    with pytest.raises(AttnGANError, match="no bundled captioner named 'synthscenes-captioner'"):
        Captioner.from_pretrained("synthscenes-captioner", device="cpu")


# The round trip's scoring on known answers.

def test_scene_readback_known_answers():
    from attngan.metrics.roundtrip import scene_readback

    prompts = ["two red buses driving down the street",        # seen
               "a blue cow grazing on the grass",              # novel (blue cow)
               "a white kite flying in the sky over the lake next to a red airplane"]
    captions = ["a photo of two red buses on a city street",   # all back, other words
                "a brown cow standing on the beach",           # object back; colour and place wrong
                "a white kite in the sky over the water"]      # airplane missed
    r = scene_readback(prompts, captions)
    assert r["objects"]["all"] == pytest.approx(3 / 4) and r["objects"]["n_all"] == 4
    assert r["colours"]["seen"] == pytest.approx(2 / 3) and r["colours"]["novel"] == 0.0
    assert r["place"]["all"] == pytest.approx(2 / 3)
    assert r["recall"]["all"] == pytest.approx(7 / 11)
    assert r["all_back"]["all"] == pytest.approx(1 / 3) and r["all_back"]["n_novel"] == 1
    assert r["objects_precision"]["all"] == 1.0
    # Naming what was not prompted costs precision, not recall.
    many = scene_readback(prompts[:1], ["a red bus next to a cow and a kite on the street"])
    assert many["objects"]["all"] == 1.0 and many["objects_precision"]["all"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="2 captions for 1 prompts"):
        scene_readback(prompts[:1], captions[:2])


def test_every_caption_of_a_scene_reads_back_every_other(scenes):
    """Known answer: a caption of the same image, in other words, states all of the prompt."""
    from attngan.metrics.roundtrip import scene_readback

    truths = [t for _, _, t in _test_renders(scenes)]
    for k in range(1, 5):
        r = scene_readback([t["captions"][0] for t in truths], [t["captions"][k] for t in truths])
        for reading in ("objects", "colours", "place", "recall", "all_back"):
            assert r[reading]["all"] == 1.0, (k, reading)


# The round trip through `attngan eval`, with captioners made to a known behaviour.

class FakeCaptioner:
    """Stands in for a loaded Captioner (its config, digest and call) with a caption rule."""

    def __init__(self, rule, name: str):
        self.rule = rule
        self.config = SimpleNamespace(name=name, beam_size=1, mention="")
        self.digest = name

    def __call__(self, images: torch.Tensor) -> list[str]:
        return [self.rule(x) for x in images]


def ground_truth_captioner(scenes: Path) -> FakeCaptioner:
    """Finds each image among the test renders (nearest at 16 x 16, as written or as the data
    loader's centre crop) and writes its ground truth in words other than its first caption's
    (its second caption)."""
    from attngan.data.cache import stored_size

    renders = _test_renders(scenes)

    def small(arr: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(arr, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
        return torch.nn.functional.adaptive_avg_pool2d(x[None], 16)[0].flatten()

    def centre(arr: np.ndarray) -> np.ndarray:
        s, big = arr.shape[0], stored_size(arr.shape[0])
        grown = np.asarray(Image.fromarray(arr).resize((big, big), Image.BICUBIC))
        m = (big - s) // 2
        return grown[m:m + s, m:m + s]

    refs = torch.stack([small(v) for _, a, _ in renders for v in (a, centre(a))])
    captions = [t["captions"][1] for _, _, t in renders for _ in range(2)]

    def rule(x: torch.Tensor) -> str:
        arr = ((x.float().permute(1, 2, 0) + 1) * 127.5).numpy()
        return captions[int(((refs - small(arr)) ** 2).sum(1).argmin())]

    return FakeCaptioner(rule, "ground-truth")


def _folder(folder: Path, renders, captions) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for j, ((_, arr, _), cap) in enumerate(zip(renders, captions)):
        Image.fromarray(arr).save(folder / f"{j:04d}.png")
        mapping[f"{j:04d}.png"] = cap
    (folder / "captions.json").write_text(json.dumps(mapping))
    return folder


def _roundtrip(scenes, folder, tmp_path, monkeypatch, captioner, **options):
    from attngan.captioner import Captioner
    from attngan.metrics import evaluate

    monkeypatch.setattr(Captioner, "from_pretrained", classmethod(lambda cls, name, device="auto": captioner))
    options = {"captioner": "fake", "metrics": ["roundtrip"], **options}
    return evaluate(scenes, images_dir=folder, splits=1, batch=16, device="cpu", progress=False,
                    cache_dir=str(tmp_path / "cache"), **options)


def test_a_ground_truth_captioner_reads_everything_back(scenes, tmp_path, monkeypatch):
    renders = _test_renders(scenes)
    folder = _folder(tmp_path / "real", renders, [t["captions"][0] for _, _, t in renders])
    report = _roundtrip(scenes, folder, tmp_path, monkeypatch, ground_truth_captioner(scenes))
    r = report["results"]["roundtrip"]
    assert r["value"] == 100.0 and r["per_attribute"] == {"objects": 100.0, "colours": 100.0, "place": 100.0}
    assert r["seen"] == r["novel"] == 100.0 and r["all_back"] == 100.0
    assert (r["n_seen"], r["n_novel"]) == (24, 24)
    ceiling = r["real_ceiling"]
    assert ceiling["images"] == len(renders) and ceiling["recall"] == ceiling["seen"] == ceiling["novel"] == 100.0
    # Chance pairs each caption with another prompt of its kind: far below.
    assert r["chance"]["seen"] < 60 and r["chance"]["novel"] < 60
    assert r["real_shuffled"]["recall"] < 60


def test_a_constant_captioner_scores_at_chance_not_at_the_ceiling(scenes, tmp_path, monkeypatch):
    from attngan.metrics.report import format_markdown

    renders = _test_renders(scenes)
    folder = _folder(tmp_path / "real", renders, [t["captions"][0] for _, _, t in renders])
    constant = FakeCaptioner(lambda x: "a red car parked on the street", "constant")
    report = _roundtrip(scenes, folder, tmp_path, monkeypatch, constant)
    r = report["results"]["roundtrip"]
    assert r["value"] == pytest.approx(r["chance"]["all"])
    assert r["seen"] == pytest.approx(r["chance"]["seen"]) and r["novel"] == pytest.approx(r["chance"]["novel"])
    assert r["real_ceiling"]["recall"] == pytest.approx(r["real_shuffled"]["recall"])
    truth = _roundtrip(scenes, folder, tmp_path, monkeypatch, ground_truth_captioner(scenes))["results"]["roundtrip"]
    assert r["value"] < truth["real_ceiling"]["recall"] - 40
    md = format_markdown(report)
    assert "- `roundtrip`: generated images: objects" in md and "- `roundtrip`: seen" in md
    # Prompts of one's own (no caption of the split): the ceiling reads a sample of test renders
    # against their own first captions.
    own = _folder(tmp_path / "own", renders[:12], ["a red bus floating on the lake"] * 12)
    mine = _roundtrip(scenes, own, tmp_path, monkeypatch, ground_truth_captioner(scenes),
                      num_images=12)["results"]["roundtrip"]
    assert mine["real_ceiling"]["images"] == 12 and mine["real_ceiling"]["recall"] == 100.0
    assert mine["n_novel"] == 12   # a bus on the lake is a held-out pair


def test_eval_reads_scenes_back_with_the_bundled_scenes_captioner(scenes, trained, bundled_scenes, tmp_path,
                                                                  monkeypatch, capsys):
    """No --captioner: SynthScenes data takes the bundled scenes captioner (the real one here, a
    few steps trained); a SynthBirds folder does not."""
    from attngan.cli import main

    renders = _test_renders(scenes)
    folder = _folder(tmp_path / "real", renders, [t["captions"][0] for _, _, t in renders])
    out = tmp_path / "report.json"
    assert main(["eval", "--images", str(folder), "--data", str(scenes), "--metrics", "roundtrip", "--splits", "1",
                 "--cache", str(tmp_path / "cache"), "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    r = report["results"]["roundtrip"]
    assert "synthscenes-captioner" in report["streams"]["captioner"]
    assert {"seen", "novel", "n_seen", "n_novel", "chance", "real_ceiling", "real_shuffled"} <= set(r)
    assert set(r["per_attribute"]) == {"objects", "colours", "place"}
    assert {"seen", "novel", "recall"} <= set(r["real_ceiling"])
    assert "- `roundtrip`: seen" in capsys.readouterr().out

    # A model's samples of the test captions: the ceiling reads the renders of those captions.
    from attngan.config import preset
    from attngan.data.vocab import load_vocab
    from attngan.io import save_model_folder
    from attngan.networks import build_generator, build_image_encoder, build_text_encoder

    torch.manual_seed(0)
    cfg = preset("coco-tiny")
    vocab = load_vocab(scenes)
    model = save_model_folder(tmp_path / "tiny", cfg, vocab, build_generator(cfg, cfg.text.embedding_dim),
                              build_text_encoder(cfg, len(vocab)), build_image_encoder(cfg))
    assert main(["eval", "--model", str(model), "--data", str(scenes), "--metrics", "roundtrip", "--num-images", "20",
                 "--splits", "1", "--cache", str(tmp_path / "cache"), "--device", "cpu", "--no-progress",
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())["results"]["roundtrip"]
    assert r["n_seen"] + r["n_novel"] == 20 and r["n_seen"] > 0 and r["n_novel"] > 0
    assert r["real_ceiling"]["images"] == r["real_ceiling"]["prompts"] == 20


def test_birds_data_keeps_needing_a_captioner(bundled_scenes, tmp_path):
    from attngan.data.synth_birds import generate_synth_birds
    from attngan.metrics import evaluate

    birds = generate_synth_birds(tmp_path / "birds", images=24, classes=4, size=64, seed=0, progress=False)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "a.png")
    (folder / "captions.json").write_text(json.dumps({"a.png": "a bird with red wings"}))
    with pytest.raises(AttnGANError, match="'roundtrip' needs --captioner"):
        evaluate(birds, images_dir=folder, metrics=["roundtrip"], splits=1, device="cpu", progress=False)
