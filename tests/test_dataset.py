import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attngan.config import DataConfig
from attngan.data.cache import build_cache
from attngan.data.dataset import DataWarning, TextImageDataset, collate_sorted, make_loader
from attngan.data.coco import build_coco_text
from attngan.data.layout import bbox_crop_box
from attngan.errors import AttnGANError
from attngan.text import Vocabulary
from attngan.data.vocab import load_vocab

WORDS = "a bird with red blue green wings belly crown small large short bill black white this has".split()
BLUE, RED = (20, 40, 220), (230, 20, 20)


def caption_lines(rng, n):
    # Lengths 3..14 so that sorting and words_num truncation are exercised.
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 15))) for _ in range(n)]


def make_cub(root: Path, classes=(1, 2, 3), per_class=3, size=(120, 90), captions=10, seed=0,
             test_classes=(3,)) -> Path:
    """A CUB-layout folder: blue images whose bounding box is a red square."""
    rng = np.random.default_rng(seed)
    cub = root / "CUB_200_2011"
    images, boxes, splits = [], [], {"train": [], "test": []}
    for c in classes:
        for j in range(per_class):
            key = f"{c:03d}.Class_{c}/Class_{c}_{j:04d}"
            w, h = size
            bw, bh = int(rng.integers(16, 30)), int(rng.integers(16, 30))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            img = Image.new("RGB", size, BLUE)
            img.paste(RED, (x, y, x + bw, y + bh))
            (cub / "images" / key).parent.mkdir(parents=True, exist_ok=True)
            img.save(cub / "images" / f"{key}.jpg", quality=95)
            images.append(key)
            boxes.append((x, y, bw, bh))
            (root / "text" / key).parent.mkdir(parents=True, exist_ok=True)
            (root / "text" / f"{key}.txt").write_text("\n".join(caption_lines(rng, captions)) + "\n")
            splits["test" if c in test_classes else "train"].append(key)
    (cub / "images.txt").write_text("".join(f"{i + 1} {k}.jpg\n" for i, k in enumerate(images)))
    (cub / "bounding_boxes.txt").write_text(
        "".join(f"{i + 1} {x}.0 {y}.0 {w}.0 {h}.0\n" for i, (x, y, w, h) in enumerate(boxes)))
    for split, keys in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / "filenames.pickle").write_bytes(pickle.dumps(keys, protocol=2))
    return root


def read_boxes(root: Path) -> dict[str, tuple[int, int, int, int]]:
    cub = root / "CUB_200_2011"
    names = dict(line.split() for line in (cub / "images.txt").read_text().splitlines())
    return {names[p[0]][:-4]: tuple(int(float(v)) for v in p[1:])
            for p in (line.split() for line in (cub / "bounding_boxes.txt").read_text().splitlines())}


CFG = DataConfig(base_size=16, branch_num=3, words_num=8, workers=0, max_bad_fraction=0.0)


@pytest.fixture
def cub(tmp_path):
    return make_cub(tmp_path / "birds")


def dataset(root, split="train", cfg=CFG, **kw):
    return TextImageDataset(root, split, cfg, load_vocab(root), **kw)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


# Items.

def test_items_have_the_documented_shapes_and_ranges(cub):
    ds = dataset(cub)
    assert len(ds) == 6 and ds.image_sizes == [16, 32, 64] and ds.load_size == 76
    item = ds[0]
    assert [tuple(x.shape) for x in item["images"]] == [(3, 16, 16), (3, 32, 32), (3, 64, 64)]
    for x in item["images"]:
        assert x.dtype == torch.float32 and x.is_contiguous()
        assert -1.0 <= x.min() < 0 < x.max() <= 1.0
    cap, n = item["caption"], item["cap_len"]
    assert cap.dtype == torch.long and cap.shape == (8,) and 3 <= n <= 8
    assert (cap[:n] > 0).all() and (cap[n:] == 0).all()
    assert item["key"] == ds.keys[0] and item["class_id"] == 1
    assert ds.class_ids.tolist() == [1, 1, 1, 2, 2, 2]
    # The caption is one of the item's ten (or an ordered subset of a longer one).
    words = ds.vocab.decode(cap.tolist()).split()
    assert any(_is_subsequence(words, ds.caption_text(0, k).split()) for k in range(10))


