"""Saved-model folders: one format for the generator, DAMSM, oracle and captioner folders
(attngan.io: write_folder, read_folder), and folders in each kind's older layout still load."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attngan.config import load_captioner_config, preset
from attngan.errors import AttnGANError
from attngan.text import Vocabulary

WORDS = Vocabulary(["<end>", "a", "bird", "black", "wings"])
ENCODERS = ("text_encoder.safetensors", "image_encoder.safetensors")


def _tiny_nets(seed: int = 0):
    from attngan.networks import build_generator, build_image_encoder, build_text_encoder

    torch.manual_seed(seed)
    cfg = preset("tiny")
    return (cfg, build_generator(cfg, cfg.text.embedding_dim), build_text_encoder(cfg, len(WORDS)),
            build_image_encoder(cfg))


def _small_oracle():
    from attngan.metrics.oracle import AttributeOracle, OracleConfig

    torch.manual_seed(0)
    cfg = OracleConfig(parts=["wing", "belly"], colours=["red", "black", "white"], class_ids=[3, 5], width=8,
                       accuracy={"wing": 0.99, "belly": 0.98}, valid=True, info={"seed": 0})
    return AttributeOracle(cfg)


def _small_captioner():
    from attngan.captioner import captioner_vocabulary
    from attngan.networks.captioner import build_captioner

    cfg = load_captioner_config("captioner", {"width": 8, "embed_dim": 32, "hidden_dim": 64,
                                              "attention_dim": 32, "dropout": 0.0})
    vocab = captioner_vocabulary(WORDS.id_to_word)
    torch.manual_seed(0)
    return cfg, vocab, build_captioner(cfg, len(vocab))


def _write_old_folder(folder: Path, meta: dict, weights: dict, vocab=None) -> Path:
    """A folder as earlier releases wrote it, by hand: config.json as given, plain safetensors."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(meta))
    if vocab is not None:
        vocab.save(folder / "vocab.json")
    for name, module in weights.items():
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / name))
    return folder


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _meta(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


# Folders in the older layouts.

def test_a_version_1_model_folder_loads_as_a_model_and_as_a_damsm(tmp_path):
    from attngan.io import load_damsm
    from attngan.pipeline import AttnGANPipeline

    cfg, g, te, ie = _tiny_nets()
    folder = _write_old_folder(tmp_path / "model", {"format_version": 1, "config": cfg.to_dict(), "n_words": len(WORDS)},
                               {"generator.safetensors": g, "text_encoder.safetensors": te,
                                "image_encoder.safetensors": ie}, WORDS)
    pipe = AttnGANPipeline.from_pretrained(folder, device="cpu", fuse=False)
    assert pipe.vocab == WORDS and pipe.config.to_dict() == cfg.to_dict()
    for loaded, saved in ((pipe.generator, g), (pipe.text_encoder, te), (pipe.image_encoder, ie)):
        _assert_same_weights(loaded, saved)
    _, vocab, te2, ie2 = load_damsm(folder)
    assert vocab == WORDS
    _assert_same_weights(te2, te)
    _assert_same_weights(ie2, ie)


def test_an_unversioned_damsm_folder_and_run_folder_load(tmp_path):
    from attngan.io import damsm_folder, load_damsm

    cfg, _, te, ie = _tiny_nets()
    folder = _write_old_folder(tmp_path / "damsm", {"config": cfg.to_dict(), "n_words": len(WORDS), "metrics": {}},
                               {"text_encoder.safetensors": te, "image_encoder.safetensors": ie}, WORDS)
    cfg2, vocab, te2, ie2 = load_damsm(folder)
    assert cfg2.to_dict() == cfg.to_dict() and vocab == WORDS
    _assert_same_weights(te2, te)
    _assert_same_weights(ie2, ie)

    # A run folder with best/ chosen on the test split (no "selection") and last/: last/ is used.
    _, _, te_last, ie_last = _tiny_nets(seed=1)
    run = tmp_path / "run"
    shutil.copytree(folder, run / "best")
    _write_old_folder(run / "last", {"config": cfg.to_dict(), "n_words": len(WORDS), "metrics": {}},
                      {"text_encoder.safetensors": te_last, "image_encoder.safetensors": ie_last}, WORDS)
    assert damsm_folder(run) == run / "last"
    _assert_same_weights(load_damsm(run)[2], te_last)
    # best/ recording its selection (the last epoch) is used as it is.
    meta = _meta(run / "best")
    meta["metrics"]["selection"] = "last epoch"
    (run / "best" / "config.json").write_text(json.dumps(meta))
    assert damsm_folder(run) == run / "best"
    _assert_same_weights(load_damsm(run)[2], te)


def test_an_old_oracle_folder_loads(tmp_path):
    from attngan.metrics.oracle import load_oracle

    oracle = _small_oracle()
    folder = _write_old_folder(tmp_path / "oracle", {"format": "attngan-oracle", "version": 1, **asdict(oracle.cfg)},
                               {"oracle.safetensors": oracle})
    loaded = load_oracle(folder)
    assert loaded.cfg == oracle.cfg
    _assert_same_weights(loaded, oracle)


def test_an_old_captioner_folder_loads(tmp_path):
    from attngan.captioner import Captioner

    cfg, vocab, model = _small_captioner()
    folder = _write_old_folder(tmp_path / "captioner",
                               {"format": "attngan-captioner", "version": 1, "config": cfg.to_dict(),
                                "n_words": len(vocab), "metrics": {"val_bleu4": 0.1}},
                               {"captioner.safetensors": model}, vocab)
    loaded = Captioner.from_pretrained(folder, device="cpu")
    assert loaded.config == cfg and loaded.vocab == vocab and loaded.meta["metrics"] == {"val_bleu4": 0.1}
    _assert_same_weights(loaded.model, model)


# The current format.

def test_every_saver_writes_the_one_format_and_its_loader_reads_it_back(tmp_path):
    from attngan.captioner import load_captioner_folder, save_captioner_folder
    from attngan.io import load_damsm, save_damsm_folder, save_model_folder
    from attngan.metrics.oracle import load_oracle, save_oracle
    from attngan.pipeline import AttnGANPipeline

    cfg, g, te, ie = _tiny_nets()
    ccfg, cvocab, captioner = _small_captioner()
    oracle = _small_oracle()
    folders = {
        "generator": save_model_folder(tmp_path / "model", cfg, WORDS, g, te, ie, extra={"model_card": {"name": "x"}}),
        "damsm": save_damsm_folder(tmp_path / "damsm", cfg, WORDS, te, ie, {"epoch": 1}),
        "oracle": save_oracle(oracle, tmp_path / "oracle"),
        "captioner": save_captioner_folder(tmp_path / "captioner", ccfg, cvocab, captioner, {"val_bleu4": 0.2}),
    }
    files = {"generator": ["vocab.json", "generator.safetensors", *ENCODERS], "damsm": ["vocab.json", *ENCODERS],
             "oracle": ["oracle.safetensors"], "captioner": ["vocab.json", "captioner.safetensors"]}
    for kind, folder in folders.items():
        meta = _meta(folder)
        assert (meta["format"], meta["version"], meta["kind"], meta["files"]) == ("attngan-model", 2, kind, files[kind])
        assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", *files[kind]])
    assert _meta(folders["generator"])["model_card"] == {"name": "x"}
    assert _meta(folders["damsm"])["metrics"] == {"epoch": 1}
    assert _meta(folders["oracle"])["valid"] is True
    pipe = AttnGANPipeline.from_pretrained(folders["generator"], device="cpu", fuse=False)
    _assert_same_weights(pipe.generator, g)
    _, _, te2, ie2 = load_damsm(folders["damsm"])
    _assert_same_weights(ie2, ie)
    loaded = load_oracle(folders["oracle"])
    assert loaded.cfg == oracle.cfg
    _assert_same_weights(loaded, oracle)
    _, meta, _, model = load_captioner_folder(folders["captioner"])
    assert meta["metrics"] == {"val_bleu4": 0.2}
    _assert_same_weights(model, captioner)
    # Saving over a folder replaces it whole; no temporaries are left beside it.
    save_oracle(oracle, tmp_path / "oracle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captioner", "damsm", "model", "oracle"]


def test_the_bundled_folders_are_in_the_current_format():
    from attngan.io import ASSETS, bundled_names

    kinds = {"synthbirds-128": "generator", "synthbirds-tiny": "generator", "synthbirds-captioner": "captioner",
             "synthbirds-eval/damsm_eval": "damsm", "synthbirds-eval/oracle": "oracle"}
    # Every bundled captioner installed (the scenes one too, once it ships).
    kinds.update({name: "captioner" for name in bundled_names("captioner")})
    for name, kind in kinds.items():
        folder = ASSETS / name
        meta = _meta(folder)
        assert (meta["format"], meta["version"], meta["kind"]) == ("attngan-model", 2, kind), name
        assert sorted(meta["files"]) == sorted(p.name for p in folder.iterdir() if p.name != "config.json")


@pytest.fixture()
def damsm_dir(tmp_path):
    from attngan.io import save_damsm_folder

    cfg, _, te, ie = _tiny_nets()
    return save_damsm_folder(tmp_path / "damsm", cfg, WORDS, te, ie)


BAD_FOLDERS = [
    (lambda m: dict(m, version=3), "has format version 3; this attngan reads version 2"),
    (lambda m: dict(m, version="x" * 500), "has format version 'xxxxxxxxx"),
    (lambda m: dict(m, format="someone-else"), "is not a DAMSM config (format 'someone-else'; expected 'attngan-model')"),
    (lambda m: dict(m, kind="captioner"), "is not a DAMSM folder (its kind is 'captioner')"),
    (lambda m: dict(m, kind=None), "is not a DAMSM folder (its kind is None)"),
    (lambda m: dict(m, files="vocab.json"), '"files" must be a list of the names of the folder\'s files'),
    (lambda m: dict(m, files=["../generator.safetensors"]), '"files" must be a list'),
    (lambda m: {k: v for k, v in m.items() if k != "files"}, '"files" must be a list'),
    (lambda m: dict(m, files=[*m["files"], "extra.safetensors"]), "is incomplete: missing extra.safetensors"),
]


@pytest.mark.parametrize("change, message", BAD_FOLDERS, ids=[m[:40] for _, m in BAD_FOLDERS])
def test_a_bad_folder_is_a_one_line_error_naming_it(damsm_dir, change, message):
    from attngan.io import load_damsm

    (damsm_dir / "config.json").write_text(json.dumps(change(_meta(damsm_dir))))
    with pytest.raises(AttnGANError) as e:
        load_damsm(damsm_dir)
    text = str(e.value)
    assert message in text and str(damsm_dir) in text and len(text.splitlines()) == 1 and len(text) < 300


def test_missing_folders_and_files_are_one_line_errors(damsm_dir, tmp_path):
    from attngan.io import load_damsm
    from attngan.metrics.oracle import load_oracle

    with pytest.raises(AttnGANError, match="DAMSM folder .*nowhere does not exist"):
        load_damsm(tmp_path / "nowhere")
    with pytest.raises(AttnGANError, match="is not an oracle folder \\(its kind is 'damsm'\\)"):
        load_oracle(damsm_dir)
    (damsm_dir / "image_encoder.safetensors").unlink()
    with pytest.raises(AttnGANError, match="DAMSM folder .* is incomplete: missing image_encoder.safetensors"):
        load_damsm(damsm_dir)
    (damsm_dir / "config.json").unlink()
    with pytest.raises(AttnGANError, match="is not a DAMSM folder \\(it has no config.json\\)"):
        load_damsm(damsm_dir)


@pytest.mark.parametrize("meta, kind", [
    ({"format_version": 1, "config": {}}, "generator"),
    ({"config": {}, "n_words": 3}, "damsm"),
    ({"format": "attngan-oracle", "version": 1}, "oracle"),
    ({"format": "attngan-captioner", "version": 1}, "captioner"),
    ({"format": "attngan-model", "version": 2, "kind": "damsm", "config": {}}, None),  # the current format
    ({"format": "attngan-oracle", "version": 2}, None),
    ({"format_version": 2, "config": {}}, None),
    ({"n_words": 3}, None),
])
def test_the_older_layouts_are_recognised_in_one_place(meta, kind):
    from attngan.io_migrate import old_folder_kind

    assert old_folder_kind(meta) == kind
