"""Data sources: one interface (attngan.data.records) reads every layout, a new layout is one class
and one `register_source` call, data never reaches a file outside its folder, release pickles are
refused before they can ask for gigabytes, and a bad shard sample is skipped and counted."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attngan.config import DataConfig
from attngan.data.dataset import TextImageDataset
from attngan.data.records import (DataSource, Record, detect_source, ground_truth, inside,
                                  register_source, split_records, unregister_source)
from attngan.data.vocab import load_vocab
from attngan.errors import AttnGANError
from test_dataset import caption_lines, make_coco_json, make_cub

ROOT = Path(__file__).resolve().parents[1]
CFG = DataConfig(base_size=16, branch_num=2, captions_per_image=2, words_num=8, workers=0,
                 max_bad_fraction=0.0)
SECRET = b"root:x:0:0:TOP SECRET HOST FILE"


def _png(color, size=(40, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


# A new layout, added by this file alone.

class ListSource(DataSource):
    """A folder with list.tsv: `<image>\\t<class>\\t<caption> | <caption>` per line; every fourth
    line is a test image."""

    name = "toy-list"

    def detect(self, root: Path) -> bool:
        return (root / "list.tsv").is_file()

    def records(self, root: Path, split: str) -> list[Record]:
        out = []
        for n, line in enumerate((root / "list.tsv").read_text().splitlines(), 1):
            file, cls, caps = line.split("\t")
            if ("test" if n % 4 == 0 else "train") == split:
                out.append(Record(file, inside(root, file, f"list.tsv:{n}"), caps.split(" | "),
                                  int(cls), split))
        return out


@pytest.fixture
def toy_source():
    source = register_source(ListSource(), first=True)
    try:
        yield source
    finally:
        unregister_source(source.name)


def make_list_folder(root: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        (root / "pics").mkdir(parents=True, exist_ok=True)
        (root / "pics" / f"p{i}.png").write_bytes(_png(tuple(int(v) for v in rng.integers(0, 255, 3))))
        lines.append(f"pics/p{i}.png\t{i % 3}\t" + " | ".join(caption_lines(rng, 2)))
    (root / "list.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_a_source_defined_in_a_test_reads_through_the_dataset(toy_source, tmp_path):
    root = make_list_folder(tmp_path / "toy")
    assert detect_source(root) is toy_source
    vocab = load_vocab(root)  # built from the source's captions and saved
    assert (root / "vocab.json").is_file() and len(vocab) > 5
    ds = TextImageDataset(root, "train", CFG, vocab, train=False)
    assert ds.dataset == "toy-list" and len(ds) == 6
    assert ds.keys == [f"pics/p{i}.png" for i in (0, 1, 2, 4, 5, 6)]
    assert ds.class_ids.tolist() == [0, 1, 2, 1, 2, 0]
    rows = (root / "list.tsv").read_text().splitlines()
    assert ds.caption_text(1, 1) == rows[1].split("\t")[2].split(" | ")[1]
    item = ds[0]
    assert [tuple(x.shape) for x in item["images"]] == [(3, 16, 16), (3, 32, 32)]
    assert len(TextImageDataset(root, "test", CFG, vocab, train=False)) == 2
    unregister_source(toy_source.name)
    with pytest.raises(AttnGANError, match="no known data layout"):
        detect_source(root)


def test_an_unknown_folder_is_one_line_everywhere(tmp_path):
    from attngan.metrics.evaluation import evaluate

    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "readme.txt").write_text("not data")
    for read in (lambda: detect_source(tmp_path / "stuff"),
                 lambda: split_records(tmp_path / "stuff", "train"),
                 lambda: evaluate(tmp_path / "stuff", images_dir=tmp_path, progress=False)):
        with pytest.raises(AttnGANError, match=r"is in no known data layout \(.*cub, coco") as e:
            read()
        assert "\n" not in str(e.value)
    with pytest.raises(AttnGANError, match="not found"):
        detect_source(tmp_path / "nowhere")


# A layout's own instruments for `attngan eval` (DataSource.evaluation_defaults) and the ground
# truth it carries (DataSource.ground_truth).

class InstrumentedListSource(ListSource):
    """The toy layout, with the defaults its evaluation should use and the ground truth it says it
    carries."""

    name = "toy-list-instrumented"

    def __init__(self, defaults: dict, truth: str | None = None):
        self.defaults = defaults
        self.truth = truth

    def ground_truth(self, root: Path) -> str | None:
        assert (root / "list.tsv").is_file()  # asked about the data folder itself
        return self.truth

    def evaluation_defaults(self, root: Path) -> dict:
        assert (root / "list.tsv").is_file()
        return dict(self.defaults)


@pytest.fixture
def instrumented():
    """Registers an InstrumentedListSource(defaults, truth) ahead of the others; removed after."""
    def register(defaults: dict | None = None, truth: str | None = None) -> DataSource:
        return register_source(InstrumentedListSource(defaults or {}, truth), first=True)

    try:
        yield register
    finally:
        unregister_source(InstrumentedListSource.name)


def test_a_sources_evaluation_defaults_and_ground_truth_decide_the_evaluation(tmp_path, instrumented):
    from attngan.metrics.evaluation import evaluate
    from attngan.metrics.spec import REGISTRY, register

    root = make_list_folder(tmp_path / "toy")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        (images / f"{i}.png").write_bytes(_png((40 * i, 90, 200), size=(32, 32)))
    judge = tmp_path / "judge"
    judge.mkdir()
    (judge / "config.json").write_text("{}")

    # Metrics that report the options and the ground truth the evaluation ran them with; one needs
    # a caption grammar (SynthBirds' or SynthScenes'), the other SynthBirds' part masks, which on
    # a layout that is neither only the source's ground_truth can say are there.
    def report(ctx):
        o = ctx.options
        return {"value": 0.0, "std": None, "judge": o.judge, "captioner": o.captioner,
                "eval_damsm": o.eval_damsm, "truth": ctx.ground_truth}

    for name, needs in (("toy_options", "grammar"), ("toy_birds", "synth")):
        register(name=name, title="Options", protocol="the options it ran with", reference="this test",
                 streams=(), real=False, unit="", higher_is_better=True, requires=(needs,))(report)

    def used(defaults: dict, truth: str | None = "synth_scenes", metric: str = "toy_options",
             **named) -> dict:
        instrumented(defaults, truth)
        try:
            out = evaluate(root, images_dir=images, metrics=[metric], splits=1, device="cpu",
                           progress=False, **named)
        finally:
            unregister_source(InstrumentedListSource.name)
        r = out["results"][metric]
        return {k: r[k] for k in ("judge", "captioner", "eval_damsm", "truth")}

    mine = {"judge": str(judge), "captioner": "synthbirds-captioner", "eval_damsm": "synthscenes-eval"}
    try:
        assert used(mine) == {**mine, "truth": "synth_scenes"}
        # A name the user gives wins over the source's; the others keep the source's.
        assert used(mine, eval_damsm="synthbirds-eval", judge=str(tmp_path)) == {
            **mine, "eval_damsm": "synthbirds-eval", "judge": str(tmp_path), "truth": "synth_scenes"}
        # A default that names nothing installed is passed over, as a shipped folder left out of an
        # installation is.
        assert used({"judge": str(tmp_path / "gone"), "captioner": "no-such-captioner",
                     "eval_damsm": "synthbirds-eval"}) == {"judge": None, "captioner": None,
                                                           "eval_damsm": "synthbirds-eval",
                                                           "truth": "synth_scenes"}
        # The ground truth alone decides which of the data's metrics run: both grammars read a
        # caption back, SynthBirds' masks are SynthBirds' only, and without one neither runs.
        assert used({}, "synth_birds")["truth"] == "synth_birds"
        assert used({}, "synth_birds", metric="toy_birds")["truth"] == "synth_birds"
        with pytest.raises(AttnGANError, match="toy_birds' needs SynthBirds data"):
            used({}, "synth_scenes", metric="toy_birds")
        with pytest.raises(AttnGANError, match="toy_options' needs SynthBirds or SynthScenes data"):
            used(mine, None)
        # Defaults name instruments only: which ground truth the data has is not one of them.
        with pytest.raises(TypeError, match="evaluation_defaults gave 'oracle'"):
            used({"oracle": str(judge)})
        with pytest.raises(TypeError, match="evaluation_defaults gave 'scenes'.*ground_truth"):
            used({"scenes": True}, None)
    finally:
        REGISTRY.pop("toy_options")
        REGISTRY.pop("toy_birds")


def test_ground_truth_is_the_manifest_beside_the_layout_that_writes_it(tmp_path):
    from attngan.data import coco, cub
    from attngan.data.convert import synth_birds_as
    from attngan.data.synth_birds import MANIFEST as BIRDS, generate_synth_birds
    from attngan.data.synth_scenes import MANIFEST as SCENES, generate_synth_scenes, synth_scenes_as

    birds = generate_synth_birds(tmp_path / "birds", images=12, classes=4, size=32, progress=False)
    scenes = generate_synth_scenes(tmp_path / "scenes", images=10, size=64, progress=False)
    assert (detect_source(birds), ground_truth(birds)) == (cub.SOURCE, "synth_birds")
    assert (detect_source(scenes), ground_truth(scenes)) == (coco.SOURCE, "synth_scenes")
    # The same layouts without a manifest: real CUB and COCO data.
    plain_cub, plain_coco = make_cub(tmp_path / "cub"), make_coco_json(tmp_path / "coco")
    assert (detect_source(plain_cub), ground_truth(plain_cub)) == (cub.SOURCE, None)
    assert (detect_source(plain_coco), ground_truth(plain_coco)) == (coco.SOURCE, None)
    # A manifest is the ground truth of the layout its generator writes, not of any folder it is
    # copied into (its keys are that layout's).
    (plain_cub / SCENES).write_text("{}")
    (plain_coco / BIRDS).write_text("{}")
    assert ground_truth(plain_cub) is None and ground_truth(plain_coco) is None
    # Converted copies keep the images, captions and splits but not the manifest: no ground truth.
    converted = [make(fmt, tmp_path / f"{what}-{fmt}", images=n, size=64, seed=0, progress=False, **extra)
                 for what, make, n, extra in (("birds", synth_birds_as, 12, {"classes": 4}),
                                              ("scenes", synth_scenes_as, 10, {}))
                 for fmt in ("imagefolder", "webdataset")]
    for folder in converted:
        assert not (folder / BIRDS).exists() and not (folder / SCENES).exists()
        assert detect_source(folder).name in ("imagefolder", "shards")
        assert ground_truth(folder) is None
    # A folder no source reads has none either (its reader says what is wrong with it).
    (tmp_path / "stuff").mkdir()
    assert ground_truth(tmp_path / "stuff") is None and ground_truth(tmp_path / "nowhere") is None


def test_a_registered_sources_ground_truth_is_the_answer(tmp_path, instrumented):
    from attngan.data import coco

    root = make_list_folder(tmp_path / "toy")
    for truth in ("synth_birds", "synth_scenes", None):
        source = instrumented(truth=truth)
        assert detect_source(root) is source and ground_truth(root) == truth
        # A caller that has detected the source already gets the same answer from it.
        assert ground_truth(root, source) == truth
    # The answer is checked: a name that is none of the ground truths is the source's bug.
    instrumented(truth="synth_fish")
    with pytest.raises(TypeError, match="'toy-list-instrumented' gave the ground truth 'synth_fish'"):
        ground_truth(root)
    assert ground_truth(root, coco.SOURCE) is None  # asked of another source: its own answer


def test_the_captioner_and_train_oracle_follow_the_ground_truth(tmp_path, instrumented, monkeypatch, capsys):
    from attngan.cli import main
    from attngan.config import load_captioner_config
    from attngan.data.scene_captions import VOCABULARY
    from attngan.training import captioner_loop

    root = make_list_folder(tmp_path / "toy", n=12)
    seen = []
    real_evaluate = captioner_loop.evaluate_captioner

    def evaluate_captioner(model, ds, vocab, cfg, device, max_images, truth, **kw):
        seen.append((truth == "synth_birds", truth == "synth_scenes"))
        # The scores themselves read the toy's captions as neither.
        return real_evaluate(model, ds, vocab, cfg, device, max_images, None, **kw)

    monkeypatch.setattr(captioner_loop, "evaluate_captioner", evaluate_captioner)
    cfg = load_captioner_config("captioner", {"width": 8, "embed_dim": 16, "hidden_dim": 16,
                                              "attention_dim": 16, "batch_size": 4, "eval_images": 2,
                                              "max_len": 12, "image_size": 32,
                                              "data": {"captions_per_image": 2}})
    for n, truth in enumerate(("synth_birds", "synth_scenes", None)):
        instrumented(truth=truth)
        # The vocabulary: the scene parser's words on SynthScenes only.
        words = set(captioner_loop.build_vocabulary(root).id_to_word)
        assert set(VOCABULARY) <= words if truth == "synth_scenes" else not set(VOCABULARY) <= words
        # The scores after each epoch: attribute recall on SynthBirds, the scene read-back on
        # SynthScenes.
        captioner_loop.train_captioner(cfg, root, tmp_path / f"cap{n}", device="cpu", max_epochs=1,
                                       progress=False, max_steps=1)
        assert seen[-1] == (truth == "synth_birds", truth == "synth_scenes")
        # train-oracle trains the judge on SynthScenes (whose width must be 8 at least), else the
        # bird oracle (which needs synth_birds.json).
        assert main(["train-oracle", "--data", str(root), "--out", str(tmp_path / "o"), "--width", "4"]) == 2
        err = capsys.readouterr().err
        if truth == "synth_scenes":
            assert "at least 8 for the judge" in err
        else:
            assert "synth_birds.json" in err and "judge" not in err
    assert len(seen) == 3


# MS-COCO 2014 as a renderer writes it: downloaded folders, caption and instance json files, and
# the release's filenames.pickle beside them.

def make_coco_2014(root: Path, n_train=5, n_val=3) -> Path:
    rng = np.random.default_rng(1)
    (root / "annotations").mkdir(parents=True)
    captions = {}
    for split, folder, n in (("train", "train2014", n_train), ("test", "val2014", n_val)):
        (root / folder).mkdir()
        images, anns, keys = [], [], []
        for i in range(n):
            name = f"COCO_{folder}_{i + 7:012d}.jpg"
            Image.new("RGB", (48, 40), tuple(int(v) for v in rng.integers(0, 255, 3))).save(root / folder / name)
            images.append({"id": i + 7, "file_name": name, "width": 48, "height": 40})
            keys.append(name[:-4])
            for j, text in enumerate(caption_lines(rng, 5)):
                anns.append({"id": len(anns) + 1, "image_id": i + 7, "caption": text})
                captions.setdefault(name[:-4], []).append(text)
        (root / "annotations" / f"captions_{folder}.json").write_text(
            json.dumps({"images": images, "annotations": anns}))
        (root / "annotations" / f"instances_{folder}.json").write_text(
            json.dumps({"images": images, "annotations": [], "categories": []}))
        (root / split).mkdir()
        (root / split / "filenames.pickle").write_bytes(pickle.dumps(keys[::-1], protocol=2))
    (root / "synth_scenes.json").write_text("{}")
    return root, captions


def test_coco_2014_with_filenames_pickle_and_annotations(tmp_path):
    from attngan.data.coco import SOURCE, build_coco_text

    root, captions = make_coco_2014(tmp_path / "scenes")
    assert detect_source(root) is SOURCE
    cfg = DataConfig(base_size=16, branch_num=2, captions_per_image=5, words_num=8, workers=0)
    vocab = load_vocab(root)
    train = TextImageDataset(root, "train", cfg, vocab, train=False)
    # filenames.pickle decides the order; the caption json fills in for the missing text/ folder.
    assert train.keys == [f"COCO_train2014_{i:012d}" for i in (11, 10, 9, 8, 7)]
    assert [r.path.parent.name for r in train.records] == ["train2014"] * 5
    assert train.class_ids.tolist() == [0, 1, 2, 3, 4]
    assert [train.caption_text(0, k) for k in range(5)] == [
        " ".join(c.lower().split()) for c in captions["COCO_train2014_000000000011"]]
    test = TextImageDataset(root, "test", cfg, vocab, train=False)
    assert len(test) == 3 and test.records[0].path.parent.name == "val2014"
    build_coco_text(root)  # text/ now exists: it is read instead, with the same captions
    again = TextImageDataset(root, "train", cfg, vocab, train=False)
    assert [again.caption_text(2, k) for k in range(5)] == [train.caption_text(2, k) for k in range(5)]


def test_coco_release_layout_and_json_only_are_the_same_source(tmp_path):
    from attngan.data.coco import SOURCE

    root = make_coco_json(tmp_path / "coco")
    assert detect_source(root) is SOURCE
    assert [r.key for r in split_records(root, "test")] == [f"COCO_val2014_{i:012d}" for i in (1, 2, 3)]


# Data stays inside its folder.

def _make_photos(root: Path, n: int = 6) -> Path:
    rows = []
    for i in range(n):
        (root / "img").mkdir(parents=True, exist_ok=True)
        (root / "img" / f"{i}.png").write_bytes(_png((40 * i, 90, 200)))
        rows.append({"file_name": f"img/{i}.png", "text": f"a blue square number {i}",
                     "split": "test" if i == 0 else "train"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _append_row(root: Path, row: dict) -> None:
    with open(root / "metadata.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def _shard_bytes(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out.glob("*.tar")))


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_link_out_of_the_folder_never_reaches_a_shard(link, tmp_path, capsys):
    pytest.importorskip("webdataset")
    from attngan.cli import main

    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "passwd").write_bytes(SECRET)
    root = _make_photos(tmp_path / "photos")
    if link == "file":
        os.symlink(outside / "passwd", root / "passwd.jpg")
        _append_row(root, {"file_name": "passwd.jpg", "text": "a host file", "split": "train"})
    else:
        os.symlink(outside, root / "host")
        _append_row(root, {"file_name": "host/passwd", "text": "a host file", "split": "train"})
    out = tmp_path / "shards"
    assert main(["make-shards", "--data", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "outside the data folder" in err and "metadata.jsonl:7" in err and "\n" not in err
    assert SECRET not in _shard_bytes(out)
    # A link that stays inside the folder is fine.
    (root / "passwd.jpg").unlink(missing_ok=True)
    (root / "host").unlink(missing_ok=True)
    os.symlink(root / "img" / "1.png", root / ("passwd.jpg" if link == "file" else "alias.png"))
    rows = (root / "metadata.jsonl").read_text().splitlines()[:-1]
    rows.append(json.dumps({"file_name": "passwd.jpg" if link == "file" else "alias.png",
                            "text": "a linked square", "split": "train"}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    assert main(["make-shards", "--data", str(root), "--out", str(out), "--overwrite"]) == 0


def test_a_cub_key_that_climbs_out_is_refused(tmp_path, capsys):
    pytest.importorskip("webdataset")
    from attngan.cli import main

    root = make_cub(tmp_path / "a" / "b" / "birds")
    key = "../../../../secret"
    target = Path(os.path.normpath(root / "CUB_200_2011" / "images" / f"{key}.jpg"))
    assert not str(target).startswith(str(root))
    target.write_bytes(SECRET)
    Path(os.path.normpath(root / "text" / f"{key}.txt")).write_text("a secret bird\n" * 10)
    keys = pickle.loads((root / "train" / "filenames.pickle").read_bytes()) + [key]
    (root / "train" / "filenames.pickle").write_bytes(pickle.dumps(keys, protocol=2))
    cub = root / "CUB_200_2011"
    n = len((cub / "images.txt").read_text().splitlines()) + 1
    with open(cub / "images.txt", "a") as f:
        f.write(f"{n} {key}.jpg\n")
    with open(cub / "bounding_boxes.txt", "a") as f:
        f.write(f"{n} 0.0 0.0 5.0 5.0\n")
    out = tmp_path / "shards"
    assert main(["make-shards", "--data", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "must be a path inside the data folder" in err and "\n" not in err
    assert SECRET not in _shard_bytes(out)
    with pytest.raises(AttnGANError, match="inside the data folder"):
        TextImageDataset(root, "train", DataConfig(workers=0), load_vocab(root))


def test_a_listed_file_that_is_not_an_image_is_left_out_of_the_shards(tmp_path, capsys):
    pytest.importorskip("webdataset")
    from attngan.cli import main
    from attngan.data.convert import layout_records
    from attngan.data.layout import DataWarning
    from attngan.data.shards import write_shards

    root = _make_photos(tmp_path / "photos")
    (root / "notes.jpg").write_bytes(SECRET)
    _append_row(root, {"file_name": "notes.jpg", "text": "not an image at all", "split": "train"})
    records = {s: layout_records(root, s) for s in ("train", "test")}
    assert len(records["train"]) == 6
    with pytest.warns(DataWarning, match=r"1 of 6 train images are not readable images .*notes.jpg"):
        index = write_shards(records, tmp_path / "shards", per_shard=2, progress=False)
    assert index["splits"]["train"]["samples"] == 5 and index["splits"]["train"]["skipped"] == 1
    assert index["splits"]["train"]["counts"] == [2, 2, 1]
    assert SECRET not in _shard_bytes(tmp_path / "shards")
    with pytest.warns(DataWarning, match="notes.jpg"):
        assert main(["make-shards", "--data", str(root), "--out", str(tmp_path / "cli")]) == 0
    assert "train 5 samples in 1 shards (1 not images, left out)" in capsys.readouterr().out


# Release pickles: bounded before they are unpickled.

BOMB = b"\x80\x02]r" + struct.pack("<I", 2 ** 27) + b"."


def test_a_nine_byte_pickle_is_refused_quickly_in_little_memory(tmp_path):
    path = tmp_path / "filenames.pickle"
    path.write_bytes(BOMB)
    assert path.stat().st_size == 9
    script = textwrap.dedent("""
        import json, resource, sys, time
        from attngan.errors import AttnGANError
        from attngan.text import load_plain_pickle
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        try:
            load_plain_pickle(sys.argv[1])
            message = None
        except AttnGANError as e:
            message = str(e)
        seconds = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"message": message, "seconds": seconds, "kib": after - before}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["message"] and "\n" not in result["message"] and "memo index" in result["message"]
    assert result["seconds"] < 1.0
    assert result["kib"] * 1024 <= 100 * 2 ** 20, result