def _is_subsequence(short, long):
    it = iter(long)
    return all(w in it for w in short)


def test_bbox_crop_centres_the_red_box(cub):
    ds = dataset(cub, "train", train=False)
    boxes = read_boxes(cub)
    for i in range(len(ds)):
        img = to_uint8(ds[i]["images"][-1]).astype(int)
        centre = img[28:36, 28:36].mean(axis=(0, 1))
        assert np.abs(centre - RED).max() < 40, (ds.keys[i], centre)
        # The crop is 1.5 x the box around its centre: with a whole image, the red square would
        # cover a much smaller share of the output.
        x, y, w, h = boxes[ds.keys[i]]
        x1, y1, x2, y2 = bbox_crop_box((x, y, w, h), 120, 90)
        expected = w * h / ((x2 - x1) * (y2 - y1))
        red = (np.abs(img - RED).max(axis=2) < 60).mean()
        assert abs(red - expected) < 0.12 + 0.1 * expected, (red, expected)


def test_bbox_crop_box_follows_the_original_arithmetic():
    # r = int(0.75 * 40) = 30 around (int(10 + 40/2), int(20 + 30/2)) = (30, 35), clipped.
    assert bbox_crop_box((10, 20, 40, 30), 200, 100) == (0, 5, 60, 65)
    assert bbox_crop_box((150, 80, 40, 40), 170, 100) == (140, 70, 170, 100)
    assert bbox_crop_box((500, 500, 10, 10), 100, 100) is None


def test_small_stages_are_downscaled_from_the_same_crop_and_flip(cub):
    ds = dataset(cub)
    ds.reseed(3)
    for i in range(len(ds)):
        small, mid, big = ds[i]["images"]
        big8 = Image.fromarray(to_uint8(big))
        for x, s in ((small, 16), (mid, 32)):
            ref = np.asarray(big8.resize((s, s), Image.BILINEAR)).astype(int)
            assert np.abs(to_uint8(x).astype(int) - ref).max() <= 1


def test_train_crops_vary_and_eval_crops_repeat(cub):
    train, ev = dataset(cub), dataset(cub, train=False)
    train.reseed(0)
    a = [train[0]["images"][-1] for _ in range(8)]
    assert any(not torch.equal(a[0], x) for x in a[1:])
    b = [ev[0] for _ in range(3)]
    assert all(torch.equal(b[0]["images"][-1], x["images"][-1]) for x in b)
    assert all(torch.equal(b[0]["caption"], x["caption"]) for x in b)
    # Eval is the centre crop, unflipped: the middle of the resized bbox crop.
    ds_full = dataset(cub, image_sizes=[76], train=False)  # 76 -> 90 px, crop 76
    assert ds_full[0]["images"][0].shape == (3, 76, 76)


def test_train_flips_half_the_time_and_eval_never(cub):
    key = "001.Class_1/Class_1_0000"
    ramp = np.tile(np.linspace(0, 255, 120, dtype=np.uint8)[None, :, None], (90, 1, 3))
    Image.fromarray(ramp).save(cub / "CUB_200_2011" / "images" / f"{key}.jpg", quality=95)
    boxes = (cub / "CUB_200_2011" / "bounding_boxes.txt").read_text().splitlines()
    boxes[0] = "1 0.0 0.0 120.0 90.0"
    (cub / "CUB_200_2011" / "bounding_boxes.txt").write_text("\n".join(boxes))

    def dark_left(ds):
        x = ds[0]["images"][-1]
        return bool(x[:, :, :32].mean() < x[:, :, 32:].mean())

    train = dataset(cub)
    train.reseed(0)
    draws = [dark_left(train) for _ in range(40)]
    assert 8 < sum(draws) < 32
    assert all(dark_left(dataset(cub, train=False)) for _ in range(3))


