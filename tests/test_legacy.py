"""Original AttnGAN files <-> model folder (attngan.legacy, import-original, export-original).

State dicts are built in the original key layout from tests/data/original-checkpoints.json (vendored)
(random values, fixed seeds, no `num_batches_tracked`) and written the way PyTorch 0.3 wrote them
(legacy serialization, `torch._utils._rebuild_tensor`). The numerics are checked against a compact
reference forward written from the original AttnGAN code (github.com/taoxugit/AttnGAN: G_NET,
RNN_ENCODER and CNN_ENCODER in code/model.py, code/GlobalAttention.py), in functional form over the
original-keyed state dicts.
"""

import json
import math
import pickle
import shutil
import time
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from attngan.cli import main
from attngan.config import ConfigError, load_config
from attngan.errors import AttnGANError
from attngan.legacy import (config_from_original_yml, export_original, import_original,
                            key_table, load_original_state_dict)
from attngan.networks import (build_discriminators, build_generator, build_image_encoder,
                              build_text_encoder)
from attngan.io import load_safetensors

# Key names and shapes of every published original checkpoint, vendored with the tests.
REFERENCE = Path(__file__).parent / "data" / "original-checkpoints.json"

PRESET_OF = {"bird": "bird", "coco": "coco", "bird_attnDCGAN2": "bird-dcgan"}


@pytest.fixture(scope="module")
def layouts():
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


# --- Files as the original release has them ---------------------------------------------------

def random_state(layout: dict, seed: int) -> "OrderedDict[str, torch.Tensor]":
    """Random float32 tensors in the original key order; no num_batches_tracked (PyTorch <= 0.3).

    Scales keep activations O(1) through the deep nets, so the numeric checks mean something:
    weights ~ N(0, 2/fan_in), BN running_var in [0.5, 1.5], small means and shifts.
    """
    gen = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            continue
        bn = key.rsplit(".", 1)[0] + ".running_mean" in layout
        if key.endswith("running_var"):
            t = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("running_mean") or (bn and key.endswith(".bias")):
            t = 0.1 * torch.randn(shape, generator=gen)
        elif bn and key.endswith(".weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) >= 2:
            t = torch.randn(shape, generator=gen) * math.sqrt(2.0 / math.prod(shape[1:]))
        else:
            t = 0.1 * torch.randn(shape, generator=gen)
        out[key] = t
    return out


class _Torch03Pickler(pickle.Pickler):
    # PyTorch 0.3 pickled a tensor as _rebuild_tensor(storage, offset, size, stride).
    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor):
            storage = torch.storage.TypedStorage(wrap_storage=obj.untyped_storage(), dtype=obj.dtype,
                                                 _internal=True)
            return torch._utils._rebuild_tensor, (storage, obj.storage_offset(), tuple(obj.size()),
                                                  obj.stride())
        return NotImplemented


_PICKLE_03 = types.ModuleType("pickle_torch03")
_PICKLE_03.Pickler, _PICKLE_03.dump = _Torch03Pickler, pickle.dump


def save_like_torch03(state: dict, path: Path) -> Path:
    torch.save(state, path, pickle_module=_PICKLE_03, _use_new_zipfile_serialization=False)
    return path


def write_captions_pickle(path: Path, n_words: int) -> Path:
    ixtoword = {0: "<end>", **{i: f"w{i}" for i in range(1, n_words)}}
    wordtoix = {w: i for i, w in ixtoword.items()}
    train = [[1, 2, 3], [4, 5, 6, 7]]
    test = [[n_words - 1, 2]]
    path.write_bytes(pickle.dumps([train, test, ixtoword, wordtoix], protocol=2))
    return path


