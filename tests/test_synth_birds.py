"""SynthBirds: determinism, CUB layout, captions vs ground truth, masks vs pixels, bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion

from attngan import cli
from attngan.data import synth_birds as sb
from attngan.data.synth_captions import caption_attributes, sample_caption
from attngan.errors import AttnGANError

SIZE = 96


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "birds"
    return sb.generate_synth_birds(out, images=36, classes=12, size=SIZE, seed=3, progress=False)


@pytest.fixture(scope="module")
def manifest(ds) -> dict:
    return sb.load_manifest(ds)


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


# --- determinism -----------------------------------------------------------------------------

def test_same_seed_same_bytes_with_any_workers_other_seed_other_images(ds, tmp_path):
    again = sb.generate_synth_birds(tmp_path / "again", images=36, classes=12, size=SIZE, seed=3,
                                    workers=2, progress=False)
    a, b = _tree(ds), _tree(again)
    assert a.keys() == b.keys() and len(a) > 36 * 3
    assert [k for k in a if a[k] != b[k]] == []

    other = _tree(sb.generate_synth_birds(tmp_path / "other", images=36, classes=12, size=SIZE,
                                          seed=4, progress=False))
    jpgs_a = sorted(v for k, v in a.items() if k.endswith(".jpg"))
    jpgs_o = sorted(v for k, v in other.items() if k.endswith(".jpg"))
    assert not set(jpgs_a) & set(jpgs_o)


# --- layout ----------------------------------------------------------------------------------

def test_cub_layout_parses_back(ds, manifest):
    cub = ds / "CUB_200_2011"
    images = _lines(cub / "images.txt")
    classes = _lines(cub / "classes.txt")
    labels = dict(_lines(cub / "image_class_labels.txt"))
    assert len(images) == 36 and len(classes) == 12
    assert [int(i) for i, _ in images] == list(range(1, 37))
    for cid, folder in classes:
        assert folder.startswith(f"{int(cid):03d}.Synth_")
    keys = []
    for iid, rel in images:
        folder, name = rel.split("/")
        assert name.startswith(folder.split(".", 1)[1] + "_") and rel.endswith(".jpg")
        assert folder == classes[int(labels[iid]) - 1][1]
        with Image.open(cub / "images" / rel) as im:
            assert im.format == "JPEG" and im.size == (SIZE, SIZE) and im.mode == "RGB"
        keys.append(rel[:-4])
        captions = (ds / "text" / f"{rel[:-4]}.txt").read_text().splitlines()
        assert len(captions) == 10 and all(c.strip() for c in captions)
    assert set(keys) == set(manifest["images"])

    for iid, x, y, w, h in _lines(cub / "bounding_boxes.txt"):
        x, y, w, h = map(float, (x, y, w, h))
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= SIZE and y + h <= SIZE
        # Tight: the box holds the bird's mask and exceeds it only by thin anti-aliased tips
        # (a needle bill's tip covers no pixel centre but still shades a few pixels).
        key = keys[int(iid) - 1]
        ys, xs = np.nonzero(sb.part_mask(manifest, key, "bird"))
        c = 0.5 + 0.05  # mask pixels are labelled at their centres; the box is rounded to 0.1
        assert x <= xs.min() + c and xs.max() + 1 - c <= x + w
        assert y <= ys.min() + c and ys.max() + 1 - c <= y + h
        assert xs.min() - x < 5 and x + w - xs.max() - 1 < 5 and ys.min() - y < 5 and y + h - ys.max() - 1 < 5

    split = {}
    for s in ("train", "test"):
        raw = (ds / s / "filenames.pickle").read_bytes()
        assert raw[:2] == b"\x80\x02"  # protocol 2, as the original reads
        split[s] = pickle.loads(raw)
        assert all(isinstance(k, str) for k in split[s])
        info = pickle.loads((ds / s / "class_info.pickle").read_bytes())
        assert info == [manifest["images"][k]["class_id"] for k in split[s]]
    assert sorted(split["train"] + split["test"]) == sorted(keys)


def test_attribute_and_part_files_follow_cub(ds, manifest):
    cub = ds / "CUB_200_2011"
    attrs = {int(i): n for i, n in _lines(cub / "attributes" / "attributes.txt")}
    assert list(attrs) == list(range(1, len(attrs) + 1)) and len(set(attrs.values())) == len(attrs)
    assert all("::" in n and n.startswith("has_") for n in attrs.values())
    rows = _lines(cub / "attributes" / "image_attribute_labels.txt")
    assert len(rows) == 36 * len(attrs) and all(len(r) == 5 for r in rows)
    keys = [rel[:-4] for _, rel in _lines(cub / "images.txt")]
    present: dict[int, set[str]] = {}
    for iid, aid, is_present, certainty, time in rows:
        assert is_present in ("0", "1") and certainty in ("1", "2", "3", "4")
        float(time)
        if is_present == "1":
            present.setdefault(int(iid), set()).add(attrs[int(aid)])
    for iid, key in enumerate(keys, 1):
        truth = manifest["images"][key]
        for part, cub_part in (("wing", "wing"), ("belly", "belly"), ("crown", "crown"), ("bill", "bill")):
            have = {n.split("::")[1] for n in present[iid] if n.startswith(f"has_{cub_part}_color::")}
            assert have == {truth["parts"][part]}
        lengths = [n for n in present[iid] if n.startswith("has_bill_length::")]
        assert len(lengths) == 1

    parts = _lines(cub / "parts" / "parts.txt")
    assert [" ".join(p[1:]) for p in parts] == [
        "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
        "nape", "right eye", "right leg", "right wing", "tail", "throat"]
    locs = _lines(cub / "parts" / "part_locs.txt")
    assert len(locs) == 36 * 15
    for iid, pid, x, y, visible in locs:
        assert visible in ("0", "1")
        if visible == "1":
            assert 0 <= float(x) < SIZE and 0 <= float(y) < SIZE
    # One eye and one wing are hidden (side view); the visible eye lies on the eye mask.
    by_image: dict[str, dict[int, tuple]] = {}
    for iid, pid, x, y, visible in locs:
        by_image.setdefault(iid, {})[int(pid)] = (float(x), float(y), int(visible))
    for iid, p in by_image.items():
        assert p[7][2] + p[11][2] == 1 and p[9][2] + p[13][2] == 1
        x, y, _ = p[7] if p[7][2] else p[11]
        eye = sb.part_mask(manifest, keys[int(iid) - 1], "head")
        assert eye[int(y), int(x)]


# --- captions --------------------------------------------------------------------------------

def test_every_caption_states_only_true_attributes(ds, manifest):
    mentioned_key_parts = set()
    for key, truth in manifest["images"].items():
        captions = (ds / "text" / f"{key}.txt").read_text().splitlines()
        assert len(set(captions)) == 10
        seen = set()
        for c in captions:
            got = caption_attributes(c)
            assert 2 <= len(got) <= 5, c
            for attr, value in got.items():
                expected = truth["parts"].get(attr) if attr in truth["parts"] else truth.get(attr)
                assert value == expected, (c, attr, value, expected)
            seen |= set(got)
        # The key parts take turns, so each image names all four of them.
        assert {"wing", "belly", "crown", "bill"} <= seen
        mentioned_key_parts |= seen
    assert {"wing", "belly", "crown", "bill", "bill_shape", "bill_length"} <= mentioned_key_parts


def _random_truth(rng):
    parts = {p: str(rng.choice(sb.COLOURS)) for p in sb.COLOUR_PARTS}
    if rng.random() < 0.5:
        del parts["eyering"]
    return {"parts": parts, "bill_shape": str(rng.choice(sb.BILL_SHAPES)),
            "bill_length": str(rng.choice(sb.BILL_LENGTHS)), "size": str(rng.choice(sb.SIZES))}


def test_grammar_and_parser_agree_on_random_birds():
    rng = np.random.default_rng(0)
    counts = set()
    for _ in range(3000):
        truth = _random_truth(rng)
        text, stated = sample_caption(truth, rng)
        assert caption_attributes(text) == stated, text
        counts.add(len(stated))
    assert counts == {2, 3, 4, 5}


@pytest.mark.parametrize("wing,belly", sb.MOTIVATING_PAIRS)
def test_motivating_prompts_are_produced_and_parsed(wing, belly):
    prompt = f"a bird with wings that are {wing} and a {belly} belly"
    assert prompt in sb.MOTIVATING_PROMPTS
    assert caption_attributes(prompt) == {"wing": wing, "belly": belly}
    rng = np.random.default_rng(1)
    truth = _random_truth(rng)
    truth["parts"].update(wing=wing, belly=belly)
    assert any(sample_caption(truth, rng)[0] == prompt for _ in range(40000))


@pytest.mark.parametrize("text,expected", [
    ("blue wings", {"wing": "blue"}),
    ("a red belly", {"belly": "red"}),
    ("belly is red", {"belly": "red"}),
    ("this bird has wings that are brown and has a white belly.", {"wing": "brown", "belly": "white"}),
    ("a small bird with a red crown and a short pointed bill",
     {"size": "small", "crown": "red", "bill_length": "short", "bill_shape": "pointed"}),
    ("the wings and tail are black, and the belly is white", {"wing": "black", "tail": "black", "belly": "white"}),
    ("black wings and tail with a white belly and breast",
     {"wing": "black", "tail": "black", "belly": "white", "breast": "white"}),
    ("a red belly and wings that are blue", {"belly": "red", "wing": "blue"}),
    ("its beak is orange, long and hooked", {"bill": "orange", "bill_length": "long", "bill_shape": "hooked"}),
    ("a gray bird with a cone-shaped beak", {"bill_shape": "cone"}),
])
def test_parser_reads_free_text(text, expected):
    assert caption_attributes(text) == expected


# --- species and split -----------------------------------------------------------------------

def test_split_is_class_disjoint(ds, manifest):
    split_of = {c["id"]: c["split"] for c in manifest["classes"]}
    train = pickle.loads((ds / "train" / "filenames.pickle").read_bytes())
    test = pickle.loads((ds / "test" / "filenames.pickle").read_bytes())
    train_cls = {manifest["images"][k]["class_id"] for k in train}
    test_cls = {manifest["images"][k]["class_id"] for k in test}
    assert train_cls and test_cls and not train_cls & test_cls
    assert all(split_of[c] == "train" for c in train_cls) and len(train_cls) == 9


def test_species_cover_motivating_pairs_and_vary_independently():
    species = sb.make_species(200, seed=0)
    assert sum(s.split == "train" for s in species) == 150
    assert len({s.name for s in species}) == 200
    for split in ("train", "test"):
        pairs = {(s.parts["wing"], s.parts["belly"]) for s in species if s.split == split}
        assert set(sb.MOTIVATING_PAIRS) <= pairs
    pairs = [(s.parts["wing"], s.parts["belly"]) for s in species]
    assert len(set(pairs)) >= 100  # of the 110 distinct key-colour pairs
    for part in ("wing", "belly", "crown", "bill"):
        assert {s.parts[part] for s in species} <= set(sb.KEY_COLOURS)


def test_default_species_count_follows_the_image_count(tmp_path):
    assert sb.default_classes(11788) == 884 and sb.default_classes(10000) == 750
    assert sb.default_classes(100_000) == sb.MAX_CLASSES and sb.default_classes(10) == 2
    out = sb.generate_synth_birds(tmp_path / "d", images=60, size=64, seed=1, progress=False)
    counts = sb.load_manifest(out)["counts"]
    assert counts["classes"] == sb.default_classes(60) == 4 and counts["test_classes"] == 1
    # 999 species get distinct names and folders (CUB's 3-digit ids)
    species = sb.make_species(sb.MAX_CLASSES, seed=0)
    assert len({s.name for s in species}) == sb.MAX_CLASSES


# --- rendering -------------------------------------------------------------------------------

def test_masks_match_drawn_colours(ds, manifest):
    for key, truth in manifest["images"].items():
        image = np.asarray(Image.open(ds / "CUB_200_2011" / "images" / f"{key}.jpg"), dtype=float)
        for part, colour in truth["parts"].items():
            if part == "eye" or colour in sb.SHEEN_COLOURS:
                continue  # the eye carries a highlight; a sheen is meant to drift
            inner = binary_erosion(sb.part_mask(manifest, key, part))
            if inner.sum() < 4:
                continue
            pixels = image[inner]
            dist = np.linalg.norm(pixels - sb.COLOUR_RGB[colour], axis=1)
            # Shade noise, lighting and grain stay within the tolerance; feather marks may not.
            assert (dist <= sb.SHADE_TOLERANCE).mean() >= 0.85, (key, part, colour)
            if part in sb.KEY_PARTS:
                median = np.median(pixels, axis=0)
                nearest = min(sb.KEY_COLOURS, key=lambda c: np.linalg.norm(median - sb.COLOUR_RGB[c]))
                assert nearest == colour, (key, part, colour, median)


def test_key_parts_are_visible_at_64px():
    species = sb.make_species(40, seed=5)
    for i, sp in enumerate(species):
        out = sb.render_bird(sp, np.random.default_rng(i), 64)
        area = {p: int((out.labels == sb.LABEL[p]).sum()) for p in sb.KEY_PARTS}
        assert area["wing"] >= 30 and area["belly"] >= 30 and area["crown"] >= 10 and area["bill"] >= 5, area


def test_part_mask_helper(ds, manifest):
    key = next(iter(manifest["images"]))
    bill = sb.part_mask(ds, key, "bill")
    assert bill.dtype == bool and bill.shape == (SIZE, SIZE) and bill.any()
    assert np.array_equal(sb.part_mask(manifest, key, "beak"), bill)
    bird = sb.part_mask(manifest, key, "bird")
    assert bird[bill].all() and bird.sum() > sum(sb.part_mask(manifest, key, p).sum() for p in ("wing", "belly"))
    small = sb.part_mask(manifest, key, "wing", size=32)
    assert small.shape == (32, 32) and small.any()
    x, y, w, h = manifest["images"][key]["bbox"]
    crop = sb.part_mask(manifest, key, "bird", size=(20, 30), crop=(int(x), int(y), int(x + w), int(y + h)))
    assert crop.shape == (20, 30) and crop.mean() > 0.3
    with pytest.raises(AttnGANError, match="unknown part"):
        sb.part_mask(manifest, key, "antenna")


# --- bad input -------------------------------------------------------------------------------

def _cli(argv, capsys):
    rc = cli.main(["synth-birds", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if "synth-birds:" in line and "error" in line]
    return rc, err


@pytest.mark.parametrize("case", ["no-images", "one-class", "unwritable", "non-empty", "bad-size"])
def test_cli_bad_input_is_one_line_and_leaves_nothing(case, tmp_path, capsys):
    parent = tmp_path / "p"
    parent.mkdir()
    out = parent / "birds"
    args = ["--out", str(out), "--images", "8", "--classes", "4", "--size", "64"]
    if case == "no-images":
        args[3] = "0"
    elif case == "one-class":
        args[5] = "1"
    elif case == "unwritable":
        (parent / "file").write_text("x")
        args[1] = str(parent / "file" / "birds")
    elif case == "non-empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    else:
        args[7] = "8"
    before = _tree(parent)
    rc, err = _cli(args, capsys)
    assert rc != 0 and len(err) == 1 and err[0].startswith("attngan synth-birds: error:")
    assert _tree(parent) == before and sorted(p.name for p in parent.iterdir()) == sorted(
        {"non-empty": ["birds"], "unwritable": ["file"]}.get(case, []))


def test_failure_midway_and_overwrite(tmp_path, monkeypatch, capsys):
    out = tmp_path / "birds"
    calls = []

    def broken(*a, **k):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("boom")
        return real(*a, **k)

    real = sb.render_bird
    monkeypatch.setattr(sb, "render_bird", broken)
    with pytest.raises(RuntimeError):
        sb.generate_synth_birds(out, images=8, classes=2, size=64, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(sb, "render_bird", real)

    rc, _ = _cli(["--out", str(out), "--images", "8", "--classes", "2", "--size", "64"], capsys)
    assert rc == 0 and sb.load_manifest(out)["seed"] == 0
    rc, _ = _cli(["--out", str(out), "--images", "6", "--classes", "2", "--size", "64", "--seed", "9",
                  "--overwrite"], capsys)
    assert rc == 0 and sb.load_manifest(out)["seed"] == 9 and sb.load_manifest(out)["counts"]["images"] == 6
    assert [p.name for p in tmp_path.iterdir()] == ["birds"]
