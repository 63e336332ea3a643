"""The original AttnGAN release (taoxugit/AttnGAN) <-> our model folder.

Three kinds of original file cross this boundary:
* checkpoints (`bird_AttnGAN2.pth`, `text_encoder200.pth`, `image_encoder200.pth`, `netD0.pth`,
  ...): plain state dicts, many written by PyTorch <= 0.3 (legacy serialization, no BatchNorm
  `num_batches_tracked`). Read with `torch.load(weights_only=True)`, so a file with code in it is
  refused before anything runs.
* `captions.pickle` (Python 2, protocol 2): the vocabulary in Python-2 hash order, read with the
  restricted unpickler of attngan.text.
* `.yml` configs (`code/cfg/*.yml`): legacy_yml maps each key to our Config
  (config_from_original_yml here); original_yml_from_config writes one back.

The original key names live here only; the networks keep their own names. `key_table(module)`
lists (original key, our key) pairs per network, in the original's state-dict order, built from
the explicit per-block tables below (see tests/data/original-checkpoints.json).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml

from attngan.config import Config, apply_overrides, preset
from attngan.errors import AttnGANError
from attngan.fileio import atomic_write, atomic_write_bytes, tmp_dir_beside
from attngan.io import check_tensor, load, read, replace_dir, save_model_folder
# The original's yml keys live in legacy_yml (load_config reads original ymls, and must not reach
# the checkpoint code here); listed in __all__.
from attngan.legacy_yml import (DAMSM_YML_MAP, GAN_YML_MAP, IGNORED_KEYS, ORIGINAL_DEFAULTS,
                                merge_original_yml, original_yml_overrides)
from attngan.networks import (Discriminator, Generator, ImageEncoder, TextEncoder, build_discriminators,
                              build_generator, build_image_encoder, build_text_encoder)
from attngan.networks.damsm import _INCEPTION_TRUNK
from attngan.text import Vocabulary, load_captions_pickle


def config_from_original_yml(raw: dict[str, Any]) -> Config:
    """Our Config for an original AttnGAN .yml (GAN, eval or DAMSM), as the original would run it
    (legacy_yml.original_yml_overrides over the preset it names)."""
    base, overrides = original_yml_overrides(raw)
    return apply_overrides(preset(base), overrides)


def original_yml_from_config(cfg: Config, net_g: str, net_e: str) -> dict[str, Any]:
    """An original eval yml (nested, upper-case keys) that runs our exported files there."""
    d = cfg.data
    return {
        "CONFIG_NAME": "attn2-dcgan" if cfg.gan.dcgan else "attn2",
        "DATASET_NAME": d.dataset, "DATA_DIR": f"../data/{d.dataset}", "GPU_ID": 0, "WORKERS": 1,
        "B_VALIDATION": False,
        "TREE": {"BRANCH_NUM": d.branch_num, "BASE_SIZE": d.base_size},
        "TRAIN": {"FLAG": False, "NET_G": net_g, "NET_E": net_e, "B_NET_D": False,
                  "BATCH_SIZE": 100,
                  "SMOOTH": {"GAMMA1": float(cfg.damsm.gamma1), "GAMMA2": float(cfg.damsm.gamma2),
                             "GAMMA3": float(cfg.damsm.gamma3),
                             "LAMBDA": float(cfg.train.damsm_lambda)}},
        "GAN": {"DF_DIM": cfg.gan.df_dim, "GF_DIM": cfg.gan.gf_dim, "Z_DIM": cfg.gan.z_dim,
                "CONDITION_DIM": cfg.gan.condition_dim, "R_NUM": cfg.gan.r_num,
                "B_DCGAN": cfg.gan.dcgan},
        "TEXT": {"CAPTIONS_PER_IMAGE": d.captions_per_image,
                 "EMBEDDING_DIM": cfg.text.embedding_dim, "WORDS_NUM": d.words_num},
        "RNN_TYPE": cfg.text.rnn_type,
    }


# --- Key tables --------------------------------------------------------------------------------

# Parameter/buffer names per layer kind, in torch's state-dict order.
WEIGHT = ("weight",)
WEIGHT_BIAS = ("weight", "bias")
BATCHNORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
RNN = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
       "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse")
ALL = None  # every key under the prefix (the Inception trunk: torchvision names on both sides)

Layer = tuple[str, str, "tuple[str, ...] | None"]  # (original prefix, our prefix, suffixes)


def _generator_layers(g) -> list[Layer]:
    """G_NET / G_DCGAN (code/model.py) -> attngan.networks.Generator."""
    layers: list[Layer] = [("ca_net.fc", "ca.fc", WEIGHT_BIAS)]
    # INIT_STAGE_G: fc = Sequential(Linear, BatchNorm1d, GLU); upsampleK = Sequential(Upsample,
    # conv3x3, BN, GLU), so the conv is .1 and the BN .2.
    layers += [("h_net1.fc.0", "stage0.fc", WEIGHT), ("h_net1.fc.1", "stage0.bn", BATCHNORM)]
    for k in range(len(g.stage0.up)):
        layers += [(f"h_net1.upsample{k + 1}.1", f"stage0.up.{k}.conv", WEIGHT),
                   (f"h_net1.upsample{k + 1}.2", f"stage0.up.{k}.bn", BATCHNORM)]
    if not g.dcgan:
        layers.append(("img_net1.img.0", "head0.conv", WEIGHT))
    for i in range(1, g.branch_num):
        o, s = f"h_net{i + 1}", f"stage{i}"
        stage = getattr(g, s)
        layers.append((f"{o}.att.conv_context", f"{s}.attn.proj", WEIGHT))
        # ResBlock.block = Sequential(conv3x3, BN, GLU, conv3x3, BN): indices 0, 1, 3, 4.
        for r in range(len(stage.res)):
            layers += [(f"{o}.residual.{r}.block.0", f"{s}.res.{r}.conv1", WEIGHT),
                       (f"{o}.residual.{r}.block.1", f"{s}.res.{r}.bn1", BATCHNORM),
                       (f"{o}.residual.{r}.block.3", f"{s}.res.{r}.conv2", WEIGHT),
                       (f"{o}.residual.{r}.block.4", f"{s}.res.{r}.bn2", BATCHNORM)]
        layers += [(f"{o}.upsample.1", f"{s}.up.conv", WEIGHT),
                   (f"{o}.upsample.2", f"{s}.up.bn", BATCHNORM)]
        if not g.dcgan:
            layers.append((f"img_net{i + 1}.img.0", f"head{i}.conv", WEIGHT))
    if g.dcgan:
        layers.append(("img_net.img.0", "head.conv", WEIGHT))  # G_DCGAN's single image head
    return layers


# D_NET256's extra blocks in order (D_NET128 uses the first downBlock and img_code_s32_1).
_D_DOWN = ("img_code_s32", "img_code_s64")
_D_BLOCKS = {1: ("img_code_s32_1",), 2: ("img_code_s64_1", "img_code_s64_2")}


def _discriminator_layers(d) -> list[Layer]:
    """D_NET64 / D_NET128 / D_NET256 (code/model.py) -> attngan.networks.Discriminator."""
    if len(d.encoder) != 4 or len(d.down) > 2:
        raise AttnGANError(f"a {d.image_size} px discriminator has no original counterpart "
                           "(the original has 64, 128 and 256 px)")
    # encode_image_by_16times = Sequential(conv, LReLU, conv, BN, LReLU, conv, BN, LReLU, conv, BN,
    # LReLU): convs at 0, 2, 5, 8 and BNs at 3, 6, 9.
    layers: list[Layer] = [("img_code_s16.0", "encoder.0.conv", WEIGHT)]
    for i, (conv, bn) in enumerate(((2, 3), (5, 6), (8, 9)), start=1):
        layers += [(f"img_code_s16.{conv}", f"encoder.{i}.conv", WEIGHT),
                   (f"img_code_s16.{bn}", f"encoder.{i}.bn", BATCHNORM)]
    # downBlock / Block3x3_leakRelu = Sequential(conv, BN, LReLU).
    for i in range(len(d.down)):
        layers += [(f"{_D_DOWN[i]}.0", f"down.{i}.conv", WEIGHT),
                   (f"{_D_DOWN[i]}.1", f"down.{i}.bn", BATCHNORM)]
    for i, name in enumerate(_D_BLOCKS.get(len(d.down), ())):
        layers += [(f"{name}.0", f"blocks.{i}.conv", WEIGHT), (f"{name}.1", f"blocks.{i}.bn", BATCHNORM)]
    if d.uncond_head is not None:
        layers.append(("UNCOND_DNET.outlogits.0", "uncond_head.out", WEIGHT_BIAS))
    layers += [("COND_DNET.jointConv.0", "cond_head.joint.conv", WEIGHT),
               ("COND_DNET.jointConv.1", "cond_head.joint.bn", BATCHNORM),
               ("COND_DNET.outlogits.0", "cond_head.out", WEIGHT_BIAS)]
    return layers


def _text_encoder_layers(_t) -> list[Layer]:
    """RNN_ENCODER -> attngan.networks.TextEncoder."""
    return [("encoder", "embedding", WEIGHT), ("rnn", "rnn", RNN)]


def _image_encoder_layers(e) -> list[Layer]:
    """CNN_ENCODER -> attngan.networks.ImageEncoder (inception backbone)."""
    if e.backbone != "inception":
        raise AttnGANError(f"the original image encoder is Inception-v3; this model uses the "
                           f"'{e.backbone}' backbone, which the original cannot load")

    layers: list[Layer] = [(name, f"trunk.{name}", ALL) for name in _INCEPTION_TRUNK]
    return layers + [("emb_features", "region_proj", WEIGHT), ("emb_cnn_code", "global_proj", WEIGHT_BIAS)]


def key_table(module) -> list[tuple[str, str]]:
    """(original key, our key) for every state-dict entry of `module`, in the original's order."""
    if isinstance(module, Generator):
        layers = _generator_layers(module)
    elif isinstance(module, Discriminator):
        layers = _discriminator_layers(module)
    elif isinstance(module, TextEncoder):
        layers = _text_encoder_layers(module)
    elif isinstance(module, ImageEncoder):
        layers = _image_encoder_layers(module)
    else:
        raise TypeError(f"no original layout for {type(module).__name__}")
    ours = list(module.state_dict().keys())
    pairs: list[tuple[str, str]] = []
    for orig, our, suffixes in layers:
        if suffixes is ALL:
            pairs += [(orig + k[len(our):], k) for k in ours if k.startswith(our + ".")]
        else:
            pairs += [(f"{orig}.{s}", f"{our}.{s}") for s in suffixes]
    # The tables must cover the network exactly: a network change that they miss fails here.
    covered = [p[1] for p in pairs]
    if sorted(covered) != sorted(ours):
        extra = sorted(set(covered) - set(ours))
        left = sorted(set(ours) - set(covered))
        raise AssertionError(f"legacy key table out of date for {type(module).__name__}: "
                             f"not in the network {extra[:3]}, not mapped {left[:3]}")
    return pairs


