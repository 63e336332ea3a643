"""Your own data: an image folder with metadata.jsonl/.csv, WebDataset shards, the vocabulary of
new captions, and every command (train-damsm, train, generate, eval) on both."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attngan.config import DataConfig
from attngan.errors import AttnGANError

pytest.importorskip("webdataset")

COLORS = {"yellow": (230, 210, 40), "green": (40, 170, 60), "red": (200, 40, 40),
          "blue": (40, 70, 200), "white": (240, 240, 240)}
SHAPES = ("square", "disc")
CFG = DataConfig(base_size=16, branch_num=2, words_num=12, workers=0, max_bad_fraction=0.0)


def _photo(color: str, shape: str, i: int, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(i)
    bg = tuple(int(v) for v in rng.integers(0, 90, 3))
    img = Image.new("RGB", (size + 8 * (i % 3), size), bg)  # not square: crops and resizes matter
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    x, y = int(rng.integers(4, 14)), int(rng.integers(4, 14))
    box = (x, y, x + size // 2, y + size // 2)
    (d.rectangle if shape == "square" else d.ellipse)(box, fill=COLORS[color])
    return img


def make_photo_folder(root: Path, n: int = 20, *, with_split=False, with_label=True, csv=False) -> Path:
    """n photos in two subfolders, 1-3 captions each, as a user would lay them out."""
    rows = []
    names = list(COLORS)
    for i in range(n):
        color, shape = names[i % len(names)], SHAPES[(i // len(names)) % 2]
        name = f"{'shots' if i % 2 else 'more/deep'}/img_{i:03d}.{'png' if i % 4 == 0 else 'jpg'}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        _photo(color, shape, i).save(root / name)
        caps = [f"A {color.upper()} {shape} on a dark background.",
                f"this {shape} is {color}, small and bright"][: 1 + i % 2]
        if i == 6:
            caps[0] += " With one speck."  # rare words, for the vocabulary's minimum count
        row = {"file_name": name, "text": caps if len(caps) > 1 else caps[0]}
        if with_label:
            row["label"] = color
        if with_split:
            row["split"] = "test" if i % 5 == 0 else "train"
        if i == 3:
            row["bbox"] = [2, 2, 30, 30]
        rows.append(row)
    if csv:
        import csv as _csv

        with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            w = _csv.DictWriter(f, fieldnames=["file_name", "text", "label", "split", "bbox"])
            w.writeheader()
            for r in rows:
                w.writerow({**r, "text": json.dumps(r["text"]) if isinstance(r["text"], list) else r["text"],
                            "bbox": json.dumps(r["bbox"]) if "bbox" in r else ""})
    else:
        (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos") / "my_photos")


@pytest.fixture(scope="module")
def shards(photos, tmp_path_factory) -> Path:
    from attngan.cli import main

    out = tmp_path_factory.mktemp("shards") / "shards"
    assert main(["make-shards", "--data", str(photos), "--out", str(out), "--per-shard", "4"]) == 0
    return out


def _items(ds) -> dict[str, dict]:
    it = ds if isinstance(ds, torch.utils.data.IterableDataset) else (ds[i] for i in range(len(ds)))
    return {x["key"]: x for x in it}


# The vocabulary of new data.

def test_tokenizer_keeps_colour_words_and_vocab_reports_dropped_words(photos, tmp_path):
    from attngan.text import Vocabulary, tokenize
    from attngan.data.vocab import load_vocab

    # Case, hyphens and punctuation around colour words must not lose them.
    assert tokenize("A Yellow-green bird, GREEN. yellow's\ufffd\ufffdwings") == [
        "a", "yellow", "green", "bird", "green", "yellow", "s", "wings"]
    vocab, dropped = Vocabulary.build_with_report(
        [["yellow", "green", "bird"], ["yellow", "green", "rare"], ["yellow", "odd"]], min_count=2)
    assert vocab.id_to_word == ["<end>", "green", "yellow"]
    assert dropped == {"bird": 1, "odd": 1, "rare": 1}
    with pytest.raises(AttnGANError, match="minimum word count"):
        Vocabulary.build_with_report([["a"]], min_count=0)

    v1 = load_vocab(photos)
    assert {"green", "blue", "white", "square", "disc"} <= set(v1.id_to_word)
    report = json.loads((photos / "vocab_report.json").read_text())
    assert report["min_count"] == 1 and report["dropped"] == {}
    # Built from the training captions only: red and yellow are the seeded split's test classes,
    # so they are out of vocabulary (the model never learns them).
    from attngan.data.imagefolder import read_imagefolder

    train_words = {w for r in read_imagefolder(photos).split("train") for c in r.captions for w in tokenize(c)}
    assert set(v1.id_to_word[1:]) == train_words and "red" not in v1 and "yellow" not in v1
    # A higher minimum count rebuilds it, and the report lists what was left out, with counts.
    with pytest.warns(UserWarning, match="out of vocabulary"):
        v3 = load_vocab(photos, min_count=3)
    report = json.loads((photos / "vocab_report.json").read_text())
    assert report["min_count"] == 3 and report["dropped"] and len(v3) < len(v1)
    assert all(c < 3 for c in report["dropped"].values())
    assert json.loads((photos / "vocab.json").read_text())["min_count"] == 3
    assert load_vocab(photos) == v1  # and back


# The image folder layout.

def test_imagefolder_jsonl_and_csv_read_the_same(tmp_path):
    from attngan.data.imagefolder import read_imagefolder

    a = read_imagefolder(make_photo_folder(tmp_path / "a"))
    b = read_imagefolder(make_photo_folder(tmp_path / "b", csv=True))
    assert [(r.key, r.captions, r.class_id, r.split, r.bbox) for r in a.records] == \
           [(r.key, r.captions, r.class_id, r.split, r.bbox) for r in b.records]
    assert a.records[0].key == "more/deep/img_000.png" and a.classes_given and not a.split_given


def test_seeded_split_is_class_disjoint_and_unique_classes_without_labels(tmp_path):
    from attngan.data.imagefolder import read_imagefolder

    meta = read_imagefolder(make_photo_folder(tmp_path / "a"))
    train = {r.class_id for r in meta.split("train")}
    test = {r.class_id for r in meta.split("test")}
    assert train and test and not train & test  # whole classes go to test, as CUB's split
    assert [r.split for r in read_imagefolder(make_photo_folder(tmp_path / "a2")).records] == \
           [r.split for r in meta.records]  # seeded: the same split every time

    meta = read_imagefolder(make_photo_folder(tmp_path / "b", with_label=False))
    ids = [r.class_id for r in meta.records]
    assert len(set(ids)) == len(ids)  # every image its own class
    assert 0 < len(meta.split("test")) < len(ids)

    meta = read_imagefolder(make_photo_folder(tmp_path / "c", with_split=True))
    assert [r.key for r in meta.split("test")] == sorted(f"{'shots' if i % 2 else 'more/deep'}/img_{i:03d}."
                                                         f"{'png' if i % 4 == 0 else 'jpg'}"
                                                         for i in range(0, 20, 5))


def test_imagefolder_dataset_captions_classes_and_bbox_crop(photos):
    from attngan.data.dataset import TextImageDataset
    from attngan.data.layout import load_cropped
    from attngan.data.vocab import load_vocab

    vocab = load_vocab(photos)
    ds = TextImageDataset(photos, "train", CFG, vocab, train=False)
    assert ds.dataset == "imagefolder" and ds.cfg.captions_per_image == 2
    i = ds.keys.index("shots/img_003.jpg")
    # The row with a bbox gets the birds crop: what the dataset returns is the centre crop of it.
    from attngan.data.dataset import multi_scale_crops

    full = load_cropped(photos / "shots/img_003.jpg", (2, 2, 30, 30), ds.load_size)
    item = ds[i]
    assert item["images"][-1].shape == (3, 32, 32)
    assert torch.equal(item["images"][-1], multi_scale_crops(full, [16, 32], False, None)[-1])
    uncropped = load_cropped(photos / "shots/img_003.jpg", None, ds.load_size)
    assert not torch.equal(item["images"][-1], multi_scale_crops(uncropped, [16, 32], False, None)[-1])
    # One caption: repeated; two: both kept.
    j = ds.keys.index("more/deep/img_000.png" if "more/deep/img_000.png" in ds.keys else ds.keys[0])
    caps = {ds.caption_text(i, k) for k in range(2)}
    assert len(caps) == 2 and all("square" in c or "disc" in c for c in caps)
    assert len({ds.caption_text(j, k) for k in range(2)}) >= 1
    labels = {r.key: r.class_id for r in __import__("attngan.data.imagefolder", fromlist=["x"]).read_imagefolder(photos).records}
    assert [labels[k] for k in ds.keys] == ds.class_ids.tolist()


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows.append(dict(rows[0])), r"metadata.jsonl:21: 'more/deep/img_000.png' is listed twice \(first on line 1\)"),
    (lambda rows: rows[4].update(file_name="nope/missing.jpg"), r"1 images listed in .* are missing: line 5: nope/missing.jpg"),
    (lambda rows: rows[2].pop("text"), r"metadata.jsonl:3: no 'text'"),
    (lambda rows: rows[6].update(text="   "), r"metadata.jsonl:7: the caption is empty"),
    (lambda rows: rows[6].update(text=["", " "]), r"metadata.jsonl:7: the caption is empty"),
    (lambda rows: rows[1].update(split="holdout"), r"metadata.jsonl:2: split must be 'train' or 'test'"),
    (lambda rows: rows[1].update(bbox=[1, 2, 3]), r"metadata.jsonl:2: bbox must be \[x, y, w, h\]"),
    (lambda rows: rows[1].update(file_name="../escape.jpg"), r"metadata.jsonl:2: 'file_name' .* inside the folder"),
    (lambda rows: rows[5].pop("label"), r"metadata.jsonl:6: no 'label', while other rows have one"),
])
def test_bad_metadata_is_reported_by_row(tmp_path, edit, message):
    from attngan.data.imagefolder import read_imagefolder

    root = make_photo_folder(tmp_path / "bad")
    rows = [json.loads(x) for x in (root / "metadata.jsonl").read_text().splitlines()]
    edit(rows)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AttnGANError, match=message):
        read_imagefolder(root)


def test_bad_input_is_one_line_from_the_cli(tmp_path, capsys):
    from attngan.cli import main

    root = make_photo_folder(tmp_path / "bad")
    with open(root / "metadata.jsonl", "a") as f:
        f.write("{not json\n")
    assert main(["make-shards", "--data", str(root), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attngan make-shards: error: ") and "metadata.jsonl:21" in err
    assert "\n" not in err


def test_unreadable_images_use_the_bad_data_counters(tmp_path):
    from attngan.data.dataset import TextImageDataset, make_loader
    from attngan.data.vocab import load_vocab

    root = make_photo_folder(tmp_path / "p")
    (root / "shots/img_001.jpg").write_bytes(b"not an image")
    vocab = load_vocab(root)
    ds = TextImageDataset(root, "train", replace(CFG, max_bad_fraction=0.5), vocab, train=True)
    with pytest.warns(UserWarning, match="img_001"):
        n = sum(len(b["keys"]) for b in make_loader(ds, 4, False, 0, False, 0))
    assert n == len(ds) and ds.bad_keys == {"shots/img_001.jpg"}
    strict = TextImageDataset(root, "train", CFG, vocab, train=True)
    with pytest.raises(AttnGANError, match=r"1 of \d+ train images .* unreadable"):
        list(make_loader(strict, 4, False, 0, False, 0))


# Shards.

def test_shards_give_the_same_items_as_the_folder(photos, shards):
    from attngan.data.dataset import TextImageDataset
    from attngan.data.shards import ShardDataset, split_shards
    from attngan.data.vocab import load_vocab

    vocab = load_vocab(photos)
    assert load_vocab(shards) == vocab  # make-shards wrote the same vocabulary
    index = json.loads((shards / "shards.json").read_text())
    assert index["splits"]["train"]["shards"][0] == "train-000000.tar"
    pattern = str(shards / f"train-{{000000..{len(index['splits']['train']['shards']) - 1:06d}}}.tar")
    assert split_shards(pattern, "test") == [shards / n for n in index["splits"]["test"]["shards"]]
    for split in ("train", "test"):
        folder = _items(TextImageDataset(photos, split, CFG, vocab, train=False))
        streamed = _items(ShardDataset(pattern, split, CFG, vocab, train=False))
        assert folder.keys() == streamed.keys()
        for key, a in folder.items():
            b = streamed[key]
            assert all(torch.equal(x, y) for x, y in zip(a["images"], b["images"])), key
            assert torch.equal(a["caption"], b["caption"]) and a["cap_len"] == b["cap_len"]
            assert a["class_id"] == b["class_id"]


def test_synth_birds_formats_give_the_cub_items(tmp_path):
    from attngan.cli import main
    from attngan.data.dataset import TextImageDataset
    from attngan.data.shards import ShardDataset
    from attngan.data.synth_birds import generate_synth_birds
    from attngan.data.vocab import load_vocab

    cub = generate_synth_birds(tmp_path / "cub", images=16, classes=4, size=64, seed=0, progress=False)
    for fmt in ("imagefolder", "webdataset"):
        assert main(["synth-birds", "--out", str(tmp_path / fmt), "--images", "16", "--classes", "4",
                     "--size", "64", "--format", fmt]) == 0
    assert (tmp_path / "imagefolder" / "metadata.jsonl").is_file()
    assert (tmp_path / "webdataset" / "shards.json").is_file()
    vocab = load_vocab(cub)
    a = _items(TextImageDataset(cub, "test", CFG, vocab, train=False))
    b = _items(TextImageDataset(tmp_path / "imagefolder", "test", CFG, vocab, train=False))
    c = _items(ShardDataset(tmp_path / "webdataset", "test", CFG, vocab, train=False))
    assert {f"images/{k}.jpg" for k in a} == set(b) and set(a) == set(c)
    for k, x in a.items():
        for y in (b[f"images/{k}.jpg"], c[k]):
            assert all(torch.equal(p, q) for p, q in zip(x["images"], y["images"]))  # bbox crop kept
            assert torch.equal(x["caption"], y["caption"]) and x["class_id"] == y["class_id"]


def test_reader_plan_covers_every_shard_or_sample_once():
    from attngan.data.shards import batches_for_worker, reader_plan

    for n_shards, world, workers in [(8, 2, 2), (5, 2, 2), (3, 2, 2), (1, 2, 1), (7, 3, 1)]:
        seen = []
        for rank in range(world):
            for w in range(workers):
                shard_ids, stride, offset = reader_plan(n_shards, rank, world, w, workers)
                # A sample is (shard, position); 6 samples per shard.
                seen += [(s, j) for s in shard_ids for j in range(6) if (s * 6 + j) % stride == offset]
        assert sorted(seen) == [(s, j) for s in range(n_shards) for j in range(6)], (n_shards, world, workers)
    assert [batches_for_worker(7, w, 3) for w in range(3)] == [3, 2, 2]


def test_streams_split_by_rank_and_worker_with_equal_batches(shards):
    from attngan.data.dataset import make_train_loader
    from attngan.data.shards import ShardDataset
    from attngan.data.vocab import load_vocab

    vocab = load_vocab(shards)
    per_rank = []
    for rank in range(2):
        ds = ShardDataset(shards, "train", replace(CFG, shuffle_buffer=4), vocab)
        loader, position = make_train_loader(ds, 3, seed=0, loader_seed=rank, rank=rank, world=2, workers=0)
        position.set_position(0, 0)
        batches = [b["keys"] for b in loader]
        assert len(batches) == ds.batches_per_epoch == (ds.n_samples // 2) // 3
        per_rank.append([k for b in batches for k in b])
    assert not set(per_rank[0]) & set(per_rank[1])  # each rank reads its own shards
    # The shuffle buffer: seeded (same epoch, same order), a new order next epoch.
    ds = ShardDataset(shards, "train", replace(CFG, shuffle_buffer=8), vocab)
    loader, position = make_train_loader(ds, 2, seed=3, loader_seed=0, rank=0, world=1, workers=0)
    position.set_position(0, 0)
    e0 = [k for b in loader for k in sorted(b["keys"])]
    position.set_position(0, 0)
    assert [k for b in loader for k in sorted(b["keys"])] == e0
    position.set_position(1, 0)
    e1 = [k for b in loader for k in sorted(b["keys"])]
    assert e1 != e0 and len(e1) == len(e0)
    # Two workers: as many batches in all, no sample twice in one epoch.
    ds = ShardDataset(shards, "train", CFG, vocab)
    loader, position = make_train_loader(ds, 2, seed=0, loader_seed=0, rank=0, world=1, workers=2)
    position.set_position(0, 0)
    keys = [k for b in loader for k in b["keys"]]
    assert len(keys) == ds.batches_per_epoch * 2 and len(set(keys)) == len(keys)


def _rewrite_tar(src: Path, dst: Path, key_index: int = 1, corrupt: bool = False) -> str:
    """A copy of a shard whose `key_index`-th sample lacks its image (keeps only its .json), or
    with `corrupt`, has garbage for an image."""
    with tarfile.open(src) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    keys = sorted({m.name.split(".")[0] for m, _ in members})
    victim = keys[key_index]
    with tarfile.open(dst, "w") as t:
        for m, data in members:
            if m.name.startswith(victim + ".") and not m.name.endswith(".json"):
                if not corrupt:
                    continue
                data = b"\xff\xd8 not really a jpeg"
                m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    return victim


def test_shard_with_a_missing_member_is_reported_and_counted(shards, tmp_path):
    from attngan.data.dataset import make_train_loader
    from attngan.data.shards import ShardDataset
    from attngan.data.vocab import load_vocab

    vocab = load_vocab(shards)
    bad = tmp_path / "bad"
    bad.mkdir()
    index = json.loads((shards / "shards.json").read_text())
    names = index["splits"]["train"]["shards"]
    for n in names[1:]:
        (bad / n).write_bytes((shards / n).read_bytes())
    victim = _rewrite_tar(shards / names[0], bad / names[0])
    pattern = str(bad / f"train-{{000000..{len(names) - 1:06d}}}.tar")
    ds = ShardDataset(pattern, "train", replace(CFG, max_bad_fraction=0.2, shuffle_buffer=0), vocab)
    with pytest.warns(UserWarning, match=rf"train-000000.tar: sample '{victim}' has no image member \(members: json\)"):
        loader, position = make_train_loader(ds, 2, seed=0, loader_seed=0, rank=0, world=1, workers=0)
        position.set_position(0, 0)
        list(loader)
    assert ds.bad_keys == {f"train-000000.tar:{victim}"}
    strict = ShardDataset(pattern, "train", replace(CFG, shuffle_buffer=0), vocab)
    loader, position = make_train_loader(strict, 2, seed=0, loader_seed=0, rank=0, world=1, workers=0)
    position.set_position(0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AttnGANError, match=r"1 of \d+ train samples .* unusable"):
            list(loader)
    # An image that cannot be decoded: named by shard and key, skipped and counted likewise.
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for n in names[1:]:
        (corrupt / n).write_bytes((shards / n).read_bytes())
    victim = _rewrite_tar(shards / names[0], corrupt / names[0], key_index=2, corrupt=True)
    ds = ShardDataset(str(corrupt / pattern.split("/")[-1]), "train",
                      replace(CFG, max_bad_fraction=0.2, shuffle_buffer=0), vocab)
    loader, position = make_train_loader(ds, 2, seed=0, loader_seed=0, rank=0, world=1, workers=0)
    position.set_position(0, 0)
    with pytest.warns(UserWarning, match=r"train-000000.tar: sample '.*' has an unreadable image"):
        list(loader)
    assert len(ds.bad_keys) == 1 and next(iter(ds.bad_keys)).startswith("train-000000.tar:")
    # A test split that does not exist, or a missing shard file: one line naming it.
    with pytest.raises(AttnGANError, match=r"(\d) of \1 test shards are missing: .*/test-000000.tar"):
        ShardDataset(pattern, "test", CFG, vocab)
    with pytest.raises(AttnGANError, match=rf"{9 - len(names)} of 9 train shards are missing: "
                                           rf".*train-{len(names):06d}.tar"):
        ShardDataset(str(bad / "train-{000000..000008}.tar"), "train", CFG, vocab)


# Every command on both sources.

def _tiny_overrides() -> list[str]:
    return ["--config", "tiny", "--set", "data.workers=0", "--set", "damsm.batch_size=6",
            "--set", "train.batch_size=4", "--set", "data.shuffle_buffer=8",
            "--set", "train.log_kimg=0.004", "--set", "train.sample_kimg=1", "--set", "train.snapshot_kimg=1",
            "--set", "damsm.amp=off", "--set", "train.amp=off", "--set", "damsm.channels_last=false"]


@pytest.mark.parametrize("source", ["imagefolder", "shards"])
def test_train_generate_and_evaluate_on_new_data(source, photos, shards, tmp_path, capsys):
    from attngan.cli import main
    from attngan.pipeline import AttnGANPipeline

    n_train = len(json.loads((shards / "shards.json").read_text())["splits"]["train"]["shards"])
    data = str(photos) if source == "imagefolder" else str(shards / f"train-{{000000..{n_train - 1:06d}}}.tar")
    damsm, gan = tmp_path / "damsm", tmp_path / "gan"
    assert main(["train-damsm", *_tiny_overrides(), "--data", data, "--out", str(damsm),
                 "--epochs", "1"]) == 0
    assert (damsm / "best" / "vocab.json").is_file() and (damsm / "vocab_report.json").is_file()
    assert main(["train", *_tiny_overrides(), "--data", data, "--damsm", str(damsm), "--out", str(gan),
                 "--kimg", "0.008"]) == 0
    model = gan / "model"
    state = torch.load(gan / "state.pt", weights_only=False)
    assert state["step"] == 2
    # generate with the model's own vocabulary ("disc" is a word of the new data only).
    pipe = AttnGANPipeline.from_pretrained(model, device="cpu")
    assert "green" in pipe.vocab and "disc" in pipe.vocab
    assert main(["generate", "--model", str(model), "--out", str(tmp_path / "gen"), "--device", "cpu",
                 "a green disc on a dark background"]) == 0
    assert list((tmp_path / "gen").rglob("*.png"))
    # eval on the test split: R-precision with the classes as given.
    report = tmp_path / "report.json"
    assert main(["eval", "--model", str(model), "--data", data, "--metrics", "r_precision",
                 "--num-images", "10", "--splits", "2", "--batch", "5", "--device", "cpu",
                 "--no-progress", "--out", str(report)]) == 0
    rp = json.loads(report.read_text())["results"]["r_precision"]
    assert 0.0 <= rp["value"] <= 100.0 and rp["unit"] == "%"
    capsys.readouterr()


# Under torchrun: two processes, one data worker each, stream their own shards.

def _ddp_worker(shards: str, out: str) -> int:
    from attngan.data.dataset import make_train_loader
    from attngan.data.shards import ShardDataset
    from attngan.data.vocab import load_vocab
    from attngan.training import distributed as dist

    dist.init("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ds = ShardDataset(shards, "train", replace(CFG, shuffle_buffer=4), load_vocab(shards))
    loader, position = make_train_loader(ds, 2, seed=0, loader_seed=rank, rank=rank, world=world, workers=1)
    epochs = []
    for epoch in range(2):
        position.set_position(epoch, 0)
        epochs.append([k for b in loader for k in b["keys"]])
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, epochs)
    if rank == 0:
        Path(out).write_text(json.dumps(gathered))
    torch.distributed.destroy_process_group()
    return 0


def test_torchrun_ranks_stream_disjoint_shards_in_step(shards, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "keys.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", __file__, "ddp", str(shards), str(out)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (r0, r1) = json.loads(out.read_text())  # per rank: keys of epoch 0, epoch 1
    n_train = json.loads((shards / "shards.json").read_text())["splits"]["train"]["samples"]
    for e in range(2):
        assert len(r0[e]) == len(r1[e]) == (n_train // 2) // 2 * 2  # as many batches on each rank
        assert not set(r0[e]) & set(r1[e])  # each rank its own shards
    assert r0[0] != r0[1]  # a new shard deal / shuffle in the second epoch (a persistent worker)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "ddp":
    raise SystemExit(_ddp_worker(sys.argv[2], sys.argv[3]))


# A killed make-shards.

def test_make_shards_after_a_killed_run_rewrites_its_own_files_only(photos, shards, tmp_path, capsys):
    from attngan.cli import main

    done = sorted(p.name for p in shards.iterdir() if p.suffix in (".tar", ".json"))  # not a cache/
    assert "shards.json" in done and "train-000001.tar" in done
    # What SIGKILL during the second shard leaves: the first shard, a half-written temporary and no
    # shards.json; beside them a user's files, two of them named like ours but not of our making.
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-000000.tar").write_bytes((shards / "train-000000.tar").read_bytes())
    (out / ".train-000001.tar.tmp").write_bytes((shards / "train-000001.tar").read_bytes()[:700])
    users = {"notes.tar": b"mine", ".train-000001.tar.old": b"mine too", "train-final.tar": b"x",
             ".bashrc.tmp": b"keep"}
    for name, data in users.items():
        (out / name).write_bytes(data)
    capsys.readouterr()
    assert main(["make-shards", "--data", str(photos), "--out", str(out), "--per-shard", "4"]) == 0
    assert "removed 2 shard files of an earlier run" in capsys.readouterr().out
    for name in done:  # the same bytes as an uninterrupted run
        if name not in ("shards.json", "vocab.json", "vocab_report.json"):
            assert (out / name).read_bytes() == (shards / name).read_bytes(), name
    for name in ("shards.json", "vocab.json"):
        theirs, ours = json.loads((shards / name).read_text()), json.loads((out / name).read_text())
        for varies in ("source", "source_stamp"):  # where the photos were read from, and when
            theirs.pop(varies, None), ours.pop(varies, None)
        assert ours == theirs
    for name, data in users.items():
        assert (out / name).read_bytes() == data
    assert not list(out.glob(".*.tar.tmp"))

    # A finished folder still needs --overwrite; a user's shard-named tar is never removed.
    assert main(["make-shards", "--data", str(photos), "--out", str(out), "--per-shard", "4"]) == 2
    assert "already holds shards (pass --overwrite" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with tarfile.open(foreign / "train-000000.tar", "w") as tar:
        info = tarfile.TarInfo("holiday.jpg")
        info.size, info.mtime = 3, 1700000000
        tar.addfile(info, io.BytesIO(b"abc"))
    before = (foreign / "train-000000.tar").read_bytes()
    assert main(["make-shards", "--data", str(photos), "--out", str(foreign), "--per-shard", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train-000000.tar, which make-shards did not write" in err[0]
    assert (foreign / "train-000000.tar").read_bytes() == before
    assert sorted(p.name for p in foreign.iterdir()) == ["train-000000.tar"]


def test_brace_patterns_are_bounded_before_expanding():
    import time

    from attngan.data.shards import MAX_SHARD_NAMES, expand

    assert expand("s/train-{000..002}.tar") == ["s/train-000.tar", "s/train-001.tar", "s/train-002.tar"]
    assert expand("s/{train,test}-{0..1}.tar") == ["s/train-0.tar", "s/train-1.tar", "s/test-0.tar", "s/test-1.tar"]
    assert len(expand("s/train-{000000..099999}.tar")) == MAX_SHARD_NAMES
    t0 = time.perf_counter()
    for pattern in ("s/train-{00000000..99999999}.tar", "s/{0..999}-{0..999}.tar", "s/{a,b}" * 20 + ".tar",
                    "s/train-{0.." + "9" * 5000 + "}.tar"):
        with pytest.raises(AttnGANError, match="names more than 100000 files"):
            expand(pattern)
    assert time.perf_counter() - t0 < 1


def test_a_shard_member_past_the_size_bound_is_skipped_unread(tmp_path, monkeypatch):
    # A tar's header declares each member's size; a gzip bomb or a sparse member declares far more
    # than its file holds, and a member is read whole: past the bound it is skipped, not read.
    import gzip
    import io
    import json
    import tarfile

    from attngan.data import shards

    monkeypatch.setattr(shards, "MAX_MEMBER_BYTES", 1 << 20)
    path = tmp_path / "train-000000.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for key, payload in (("a", b"\x89PNG small"), ("b", bytes(8 << 20))):  # b: 8 MiB of zeros
            for ext, data in (("png", payload), ("json", json.dumps({"captions": ["a bird"]}).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue()))
    assert path.stat().st_size < 100_000  # the 8 MiB member compresses to almost nothing
    with pytest.warns(UserWarning, match=r"member 'b.png' declares 8388608 bytes.*skipped unread"):
        samples = list(shards.read_shard(path))
    assert [s["__key__"] for s in samples] == ["a", "b"]
    assert "png" in samples[0] and "png" not in samples[1] and "json" in samples[1]