def test_long_captions_keep_a_random_ordered_subset(tmp_path):
    root = make_cub(tmp_path / "b", classes=(1,), per_class=1, test_classes=())
    key = "001.Class_1/Class_1_0000"
    (root / "text" / f"{key}.txt").write_text("\n".join(" ".join(WORDS[:12]) for _ in range(10)))
    cfg = replace(CFG, words_num=5)
    ds = dataset(root, cfg=cfg)
    order = {w: i for i, w in enumerate(WORDS)}
    seen = set()
    for _ in range(20):
        cap, n = ds.padded_caption(0, 0)
        words = ds.vocab.decode(cap.tolist()).split()
        assert n == 5 and len(words) == 5
        assert [order[w] for w in words] == sorted(order[w] for w in words)  # order kept
        seen.add(tuple(words))
    assert len(seen) > 5  # redrawn every time
    ev = dataset(root, cfg=cfg, train=False)
    assert len({tuple(ev.padded_caption(0, 0)[0].tolist()) for _ in range(5)}) == 1
    assert len(ds.caption(0, 0)) == 12  # the full caption stays available


def test_eval_caption_index_and_all_captions(cub):
    ds = dataset(cub, "test", train=False, caption_index=4)
    full = ds.caption(1, 4)
    cap, n = ds.padded_caption(1, 4)
    assert torch.equal(ds[1]["caption"], cap) and n == min(len(full), 8)
    assert _is_subsequence(cap[:n].tolist(), full)
    caps = list(ds.all_captions())
    assert len(caps) == len(ds) * 10 and caps[13] == (1, 3, ds.caption(1, 3))
    with pytest.raises(AttnGANError, match="caption_index"):
        dataset(cub, train=False, caption_index=10)


# Batches.

def test_collate_sorts_by_length_and_keeps_rows_aligned(cub):
    ds = dataset(cub, train=False)
    items = [ds[i] for i in range(len(ds))]
    batch = collate_sorted(items)
    lens = batch["cap_lens"].tolist()
    assert lens == sorted(lens, reverse=True) and sorted(lens) == sorted(it["cap_len"] for it in items)
    by_key = {it["key"]: it for it in items}
    for r, key in enumerate(batch["keys"]):
        assert torch.equal(batch["captions"][r], by_key[key]["caption"])
        assert torch.equal(batch["images"][2][r], by_key[key]["images"][2])
        assert batch["class_ids"][r] == by_key[key]["class_id"]
    assert [x.shape for x in batch["images"]] == [(6, 3, 16, 16), (6, 3, 32, 32), (6, 3, 64, 64)]
    assert batch["captions"].shape == (6, 8) and batch["skipped"] == []


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_is_reproducible(cub, workers):
    def run(seed):
        loader = make_loader(dataset(cub), 3, shuffle=True, workers=workers, drop_last=True, seed=seed)
        out = []
        for _ in range(2):
            out += [(b["keys"], b["captions"], b["images"][0]) for b in loader]
        return out

    a, b, c = run(0), run(0), run(1)
    assert len(a) == 4
    for (ka, ca, ia), (kb, cb, ib) in zip(a, b):
        assert ka == kb and torch.equal(ca, cb) and torch.equal(ia, ib)
    assert any(x[0] != y[0] or not torch.equal(x[2], y[2]) for x, y in zip(a, c))


# Classes.

def test_class_info_pickle_overrides_folder_prefix(cub):
    (cub / "train" / "class_info.pickle").write_bytes(pickle.dumps([7, 7, 7, 9, 9, 9], protocol=2))
    assert dataset(cub).class_ids.tolist() == [7, 7, 7, 9, 9, 9]
    (cub / "train" / "class_info.pickle").write_bytes(pickle.dumps([7, 7], protocol=2))
    with pytest.raises(AttnGANError, match="2 class ids for 6 images"):
        dataset(cub)


def test_filenames_pickle_from_python2_loads(cub):
    from test_text import py2_dumps

    keys = pickle.loads((cub / "train" / "filenames.pickle").read_bytes())
    (cub / "train" / "filenames.pickle").write_bytes(py2_dumps([k.encode() for k in keys]))
    assert dataset(cub).keys == keys


def test_malicious_filenames_pickle_is_refused(cub, tmp_path):
    from test_text import _Evil

    marker = tmp_path / "pwned"
    (cub / "train" / "filenames.pickle").write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(AttnGANError, match="refusing to load"):
        dataset(cub)
    assert not marker.exists()


# Bad input.