# --- Conversion ------------------------------------------------------------------------------

def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def from_original(module, state: dict[str, Any], what: str, hint: str = "") -> "OrderedDict[str, Any]":
    """An original-keyed state dict -> our keys, checked against `module` (keys and shapes).

    Files from PyTorch <= 0.3 have no BatchNorm `num_batches_tracked`; it is filled with 0 (what
    torch's own loader does; it only matters for momentum=None, which nothing here uses).
    """
    pairs = key_table(module)
    own = module.state_dict()
    to_ours = dict(pairs)
    # Shapes first (in the file's order): a wrong preset shows up as the first mis-shaped layer,
    # which says more than the keys a deeper or shallower network lacks.
    for orig, value in state.items():
        if orig not in to_ours:
            continue
        if not isinstance(value, torch.Tensor):
            raise AttnGANError(f"{what}: '{orig}' is a {type(value).__name__}, not a tensor")
        want = tuple(own[to_ours[orig]].shape)
        if tuple(value.shape) != want:
            raise AttnGANError(f"{what}: '{orig}' has shape {tuple(value.shape)}, expected {want}{hint}")
        check_tensor(value, own[to_ours[orig]], f"{what}: '{orig}'")
    unexpected = [k for k in state if k not in to_ours]
    missing = [o for o, _ in pairs if o not in state and not _is_counter(o)]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first '{missing[0]}')")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first '{unexpected[0]}')")
        raise AttnGANError(f"{what} does not have the expected layout: {', '.join(parts)}{hint}")
    out: OrderedDict[str, Any] = OrderedDict()
    for orig, ours in pairs:
        out[ours] = state[orig] if orig in state else torch.zeros((), dtype=torch.int64)
    return out


