"""SynthScenes: COCO 2014 layout read by the COCO loader, captions vs ground truth, held-out
compositions, COCO instance schema, masks vs pixels, determinism, bad input."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy.ndimage import binary_erosion

from attngan import cli
from attngan.data import synth_scenes as ss
from attngan.data.scene_captions import (VOCABULARY, caption_matches, make_captions,
                                         parse_scene_caption, sample_caption)
from attngan.errors import AttnGANError
from attngan.text import tokenize

SIZE = 64
IMAGES = 40
DATA = Path(__file__).parent / "data"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "scenes"
    return ss.generate_synth_scenes(out, images=IMAGES, size=SIZE, seed=3, progress=False)


@pytest.fixture(scope="module")
def manifest(ds) -> dict:
    return ss.load_manifest(ds)


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --- determinism -----------------------------------------------------------------------------

def test_same_seed_same_bytes_with_any_workers_other_seed_other_images(ds, tmp_path):
    again = ss.generate_synth_scenes(tmp_path / "again", images=IMAGES, size=SIZE, seed=3, workers=2,
                                     progress=False)
    a, b = _tree(ds), _tree(again)
    assert a.keys() == b.keys() and len(a) > IMAGES * 2
    assert [k for k in a if a[k] != b[k]] == []
    other = _tree(ss.generate_synth_scenes(tmp_path / "other", images=IMAGES, size=SIZE, seed=4,
                                           progress=False))
    jpgs_a = {v for k, v in a.items() if k.endswith(".jpg")}
    jpgs_o = {v for k, v in other.items() if k.endswith(".jpg")}
    assert not jpgs_a & jpgs_o


# --- COCO layout -----------------------------------------------------------------------------

def test_coco_2014_layout_and_caption_schema(ds, manifest):
    counts = ss.split_counts(IMAGES)
    assert manifest["counts"]["train_images"] == counts["train"] == 32
    assert manifest["counts"]["test_seen"] == counts["seen"] and manifest["counts"]["test_novel"] == counts["novel"]
    keys = {}
    for split, coco in (("train", "train2014"), ("test", "val2014")):
        raw = (ds / split / "filenames.pickle").read_bytes()
        assert raw[:2] == b"\x80\x02"  # protocol 2, as the original reads
        keys[split] = pickle.loads(raw)
        assert all(k.startswith(f"COCO_{coco}_") and len(k) == len(f"COCO_{coco}_") + 12 for k in keys[split])
        assert sorted(p.stem for p in (ds / coco).iterdir()) == sorted(keys[split])
        caps = _json(ds / "annotations" / f"captions_{coco}.json")
        assert set(caps) >= {"info", "images", "annotations", "licenses"}
        by_id = {im["id"]: im for im in caps["images"]}
        assert sorted(Path(im["file_name"]).stem for im in caps["images"]) == sorted(keys[split])
        per_image: dict[int, list[str]] = {}
        for ann in caps["annotations"]:
            assert set(ann) == {"id", "image_id", "caption"} and ann["image_id"] in by_id
            per_image.setdefault(ann["image_id"], []).append(ann["caption"])
        assert len({a["id"] for a in caps["annotations"]}) == len(caps["annotations"])
        for im in caps["images"]:
            key = Path(im["file_name"]).stem
            truth = manifest["images"][key]
            assert (im["width"], im["height"]) == (SIZE, SIZE) and im["id"] == truth["id"]
            assert per_image[im["id"]] == truth["captions"] and len(truth["captions"]) == 5
            assert truth["split"] == split and truth["file_name"] == f"{coco}/{key}.jpg"
            with Image.open(ds / truth["file_name"]) as img:
                assert img.format == "JPEG" and img.size == (SIZE, SIZE) and img.mode == "RGB"
    assert not set(keys["train"]) & set(keys["test"])
    assert set(keys["train"]) | set(keys["test"]) == set(manifest["images"])


def test_instances_follow_coco_schema_with_real_category_ids(ds, manifest):
    coco_names = {c["name"]: (c["id"], c["supercategory"]) for c in _json(DATA / "coco2014_categories.json")}
    ann_ids = set()
    for coco in ("train2014", "val2014"):
        inst = _json(ds / "annotations" / f"instances_{coco}.json")
        assert set(inst) >= {"info", "images", "annotations", "categories", "licenses"}
        cats = inst["categories"]
        assert len(cats) == len(ss.CATEGORIES) >= 10
        for c in cats:
            assert coco_names[c["name"]] == (c["id"], c["supercategory"]), c
        cat_ids = {c["id"] for c in cats}
        images = {im["id"]: Path(im["file_name"]).stem for im in inst["images"]}
        seen_objects = {}
        for ann in inst["annotations"]:
            assert set(ann) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
            assert ann["category_id"] in cat_ids and ann["iscrowd"] == 0 and ann["id"] not in ann_ids
            ann_ids.add(ann["id"])
            key = images[ann["image_id"]]
            truth = manifest["images"][key]
            obj = next(o for o in truth["objects"] if o["annotation_id"] == ann["id"])
            seen_objects.setdefault(key, []).append(obj["mask_value"])
            assert ann["category_id"] == obj["category_id"] == coco_names[obj["category"]][0]
            x, y, w, h = ann["bbox"]
            assert ann["bbox"] == obj["bbox"] and w > 0 and h > 0
            assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE
            mask = ss.object_mask(manifest, key, obj["mask_value"] - ss.MASK_FIRST_OBJECT)
            assert ann["area"] == float(mask.sum()) == obj["area"] > 0
            ys, xs = np.nonzero(mask)
            assert x <= xs.min() + 0.5 and xs.max() + 0.5 <= x + w and y <= ys.min() + 0.5 and ys.max() + 0.5 <= y + h
            assert isinstance(ann["segmentation"], list) and ann["segmentation"]
            for poly in ann["segmentation"]:
                assert len(poly) >= 6 and len(poly) % 2 == 0
                assert all(0 <= v <= SIZE for v in poly)
            # The polygons cover the object's visible pixels (they are its drawn outline).
            canvas = Image.new("L", (SIZE, SIZE))
            for poly in ann["segmentation"]:
                ImageDraw.Draw(canvas).polygon([(poly[i], poly[i + 1]) for i in range(0, len(poly), 2)], fill=1)
            assert (np.asarray(canvas)[mask] == 1).mean() > 0.7
        for key, values in seen_objects.items():
            assert sorted(values) == [o["mask_value"] for o in manifest["images"][key]["objects"]]
        assert len(seen_objects) == len(images)


# --- the COCO loader reads it unchanged ------------------------------------------------------

def test_the_coco_loader_reads_the_set_unchanged(ds, manifest, tmp_path):
    from attngan.config import preset
    from attngan.data.convert import layout_records
    from attngan.data.records import detect_source
    from attngan.data.dataset import TextImageDataset, load_vocab, open_split

    data = Path(shutil.copytree(ds, tmp_path / "scenes"))  # the loader saves vocab.json beside it
    assert detect_source(data).name == "coco"
    cfg = preset("coco-tiny").data
    assert cfg.dataset == "coco" and cfg.captions_per_image == 5
    vocab = load_vocab(data)
    assert set(vocab.id_to_word[1:]) <= set(VOCABULARY) and len(vocab.id_to_word) > 40
    for split in ("train", "test"):
        keys = pickle.loads((data / split / "filenames.pickle").read_bytes())
        dset = open_split(data, split, cfg, vocab, train=split == "train")
        assert isinstance(dset, TextImageDataset) and dset.keys == keys
        item = dset[0]
        assert [tuple(t.shape) for t in item["images"]] == [(3, 32, 32), (3, 64, 64)]
        for k in range(5):
            assert dset.caption_text(0, k).split() == tokenize(manifest["images"][keys[0]]["captions"][k])
    records = layout_records(data, "test")
    assert [r.key for r in records] == pickle.loads((data / "test" / "filenames.pickle").read_bytes())
    assert records[0].captions == manifest["images"][records[0].key]["captions"]


# --- captions --------------------------------------------------------------------------------

def test_parser_recovers_every_caption_of_the_set(ds, manifest):
    vocab = set(VOCABULARY)
    stated_counts = vague = relations = 0
    for key, truth in manifest["images"].items():
        assert len({c.lower().rstrip(".") for c in truth["captions"]}) == 5
        for caption in truth["captions"]:
            parsed = parse_scene_caption(caption)
            assert caption_matches(parsed, truth) == [], (caption, caption_matches(parsed, truth))
            assert set(tokenize(caption)) <= vocab, caption
            stated_counts += sum(o["count"] is not None for o in parsed["objects"])
            vague += sum(o["count"] is None for o in parsed["objects"])
            relations += parsed["relation"] is not None
    assert stated_counts and vague and relations


def test_grammar_and_parser_agree_on_many_scenes():
    rng = np.random.default_rng(0)
    forms = set()
    for i in range(2500):
        scene = ss.sample_scene(rng, "novel" if i % 3 == 0 else "seen", i)
        text = sample_caption(scene, rng)
        assert caption_matches(parse_scene_caption(text), scene) == [], text
        forms.add(" ".join(w for w in tokenize(text) if w in ("there", "photo", "picture", "image", "with",
                                                               "behind", "and", "over", "above"))[:12])
    assert len(forms) >= 12  # many phrasings, not one template
    truth = ss.sample_scene(np.random.default_rng(1), "seen")
    assert len(set(make_captions(truth, np.random.default_rng(2)))) == 5


@pytest.mark.parametrize("text,expected", [
    ("a red bus floating on a lake",
     {"background": "lake", "objects": [("bus", "red", 1, "lake")], "relation": None}),
    ("A stop sign flying in the sky.",
     {"background": None, "objects": [("stop sign", None, 1, "sky")], "relation": None}),
    ("a herd of cows grazing on the grass",
     {"background": "grass", "objects": [("cow", None, None, "grass")], "relation": None}),
    ("two boats on the water next to a yellow car",
     {"background": "lake", "objects": [("boat", None, 2, "lake"), ("car", "yellow", 1, "lake")],
      "relation": ("boat", "next to", "car")}),
    ("three white sheep behind a black cow in the snow",
     {"background": "snow", "objects": [("sheep", "white", 3, "snow"), ("cow", "black", 1, "snow")],
      "relation": ("cow", "in front of", "sheep")}),
    ("a blue kite flying over two brown cows on a green field",
     {"background": "grass", "objects": [("kite", "blue", 1, "sky"), ("cow", "brown", 2, "grass")],
      "relation": ("kite", "above", "cow")}),
    ("in the sky above a snowy field there is an orange airplane",
     {"background": "snow", "objects": [("airplane", "orange", 1, "sky")], "relation": None}),
    ("a bus that is red floating on the lake next to two cows which are brown",
     {"background": "lake", "objects": [("bus", "red", 1, "lake"), ("cow", "brown", 2, "lake")],
      "relation": ("bus", "next to", "cow")}),
])
def test_parser_reads_free_text(text, expected):
    got = parse_scene_caption(text)
    assert got["background"] == expected["background"]
    assert [(o["category"], o["colour"], o["count"], o["place"]) for o in got["objects"]] == expected["objects"]
    rel = got["relation"]
    assert (None if rel is None else (rel["subject"], rel["relation"], rel["object"])) == expected["relation"]


def test_example_prompts_are_the_held_out_compositions(ds, manifest):
    prompts = (ds / "example_captions.txt").read_text().splitlines()
    assert prompts == manifest["example_prompts"] and len(prompts) == len(ss.HELD_OUT)
    for prompt, (kind, pair) in zip(prompts, ss.HELD_OUT):
        o = parse_scene_caption(prompt)["objects"]
        assert len(o) == 1
        held = ss.is_held_out(o[0]["category"], o[0]["colour"], o[0]["place"])
        assert held == (kind, pair), prompt


# --- held-out compositions -------------------------------------------------------------------

def _pairs(group: dict) -> set[tuple[str, str]]:
    return {(group["category"], group["place"]), (group["colour"], group["category"])}


def test_no_held_out_pair_in_training_and_one_in_every_novel_image(manifest):
    held = {tuple(p) for p in manifest["held_out"]["places"]} | {tuple(p) for p in manifest["held_out"]["colours"]}
    assert ("bus", "lake") in held and ("stop sign", "sky") in held and ("blue", "cow") in held
    assert {("cow", "street"), ("cow", "beach"), ("boat", "grass")} <= held
    for key, t in manifest["images"].items():
        found = set().union(*(_pairs(g) for g in t["groups"])) & held
        for o in t["objects"]:  # every object agrees with its group
            g = t["groups"][o["group"]]
            assert (o["category"], o["colour"], o["place"]) == (g["category"], g["colour"], g["place"])
        if t["split"] == "train" or t["composition"] == "seen":
            assert not found and t["held_out"] is None, key
        else:
            assert t["split"] == "test" and found == {tuple(t["held_out"]["pair"])}, key


def test_plan_balances_held_out_pairs_and_seen_scenes_never_hold_one():
    counts = ss.split_counts(ss.DEFAULT_IMAGES)
    assert counts["seen"] >= 400 and counts["novel"] >= 400
    plan = ss.make_plan(ss.DEFAULT_IMAGES)
    novel = [p["held_out"] % len(ss.HELD_OUT) for p in plan if p["composition"] == "novel"]
    assert all(p["split"] == "test" for p in plan if p["composition"] == "novel")
    per_pair = np.bincount(novel, minlength=len(ss.HELD_OUT))
    assert per_pair.min() >= per_pair.max() - 1 and per_pair.min() >= 40
    rng = np.random.default_rng(5)
    trained: set[tuple[str, str]] = set()
    for _ in range(4000):
        scene = ss.sample_scene(rng, "seen")
        for g in scene["groups"]:
            assert ss.is_held_out(g["category"], g["colour"], g["place"]) is None
            trained |= _pairs(g)
    # What a novel pair combines is trained, only not together: a composition, not a new word.
    for a, b in ss.HELD_OUT_PLACES + ss.HELD_OUT_COLOURS:
        assert any(p[0] == a for p in trained) and any(p[1] == b for p in trained)
    # and every other pair does occur
    assert len(trained) == (len(ss.CATEGORY_NAMES) * len(ss.PLACES) + len(ss.COLOURS) * len(ss.CATEGORY_NAMES)
                            - len(ss.HELD_OUT))


# --- rendering -------------------------------------------------------------------------------

def test_masks_places_and_colours_match_the_pixels(ds, manifest):
    palette = {c: np.array(v, dtype=float) for c, v in ss.COLOUR_RGB.items()}
    right = total = 0
    for key, t in manifest["images"].items():
        labels = np.asarray(Image.open(ds / t["mask"]))
        image = np.asarray(Image.open(ds / t["file_name"]), dtype=float)
        rows = np.arange(SIZE)[:, None] + 0.5 >= t["horizon"]
        free = labels < ss.MASK_FIRST_OBJECT
        assert (labels[free] == np.broadcast_to(rows, labels.shape)[free]).all()
        assert set(np.unique(labels)) - {0, 1} == {o["mask_value"] for o in t["objects"]}
        for o in t["objects"]:
            x, y, w, h = o["bbox"]
            if o["place"] == "sky":  # flying objects are drawn in the sky region
                assert y + h <= t["horizon"], (key, o)
            else:                    # ground objects stand below the horizon
                assert y + h > t["horizon"], (key, o)
            assert o["visible"] >= 0.4
            pixels = image[binary_erosion(labels == o["mask_value"])]  # not the anti-aliased rim
            if len(pixels) < 10:
                continue
            near = {c: (np.linalg.norm(pixels - rgb, axis=1) < 60).sum() for c, rgb in palette.items()}
            right += max(near, key=near.get) == o["colour"]
            total += 1
    assert total > 40 and right / total >= 0.95, (right, total)


def test_every_category_and_background_renders_at_64px():
    rng = np.random.default_rng(0)
    for i, cat in enumerate(ss.CATEGORY_NAMES):
        bg = ss.BACKGROUNDS[i % len(ss.BACKGROUNDS)]
        unit = ss.UNIT[cat] * 64 * 0.8
        obj = ss.ObjectSpec(cat, ss.COLOURS[i % len(ss.COLOURS)], 32, 58, unit, 1)
        out = ss.render_scene(bg, 27.0, [obj], 64, rng)
        assert out.areas[0] >= 40, (cat, out.areas)
        assert (out.labels == ss.MASK_SKY).any() and (out.labels == ss.MASK_GROUND).any()


def test_a_scene_written_by_hand_is_drawn_as_written():
    scene = {"background": "lake", "relation": {"subject": 1, "relation": "above", "object": 0},
             "groups": [{"category": "bus", "colour": "red", "count": 1, "place": "lake"},
                        {"category": "stop sign", "colour": "blue", "count": 2, "place": "sky"}]}
    rngs = [np.random.default_rng(k) for k in range(3)]
    out, truth = ss.draw_scene(scene, 96, *rngs)
    assert [(o["category"], o["colour"], o["place"]) for o in truth["objects"]] == [
        ("stop sign", "blue", "sky"), ("stop sign", "blue", "sky"), ("bus", "red", "lake")]
    assert [g["objects"] for g in truth["groups"]] == [[2], [0, 1]]
    for o in truth["objects"]:
        x, y, w, h = o["bbox"]
        assert (y + h <= truth["horizon"]) == (o["place"] == "sky")
        assert (out.labels == o["mask_value"]).sum() == o["area"] > 30
    for caption in truth["captions"]:
        assert caption_matches(parse_scene_caption(caption), truth) == [], caption
    assert out.image.shape == (96, 96, 3) and ss.is_held_out("stop sign", "blue", "sky")


def test_backgrounds_differ_in_their_ground():
    means = {}
    for bg in ss.BACKGROUNDS:
        img = ss.render_scene(bg, 28.0, [], 64, np.random.default_rng(1)).image
        means[bg] = img[40:].reshape(-1, 3).mean(axis=0)
    for a in ss.BACKGROUNDS:
        for b in ss.BACKGROUNDS:
            if a < b:
                assert np.linalg.norm(means[a] - means[b]) > 30, (a, b)


# --- other formats and bad input -------------------------------------------------------------

def test_imagefolder_and_webdataset_formats(tmp_path):
    folder = ss.synth_scenes_as("imagefolder", tmp_path / "folder", images=10, size=SIZE, seed=1,
                                progress=False)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    coco = ss.load_manifest(ss.generate_synth_scenes(tmp_path / "coco", images=10, size=SIZE, seed=1,
                                                     progress=False))
    # The same images and captions as the COCO layout of the same seed, in the same splits.
    by_name = {Path(t["file_name"]).name: t for t in coco["images"].values()}
    assert sorted(Path(r["file_name"]).name for r in rows) == sorted(by_name)
    for r in rows:
        t = by_name[Path(r["file_name"]).name]
        assert r["text"] == t["captions"] and r["split"] == t["split"]
        assert (folder / r["file_name"]).read_bytes() == (tmp_path / "coco" / t["file_name"]).read_bytes()
    shutil.rmtree(tmp_path / "coco")
    shards = ss.synth_scenes_as("webdataset", tmp_path / "shards", images=10, size=SIZE, seed=1,
                                progress=False)
    index = _json(shards / "shards.json")
    assert index and sorted(p.name for p in shards.glob("*.tar"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "shards"]


def _cli(argv, capsys):
    rc = cli.main(["synth-scenes", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, [line for line in err if "synth-scenes:" in line and "error" in line]


@pytest.mark.parametrize("case", ["few-images", "many-images", "small-size", "big-size", "no-workers",
                                  "many-workers", "negative-seed", "huge-seed", "unwritable", "non-empty"])
def test_cli_bad_input_is_one_line_and_leaves_nothing(case, tmp_path, capsys):
    parent = tmp_path / "p"
    parent.mkdir()
    out = parent / "scenes"
    args = {"--out": str(out), "--images": "12", "--size": "64", "--workers": "1", "--seed": "0"}
    change = {"few-images": ("--images", "9"), "many-images": ("--images", "10000000"),
              "small-size": ("--size", "32"), "big-size": ("--size", "4096"),
              "no-workers": ("--workers", "0"), "many-workers": ("--workers", "1000"),
              "negative-seed": ("--seed", "-1"), "huge-seed": ("--seed", str(2**63))}
    if case in change:
        args[change[case][0]] = change[case][1]
    elif case == "unwritable":
        (parent / "file").write_text("x")
        args["--out"] = str(parent / "file" / "scenes")
    else:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = _tree(parent)
    rc, err = _cli([v for kv in args.items() for v in kv], capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("attngan synth-scenes: error:"), err
    assert _tree(parent) == before


def test_cli_renders_and_overwrites(tmp_path, capsys):
    out = tmp_path / "scenes"
    rc, _ = _cli(["--out", str(out), "--images", "10", "--size", "64"], capsys)
    assert rc == 0 and ss.load_manifest(out)["seed"] == 0
    rc, _ = _cli(["--out", str(out), "--images", "12", "--size", "64", "--seed", "9", "--overwrite"], capsys)
    m = ss.load_manifest(out)
    assert rc == 0 and m["seed"] == 9 and m["counts"]["images"] == 12
    assert [p.name for p in tmp_path.iterdir()] == ["scenes"]
    with pytest.raises(AttnGANError, match="not a SynthScenes folder"):
        ss.load_manifest(tmp_path)


def test_a_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = ss.render_scene

    def broken(*a, **k):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(ss, "render_scene", broken)
    with pytest.raises(RuntimeError):
        ss.generate_synth_scenes(tmp_path / "deep" / "scenes", images=12, size=SIZE, progress=False)
    assert list(tmp_path.iterdir()) == [] and len(calls) == 4


def test_coco_tiny_preset_holds_every_caption():
    from attngan.config import preset

    cfg = preset("coco-tiny")
    assert cfg.data.dataset == "coco" and cfg.data.captions_per_image == 5
    rng = np.random.default_rng(3)
    longest = max(len(tokenize(sample_caption(ss.sample_scene(rng, "seen"), rng))) for _ in range(3000))
    assert longest <= cfg.data.words_num and longest <= cfg.damsm.words_num