class _Payload:
    """Pickles as a call that creates a file: proof of execution if it ever runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def write_release(root: Path, layouts: dict, section: str, seed: int, with_d: bool = True) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    files, states = {}, {}
    n_words = layouts["meta"][section]["_built_with"]["n_words"]
    names = {"netG": "netG.pth", "text_encoder": "text_encoder200.pth",
             "image_encoder": "image_encoder200.pth"}
    if with_d:
        names.update({n: f"{n}.pth" for n in layouts[section] if n.startswith("netD")})
    for i, (net, fname) in enumerate(names.items()):
        states[net] = random_state(layouts[section][net], seed + i)
        files[net] = save_like_torch03(states[net], root / fname)
    files["captions"] = write_captions_pickle(root / "captions.pickle", n_words)
    return {"files": files, "states": states, "n_words": n_words}


@pytest.fixture(scope="module")
def bird(tmp_path_factory, layouts):
    root = tmp_path_factory.mktemp("bird")
    rel = write_release(root / "release", layouts, "bird", seed=1)
    f = rel["files"]
    rc = main(["import-original", "--preset", "bird", "--netG", str(f["netG"]), "--text-encoder",
               str(f["text_encoder"]), "--captions", str(f["captions"]), "--netD", str(f["netD0"]),
               str(f["netD1"]), str(f["netD2"]), "-o", str(root / "model")])
    assert rc == 0
    rel["model"] = root / "model"
    yield rel
    shutil.rmtree(root, ignore_errors=True)  # ~1 GB of weights: do not leave it in /tmp


@pytest.fixture(scope="module")
def coco(tmp_path_factory, layouts):
    root = tmp_path_factory.mktemp("coco")
    rel = write_release(root / "release", layouts, "coco", seed=11, with_d=False)
    f = rel["files"]
    rel["model"] = import_original("coco", f["netG"], f["text_encoder"], f["captions"], root / "model",
                                   image_encoder=f["image_encoder"])
    yield rel
    shutil.rmtree(root, ignore_errors=True)


# --- Layouts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("section", ["bird", "coco", "bird_attnDCGAN2"])
def test_every_original_layout_maps_one_to_one(layouts, section):
    """Each original checkpoint's keys and shapes, in order, are exactly our networks' (no missing,
    no unexpected key); built on the meta device, so even coco's 160 M-parameter D costs nothing."""
    from attngan.legacy import imported_config

    cfg = imported_config(PRESET_OF[section])
    with torch.device("meta"):
        nets = {"netG": build_generator(cfg, 256, init=False)}
        nets.update({f"netD{i}": d for i, d in enumerate(build_discriminators(cfg, init=False))})
        if "text_encoder" in layouts[section]:
            nets["text_encoder"] = build_text_encoder(cfg, layouts["meta"][section]["_built_with"]["n_words"])
            nets["image_encoder"] = build_image_encoder(cfg)
    assert set(nets) == set(layouts[section])
    for name, net in nets.items():
        pairs = key_table(net)
        sd = net.state_dict()
        assert [o for o, _ in pairs] == list(layouts[section][name]), name
        assert {o: list(sd[u].shape) for o, u in pairs} == layouts[section][name], name


# --- Import / export ---------------------------------------------------------------------------

def _model_tensors(model: Path) -> dict:
    return {"netG": load_safetensors(model / "generator.safetensors"),
            "text_encoder": load_safetensors(model / "text_encoder.safetensors"),
            "image_encoder": load_safetensors(model / "image_encoder.safetensors")}


def _nets_for(model: Path):
    from attngan.io import read_model_config

    cfg, meta = read_model_config(model)
    nets = {"netG": build_generator(cfg, 256, init=False),
            "text_encoder": build_text_encoder(cfg, meta["n_words"]),
            "image_encoder": build_image_encoder(cfg)}
    return cfg, meta, nets


def test_import_bird_puts_every_tensor_in_its_parameter(bird):
    cfg, meta, nets = _nets_for(bird["model"])
    tensors = _model_tensors(bird["model"])
    for name, net in nets.items():
        original = bird["states"][name]
        for orig_key, our_key in key_table(net):
            if orig_key.endswith("num_batches_tracked"):
                assert int(tensors[name][our_key]) == 0  # filled in: torch 0.3 files lack it
            else:
                assert torch.equal(tensors[name][our_key], original[orig_key]), (name, orig_key)
    ds = build_discriminators(cfg, init=False)
    assert "discriminators.safetensors" in meta["files"]  # an optional part, listed when present
    d_tensors = load_safetensors(bird["model"] / "discriminators.safetensors")
    assert set(d_tensors) == set(ds.state_dict())  # the training state's "Ds" layout
    for i, d in enumerate(ds):
        for orig_key, our_key in key_table(d):
            if not orig_key.endswith("num_batches_tracked"):
                assert torch.equal(d_tensors[f"{i}.{our_key}"], bird["states"][f"netD{i}"][orig_key])
    # What the numerics need is recorded.
    assert cfg.damsm.align_corners is True and cfg.damsm.backbone == "inception"
    assert cfg.data.words_num == 25 and (cfg.damsm.gamma1, cfg.damsm.gamma2, cfg.damsm.gamma3) == (4, 5, 10)
    assert meta["n_words"] == 5450 and (cfg.gan.gf_dim, cfg.gan.df_dim, cfg.gan.r_num) == (32, 64, 2)
    assert meta["imported_from"]["netG"]["file"] == "netG.pth"


def test_imported_bird_runs_in_the_pipeline(bird):
    from attngan.pipeline import AttnGANPipeline

    pipe = AttnGANPipeline.from_pretrained(bird["model"], device="cpu")
    assert pipe.image_encoder.align_corners is True
    out = pipe(["w5 w17 w300 w4000", "w9 w10"], seed=3)
    assert [tuple(x.shape) for x in out.images] == [(2, 3, 64, 64), (2, 3, 128, 128), (2, 3, 256, 256)]
    assert [tuple(a.shape[-2:]) for a in out.attention] == [(64, 64), (128, 128)]
    assert out.tokens[0] == ["w5", "w17", "w300", "w4000"]