def test_every_release_pickle_reader_refuses_the_bomb_and_real_ones_load(tmp_path):
    from attngan.data.layout import read_class_info, read_filenames
    from attngan.text import load_captions_pickle, load_plain_pickle
    from test_text import py2_dumps

    (tmp_path / "train").mkdir()
    for name, read in (("train/filenames.pickle", lambda: read_filenames(tmp_path, "train")),
                       ("train/class_info.pickle", lambda: read_class_info(tmp_path, "train", ["a"])),
                       ("captions.pickle", lambda: load_captions_pickle(tmp_path / "captions.pickle"))):
        (tmp_path / name).write_bytes(BOMB)
        with pytest.raises(AttnGANError, match=r"cannot read .* as a pickle: ValueError: memo index"):
            read()
    # A length that runs past the end of the file is refused the same way.
    (tmp_path / "long.pickle").write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 40) + b"x.")
    with pytest.raises(AttnGANError, match="bytes left in the file"):
        load_plain_pickle(tmp_path / "long.pickle")
    # Real pickles, Python 2's (latin-1 byte strings, shared references) and Python 3's, load.
    keys = ["001.Black_footed_Albatross/a_1", "002.Laysan_Albatross/caf\xe9"]
    for proto, data in ((2, py2_dumps(keys)), (0, pickle.dumps(keys, protocol=0)),
                        (5, pickle.dumps(keys, protocol=5))):
        (tmp_path / "train" / "filenames.pickle").write_bytes(data)
        assert read_filenames(tmp_path, "train") == keys, proto
    shared = [[1, 2, 3]] * 4
    (tmp_path / "shared.pickle").write_bytes(pickle.dumps([shared, shared], protocol=2))
    assert load_plain_pickle(tmp_path / "shared.pickle") == [shared, shared]


