"""Hostile or mistaken input to the CLI: one line on stderr, exit code 2, no traceback, nothing
written, and no work started (no model loaded, no data read) before the mistake is found."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import time
import tracemalloc

import pytest

from attngan.cli import main
from attngan.commands._common import check_writable_dir, check_writable_file
from attngan.errors import AttnGANError, check_seed
from attngan.fileio import read_json_object


def run_cli(argv, capsys):
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip().splitlines()


def assert_one_line_error(rc, err, message):
    assert rc == 2, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    assert message in err[0], err


def laughs(levels: int):
    """Nested lists, each holding the previous one twice: a few hundred bytes pickled, 2**levels
    elements when every reference is expanded."""
    x = [1]
    for _ in range(levels):
        x = [x, x]
    return x


# --- Config values: train / train-damsm --dry-run ----------------------------------------------

TRAIN = ["train", "--config", "tiny", "--data", "{data}", "--damsm", "{damsm}", "--out", "{out}"]
DAMSM = ["train-damsm", "--config", "tiny", "--data", "{data}", "--out", "{out}"]

CONFIG_CASES = [
    (TRAIN + ["--set", "train.batch_size=0"], "'train.batch_size' must be at least 1, got 0"),
    (DAMSM + ["--set", "damsm.batch_size=0"], "'damsm.batch_size' must be at least 1, got 0"),
    (TRAIN + ["--set", "train.batch_size=-4"], "'train.batch_size' must be at least 1, got -4"),
    (DAMSM + ["--set", "damsm.batch_size=-4"], "'damsm.batch_size' must be at least 1, got -4"),
    (TRAIN + ["--set", "data.workers=-1"], "'data.workers' must be 0 or more, got -1"),
    (DAMSM + ["--set", "data.workers=-1"], "'data.workers' must be 0 or more, got -1"),
    (TRAIN + ["--set", "train.betas=[a, b]"], "'train.betas' must be a list of 2 numbers"),
    (TRAIN + ["--set", "train.betas=[0.5, 1.5]"], "'train.betas' must be two numbers"),
    (DAMSM + ["--set", "damsm.betas=[0.5]"], "'damsm.betas' must be a list of 2 numbers"),
    (TRAIN + ["--kimg", "-1"], "--kimg must be greater than 0, got -1"),
    (TRAIN + ["--kimg", "0"], "--kimg must be greater than 0"),
    (TRAIN + ["--minutes", "-5"], "--minutes must be 0 or more"),
    (TRAIN + ["--minutes", "nan"], "--minutes must be 0 or more"),
    (TRAIN + ["--set", "train.total_kimg=0"], "'train.total_kimg' must be greater than 0"),
    (TRAIN + ["--set", "train.lr_g=0"], "'train.lr_g' must be greater than 0"),
    (TRAIN + ["--set", "train.lr_d=.nan"], "'train.lr_d' must be a finite number"),
    (TRAIN + ["--set", "gan.gf_dim=-16"], "'gan.gf_dim' must be at least 1, got -16"),
    (TRAIN + ["--set", "data.branch_num=0"], "'data.branch_num' must be at least 1"),
    (TRAIN + ["--set", "data.words_num=0"], "'data.words_num' must be at least 1"),
    (TRAIN + ["--set", "data.base_size=-32"], "'data.base_size' must be at least 1"),
    (TRAIN + ["--set", "data.dataset=imagenet"], "'data.dataset' must be one of birds, coco"),
    (TRAIN + ["--set", "text.rnn_type=gru"], "'text.rnn_type' must be one of LSTM, GRU"),
    (TRAIN + ["--set", "text.sentence=max"], "'text.sentence' must be one of last, mean"),
    (DAMSM + ["--set", "damsm.backbone=resnet"], "'damsm.backbone' must be one of inception, small"),
    (DAMSM + ["--set", "damsm.small_pool=max"], "'damsm.small_pool' must be one of avg, avgmax"),
    (DAMSM + ["--set", "damsm.epochs=-1"], "'damsm.epochs' must be 0 or more, got -1"),
    (DAMSM + ["--set", "damsm.snapshot_epochs=0"], "'damsm.snapshot_epochs' must be at least 1"),
    (DAMSM + ["--set", "text.embedding_dim=255"], "'text.embedding_dim' must be even"),
    (DAMSM + ["--epochs", "-1"], "--epochs must be 0 or more"),
    (DAMSM + ["--minutes", "-1"], "--minutes must be 0 or more"),
    (DAMSM + ["--seed", "-1"], "--seed must be an integer from 0 to 2**63 - 1"),
    (TRAIN + ["--seed", str(2**63)], "--seed must be an integer from 0 to 2**63 - 1"),
    (TRAIN + ["--set", "seed=-3"], "'seed' must be an integer from 0 to 2**63 - 1"),
    (TRAIN + ["--set", "train.batch_size=" + "9" * 5000], "cannot parse value"),
    (TRAIN + ["--set", "train.batch_size=1", "--set", "train.batch_size.x=2"], "already set"),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("argv, message", CONFIG_CASES,
                         ids=[f"{a[0]} {' '.join(a[len(TRAIN if a[0] == 'train' else DAMSM):])}"
                              for a, _ in CONFIG_CASES])
def test_bad_config_values_are_one_line(argv, message, dry_run, tmp_path, capsys):
    out = tmp_path / "run"
    subs = {"data": str(tmp_path / "no-data"), "damsm": str(tmp_path / "no-damsm"), "out": str(out)}
    argv = [a.format(**subs) for a in argv] + (["--dry-run"] if dry_run else [])
    rc, stdout, err = run_cli(argv, capsys)
    assert_one_line_error(rc, err, message)
    assert stdout == ""  # the config is not printed either: it is not valid
    assert not out.exists()


# --- generate: seed, top words ------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--seed", str(2**70)], "--seed must be an integer from 0 to 2**63 - 1"),
    (["--seed", str(2**63)], "--seed must be an integer from 0 to 2**63 - 1"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 2**63 - 1"),
    (["--top-words", "-1"], "--top-words must be at least 1, got -1"),
    (["--top-words", "0"], "--top-words must be at least 1, got 0"),
])
def test_generate_arguments_are_checked_before_the_model_loads(extra, message, tiny_model_dir, tmp_path,
                                                               capsys, monkeypatch):
    from attngan.pipeline import AttnGANPipeline

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(AttnGANPipeline, "from_pretrained", no_load)
    out = tmp_path / "gen"
    rc, _, err = run_cli(["generate", "--model", str(tiny_model_dir), "--out", str(out), *extra, "a bird"],
                         capsys)
    assert_one_line_error(rc, err, message)
    assert not out.exists()


def test_largest_seed_still_generates(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    rc, _, err = run_cli(["generate", "--model", str(tiny_model_dir), "--out", str(out), "--seed",
                          str(2**63 - 1), "--top-words", "1", "a bird"], capsys)
    assert rc == 0, err
    assert (out / "000_s0_attention.png").is_file()


def test_check_seed_rule():
    assert check_seed(0) == 0 and check_seed(2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, 2**70, True, 1.0, "3", None):
        with pytest.raises(AttnGANError, match="from 0 to 2"):
            check_seed(bad)
    import numpy as np

    assert check_seed(np.int64(7)) == 7


# --- Output paths under a regular file ----------------------------------------------------------

OUT_CASES = [
    ["generate", "--model", "{model}", "--out", "{file}/sub", "a bird"],
    ["train", "--config", "tiny", "--data", "{missing}", "--damsm", "{missing}", "--out", "{file}/x"],
    ["train-damsm", "--config", "tiny", "--data", "{missing}", "--out", "{file}/x"],
    ["train", "--config", "tiny", "--data", "{missing}", "--damsm", "{missing}", "--out", "{file}"],
    ["import-original", "--preset", "bird", "--netG", "{missing}", "--text-encoder", "{missing}",
     "--captions", "{missing}", "--out", "{file}/x"],
    ["export-original", "{model}", "--out", "{file}/x/y"],
    ["train-oracle", "--data", "{missing}", "--out", "{file}/x"],
    ["synth-birds", "--out", "{file}/x", "--images", "4"],
    ["synth-scenes", "--out", "{file}/x", "--images", "12"],
    ["eval", "--model", "{model}", "--data", "{missing}", "--out", "{file}/report.json"],
]


@pytest.mark.parametrize("argv", OUT_CASES, ids=lambda v: v[0] + ("" if v[-1] != "{file}" else " (file)"))
def test_output_under_a_file_fails_first(argv, tiny_model_dir, tmp_path, capsys, monkeypatch):
    from attngan.pipeline import AttnGANPipeline

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(AttnGANPipeline, "from_pretrained", no_load)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    subs = {"model": str(tiny_model_dir), "file": str(afile), "missing": str(tmp_path / "nowhere")}
    rc, stdout, err = run_cli([a.format(**subs) for a in argv], capsys)
    assert_one_line_error(rc, err, str(afile))
    assert "is a file" in err[0]
    assert stdout == "" and afile.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_check_writable_dir(tmp_path):
    assert check_writable_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing is created
    (tmp_path / "f").write_text("x")
    with pytest.raises(AttnGANError, match="is a file"):
        check_writable_dir(tmp_path / "f" / "a" / "b")
    with pytest.raises(AttnGANError, match="is a file"):
        check_writable_dir(tmp_path / "f")
    with pytest.raises(AttnGANError, match="is a folder"):
        check_writable_file(tmp_path)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(AttnGANError, match="broken symbolic link"):
        check_writable_dir(tmp_path / "dangling" / "x")


# --- Model and DAMSM folders with a bad config.json ---------------------------------------------

def _tiny_config(tiny_model_dir) -> dict:
    return json.loads((tiny_model_dir / "config.json").read_text())


BAD_CONFIG_JSON = [
    ("[]", "must hold a JSON object, got an array"),
    ("null", "must hold a JSON object, got null"),
    ('"a string"', "must hold a JSON object, got a string"),
    ("{bad json", "is not valid JSON"),
    ("\xff\xfe", "not UTF-8"),
    ("[" * 100000, "nested too deeply"),
    ('{"format": "attngan-model", "version": 2, "kind": "generator", "files": []}', 'has no "config" object'),
    ('{"format": "attngan-model", "version": 2, "kind": "generator", "files": [], "config": [1]}',
     '"config" must be a JSON object'),
    ('{"format": "attngan-model", "version": "x' + "y" * 500 + '", "config": {}}', "format version"),
    ('{"format_version": 1, "config": [1]}', '"config" must be a JSON object'),  # a version-1 folder
    ("GF_DIM", "'gan.gf_dim' must be at least 1, got -16"),
    ("BATCH", "'train.batch_size' must be at least 1, got 0"),
]


@pytest.mark.parametrize("text, message", BAD_CONFIG_JSON, ids=[m for _, m in BAD_CONFIG_JSON])
def test_model_folder_with_bad_config_json(text, message, tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    if text in ("GF_DIM", "BATCH"):
        meta = _tiny_config(tiny_model_dir)
        if text == "GF_DIM":
            meta["config"]["gan"]["gf_dim"] = -16
        else:
            meta["config"]["train"]["batch_size"] = 0
        text = json.dumps(meta)
    (model / "config.json").write_bytes(text.encode("latin-1"))
    out = tmp_path / "gen"
    rc, stdout, err = run_cli(["generate", "--model", str(model), "--out", str(out), "a bird"], capsys)
    assert_one_line_error(rc, err, message)
    assert str(model / "config.json") in err[0] or "format version" in message
    assert not out.exists()


def test_read_json_object(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"a": 1}')
    assert read_json_object(p, "thing") == {"a": 1}
    with pytest.raises(AttnGANError, match="thing not found"):
        read_json_object(tmp_path / "missing.json", "thing")
    with pytest.raises(AttnGANError, match="cannot read thing"):
        read_json_object(tmp_path, "thing")  # a folder
    p.write_text('{"a": ' + "1" * 5000 + "}")  # beyond Python's int digit limit
    with pytest.raises(AttnGANError, match="not valid JSON"):
        read_json_object(p, "thing")
    p.write_text(" " * 2048 + "{}")
    with pytest.raises(AttnGANError, match="larger than"):
        read_json_object(p, "thing", max_bytes=1024)


def _damsm_folder(tiny_model_dir, tmp_path, text: str):
    folder = tmp_path / "damsm"
    folder.mkdir()
    for name in ("vocab.json", "text_encoder.safetensors", "image_encoder.safetensors"):
        shutil.copy(tiny_model_dir / name, folder / name)
    (folder / "config.json").write_text(text)
    return folder


def test_read_damsm_config_checks_the_folder_and_its_config(tiny_model_dir, tmp_path):
    from attngan.config import ConfigError
    from attngan.io import read_damsm_config

    meta = _tiny_config(tiny_model_dir)
    folder = _damsm_folder(tiny_model_dir, tmp_path, json.dumps({"config": meta["config"], "n_words": 3}))
    assert read_damsm_config(folder).name == "tiny"
    (folder / "config.json").write_text("{bad")
    with pytest.raises(AttnGANError, match="DAMSM config .* is not valid JSON"):
        read_damsm_config(folder)
    meta.update(kind="damsm", files=["vocab.json", "text_encoder.safetensors", "image_encoder.safetensors"])
    meta["config"]["damsm"]["batch_size"] = 0
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="'damsm.batch_size' must be at least 1, got 0"):
        read_damsm_config(folder)


@pytest.mark.parametrize("text", ["{bad json", "[]", "null", '{"n_words": 3}'])
def test_damsm_folder_with_bad_config_json(text, tiny_model_dir, tmp_path, capsys):
    folder = _damsm_folder(tiny_model_dir, tmp_path, text)
    rc, _, err = run_cli(["eval-damsm", str(folder), "--data", str(tmp_path / "nowhere")], capsys)
    assert_one_line_error(rc, err, str(folder / "config.json"))


# --- captions.pickle that expands without bound --------------------------------------------------

def test_billion_laughs_captions_pickle_through_the_cli(tmp_path, capsys):
    # import-original reads the captions before any weights: give it empty weight files.
    for name in ("netG.pth", "text_encoder.pth", "image_encoder.pth"):
        (tmp_path / name).write_bytes(b"")
    captions = tmp_path / "captions.pickle"
    captions.write_bytes(pickle.dumps([laughs(45), [], {0: "<end>"}, {"<end>": 0}], protocol=2))
    assert captions.stat().st_size < 1000
    out = tmp_path / "model"
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        rc, _, err = run_cli(["import-original", "--preset", "bird", "--netG", str(tmp_path / "netG.pth"),
                              "--text-encoder", str(tmp_path / "text_encoder.pth"),
                              "--captions", str(captions), "--out", str(out)], capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5  # includes importing torch-side modules once
    assert peak < 50 * 2**20
    assert_one_line_error(rc, err, str(captions))
    assert not out.exists()


# --- Weights: dtype and finiteness; oracle folders ---------------------------------------------

def _spoil(name, v):
    import torch

    if name == "nan":
        v = v.clone()
        v.view(-1)[0] = float("nan")
        return v
    if name == "inf":
        return torch.full_like(v, float("inf"))
    return v.to({"bool": torch.bool, "int8": torch.int8, "int64": torch.int64}[name])


@pytest.mark.parametrize("spoil, message", [
    ("nan", "has 1 NaN/inf value"), ("inf", "NaN/inf values"),
    ("bool", "is bool; weights must be floating point"), ("int8", "is int8; weights must be"),
    ("int64", "is int64; weights must be"),
])
def test_weights_of_the_wrong_kind_or_not_finite_are_refused(spoil, message, tiny_model_dir, tmp_path,
                                                              capsys):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    sd = load_file(str(model / "generator.safetensors"))
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.dim() > 1)
    sd[key] = _spoil(spoil, sd[key])
    save_file(sd, str(model / "generator.safetensors"))
    out = tmp_path / "gen"
    rc, _, err = run_cli(["generate", "--model", str(model), "--out", str(out), "a bird"], capsys)
    assert_one_line_error(rc, err, message)
    assert key in err[0]
    assert not out.exists()


def test_a_float_where_the_network_counts_is_refused():
    import torch

    from attngan.io import load_state

    bn = torch.nn.BatchNorm1d(3)
    sd = {k: v.float() for k, v in bn.state_dict().items()}
    with pytest.raises(AttnGANError, match="'num_batches_tracked' is float32; the network holds int64"):
        load_state(bn, sd, "bn")


def test_oracle_folder_with_a_bad_config_is_one_line(tmp_path):
    from importlib.resources import files

    from attngan.metrics.oracle import load_oracle

    shipped = files("attngan") / "assets" / "synthbirds-eval" / "oracle"
    good = json.loads((shipped / "config.json").read_text())
    cases = [("[]", "must hold a JSON object, got an array"),
             (dict(good, parts="wing"), '"parts" must be a non-empty list'),
             (dict(good, colours=["red", "red"]), '"colours" must be a non-empty list of distinct'),
             (dict(good, width=-3), '"width" must be an integer from 1'),
             (dict(good, image_size=True), '"image_size" must be an integer'),
             (dict(good, class_ids=[1.5]), '"class_ids" must be'),
             (dict(good, width=8), "has shape")]
    for i, (meta, message) in enumerate(cases):
        folder = tmp_path / f"oracle{i}"
        shutil.copytree(shipped, folder)
        (folder / "config.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
        with pytest.raises(AttnGANError, match=message):
            load_oracle(folder)
    assert load_oracle(shipped).cfg.parts == good["parts"]


def test_a_key_with_a_nul_byte_in_filenames_pickle_is_one_line(tmp_path):
    from attngan.data.layout import read_filenames

    (tmp_path / "train").mkdir()
    for keys in (["001.Bird/a", "002.Bird/b\x00c"], ["", "x"]):
        (tmp_path / "train" / "filenames.pickle").write_bytes(pickle.dumps(keys, protocol=2))
        with pytest.raises(AttnGANError, match="cannot be a file name"):
            read_filenames(tmp_path, "train")


def test_train_resolves_the_damsm_sections_before_printing(tiny_model_dir, tmp_path, capsys):
    base = ["train", "--config", "bird", "--data", str(tmp_path / "nowhere"), "--damsm",
            str(tiny_model_dir), "--out", str(tmp_path / "run"), "--dry-run"]
    rc, out, err = run_cli(base, capsys)
    assert rc == 0, err
    printed = json.loads(out)
    theirs = _tiny_config(tiny_model_dir)["config"]
    # The bird preset's sections are replaced by the tiny encoders' in what --dry-run shows.
    assert printed["damsm"] == theirs["damsm"] and printed["text"] == theirs["text"]
    assert printed["gan"]["gf_dim"] == 32  # the bird preset's own sections stay
    same = theirs["damsm"]["gamma1"]
    rc, _, err = run_cli(base + ["--set", f"damsm.gamma1={same}"], capsys)
    assert rc == 0, err
    rc, _, err = run_cli(base + ["--set", "damsm.gamma1=9.5"], capsys)
    assert_one_line_error(rc, err, "--set damsm.gamma1=9.5 contradicts the DAMSM")
    assert not (tmp_path / "run").exists()


# --- Hostile inputs, table-driven: each is one line and exit 2, before any damage ---------------

def _png_header_only(path, width: int, height: int) -> None:
    """A 57-byte PNG that claims width x height pixels: PIL refuses it at open (decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _model_copy(tiny_model_dir, tmp_path, spoil=None):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    if spoil is not None:
        sd = load_file(str(model / "generator.safetensors"))
        save_file({k: spoil(k, v) for k, v in sd.items()}, str(model / "generator.safetensors"))
    return model


def _setup(name, tmp_path, tiny_model_dir) -> dict:
    import torch

    if name == "bomb_png":
        _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    elif name == "float8":
        first = []

        def to_float8(k, v):
            if v.is_floating_point() and v.dim() > 1 and not first:
                first.append(k)
                return v.to(torch.float8_e4m3fn)
            return v
        return {"model": str(_model_copy(tiny_model_dir, tmp_path, to_float8))}
    elif name == "negative_bn_variance":
        return {"model": str(_model_copy(tiny_model_dir, tmp_path, lambda k, v: -v.abs() - 1
                                         if k.endswith("running_var") else v))}
    elif name == "weights_3e38":
        return {"model": str(_model_copy(tiny_model_dir, tmp_path, lambda k, v: torch.full_like(v, 3e38)
                                         if v.is_floating_point() and not k.endswith("running_var") else v))}
    elif name in ("vocab_deep", "vocab_number"):
        model = _model_copy(tiny_model_dir, tmp_path)
        (model / "vocab.json").write_text("[" * 100_000 + "]" * 100_000 if name == "vocab_deep" else
                                          '{"format": "attngan-vocab", "version": ' + "9" * 5000 + "}")
        return {"model": str(model)}
    elif name in ("metadata_deep", "metadata_label"):
        from PIL import Image

        (tmp_path / "photos").mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "a.png")
        line = ("[" * 100_000 if name == "metadata_deep" else
                '{"file_name": "a.png", "text": "a red bird", "label": ' + "9" * 5000 + "}")
        (tmp_path / "photos" / "metadata.jsonl").write_text(line + "\n")
    elif name == "live_run":
        (tmp_path / "live_run" / "model").mkdir(parents=True)
        (tmp_path / "live_run" / "state.pt").write_bytes(b"a run's training state")
    return {}


