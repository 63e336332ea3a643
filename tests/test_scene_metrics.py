"""SynthScenes judge and scene metrics: known answers on constructed readings, the shipped judge on
fresh real renders, the controls (wrong background, blank, noise), and `attngan eval` end to end.

One small SynthScenes set is rendered here (nothing is downloaded); the model scored end to end is
a randomly initialised `tiny` model on that data's vocabulary, so its scores are meaningless but
every code path runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attngan.errors import AttnGANError

CATS = ("car", "airplane", "bus", "boat", "fire hydrant", "stop sign", "sheep", "cow", "umbrella", "kite",
        "banana", "clock")


def _judged(n: int, **per_image) -> dict[str, np.ndarray]:
    from attngan.data.scene_render import BACKGROUNDS, CATEGORY_NAMES, COLOURS

    out = {"background": np.zeros(n, dtype=np.int64), "count": np.zeros((n, len(CATEGORY_NAMES)), dtype=np.int64),
           "colour": np.zeros((n, len(CATEGORY_NAMES)), dtype=np.int64),
           "sky": np.zeros((n, len(CATEGORY_NAMES)))}
    for i, scene in per_image.get("scenes", {}).items():
        out["background"][i] = BACKGROUNDS.index(scene["background"])
        for cat, colour, count, sky in scene["objects"]:
            c = CATEGORY_NAMES.index(cat)
            out["count"][i, c], out["colour"][i, c], out["sky"][i, c] = count, COLOURS.index(colour), float(sky)
    return out


def _score(captions, judged, truth=None):
    from attngan.data.scene_render import BACKGROUNDS, CATEGORY_NAMES, COLOURS
    from attngan.metrics.scenes import prompt_requests, scene_scores

    return scene_scores(prompt_requests(captions, truth), judged, CATEGORY_NAMES, COLOURS, BACKGROUNDS)


def test_scene_scores_known_answers_on_constructed_readings():
    captions = ["two red buses driving down the street",            # seen, all right
                "a blue cow grazing on the grass",                  # novel (blue cow), all right
                "a stop sign flying in the sky over the lake",       # novel; read on the ground
                "three white sheep standing in the snow"]           # seen; read as two, on grass
    judged = _judged(4, scenes={
        0: {"background": "street", "objects": [("bus", "red", 2, 0)]},
        1: {"background": "grass", "objects": [("cow", "blue", 1, 0)]},
        2: {"background": "lake", "objects": [("stop sign", "red", 1, 0)]},
        3: {"background": "grass", "objects": [("sheep", "white", 2, 0), ("kite", "red", 1, 1)]},
    })
    s = _score(captions, judged)
    assert s["objects_recall"]["all"] == 1.0
    # Found categories: bus, cow, stop sign, sheep, kite; the kite was not prompted.
    assert s["objects_precision"]["all"] == pytest.approx(4 / 5) and s["objects_precision"]["seen"] == pytest.approx(2 / 3)
    assert s["place"]["seen"] == 0.5 and s["place"]["novel"] == 1.0
    assert s["object_place"]["novel"] == 0.5   # the stop sign is on the ground, not in the sky
    assert s["count"]["seen"] == 0.5 and s["count"]["novel"] == 1.0
    # The stop sign's colour is unstated ("a stop sign"): only the cow's colour is scored there.
    assert s["colour"]["novel"] == 1.0 and s["colour"]["n_novel"] == 1
    assert s["composition"]["seen"] == 0.5 and s["composition"]["novel"] == 0.5
    assert (s["composition"]["n_seen"], s["composition"]["n_novel"]) == (2, 2)


def test_missing_objects_and_a_blank_reading_score_zero():
    captions = ["a red car parked on the street next to a yellow fire hydrant", "two kites flying in the sky over the beach"]
    s = _score(captions, _judged(2))     # nothing found, background 0 (street) everywhere
    assert s["objects_recall"]["all"] == 0 and s["colour"]["all"] == 0 and s["composition"]["all"] == 0
    assert np.isnan(s["objects_precision"]["all"]) and s["objects_precision"]["n_all"] == 0
    assert s["place"]["all"] == 0.5    # the street is right for the first prompt, by chance


def test_prompt_kinds_come_from_the_ground_truth_then_the_held_out_pairs():
    from attngan.metrics.scenes import caption_truth, prompt_requests, rotated_within_kind

    free = prompt_requests(["a blue cow grazing on the grass", "a red bus parked on the lake",
                            "a red bus driving down the street", "a yellow kite flying in the sky over the beach"])
    assert [r["composition"] for r in free] == ["novel", "novel", "seen", "seen"]
    manifest = {"images": {"a": {"split": "test", "composition": "novel", "captions": ["A red bus driving down the street."]},
                           "b": {"split": "train", "composition": "seen", "captions": ["a blue cow on the grass"]}}}
    truth = caption_truth(manifest)
    assert truth == {"a red bus driving down the street": "novel"}
    assert prompt_requests(["a red bus driving down the street"], truth)[0]["composition"] == "novel"
    rotated = rotated_within_kind(free)
    assert [r["objects"][0]["category"] for r in rotated] == ["bus", "cow", "kite", "bus"]
    assert [r["composition"] for r in rotated] == [r["composition"] for r in free]


# The shipped judge on real renders it never saw.

@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from attngan.data.synth_scenes import generate_synth_scenes

    root = tmp_path_factory.mktemp("scenes") / "scenes"
    return generate_synth_scenes(root, images=200, size=128, seed=2, progress=False)


@pytest.fixture(scope="module")
def judge():
    from attngan.metrics.scenes import bundled_judge_dir
    from attngan.networks.scene_judge import load_judge

    return load_judge(bundled_judge_dir())


def test_bundled_judge_meets_its_bars_on_fresh_renders(scenes, judge):
    from attngan.networks.scene_judge import MIN_ACCURACY
    from attngan.training.judge_loop import judge_accuracy, load_judge_data

    cfg = judge.cfg
    assert cfg.valid and set(cfg.accuracy) == {"seen", "novel"}
    data = load_judge_data(scenes, cfg, progress=False)
    acc = judge_accuracy(judge, data)
    assert acc["seen"]["n"] + acc["novel"]["n"] == 200 and acc["novel"]["n"] == 20
    # 200 images of another seed: the bars less a sampling margin (20 novel images: 1 in 20 is 5%).
    for kind, margin in (("seen", 0.02), ("novel", 0.05)):
        for head, bar in MIN_ACCURACY.items():
            assert acc[kind][head] >= bar - margin, (kind, head, acc[kind][head])


def test_judge_folder_round_trip_and_errors(judge, tmp_path):
    from attngan.networks.scene_judge import load_judge, save_judge

    save_judge(judge, tmp_path / "j", half=False)
    again = load_judge(tmp_path / "j")
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    a, b = judge.read(x), again.read(x)
    assert torch.equal(a["count"], b["count"]) and torch.equal(a["background"], b["background"])
    # A reading does not depend on the rest of the batch.
    assert torch.equal(judge.read(x[:1])["count"][0], a["count"][0])
    with pytest.raises(AttnGANError, match="not a scene judge folder"):
        load_judge(tmp_path)
    cfg = json.loads((tmp_path / "j" / "config.json").read_text())
    cfg["image_size"] = 100
    (tmp_path / "j" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AttnGANError, match="multiple of 8"):
        load_judge(tmp_path / "j")


# The metrics through `attngan eval` on folders of constructed images.

def _test_images(scenes: Path, size: int = 64):
    """The test split's renders at `size` with their truth and first caption."""
    from attngan.data.synth_scenes import load_manifest

    manifest = load_manifest(scenes)
    out = []
    for key, t in sorted(manifest["images"].items()):
        if t["split"] == "test":
            with Image.open(scenes / t["file_name"]) as im:
                out.append((np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)), t))
    return out