def to_original(module) -> "OrderedDict[str, Any]":
    """`module`'s weights under the original keys, float32, without `num_batches_tracked`
    (PyTorch <= 0.3 rejects the key; newer versions fill it in)."""
    sd = module.state_dict()
    out: OrderedDict[str, Any] = OrderedDict()
    for orig, ours in key_table(module):
        if _is_counter(orig):
            continue
        v = sd[ours].detach().cpu()
        out[orig] = (v.float() if v.is_floating_point() else v).contiguous().clone()
    return out


# --- Safe reading ------------------------------------------------------------------------------

def load_original_state_dict(path: str | os.PathLike, what: str) -> "OrderedDict[str, Any]":
    """A .pth state dict, read with weights_only=True: tensors only, no code ever runs."""
    path = Path(path)
    if not path.is_file():
        raise AttnGANError(f"{what} file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        detail = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "global" in ln), "")
        if detail:
            raise AttnGANError(f"refusing to load {what} {path}: it contains code or objects, not "
                               f"only tensors ({detail}); nothing was executed") from None
        raise AttnGANError(f"cannot read {what} {path}: not a PyTorch state dict, or truncated") from None
    except Exception as e:  # noqa: BLE001 - truncated/corrupt files raise many types
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AttnGANError(f"cannot read {what} {path}: truncated or not a PyTorch file ({msg[:120]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # some re-saved copies wrap the dict
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise AttnGANError(f"{what} {path} is not a state dict (got {type(state).__name__})")
    # DataParallel copies prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = OrderedDict((k[len("module."):], v) for k, v in state.items())
    return OrderedDict(state)


def derive_image_encoder_path(text_encoder: str | os.PathLike) -> Path:
    """The original's rule: the image encoder sits beside the text encoder, named with
    `text_encoder` replaced by `image_encoder` (text_encoder200.pth -> image_encoder200.pth)."""
    text_encoder = Path(text_encoder)
    if "text_encoder" not in text_encoder.name:
        raise AttnGANError(f"cannot derive the image encoder from '{text_encoder.name}' (no "
                           "'text_encoder' in the name); pass --image-encoder")
    path = text_encoder.with_name(text_encoder.name.replace("text_encoder", "image_encoder"))
    if not path.is_file():
        raise AttnGANError(f"image encoder not found: {path} (derived from the text encoder's name "
                           "as the original does); pass --image-encoder")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- Import ------------------------------------------------------------------------------------

IMPORT_PRESETS = ("bird", "coco", "bird-dcgan")
# The eval ymls' caption length (eval_bird.yml 25, eval_coco.yml 20): what the original's own
# sampling of the published models used. Training used 18 / 12; `train --config` sets its own.
EVAL_WORDS_NUM = {"birds": 25, "coco": 20}


def imported_config(preset_name: str) -> Config:
    """The Config an imported model records: the preset plus what the published files need."""
    if preset_name not in IMPORT_PRESETS:
        raise AttnGANError(f"unknown preset '{preset_name}' for import; choose one of "
                           f"{', '.join(IMPORT_PRESETS)}")
    cfg = preset(preset_name)
    cfg.data.words_num = EVAL_WORDS_NUM[cfg.data.dataset]
    # The published encoders: Inception trunk, resize to 299 with align_corners=True (PyTorch
    # <= 0.3 semantics), DAMSM gammas of the training ymls (4, 5, 10), 300-d words, 256-d features.
    d = cfg.damsm
    d.backbone, d.image_size, d.align_corners = "inception", 299, True
    d.gamma1, d.gamma2, d.gamma3 = 4.0, 5.0, 10.0
    cfg.text.word_dim, cfg.text.embedding_dim, cfg.text.rnn_type = 300, 256, "LSTM"
    cfg.text.sentence = "last"
    return cfg


def import_original(preset_name: str, net_g: str | os.PathLike, text_encoder: str | os.PathLike,
                    captions: str | os.PathLike, out_dir: str | os.PathLike,
                    image_encoder: str | os.PathLike | None = None,
                    net_d: Iterable[str | os.PathLike] = (), overwrite: bool = False) -> Path:
    """Original AttnGAN files -> a model folder (see training/checkpoint.py), written atomically.

    With `net_d` (netD0.pth, netD1.pth, netD2.pth; one file for bird-dcgan) the discriminators are
    added as `discriminators.safetensors`, keyed like the training state's "Ds" entry.
    """
    cfg = imported_config(preset_name)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise AttnGANError(f"{out_dir} already exists and is not empty; pass --overwrite to replace it")
    net_g, text_encoder, captions = Path(net_g), Path(text_encoder), Path(captions)
    image_encoder = Path(image_encoder) if image_encoder else derive_image_encoder_path(text_encoder)
    net_d = [Path(p) for p in net_d]
    n_d = 1 if cfg.gan.dcgan else cfg.data.branch_num
    if net_d and len(net_d) != n_d:
        raise AttnGANError(f"preset {preset_name} has {n_d} discriminator(s) "
                           f"({'netD0' if n_d == 1 else 'netD0, netD1, netD2'}); got {len(net_d)} file(s)")
    hint = f" (is --preset {preset_name} right for this file?)"

    # Vocabulary first: its size fixes the text encoder's embedding.
    if not captions.is_file():
        raise AttnGANError(f"captions.pickle not found: {captions}")
    vocab = load_captions_pickle(captions).vocab

    te = build_text_encoder(cfg, len(vocab))
    te_state = load_original_state_dict(text_encoder, "text encoder")
    emb = te_state.get("encoder.weight")
    if isinstance(emb, torch.Tensor) and emb.dim() == 2 and emb.shape[0] != len(vocab):
        raise AttnGANError(f"text encoder {text_encoder.name} has {emb.shape[0]} words but "
                           f"{captions.name} has {len(vocab)}: they come from different datasets")
    te.load_state_dict(from_original(te, te_state, f"text encoder {text_encoder.name}", hint))
    del te_state

    g = build_generator(cfg, cfg.text.embedding_dim, init=False)
    g.load_state_dict(from_original(g, load_original_state_dict(net_g, "generator"),
                                    f"generator {net_g.name}", hint))

    ie = build_image_encoder(cfg)
    ie.load_state_dict(from_original(ie, load_original_state_dict(image_encoder, "image encoder"),
                                     f"image encoder {image_encoder.name}", hint))

    ds = None
    if net_d:
        ds = build_discriminators(cfg, init=False)
        for d, path in zip(ds, net_d):
            d.load_state_dict(from_original(d, load_original_state_dict(path, "discriminator"),
                                            f"discriminator {path.name}", hint))

    sources = {"netG": net_g, "text_encoder": text_encoder, "image_encoder": image_encoder,
               "captions": captions, **{f"netD{i}": p for i, p in enumerate(net_d)}}
    extra = {"imported_from": {k: {"file": p.name, "sha256": _sha256(p)} for k, p in sources.items()},
             "import_notes": ("original AttnGAN weights; generator = EMA parameters with live "
                              "BatchNorm statistics, as published")}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = tmp_dir_beside(out_dir.with_name(out_dir.name + ".import"))
    try:
        folder = save_model_folder(staging / "model", cfg, vocab, g, te, ie, extra=extra, discriminators=ds)
        replace_dir(folder, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


# --- Export ------------------------------------------------------------------------------------

def save_captions_pickle(path: str | os.PathLike, vocab: Vocabulary, train: list[list[int]] | None = None,
                         test: list[list[int]] | None = None) -> None:
    """[train_captions, test_captions, ixtoword, wordtoix] with pickle protocol 2 (Python 2 reads it)."""
    ixtoword = {i: w for i, w in enumerate(vocab.id_to_word)}
    wordtoix = {w: i for i, w in enumerate(vocab.id_to_word)}
    data = pickle.dumps([list(train or []), list(test or []), ixtoword, wordtoix], protocol=2)
    atomic_write_bytes(path, data)


class _Torch03Pickler(pickle.Pickler):
    # PyTorch 0.3 has no _rebuild_tensor_v2: pickle each tensor as it did,
    # _rebuild_tensor(storage, offset, size, stride). Storages go through torch's persistent ids.
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            storage = torch.storage.TypedStorage(wrap_storage=obj.untyped_storage(), dtype=obj.dtype,
                                                 _internal=True)
            return torch._utils._rebuild_tensor, (storage, obj.storage_offset(), tuple(obj.size()),
                                                  obj.stride())
        return NotImplemented


def _legacy_torch_save(obj: Any, path: Path) -> None:
    """The pre-1.6 (non-zip) format with tensors encoded as PyTorch 0.3 wrote them and pickle
    protocol 2, so Python 2 / PyTorch 0.3 tooling can read it (and weights_only loads it);
    written atomically."""
    module = types.ModuleType("attngan_pickle_torch03")
    module.Pickler, module.dump = _Torch03Pickler, pickle.dump  # what torch.save uses
    atomic_write(path, lambda tmp: torch.save(obj, tmp, pickle_module=module, pickle_protocol=2,
                                              _use_new_zipfile_serialization=False))


EXPORT_NAMES = {"netG": "netG.pth", "text_encoder": "text_encoder.pth",
                "image_encoder": "image_encoder.pth", "captions": "captions.pickle",
                "yml": "eval_attngan.yml"}


def export_original(model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                    captions: str | os.PathLike | None = None) -> list[Path]:
    """A model folder -> the original layout: netG.pth, text_encoder.pth, image_encoder.pth,
    captions.pickle (protocol 2), netD<i>.pth when the folder has discriminators, and an eval yml.

    `captions` (a dataset's original captions.pickle with the same vocabulary) supplies the
    train/test caption lists; without it they are empty (enough for sampling, not for training).
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    cfg = read(model_dir, "generator").config
    problems = []
    if cfg.damsm.backbone != "inception":
        problems.append(f"the image encoder uses the '{cfg.damsm.backbone}' backbone (the original's is Inception-v3)")
    if cfg.text.word_dim != 300:
        problems.append(f"text.word_dim is {cfg.text.word_dim} (the original's is fixed at 300)")
    if cfg.text.sentence != "last":
        problems.append(f"text.sentence is '{cfg.text.sentence}' (the original reads the final LSTM states)")
    if cfg.data.base_size != 64 or not 1 <= cfg.data.branch_num <= 3:
        problems.append(f"the generator starts at {cfg.data.base_size} px with {cfg.data.branch_num} "
                        "stages (the original: 64 px, 1 to 3 stages)")
    if problems:
        raise AttnGANError(f"{model_dir} cannot be exported to the original format: {'; '.join(problems)}")
    loaded = load(model_dir, "generator", parts=("generator", "text_encoder", "image_encoder", "discriminators"))
    vocab = loaded.vocab
    train_caps = test_caps = None
    if captions is not None:
        cp = load_captions_pickle(captions)
        if cp.vocab != vocab:
            raise AttnGANError(f"{captions} has a different vocabulary from {model_dir}/vocab.json")
        train_caps, test_caps = cp.train, cp.test

    nets = loaded.modules
    files: dict[str, Any] = {"netG": to_original(nets["generator"]), "text_encoder": to_original(nets["text_encoder"]),
                             "image_encoder": to_original(nets["image_encoder"])}
    for i, d in enumerate(nets.get("discriminators", ())):
        files[f"netD{i}"] = to_original(d)
    del loaded, nets

    # Everything is converted before the first write; each file is then written atomically.
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, state in files.items():
        path = out_dir / EXPORT_NAMES.get(name, f"{name}.pth")
        _legacy_torch_save(state, path)
        written.append(path)
    path = out_dir / EXPORT_NAMES["captions"]
    save_captions_pickle(path, vocab, train_caps, test_caps)
    written.append(path)
    yml = original_yml_from_config(cfg, net_g=EXPORT_NAMES["netG"], net_e=EXPORT_NAMES["text_encoder"])
    path = out_dir / EXPORT_NAMES["yml"]
    atomic_write_bytes(path, yaml.safe_dump(yml, sort_keys=False).encode("utf-8"))
    written.append(path)
    return written


__all__ = [
    "ORIGINAL_DEFAULTS", "IGNORED_KEYS", "GAN_YML_MAP", "DAMSM_YML_MAP", "IMPORT_PRESETS",
    "EVAL_WORDS_NUM", "config_from_original_yml", "merge_original_yml", "original_yml_from_config",
    "key_table", "from_original", "to_original", "load_original_state_dict",
    "derive_image_encoder_path", "imported_config", "import_original", "export_original",
    "save_captions_pickle",
]