HOSTILE_CASES = [
    # (id, setup, argv, message)
    ("device meta", None, ["generate", "--model", "{model}", "--device", "meta", "--out", "{tmp}/out", "a bird"],
     "unsupported device 'meta'"),
    ("caption bomb.png", "bomb_png", ["caption", "{tmp}/bomb.png"], "decompression bomb"),
    ("train --kimg 1e308", None, TRAIN + ["--kimg", "1e308"], "'train.total_kimg' must be at most"),
    ("train-captioner --threads", None, ["train-captioner", "--data", "{tmp}/none", "--out", "{tmp}/out",
                                         "--threads", "1000000"], "--threads must be from 1 to"),
    ("train-oracle --width 0", None, ["train-oracle", "--data", "{tmp}/none", "--out", "{tmp}/out", "--width", "0"],
     "--width must be from 1 to 1024, got 0"),
    ("train-oracle --minutes nan", None, ["train-oracle", "--data", "{tmp}/none", "--out", "{tmp}/out",
                                          "--minutes", "nan"], "--minutes must be 0 or more"),
    ("float8 weights", "float8", ["generate", "--model", "{model}", "--out", "{tmp}/out", "a bird"],
     "is float8_e4m3fn; weights must be floating point"),
    ("deep vocab.json", "vocab_deep", ["generate", "--model", "{model}", "--out", "{tmp}/out", "a bird"],
     "vocab.json is nested too deeply"),
    ("huge number in vocab.json", "vocab_number", ["generate", "--model", "{model}", "--out", "{tmp}/out",
                                                   "a bird"], "vocab.json is not valid JSON"),
    ("generate --n", None, ["generate", "--model", "{model}", "--out", "{tmp}/out", "--n", "1000000000", "a bird"],
     "--n must be from 1 to 1000"),
    ("caption --beam", None, ["caption", "--beam", "100000", "{tmp}/none.png"], "--beam must be from 1 to 100"),
    ("synth-birds --images", None, ["synth-birds", "--out", "{tmp}/out", "--images", "1000000000"],
     "--images must be from 1 to 1000000"),
    ("synth-birds --workers", None, ["synth-birds", "--out", "{tmp}/out", "--images", "4", "--workers", "1000"],
     "--workers must be from 1 to"),
    ("data.workers", None, TRAIN + ["--set", "data.workers=100000"], "'data.workers' must be at most 256"),
    ("words_num 1e9", None, TRAIN + ["--set", "data.words_num=1e9"], "'data.words_num' must be an integer"),
    ("words_num 10^9", None, TRAIN + ["--set", "data.words_num=1000000000"], "'data.words_num' must be at most"),
    ("branch_num", None, TRAIN + ["--set", "data.branch_num=50"], "'data.branch_num' must be at most 5"),
    ("image size", None, TRAIN + ["--set", "data.base_size=256", "--set", "data.branch_num=4"],
     "the last stage's image size"),
    ("r_num", None, TRAIN + ["--set", "gan.r_num=100000"], "'gan.r_num' must be at most 16"),
    ("damsm.image_size", None, DAMSM + ["--set", "damsm.image_size=100000"], "'damsm.image_size' must be at most"),
    ("captioner beam_size", None, ["train-captioner", "--data", "{tmp}/none", "--out", "{tmp}/out", "--set",
                                   "beam_size=100000"], "'beam_size' must be at most 100"),
    ("brace pattern of 10^8", None, ["train", "--config", "tiny", "--data", "{tmp}/s/train-{{00000000..99999999}}.tar",
                                     "--damsm", "{model}", "--out", "{tmp}/out"], "names more than 100000 files"),
    ("generate --out ''", None, ["generate", "--model", "{model}", "--out", "", "a bird"], "--out is empty"),
    ("train --out ''", None, ["train", "--config", "tiny", "--data", "{tmp}/none", "--damsm", "{model}", "--out", ""],
     "--out is empty"),
    ("eval --out ''", None, ["eval", "--model", "{model}", "--data", "{tmp}/none", "--out", ""], "--out is empty"),
    ("eval --real-images -1", None, ["eval", "--model", "{model}", "--data", "{tmp}/none", "--out", "{tmp}/out/r.json",
                                     "--real-images", "-1"], "--real-images must be at least 1"),
    ("train --out live_run/model", "live_run", ["train", "--config", "tiny", "--data", "{tmp}/none", "--damsm",
                                                "{model}", "--out", "{tmp}/live_run/model"],
     "is inside the run folder"),
    ("train-damsm --out live_run/model/x", "live_run", ["train-damsm", "--config", "tiny", "--data", "{tmp}/none",
                                                        "--out", "{tmp}/live_run/model/x"], "is inside the run folder"),
    ("metadata of 100k [", "metadata_deep", ["make-shards", "--data", "{tmp}/photos", "--out", "{tmp}/out"],
     "metadata.jsonl:1: not a JSON object (nested too deeply)"),
    ("metadata label of 5000 digits", "metadata_label", ["make-shards", "--data", "{tmp}/photos", "--out",
                                                          "{tmp}/out"], "metadata.jsonl:1: not a JSON object"),
    ("negative BN variance", "negative_bn_variance", ["generate", "--model", "{model}", "--out", "{tmp}/out",
                                                      "a bird"], "non-finite values (NaN/inf)"),
    ("3e38 weights", "weights_3e38", ["generate", "--model", "{model}", "--out", "{tmp}/out", "a bird"],
     "non-finite values (NaN/inf)"),
]