# A bad sample is skipped (shards) or named by its row (image folders), never a traceback.

GOOD = {"captions": ["a blue square on a dark ground"], "class": 3}
BAD_SAMPLES = [
    # (case, tar key, .json bytes, what the warning says)
    ("bbox_infinity", "s_inf", json.dumps({**GOOD, "bbox": [float("inf"), 0, 5, 5]}).encode(), "bbox must be"),
    ("json_100k_brackets", "s_deep", b"[" * 100_000, "not valid JSON"),
    ("class_10e30", "s_class", json.dumps({**GOOD, "class": 10 ** 30}).encode(), "does not fit in 64 bits"),
    ("key_with_nul", "s_nul", json.dumps({**GOOD, "key": "bad\x00key"}).encode(), "control character"),
    ("key_400_chars", "k" * 400, json.dumps(GOOD).encode(), "400 characters long"),
]


def _write_tar(path: Path, samples: list[tuple[str, bytes, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for key, image, meta in samples:
            for ext, data in (("png", image), ("json", meta)):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))


@pytest.fixture
def bad_shards(tmp_path):
    pytest.importorskip("webdataset")
    samples = [(key, _png((20, 40, 200)), meta) for _, key, meta, _ in BAD_SAMPLES]
    # Keys that collide as a file and a folder once extracted, then plain good samples.
    samples += [("c_file", _png((200, 40, 20)), json.dumps({**GOOD, "key": "a.jpg"}).encode()),
                ("c_folder", _png((20, 200, 40)), json.dumps({**GOOD, "key": "a.jpg/b"}).encode())]
    samples += [(f"good_{i}", _png((10 * i, 50, 90)), json.dumps({**GOOD, "key": f"g{i}.png"}).encode())
                for i in range(4)]
    for split in ("train", "test"):
        _write_tar(tmp_path / f"{split}-000000.tar", samples)
    return tmp_path / "train-000000.tar"


def test_bad_shard_samples_are_skipped_counted_and_named(bad_shards):
    import warnings

    from attngan.data.shards import ShardDataset, materialize_split

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vocab = load_vocab(bad_shards)
        ds = ShardDataset(str(bad_shards), "train", DataConfig(base_size=16, branch_num=2, workers=0,
                                                               max_bad_fraction=0.9), vocab)
        items = list(ds)
    assert sorted(it["key"] for it in items) == ["a.jpg", "a.jpg/b", "g0.png", "g1.png", "g2.png", "g3.png"]
    skipped = [k for it in items for k in it["skipped"]]
    assert len(skipped) == len(BAD_SAMPLES)
    messages = [str(w.message) for w in caught]
    for case, key, _, says in BAD_SAMPLES:
        assert any(says in m and key[:40] in m for m in messages), (case, messages)
        assert any(s.endswith(key) for s in skipped), case
    # Extracted for evaluation: the same samples kept, one warning that counts and names the rest.
    with pytest.warns(UserWarning, match=rf"{len(BAD_SAMPLES)} of 11 test samples .* skipped: .*bbox must be"):
        folder = materialize_split(str(bad_shards), "test")
    test = TextImageDataset(str(bad_shards), "test", CFG, vocab, train=False)
    assert test.root == folder and len(test) == 6 and "a.jpg" in test.keys


@pytest.mark.parametrize("case, row, says", [
    ("bbox_infinity", {"bbox": [float("inf"), 0, 5, 5]}, r"metadata.jsonl:7: bbox must be"),
    ("class_10e30", {"class": 10 ** 30}, r"metadata.jsonl:7: class must be an integer \(64-bit\)"),
    ("key_with_nul", {"file_name": "img/a\x00b.png"}, r"metadata.jsonl:7: 'file_name': .* control character"),
    ("key_400_chars", {"file_name": "k" * 400 + ".png"}, r"metadata.jsonl:7: 'file_name': .* 404 characters long"),
    ("key_under_a_file", {"file_name": "img/1.png/b.png"}, r"are missing: line 7: img/1.png/b.png"),
    ("json_100k_brackets", None, r"metadata.jsonl:7: not a JSON object \(nested too deeply\)"),
])
def test_bad_image_folder_rows_are_one_line_naming_the_row(case, row, says, tmp_path):
    from attngan.data.imagefolder import read_imagefolder

    root = _make_photos(tmp_path / "photos")
    (root / "img" / "extra.png").write_bytes(_png((1, 2, 3)))
    with open(root / "metadata.jsonl", "a") as f:
        if row is None:
            f.write("[" * 100_000 + "\n")
        else:
            f.write(json.dumps({"file_name": "img/extra.png", "text": "a square", "split": "train", **row}) + "\n")
    with pytest.raises(AttnGANError, match=says) as e:
        read_imagefolder(root)
    assert "\n" not in str(e.value)