def test_export_gives_back_the_original_files(bird, tmp_path):
    out = tmp_path / "exported"
    rc = main(["export-original", str(bird["model"]), "-o", str(out),
               "--captions", str(bird["files"]["captions"])])
    assert rc == 0
    names = {"netG": "netG.pth", "text_encoder": "text_encoder.pth",
             "image_encoder": "image_encoder.pth", "netD0": "netD0.pth", "netD1": "netD1.pth",
             "netD2": "netD2.pth"}
    for net, fname in names.items():
        raw = (out / fname).read_bytes()
        # Legacy (pre-zip) serialization with PyTorch 0.3's tensor encoding: old tooling reads it.
        assert not raw.startswith(b"PK") and b"_rebuild_tensor_v2" not in raw
        assert b"_rebuild_tensor" in raw and b"FloatStorage" in raw
        got = torch.load(out / fname, weights_only=True)
        want = bird["states"][net]
        assert list(got) == list(want), net  # original keys and order, no num_batches_tracked
        for k in want:
            assert got[k].dtype == torch.float32
            assert got[k].numpy().tobytes() == want[k].numpy().tobytes(), (net, k)
    raw = (out / "captions.pickle").read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2
    train, test, ixtoword, wordtoix = pickle.loads(raw)
    assert len(ixtoword) == 5450 and ixtoword[0] == "<end>" and wordtoix["w17"] == 17
    assert train == [[1, 2, 3], [4, 5, 6, 7]] and test == [[5449, 2]]
    # The eval yml written beside them reads back (through our loader) as the same model.
    cfg = load_config(str(out / "eval_attngan.yml"))
    assert (cfg.gan.gf_dim, cfg.gan.r_num, cfg.data.words_num, cfg.gan.dcgan) == (32, 2, 25, False)
    # ... and the exported files import again to the same model folder tensors.
    again = import_original("bird", out / "netG.pth", out / "text_encoder.pth", out / "captions.pickle",
                            tmp_path / "again")
    a, b = _model_tensors(bird["model"]), _model_tensors(again)
    assert all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_import_coco(coco):
    cfg, meta, nets = _nets_for(coco["model"])
    tensors = _model_tensors(coco["model"])
    for name, net in nets.items():
        for orig_key, our_key in key_table(net):
            if not orig_key.endswith("num_batches_tracked"):
                assert torch.equal(tensors[name][our_key], coco["states"][name][orig_key])
    assert meta["n_words"] == 27297 and cfg.data.words_num == 20 and cfg.damsm.align_corners
    assert (cfg.gan.gf_dim, cfg.gan.df_dim, cfg.gan.r_num, cfg.data.dataset) == (48, 96, 3, "coco")


def test_import_dcgan_generator(bird, layouts, tmp_path):
    state = random_state(layouts["bird_attnDCGAN2"]["netG"], seed=21)
    # A copy re-saved by a newer torch carries the counters: they are kept, not overwritten.
    state["h_net1.fc.1.num_batches_tracked"] = torch.tensor(7)
    net_g = save_like_torch03(state, tmp_path / "bird_AttnDCGAN2.pth")
    f = bird["files"]
    model = import_original("bird-dcgan", net_g, f["text_encoder"], f["captions"], tmp_path / "m")
    cfg, _, nets = _nets_for(model)
    assert cfg.gan.dcgan and cfg.gan.r_num == 0
    g = load_safetensors(model / "generator.safetensors")
    for orig_key, our_key in key_table(nets["netG"]):
        if orig_key in state:
            assert torch.equal(g[our_key], state[orig_key])
    assert int(g["stage0.bn.num_batches_tracked"]) == 7