@pytest.mark.parametrize("setup, argv, message", [c[1:] for c in HOSTILE_CASES], ids=[c[0] for c in HOSTILE_CASES])
def test_hostile_inputs_are_one_line(setup, argv, message, tiny_model_dir, tmp_path, capsys, monkeypatch):
    subs = {"model": str(tiny_model_dir), "tmp": str(tmp_path), "data": str(tmp_path / "none"),
            "damsm": str(tiny_model_dir), "out": str(tmp_path / "out")}
    subs.update(_setup(setup, tmp_path, tiny_model_dir))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # nothing may land in the current folder either
    before = {p.relative_to(tmp_path): p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    rc, stdout, err = run_cli([a.format(**subs) for a in argv], capsys)
    assert_one_line_error(rc, err, message)
    assert not (tmp_path / "out").exists()
    assert not any(cwd.iterdir())
    after = {p.relative_to(tmp_path): p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert after == before  # nothing written, nothing changed


def test_an_exponent_without_a_dot_is_a_number(tiny_model_dir, tmp_path, capsys):
    rc, out, err = run_cli(["train-damsm", "--config", "tiny", "--data", str(tmp_path / "d"), "--out",
                            str(tmp_path / "r"), "--set", "damsm.lr=1e-3", "--set", "damsm.gamma1=2.5e0",
                            "--dry-run"], capsys)
    assert rc == 0, err
    printed = json.loads(out)["damsm"]
    assert printed["lr"] == 0.001 and printed["gamma1"] == 2.5


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    from safetensors import SafetensorError

    import attngan.training.damsm_loop as damsm_loop
    import attngan.training.gan_loop as gan_loop

    argv = ["train-damsm", "--config", "tiny", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")]
    for failure in (OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r" / "log.jsonl")),
                    SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                    'message: "No space left on device" })')):
        def full(*a, _e=failure, **k):
            raise _e
        monkeypatch.setattr(damsm_loop, "train_damsm", full)
        rc, _, err = run_cli(argv, capsys)
        assert_one_line_error(rc, err, "no space left on the device")
    # Other errors keep their traceback: only a full disk is a user's matter.
    monkeypatch.setattr(damsm_loop, "train_damsm", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(argv)
    capsys.readouterr()

    def full_in_train(*a, **k):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("while writing a snapshot") from e
    monkeypatch.setattr(gan_loop, "train_gan", full_in_train)
    rc, _, err = run_cli(["train", "--config", "tiny", "--data", str(tmp_path / "d"), "--damsm",
                          str(_tiny_damsm(tmp_path)), "--out", str(tmp_path / "g")], capsys)
    assert_one_line_error(rc, err, "no space left on the device")


def _tiny_damsm(tmp_path):
    from helpers import save_random_tiny_model

    return save_random_tiny_model(tmp_path / "damsm-model")


# --- YAML that expands or nests without bound ----------------------------------------------------

def _yaml_alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _peak_rss_mb(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Peak resident memory of `attngan ARGV` in a fresh interpreter, in MB."""
    import sys

    code = ("import resource, sys\nfrom attngan.cli import main\nrc = main(sys.argv[1:])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60,
                          env=env)
    lines = proc.stderr.strip().splitlines()
    return int(lines[-1]) / 1024, proc  # Linux reports kilobytes



@pytest.mark.parametrize("kind", ["alias bomb in --config", "alias bomb in --set", "10,000 deep --config",
                                  "10,000 deep --set"])
def test_yaml_bombs_are_refused_fast_and_small(kind, tmp_path):
    import sys

    if sys.platform != "linux":
        pytest.skip("ru_maxrss is in kilobytes on Linux only")
    bomb = _yaml_alias_bomb() if "alias" in kind else "damsm: " + "[" * 10_000 + "]" * 10_000 + "\n"
    assert len(bomb.encode()) < 400 or "deep" in kind
    good = tmp_path / "good.yaml"
    good.write_text("preset: tiny\ndamsm:\n  lr: 1.0e-3\n")
    base = ["train-damsm", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--dry-run"]
    baseline, proc = _peak_rss_mb(base + ["--config", str(good)])
    assert proc.returncode == 0, proc.stderr
    if "--config" in kind:
        (tmp_path / "bomb.yaml").write_text(bomb)
        argv = base + ["--config", str(tmp_path / "bomb.yaml")]
    else:
        argv = base + ["--config", "tiny", "--set", "damsm=" + bomb.replace("damsm: ", "").strip()
                       if "deep" in kind else "damsm.lr=" + "{" + bomb.replace("\n", ", ") + "}"]
    t0 = time.perf_counter()
    peak, proc = _peak_rss_mb(argv)
    took = time.perf_counter() - t0
    err = proc.stderr.strip().splitlines()[:-1]  # the last line is the measurement
    assert proc.returncode == 2 and len(err) == 1 and "Traceback" not in err[0], proc.stderr
    assert ("aliases" in err[0]) if "alias" in kind else ("nested more than 50 deep" in err[0]), err
    assert peak - baseline <= 100, (peak, baseline)
    assert took < 30  # the interpreter's start-up included
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("failure", ["OSError", "SafetensorError"])
def test_a_full_disk_during_real_damsm_training_is_one_line(failure, tmp_path, capsys, monkeypatch):
    """The weight writer itself fails as a full disk does, in a real (tiny) train-damsm run."""
    import errno

    from safetensors import SafetensorError

    import attngan.io
    from attngan.data.synth_birds import generate_synth_birds

    data = generate_synth_birds(tmp_path / "birds", images=32, classes=8, size=64, seed=0, progress=False)

    def full_disk(*a, **k):
        if failure == "OSError":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), a[1] if len(a) > 1 else None)
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(attngan.io, "save_file", full_disk)
    rc, _, err = run_cli(["train-damsm", "--config", "tiny", "--data", str(data), "--out", str(tmp_path / "run"),
                          "--epochs", "1", "--set", "data.workers=0", "--set", "damsm.batch_size=8"], capsys)
    err = [line for line in err if line.strip() and not line.startswith("DAMSM epoch")]  # progress bar
    assert_one_line_error(rc, err, "no space left on the device")
    assert not list((tmp_path / "run").rglob("*.safetensors"))