def _folder(folder: Path, images, captions) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for j, (arr, cap) in enumerate(zip(images, captions)):
        Image.fromarray(arr).save(folder / f"{j:04d}.png")
        mapping[f"{j:04d}.png"] = cap
    (folder / "captions.json").write_text(json.dumps(mapping))
    return folder


def _eval(scenes, folder, tmp_path, metrics="scene_objects,scene_place,scene_colour,scene_count,composition"):
    from attngan.metrics.evaluation import EvalOptions, evaluate

    opts = EvalOptions(metrics=metrics.split(","), splits=2, batch=32, progress=False,
                       cache_dir=str(tmp_path / "cache"), device="cpu")
    return evaluate(scenes, opts, images_dir=folder)


def test_real_renders_pass_and_the_controls_fail(scenes, judge, tmp_path):
    items = _test_images(scenes)
    real = _eval(scenes, _folder(tmp_path / "real", [a for a, _ in items], [t["captions"][0] for _, t in items]),
                 tmp_path)["results"]
    comp = real["composition"]
    assert comp["n_seen"] == 20 and comp["n_novel"] == 20 and not comp.get("void")
    # Real renders are the ceiling a generator can reach (the judge misses some small or hidden
    # objects, novel ones a little more often: about 86% / 82% recall at 64 px on 1,000 test renders); far
    # above the chance pairing of the same images with another prompt of their kind.
    assert real["scene_place"]["seen"] >= 95 and real["scene_place"]["novel"] >= 95
    for name in ("scene_objects", "scene_colour"):
        assert real[name]["seen"] >= 60 and real[name]["novel"] >= 45, (name, real[name])
        assert real[name]["chance"]["seen"] <= 30 and real[name]["chance"]["novel"] <= 30
    assert comp["seen"] >= 50 and comp["novel"] >= 35
    assert comp["chance"]["seen"] <= 10 and comp["chance"]["novel"] <= 10
    assert comp["novel_seen_ratio"] == pytest.approx(comp["novel"] / comp["seen"])

    # The same captions, the background word changed: the place and the composition fail.
    from attngan.data.scene_captions import GROUND_NOUNS

    swap = {"street": "beach", "grass": "snow", "lake": "street", "beach": "grass", "snow": "lake"}
    wrong = []
    for _, t in items:
        words = t["captions"][0]
        bg = t["background"]
        phrase = max((p for p, b in GROUND_NOUNS.items() if b == bg and f" {p}" in f" {words.lower()}"), key=len)
        other = next(p for p, b in GROUND_NOUNS.items() if b == swap[bg] and p == swap[bg])
        wrong.append(words.lower().replace(phrase, other))
    r = _eval(scenes, _folder(tmp_path / "wrong", [a for a, _ in items], wrong), tmp_path)["results"]
    assert r["scene_place"]["value"] <= 5 and r["composition"]["value"] <= 5

    # Blank (mid-grey) images and uniform noise cannot pass.
    rng = np.random.default_rng(0)
    for name, arrays in (("blank", [np.full((64, 64, 3), 128, np.uint8)] * len(items)),
                         ("noise", [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in items])):
        r = _eval(scenes, _folder(tmp_path / name, arrays, [t["captions"][0] for _, t in items]), tmp_path)["results"]
        assert r["composition"]["value"] <= 5, name
        assert r["scene_objects"]["value"] <= 30, name