def test_missing_files_are_named(cub):
    key = "002.Class_2/Class_2_0001"
    vocab = load_vocab(cub)
    (cub / "text" / f"{key}.txt").unlink()
    with pytest.raises(AttnGANError, match=f"missing caption file .*{key}.txt"):
        TextImageDataset(cub, "train", CFG, vocab)
    (cub / "CUB_200_2011" / "images" / f"{key}.jpg").unlink()
    with pytest.raises(AttnGANError, match=f"1 of 6 train images are missing.*{key}.jpg"):
        TextImageDataset(cub, "train", CFG, vocab)
    (cub / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    with pytest.raises(AttnGANError, match="bounding_boxes.txt"):
        dataset(cub, "test")
    (cub / "test" / "filenames.pickle").unlink()
    with pytest.raises(AttnGANError, match=r"missing .*test/filenames.pickle"):
        dataset(cub, "test")
    with pytest.raises(AttnGANError, match="unknown split"):
        dataset(cub, "val")


@pytest.mark.parametrize("mode", ["skip", "pad"])
def test_short_caption_files_are_reported_then_skipped_or_padded(cub, mode):
    key = "001.Class_1/Class_1_0001"
    (cub / "text" / f"{key}.txt").write_text("a red bird\n\nwith wings\n   \n...\n")  # 2 real captions
    with pytest.warns(DataWarning, match=rf"text/{key}.txt has 2"):
        ds = dataset(cub, cfg=replace(CFG, short_captions=mode))
    assert ds.short_caption_keys == [key]
    if mode == "skip":
        assert len(ds) == 5 and key not in ds.keys
    else:
        i = ds.keys.index(key)
        texts = [ds.caption_text(i, k) for k in range(10)]
        assert texts[:4] == ["a red bird", "with wings", "a red bird", "with wings"]
    with pytest.raises(AttnGANError, match="short_captions"):
        dataset(cub, cfg=replace(CFG, short_captions="ignore"))


def test_empty_lines_do_not_count_as_captions(cub):
    key = "001.Class_1/Class_1_0000"
    lines = [f"a bird {w}" for w in WORDS[:10]]
    (cub / "text" / f"{key}.txt").write_text("\n\n".join(lines) + "\n\n\n")
    ds = dataset(cub)
    assert [ds.caption_text(0, k) for k in range(10)] == lines


def test_non_utf8_caption_file_warns_and_loads(cub):
    key = "001.Class_1/Class_1_0002"
    lines = [b"a red bird with caf\xe9 wings"] + [b"a small bird"] * 9
    (cub / "text" / f"{key}.txt").write_bytes(b"\n".join(lines))
    with pytest.warns(DataWarning, match=rf"not valid UTF-8 \(text/{key}.txt\)"):
        ds = dataset(cub)
    assert ds.caption_text(2, 0) == "a red bird with caf wings"


def _corrupt(root, key, how):
    path = root / "CUB_200_2011" / "images" / f"{key}.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"not a jpeg at all")


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_images_are_skipped_counted_and_reported(cub, workers):
    bad = ["001.Class_1/Class_1_0001", "002.Class_2/Class_2_0000"]
    _corrupt(cub, bad[0], "truncate")
    _corrupt(cub, bad[1], "garbage")
    ds = dataset(cub, cfg=replace(CFG, max_bad_fraction=0.5))
    loader = make_loader(ds, 2, shuffle=False, workers=workers, drop_last=False, seed=0)
    with pytest.warns(DataWarning, match="skipped 2 unreadable images"):
        batches = list(loader)
    keys = [k for b in batches for k in b["keys"]]
    assert len(keys) == 6 and not set(bad) & set(keys)  # replaced by the next readable ones
    assert ds.bad_keys == set(bad)
    # Above max_bad_fraction: a clear one-line error, from workers too.
    ds = dataset(cub, cfg=replace(CFG, max_bad_fraction=0.2))
    loader = make_loader(ds, 2, shuffle=False, workers=workers, drop_last=False, seed=0)
    with pytest.raises(AttnGANError, match=r"^2 of 6 train images .* unreadable .*max_bad_fraction=0.2"):
        list(loader)
    # Raised inside a worker: still the one-line message, not a traceback.
    loader = make_loader(dataset(cub), 2, shuffle=False, workers=workers, drop_last=False, seed=0)
    with pytest.raises(AttnGANError, match=r"^1 of 6 train images .* unreadable [^\n]*$"):
        list(loader)


def test_bbox_outside_the_image_is_clipped_or_ignored(cub):
    key = "001.Class_1/Class_1_0000"
    boxes = (cub / "CUB_200_2011" / "bounding_boxes.txt").read_text().splitlines()
    boxes[0] = "1 100.0 70.0 60.0 60.0"  # half outside: clipped
    boxes[1] = "2 900.0 900.0 20.0 20.0"  # entirely outside: the whole image, with a warning
    (cub / "CUB_200_2011" / "bounding_boxes.txt").write_text("\n".join(boxes))
    ds = dataset(cub, train=False)
    assert ds.keys[0] == key and ds[0]["images"][-1].shape == (3, 64, 64)
    with pytest.warns(DataWarning, match="lies outside"):
        item = ds[1]
    assert item["images"][-1].shape == (3, 64, 64)


# COCO.

def make_coco_json(root: Path, n_train=4, n_val=3, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    ann_id = 0
    for split, n in (("train2014", n_train), ("val2014", n_val)):
        images, anns = [], []
        for i in range(n):
            name = f"COCO_{split}_{i + 1:012d}.jpg"
            Image.new("RGB", (80 + 10 * i, 60), tuple(int(v) for v in rng.integers(0, 255, 3))).save(
                root / "images" / name)
            images.append({"id": i + 1, "file_name": name, "width": 80 + 10 * i, "height": 60})
            for text in caption_lines(rng, 5 + i % 2):
                ann_id += 1
                anns.append({"id": ann_id, "image_id": i + 1, "caption": f"  {text.capitalize()}.\n"})
        (root / "annotations" / f"captions_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns}))
    return root


COCO = DataConfig(dataset="coco", base_size=16, branch_num=2, captions_per_image=5, words_num=6, workers=0)


def test_coco_json_loads_directly_and_after_build_coco_text(tmp_path):
    root = make_coco_json(tmp_path / "coco")
    direct = TextImageDataset(root, "train", COCO, load_vocab(root))
    assert len(direct) == 4 and direct.keys[0] == "COCO_train2014_000000000001"
    assert direct.class_ids.tolist() == [0, 1, 2, 3]  # no classes in COCO: one per image
    item = direct[0]
    assert [tuple(x.shape) for x in item["images"]] == [(3, 16, 16), (3, 32, 32)]
    counts = build_coco_text(root)
    assert counts == {"train": 4, "test": 3}
    assert (root / "text" / "COCO_val2014_000000000002.txt").read_text().count("\n") == 6
    built = TextImageDataset(root, "test", COCO, load_vocab(root), train=False)
    assert built.keys == [f"COCO_val2014_{i:012d}" for i in (1, 2, 3)]
    assert built.caption_text(0, 0) == TextImageDataset(
        root, "test", COCO, direct.vocab, train=False).caption_text(0, 0)
    assert not list(root.rglob(".*.tmp"))


def test_coco_images_in_the_downloaded_folders_are_found(tmp_path):
    root = make_coco_json(tmp_path / "coco")
    (root / "train2014").mkdir()
    for p in (root / "images").glob("COCO_train2014_*"):
        p.rename(root / "train2014" / p.name)
    assert len(TextImageDataset(root, "train", COCO, load_vocab(root))) == 4


# Cache.

def test_cache_gives_the_same_items_and_is_rebuilt_when_images_change(cub):
    plain = dataset(cub)
    meta = build_cache(cub, "train", 64)
    assert meta.parent == cub / "cache" and meta.name == "train_76.json"
    cached = dataset(cub, cfg=replace(CFG, cache=True))
    for ds in (plain, cached):
        ds.reseed(5)
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert a["key"] == b["key"] and torch.equal(a["caption"], b["caption"])
        for x, y in zip(a["images"], b["images"]):
            assert torch.equal(x, y)
    # A changed image invalidates the cache.
    key = plain.keys[0]
    Image.new("RGB", (120, 90), (0, 255, 0)).save(cub / "CUB_200_2011" / "images" / f"{key}.jpg")
    again = dataset(cub, cfg=replace(CFG, cache=True), train=False)
    assert to_uint8(again[0]["images"][-1])[32, 32, 1] > 200
    assert len(list((cub / "cache").glob("train_76.*.u8"))) == 1  # the stale one is gone


def test_read_only_root_puts_the_cache_in_the_user_folder(cub, tmp_path, monkeypatch):
    import attngan.data.cache as cache_mod

    real_access = os.access
    monkeypatch.setattr(cache_mod.os, "access",
                        lambda p, mode: False if Path(p) == cub / "cache" else real_access(p, mode))
    monkeypatch.setenv("ATTNGAN_CACHE", str(tmp_path / "user"))
    with pytest.warns(DataWarning, match="read-only"):
        ds = dataset(cub, "test", cfg=replace(CFG, cache=True), image_sizes=[299], train=False)
    assert len(list((tmp_path / "user").glob("birds-*/test_355.json"))) == 1  # int(299 * 76 / 64)
    assert ds[0]["images"][0].shape == (3, 299, 299)


def test_cache_skips_unreadable_images_and_honours_cache_dir(cub, tmp_path):
    _corrupt(cub, "001.Class_1/Class_1_0001", "truncate")
    with pytest.warns(DataWarning, match="1 of 6 train images are unreadable"):
        ds = dataset(cub, cfg=replace(CFG, cache=True, max_bad_fraction=0.5),
                     cache_dir=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "train_76.json").is_file() and not (cub / "cache").exists()
    assert "001.Class_1/Class_1_0001" not in [ds[i]["key"] for i in range(len(ds))]
    with pytest.raises(AttnGANError, match="unreadable"), pytest.warns(DataWarning):
        dataset(cub, cfg=replace(CFG, cache=True), cache_dir=tmp_path / "elsewhere")


# Original metadata without text/.

def test_captions_pickle_is_used_when_there_is_no_text_folder(cub):
    from test_text import py2_dumps

    vocab = load_vocab(cub)
    os.remove(cub / "vocab.json")
    train_keys = pickle.loads((cub / "train" / "filenames.pickle").read_bytes())
    test_keys = pickle.loads((cub / "test" / "filenames.pickle").read_bytes())
    ds = TextImageDataset(cub, "train", CFG, vocab)
    caps = {s: [ds_.caption(i, k) for i in range(len(ds_)) for k in range(10)]
            for s, ds_ in (("train", ds), ("test", TextImageDataset(cub, "test", CFG, vocab)))}
    words = {i: w.encode() for i, w in enumerate(vocab.id_to_word)}
    (cub / "captions.pickle").write_bytes(py2_dumps(
        [caps["train"], caps["test"], words, {w: i for i, w in words.items()}]))
    for p in (cub / "text").rglob("*.txt"):
        p.unlink()
    for d in sorted((cub / "text").rglob("*"), reverse=True):
        d.rmdir()
    (cub / "text").rmdir()
    again = TextImageDataset(cub, "train", CFG, load_vocab(cub))
    assert again.keys == train_keys and len(test_keys) == 3
    assert [again.caption(i, k) for i in range(len(again)) for k in range(10)] == caps["train"]
    with pytest.raises(AttnGANError, match="own vocabulary"):
        TextImageDataset(cub, "train", CFG, Vocabulary.build([WORDS + ["zebra"]]))


# SynthBirds: written in the CUB layout, read through the same birds path.

def test_synth_birds_load_through_the_birds_layout(tmp_path):
    synth = pytest.importorskip("attngan.data.synth_birds")
    root = synth.generate_synth_birds(tmp_path / "synth", images=20, classes=4, size=64, seed=0,
                                      progress=False)
    manifest = json.loads((root / "synth_birds.json").read_text())
    vocab = load_vocab(root)
    cfg = replace(CFG, base_size=32, branch_num=2)
    train = TextImageDataset(root, "train", cfg, vocab)
    test = TextImageDataset(root, "test", cfg, vocab, train=False)
    assert len(train) + len(test) == 20
    assert not set(train.class_ids.tolist()) & set(test.class_ids.tolist())  # disjoint classes
    for ds in (train, test):
        for i in range(len(ds)):
            assert ds.class_ids[i] == manifest["images"][ds.keys[i]]["class_id"]
    batch = collate_sorted([test[i] for i in range(len(test))])
    assert [tuple(x.shape[1:]) for x in batch["images"]] == [(3, 32, 32), (3, 64, 64)]
    assert batch["images"][1].std() > 0.05 and batch["cap_lens"].min() > 0