def test_export_refuses_a_model_the_original_cannot_run(tmp_path):
    from attngan.config import preset
    from attngan.text import Vocabulary
    from attngan.io import save_model_folder

    cfg = preset("tiny")  # small image encoder, 128-d words, mean sentence, 32 px first stage
    vocab = Vocabulary(["<end>", "a", "bird"])
    save_model_folder(tmp_path / "tiny", cfg, vocab, build_generator(cfg, cfg.text.embedding_dim),
                      build_text_encoder(cfg, len(vocab)), build_image_encoder(cfg))
    with pytest.raises(AttnGANError, match="'small' backbone.*word_dim is 128.*sentence is 'mean'.*32 px"):
        export_original(tmp_path / "tiny", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- Bad input ---------------------------------------------------------------------------------

def test_wrong_preset_names_the_first_mismatching_key(bird, tmp_path, capsys):
    f = bird["files"]
    rc = main(["import-original", "--preset", "coco", "--netG", str(f["netG"]), "--text-encoder",
               str(f["text_encoder"]), "--captions", str(f["captions"]), "-o", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "'h_net1.fc.0.weight' has shape (16384, 200), expected (24576, 200)" in err
    assert "--preset coco" in err and not (tmp_path / "m").exists()
    # A file of the wrong kind: missing/unexpected keys, named.
    with pytest.raises(AttnGANError, match="missing keys .*unexpected keys"):
        import_original("bird", f["text_encoder"], f["text_encoder"], f["captions"], tmp_path / "m")


def test_code_payloads_are_refused_and_never_run(bird, tmp_path):
    f = bird["files"]
    marker = tmp_path / "executed"
    evil_pth = tmp_path / "evil.pth"
    torch.save({"h_net1.fc.0.weight": _Payload(marker)}, evil_pth)
    with pytest.raises(AttnGANError, match="refusing to load generator .*nothing was executed"):
        import_original("bird", evil_pth, f["text_encoder"], f["captions"], tmp_path / "m1")
    evil_pkl = tmp_path / "captions.pickle"
    evil_pkl.write_bytes(pickle.dumps([[], [], {0: "<end>"}, _Payload(marker)], protocol=2))
    with pytest.raises(AttnGANError, match="refusing"):
        import_original("bird", f["netG"], f["text_encoder"], evil_pkl, tmp_path / "m2")
    plain_pickle_pth = tmp_path / "plain.pth"  # not even a torch file: a bare pickle
    plain_pickle_pth.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(AttnGANError, match="refusing"):
        load_original_state_dict(plain_pickle_pth, "generator")
    assert not marker.exists()
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_captions_pickle_that_expands_without_bound_is_refused(bird, tmp_path, capsys):
    # Each level holds the previous list twice: a few hundred bytes, 2**45 ids once expanded.
    x = [1]
    for _ in range(45):
        x = [x, x]
    bomb = tmp_path / "captions.pickle"
    bomb.write_bytes(pickle.dumps([x, [], {0: "<end>"}, {"<end>": 0}], protocol=2))
    f = bird["files"]
    for argv in (["import-original", "--preset", "bird", "--netG", str(f["netG"]), "--text-encoder",
                  str(f["text_encoder"]), "--captions", str(bomb), "-o", str(tmp_path / "m")],
                 ["export-original", str(bird["model"]), "-o", str(tmp_path / "exported"),
                  "--captions", str(bomb)]):
        t0 = time.perf_counter()
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert time.perf_counter() - t0 < 5
        assert rc == 2 and len(err) == 1 and "expands to more than" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.pickle"]


def test_truncated_and_missing_files(bird, tmp_path):
    f = bird["files"]
    cut = tmp_path / "netG_cut.pth"
    data = f["netG"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AttnGANError, match="truncated"):
        import_original("bird", cut, f["text_encoder"], f["captions"], tmp_path / "m")
    with pytest.raises(AttnGANError, match="generator file not found"):
        import_original("bird", tmp_path / "nope.pth", f["text_encoder"], f["captions"], tmp_path / "m")
    with pytest.raises(AttnGANError, match="captions.pickle not found"):
        import_original("bird", f["netG"], f["text_encoder"], tmp_path / "no.pickle", tmp_path / "m")
    # No --image-encoder and no image_encoder*.pth beside the text encoder.
    lone = tmp_path / "lone" / "text_encoder200.pth"
    lone.parent.mkdir()
    lone.write_bytes(f["text_encoder"].read_bytes())
    with pytest.raises(AttnGANError, match="image_encoder200.pth"):
        import_original("bird", f["netG"], lone, f["captions"], tmp_path / "m")
    with pytest.raises(AttnGANError, match="3 discriminator"):
        import_original("bird", f["netG"], f["text_encoder"], f["captions"], tmp_path / "m",
                        net_d=[f["netD0"]])
    # A captions.pickle from another dataset.
    small = write_captions_pickle(tmp_path / "small.pickle", 100)
    with pytest.raises(AttnGANError, match="5450 words but small.pickle has 100"):
        import_original("bird", f["netG"], f["text_encoder"], small, tmp_path / "m")
    assert not (tmp_path / "m").exists()


# --- Original .yml configs (code/cfg/*.yml, read by code/miscc/config.py) ----------------------

def _yml(dataset, config_name, workers, tree, train, smooth, gan, text, gpu=0):
    raw = {"CONFIG_NAME": config_name, "DATASET_NAME": dataset, "DATA_DIR": f"../data/{dataset}",
           "GPU_ID": gpu, "WORKERS": workers, "TREE": tree, "TRAIN": {**train, "SMOOTH": smooth},
           "TEXT": text}
    if gan:
        raw["GAN"] = gan
    return raw


ORIGINAL_YMLS = {
    "bird_attn2.yml": _yml(
        "birds", "attn2", 4, {"BRANCH_NUM": 3},
        {"FLAG": True, "NET_G": "", "B_NET_D": True, "BATCH_SIZE": 20, "MAX_EPOCH": 600,
         "SNAPSHOT_INTERVAL": 50, "DISCRIMINATOR_LR": 0.0002, "GENERATOR_LR": 0.0002,
         "NET_E": "../DAMSMencoders/bird/text_encoder200.pth"},
        {"GAMMA1": 4.0, "GAMMA2": 5.0, "GAMMA3": 10.0, "LAMBDA": 5.0},
        {"DF_DIM": 64, "GF_DIM": 32, "Z_DIM": 100, "R_NUM": 2},
        {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 10}),
    "coco_attn2.yml": _yml(
        "coco", "glu-gan2", 4, {"BRANCH_NUM": 3},
        {"FLAG": True, "NET_G": "", "B_NET_D": True, "BATCH_SIZE": 14, "MAX_EPOCH": 120,
         "SNAPSHOT_INTERVAL": 5, "DISCRIMINATOR_LR": 0.0002, "GENERATOR_LR": 0.0002,
         "NET_E": "../DAMSMencoders/coco/text_encoder100.pth"},
        {"GAMMA1": 4.0, "GAMMA2": 5.0, "GAMMA3": 10.0, "LAMBDA": 50.0},
        {"DF_DIM": 96, "GF_DIM": 48, "Z_DIM": 100, "R_NUM": 3},
        {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 5, "WORDS_NUM": 12}),
    "bird_attnDCGAN2.yml": _yml(
        "birds", "attn2-dcgan", 4, {"BRANCH_NUM": 3},
        {"FLAG": True, "NET_G": "", "B_NET_D": True, "BATCH_SIZE": 30, "MAX_EPOCH": 400,
         "SNAPSHOT_INTERVAL": 50, "NET_E": "../DAMSMencoders/bird/text_encoder200.pth"},
        {"GAMMA1": 4.0, "GAMMA2": 5.0, "GAMMA3": 10.0, "LAMBDA": 1.0},
        {"DF_DIM": 64, "GF_DIM": 32, "Z_DIM": 100, "R_NUM": 0, "B_DCGAN": True},
        {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 10}),
    "DAMSM/bird.yml": _yml(
        "birds", "DAMSM", 1, {"BRANCH_NUM": 1, "BASE_SIZE": 299},
        {"FLAG": True, "NET_E": "", "BATCH_SIZE": 48, "MAX_EPOCH": 600, "SNAPSHOT_INTERVAL": 50,
         "ENCODER_LR": 0.002, "RNN_GRAD_CLIP": 0.25},
        {"GAMMA1": 4.0, "GAMMA2": 5.0, "GAMMA3": 10.0}, None,
        {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 10}),
    "DAMSM/coco.yml": _yml(
        "coco", "DAMSM", 1, {"BRANCH_NUM": 1, "BASE_SIZE": 299},
        {"FLAG": True, "NET_E": "", "BATCH_SIZE": 48, "MAX_EPOCH": 600, "SNAPSHOT_INTERVAL": 5,
         "ENCODER_LR": 0.002, "RNN_GRAD_CLIP": 0.25},
        {"GAMMA1": 4.0, "GAMMA2": 5.0, "GAMMA3": 10.0}, None,
        {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 5, "WORDS_NUM": 15}),
    "eval_bird.yml": _yml(
        "birds", "attn2", 1, {"BRANCH_NUM": 3},
        {"FLAG": False, "NET_G": "../models/bird_AttnGAN2.pth", "B_NET_D": False, "BATCH_SIZE": 100,
         "NET_E": "../DAMSMencoders/bird/text_encoder200.pth"},
        {}, {"DF_DIM": 64, "GF_DIM": 32, "Z_DIM": 100, "R_NUM": 2},
        {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 10, "WORDS_NUM": 25}, gpu=3),
    "eval_coco.yml": _yml(
        "coco", "attn2", 1, {"BRANCH_NUM": 3},
        {"FLAG": False, "NET_G": "../models/coco_AttnGAN2.pth", "B_NET_D": False, "BATCH_SIZE": 100,
         "NET_E": "../DAMSMencoders/coco/text_encoder100.pth"},
        {}, {"DF_DIM": 96, "GF_DIM": 48, "Z_DIM": 100, "R_NUM": 3},
        {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 5, "WORDS_NUM": 20}, gpu=3),
    "eval_bird_attnDCGAN2.yml": _yml(
        "birds", "attn2-dcgan", 1, {"BRANCH_NUM": 3},
        {"FLAG": False, "NET_G": "../models/bird_AttnDCGAN2.pth", "B_NET_D": False,
         "BATCH_SIZE": 100, "NET_E": "../DAMSMencoders/bird/text_encoder200.pth"},
        {}, {"DF_DIM": 64, "GF_DIM": 32, "Z_DIM": 100, "R_NUM": 0, "B_DCGAN": True},
        {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 10, "WORDS_NUM": 25}, gpu=3),
}

# (dataset, gf, df, r_num, dcgan, batch, lambda, gamma1, words_num, captions/image, epochs)
EXPECTED_GAN = {
    "bird_attn2.yml": ("birds", 32, 64, 2, False, 20, 5.0, 4.0, 18, 10, 600),
    "coco_attn2.yml": ("coco", 48, 96, 3, False, 14, 50.0, 4.0, 12, 5, 120),
    "bird_attnDCGAN2.yml": ("birds", 32, 64, 0, True, 30, 1.0, 4.0, 18, 10, 400),
    "eval_bird.yml": ("birds", 32, 64, 2, False, 100, 1.0, 5.0, 25, 10, 600),
    "eval_coco.yml": ("coco", 48, 96, 3, False, 100, 1.0, 5.0, 20, 5, 600),
    "eval_bird_attnDCGAN2.yml": ("birds", 32, 64, 0, True, 100, 1.0, 5.0, 25, 10, 600),
}


@pytest.mark.parametrize("name", list(ORIGINAL_YMLS))
def test_original_yml_loads_through_load_config(tmp_path, name):
    path = tmp_path / name.replace("/", "_")
    path.write_text(yaml.safe_dump(ORIGINAL_YMLS[name]))
    cfg = load_config(str(path))
    assert cfg.damsm.align_corners is True and cfg.damsm.backbone == "inception"
    if name.startswith("DAMSM/"):
        coco = "coco" in name
        assert cfg.data.dataset == ("coco" if coco else "birds")
        assert (cfg.damsm.image_size, cfg.damsm.batch_size, cfg.damsm.epochs) == (299, 48, 600)
        assert cfg.damsm.snapshot_epochs == (5 if coco else 50) and cfg.damsm.lr == 0.002
        assert cfg.damsm.words_num == (15 if coco else 18) and cfg.damsm.gamma1 == 4.0
        assert cfg.data.captions_per_image == (5 if coco else 10) and cfg.data.workers == 1
        assert cfg.data.branch_num == 3  # the GAN's stages are not the DAMSM's image size
        return
    dataset, gf, df, r_num, dcgan, batch, lam, gamma1, words, cpi, epochs = EXPECTED_GAN[name]
    assert cfg.data.dataset == dataset and cfg.data.branch_num == 3 and cfg.data.base_size == 64
    assert (cfg.gan.gf_dim, cfg.gan.df_dim, cfg.gan.r_num, cfg.gan.dcgan) == (gf, df, r_num, dcgan)
    assert (cfg.gan.z_dim, cfg.gan.condition_dim) == (100, 100)
    assert cfg.train.batch_size == batch and cfg.train.damsm_lambda == lam
    assert (cfg.damsm.gamma1, cfg.damsm.gamma2, cfg.damsm.gamma3) == (gamma1, 5.0, 10.0)
    assert cfg.data.words_num == words and cfg.data.captions_per_image == cpi
    n_train = 82783 if dataset == "coco" else 8855
    assert cfg.train.total_kimg == pytest.approx(epochs * n_train / 1000)
    assert cfg.train.lr_g == cfg.train.lr_d == 2e-4


def test_original_yml_errors_and_defaults():
    with pytest.raises(ConfigError, match="GAN.GF_DIMM"):
        config_from_original_yml({"GAN": {"GF_DIMM": 32}})
    with pytest.raises(ConfigError, match="'TRAIN.FLAG' must be bool"):
        config_from_original_yml({"TRAIN": {"FLAG": "yes"}})
    with pytest.raises(ConfigError, match="'TREE' must be a section"):
        config_from_original_yml({"TREE": 3})
    with pytest.raises(ConfigError, match="flowers"):
        config_from_original_yml({"DATASET_NAME": "flowers"})
    # Unlisted keys take the original's defaults, as its merge does: GF_DIM 128, GAMMA1 5.
    cfg = config_from_original_yml({"DATASET_NAME": "birds", "GPU_ID": 2, "CUDA": False})
    assert cfg.gan.gf_dim == 128 and cfg.damsm.gamma1 == 5.0 and cfg.train.batch_size == 64


# --- Numerics: imported model vs a reference forward over the original keys -------------------
# Written from the original code/model.py and code/GlobalAttention.py, in functional form. Eval mode
# throughout.

def ref_glu(x):
    n = x.size(1) // 2
    return x[:, :n] * torch.sigmoid(x[:, n:])


def ref_bn(x, sd, p, eps=1e-5):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                        sd[f"{p}.bias"], training=False, eps=eps)


def ref_up_block(x, sd, p):  # nearest x2 -> conv3x3 -> BN -> GLU
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    return ref_glu(ref_bn(F.conv2d(x, sd[f"{p}.1.weight"], padding=1), sd, f"{p}.2"))


def ref_res_block(x, sd, p):  # conv-BN-GLU-conv-BN + identity, no activation after the add
    y = ref_glu(ref_bn(F.conv2d(x, sd[f"{p}.block.0.weight"], padding=1), sd, f"{p}.block.1"))
    return ref_bn(F.conv2d(y, sd[f"{p}.block.3.weight"], padding=1), sd, f"{p}.block.4") + x


def ref_attention(h, words, mask, sd, p):
    """GlobalAttentionGeneral, with the original's mask tiling (repeat(HW, 1))."""
    b, idf, ih, iw = h.shape
    hw, t = ih * iw, words.size(2)
    target = h.view(b, idf, hw).transpose(1, 2)                                  # B x HW x idf
    source = F.conv2d(words.unsqueeze(3), sd[f"{p}.conv_context.weight"]).squeeze(3)  # B x idf x T
    attn = torch.bmm(target, source).view(b * hw, t)
    if mask is not None:
        attn = attn.masked_fill(mask.repeat(hw, 1), float("-inf"))
    attn = torch.softmax(attn, dim=1).view(b, hw, t).transpose(1, 2)           # B x T x HW
    context = torch.bmm(source, attn).view(b, idf, ih, iw)
    return context, attn.reshape(b, t, ih, iw)


def ref_generator(sd, z, sent, words, mask, eps):
    """G_NET / G_DCGAN forward; structure read off the state dict's keys."""
    dcgan = "img_net.img.0.weight" in sd
    n_stages = 1 + sum(f"h_net{i}.upsample.1.weight" in sd for i in (2, 3))
    r_num = sum(k.startswith("h_net2.residual.") and k.endswith(".block.0.weight") for k in sd)
    x = ref_glu(F.linear(sent, sd["ca_net.fc.weight"], sd["ca_net.fc.bias"]))  # CA_NET
    ncf = x.size(1) // 2
    mu, logvar = x[:, :ncf], x[:, ncf:]
    c = eps * torch.exp(0.5 * logvar) + mu
    h = F.linear(torch.cat([c, z], 1), sd["h_net1.fc.0.weight"])               # [c_code, z]
    h = ref_glu(ref_bn(h, sd, "h_net1.fc.1"))
    h = h.view(z.size(0), -1, 4, 4)
    for k in range(1, 5):
        h = ref_up_block(h, sd, f"h_net1.upsample{k}")
    images, maps = [], []
    if not dcgan:
        images.append(torch.tanh(F.conv2d(h, sd["img_net1.img.0.weight"], padding=1)))
    for i in range(2, n_stages + 1):
        context, att = ref_attention(h, words, mask, sd, f"h_net{i}.att")
        x = torch.cat([h, context], 1)
        for r in range(r_num):
            x = ref_res_block(x, sd, f"h_net{i}.residual.{r}")
        h = ref_up_block(x, sd, f"h_net{i}.upsample")
        maps.append(att)
        if not dcgan:
            images.append(torch.tanh(F.conv2d(h, sd[f"img_net{i}.img.0.weight"], padding=1)))
    if dcgan:
        images.append(torch.tanh(F.conv2d(h, sd["img_net.img.0.weight"], padding=1)))
    return images, maps, mu, logvar


def ref_lstm_direction(x, w_ih, w_hh, b_ih, b_hh, reverse):
    """One LSTM direction over x (L x in), zero initial state; gates in PyTorch order i, f, g, o."""
    n = w_hh.size(1)
    h, c = torch.zeros(n), torch.zeros(n)
    out = torch.zeros(x.size(0), n)
    steps = range(x.size(0) - 1, -1, -1) if reverse else range(x.size(0))
    for t in steps:
        i, f, g, o = (w_ih @ x[t] + b_ih + w_hh @ h + b_hh).chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out[t] = h
    return out, h


def ref_text_encoder(sd, ids, length, t_max):
    """RNN_ENCODER on one caption: words nef x T_max ([forward | backward], zero padding),
    sentence = [forward h at the last word, backward h at the first]."""
    x = sd["encoder.weight"][ids[:length]]                                      # no dropout in eval
    fw, h_fw = ref_lstm_direction(x, sd["rnn.weight_ih_l0"], sd["rnn.weight_hh_l0"],
                                  sd["rnn.bias_ih_l0"], sd["rnn.bias_hh_l0"], reverse=False)
    bw, h_bw = ref_lstm_direction(x, sd["rnn.weight_ih_l0_reverse"], sd["rnn.weight_hh_l0_reverse"],
                                  sd["rnn.bias_ih_l0_reverse"], sd["rnn.bias_hh_l0_reverse"], reverse=True)
    words = torch.zeros(2 * fw.size(1), t_max)
    words[:, :length] = torch.cat([fw, bw], 1).t()
    return words, torch.cat([h_fw, h_bw])


def ref_image_encoder(sd, images):
    """CNN_ENCODER: resize to 299 (align_corners=True), torchvision Inception modules loaded from
    the file, regions = Mixed_6e -> 1x1 conv, code = Mixed_7c -> avg_pool(8) -> Linear."""
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    result = net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("emb_")}, strict=False)
    assert all(k.startswith("fc.") or k.endswith("num_batches_tracked") for k in result.missing_keys)
    assert not result.unexpected_keys
    net.eval()
    x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=True)
    x = net.Conv2d_2b_3x3(net.Conv2d_2a_3x3(net.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    x = net.Conv2d_4a_3x3(net.Conv2d_3b_1x1(x))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e"):
        x = getattr(net, name)(x)
    features = x
    x = net.Mixed_7c(net.Mixed_7b(net.Mixed_7a(x)))
    x = F.avg_pool2d(x, kernel_size=8).view(x.size(0), -1)
    code = F.linear(x, sd["emb_cnn_code.weight"], sd["emb_cnn_code.bias"])
    return F.conv2d(features, sd["emb_features.weight"]), code


def _assert_close(ours, ref, what, atol=1e-4):
    assert ours.shape == ref.shape, what
    err = (ours - ref).abs().max().item()
    assert err <= atol, f"{what}: max abs difference {err:.2e}"
    assert ref.abs().max().item() > 1e-2, f"{what}: the reference is ~0; the check would be empty"


@pytest.mark.parametrize("release", ["bird", "coco"])
def test_generator_and_text_encoder_match_the_original(release, request):
    from attngan.pipeline import AttnGANPipeline

    rel = request.getfixturevalue(release)
    pipe = AttnGANPipeline.from_pretrained(rel["model"], device="cpu")
    gen = torch.Generator().manual_seed(5)
    length, t_max = 9, 9
    ids = torch.randint(1, rel["n_words"], (1, t_max), generator=gen)
    cap_lens = torch.tensor([length])
    z = torch.randn(1, 100, generator=gen)
    eps = torch.randn(1, 100, generator=gen)
    with torch.no_grad():
        # Text encoder.
        ref_words, ref_sent = ref_text_encoder(rel["states"]["text_encoder"], ids[0], length, t_max)
        words, sent = pipe.encode_text(ids, cap_lens)
        _assert_close(words[0], ref_words, "word features")
        _assert_close(sent[0], ref_sent, "sentence feature")
        # Generator on the same inputs, then the whole pipeline path (text -> G).
        mask = ids == 0
        ref_images, ref_maps, ref_mu, ref_logvar = ref_generator(
            rel["states"]["netG"], z, ref_sent[None], ref_words[None], mask, eps)
        images, maps, mu, logvar = pipe.generator(z, sent, words, mask, ca_noise=eps)
        _assert_close(mu, ref_mu, "mu")
        _assert_close(logvar, ref_logvar, "logvar")
        for s, (a, b) in enumerate(zip(images, ref_images)):
            _assert_close(a, b, f"stage {s} image")
        for s, (a, b) in enumerate(zip(maps, ref_maps)):
            _assert_close(a, b, f"attention map {s}")
        out = pipe.generate_from_ids(ids, cap_lens, noise=z, ca_noise=eps)
    assert len(out.images) == 3 and len(out.attention) == 2
    for s, (a, b) in enumerate(zip(out.images, ref_images)):
        _assert_close(a, b, f"pipeline stage {s} image")
    assert ref_images[-1].std() > 0.05  # a real image, not a saturated or flat one


def test_text_encoder_padding_in_a_batch_matches_the_original(bird):
    """Two captions of different lengths in one batch: each equals its single-caption reference."""
    from attngan.pipeline import AttnGANPipeline

    pipe = AttnGANPipeline.from_pretrained(bird["model"], device="cpu")
    ids = torch.tensor([[7, 8, 9, 10, 11, 12], [13, 14, 15, 0, 0, 0]])
    with torch.no_grad():
        words, sent = pipe.encode_text(ids, torch.tensor([6, 3]))
    for b, n in enumerate([6, 3]):
        ref_words, ref_sent = ref_text_encoder(bird["states"]["text_encoder"], ids[b], n, 6)
        _assert_close(words[b], ref_words, f"words {b}")
        _assert_close(sent[b], ref_sent, f"sentence {b}")
    assert torch.all(words[1, :, 3:] == 0)  # padding positions are exact zeros


def test_image_encoder_matches_the_original(bird):
    from attngan.pipeline import AttnGANPipeline

    pipe = AttnGANPipeline.from_pretrained(bird["model"], device="cpu")
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(9)) * 2 - 1
    with torch.no_grad():
        ref_regions, ref_code = ref_image_encoder(bird["states"]["image_encoder"], images)
        regions, code = pipe.image_encoder(images)
        _assert_close(regions, ref_regions, "region features")
        _assert_close(code, ref_code, "global code")
        # The recorded align_corners matters: modern torch's default resize gives other features.
        pipe.image_encoder.align_corners = False
        regions_false, _ = pipe.image_encoder(images)
    assert (regions_false - ref_regions).abs().max().item() > 1e-3