def test_eval_end_to_end_on_scenes_prints_seen_and_novel(scenes, tmp_path, capsys):
    from attngan.cli import main
    from attngan.config import preset
    from attngan.data.vocab import load_vocab
    from attngan.io import save_model_folder
    from attngan.networks import build_generator, build_image_encoder, build_text_encoder

    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.data.dataset, cfg.data.captions_per_image = "coco", 5
    vocab = load_vocab(scenes)
    model = tmp_path / "tiny"
    save_model_folder(model, cfg, vocab, build_generator(cfg, cfg.text.embedding_dim),
                      build_text_encoder(cfg, len(vocab)), build_image_encoder(cfg))
    out = tmp_path / "report.json"
    assert main(["eval", "--model", str(model), "--data", str(scenes), "--num-images", "24", "--splits", "2",
                 "--batch", "12", "--real-images", "40", "--cache", str(tmp_path / "cache"), "--device", "cpu",
                 "--no-progress", "--out", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert {"scene_objects", "scene_place", "scene_colour", "scene_count", "composition", "fid_judge", "is",
            "r_precision"} <= set(res)
    for name in ("scene_objects", "scene_place", "scene_colour", "composition", "is", "r_precision"):
        assert res[name]["n_seen"] + res[name]["n_novel"] >= 24 - 1, name
        assert res[name]["n_seen"] > 0 and res[name]["n_novel"] > 0, name
    assert res["fid_judge"]["value"] > 0 and res["fid_judge"]["n_real_seen"] == 20
    assert 1.0 <= res["is"]["value"] <= 60
    printed = capsys.readouterr().out
    line = next(ln for ln in printed.splitlines() if ln.startswith("- `composition`: seen"))
    assert "novel" in line and "chance seen" in line   # (the ratio is undefined while seen is 0)
    assert "- `fid_judge`: seen" in printed
    # R-precision by the shipped scenes evaluation DAMSM, not the model's own encoders.
    assert "damsm: evaluation DAMSM synthscenes-eval" in printed


def test_train_oracle_on_scenes_data_trains_a_judge(scenes, tmp_path, capsys):
    from attngan.cli import main
    from attngan.networks.scene_judge import load_judge

    out = tmp_path / "judge"
    assert main(["train-oracle", "--data", str(scenes), "--out", str(out), "--minutes", "0", "--epochs", "1",
                 "--image-size", "32", "--width", "8", "--device", "cpu"]) == 0
    judge = load_judge(out)
    assert judge.cfg.image_size == 32 and judge.cfg.info["heldout_images"] == 20
    assert set(judge.cfg.accuracy) == {"seen", "novel"}
    assert "held-out accuracy, novel compositions (10 images)" in capsys.readouterr().out
    # Continued from that folder: its size and width are kept, and its training is on record.
    again = tmp_path / "judge2"
    assert main(["train-oracle", "--data", str(scenes), "--out", str(again), "--minutes", "0", "--epochs", "1",
                 "--init", str(out), "--lr", "1e-3", "--device", "cpu"]) == 0
    cont = load_judge(again).cfg
    assert (cont.image_size, cont.width) == (32, 8) and cont.info["continued_from"]["epochs"] == 1
    assert main(["train-oracle", "--data", str(scenes), "--out", str(tmp_path / "x"), "--image-size", "36"]) == 2
    assert "--image-size must be a multiple of 8" in capsys.readouterr().err
    assert main(["train-oracle", "--data", str(scenes), "--out", str(tmp_path / "x"), "--lr", "0"]) == 2
    assert "--lr must be between 0 and 1" in capsys.readouterr().err
