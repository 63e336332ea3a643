"""The original release's .yml configs (code/cfg/*.yml): their keys, defaults and where each goes in
our Config, read into a preset name and overrides.

config.load_config reads a file of upper-case keys through `original_yml_overrides`;
legacy.config_from_original_yml is the same as a Config, and legacy.original_yml_from_config
writes one back. This module imports nothing of the package but the config machinery's errors,
so the config loader can use it without reaching the checkpoint code of legacy.py.
"""

from __future__ import annotations

from typing import Any

from attngan.config_io import ConfigError

# code/miscc/config.py (commit 0d000e6): every key the original merge accepts, with its default.
ORIGINAL_DEFAULTS: dict[str, Any] = {
    "DATASET_NAME": "birds", "CONFIG_NAME": "", "DATA_DIR": "", "GPU_ID": 0, "CUDA": True,
    "WORKERS": 6, "RNN_TYPE": "LSTM", "B_VALIDATION": False,
    "TREE.BRANCH_NUM": 3, "TREE.BASE_SIZE": 64,
    "TRAIN.BATCH_SIZE": 64, "TRAIN.MAX_EPOCH": 600, "TRAIN.SNAPSHOT_INTERVAL": 2000,
    "TRAIN.DISCRIMINATOR_LR": 2e-4, "TRAIN.GENERATOR_LR": 2e-4, "TRAIN.ENCODER_LR": 2e-4,
    "TRAIN.RNN_GRAD_CLIP": 0.25, "TRAIN.FLAG": True, "TRAIN.NET_E": "", "TRAIN.NET_G": "",
    "TRAIN.B_NET_D": True,
    "TRAIN.SMOOTH.GAMMA1": 5.0, "TRAIN.SMOOTH.GAMMA2": 5.0, "TRAIN.SMOOTH.GAMMA3": 10.0,
    "TRAIN.SMOOTH.LAMBDA": 1.0,
    "GAN.DF_DIM": 64, "GAN.GF_DIM": 128, "GAN.Z_DIM": 100, "GAN.CONDITION_DIM": 100,
    "GAN.R_NUM": 2, "GAN.B_ATTENTION": True, "GAN.B_DCGAN": False,
    "TEXT.CAPTIONS_PER_IMAGE": 10, "TEXT.EMBEDDING_DIM": 256, "TEXT.WORDS_NUM": 18,
    # Keys of a later revision of the same repository (a zero-shot-GAN experiment); its ymls carry
    # them, nothing of AttnGAN reads them.
    "TRAIN.ZLS_GAN": "", "GAN.Z_DIM_ZLS_GAN": 100, "TEXT.TFIDF_VECTORIZER_PATH": "",
    "TEXT.ZLS_GAN_EMBEDDING_DIM": 3584, "TEXT.TFIDF_DIM": 7549,
}

# Keys accepted and ignored, with the reason (what replaces them here).
IGNORED_KEYS: dict[str, str] = {
    "CONFIG_NAME": "a run label only",
    "DATA_DIR": "give the data folder on the command line (--data)",
    "GPU_ID": "use --device",
    "CUDA": "use --device",
    "B_VALIDATION": "choose the command instead (generate / eval)",
    "TRAIN.FLAG": "choose the command instead (train / generate / eval)",
    "TRAIN.NET_E": "use --damsm, or import-original --text-encoder",
    "TRAIN.NET_G": "use train --init, or import-original --netG",
    "TRAIN.B_NET_D": "D is built whenever training runs",
    "GAN.B_ATTENTION": "never read by the original",
    "TRAIN.ZLS_GAN": "not part of AttnGAN", "GAN.Z_DIM_ZLS_GAN": "not part of AttnGAN",
    "TEXT.TFIDF_VECTORIZER_PATH": "not part of AttnGAN",
    "TEXT.ZLS_GAN_EMBEDDING_DIM": "not part of AttnGAN", "TEXT.TFIDF_DIM": "not part of AttnGAN",
}

# Training-set sizes that turn the original's epochs into our kimg (presets use the same).
TRAIN_IMAGES = {"birds": 8855, "coco": 82783}

# Where each key goes, for a GAN yml (TREE.BASE_SIZE 64 ...) and for a DAMSM yml
# (TREE.BRANCH_NUM 1, BASE_SIZE 299). None: accepted, no meaning for that kind of run.
# "epochs->kimg" values are converted with TRAIN_IMAGES.
GAN_YML_MAP: dict[str, str | None] = {
    "DATASET_NAME": "data.dataset", "WORKERS": "data.workers", "RNN_TYPE": "text.rnn_type",
    "TREE.BRANCH_NUM": "data.branch_num", "TREE.BASE_SIZE": "data.base_size",
    "TRAIN.BATCH_SIZE": "train.batch_size", "TRAIN.MAX_EPOCH": "train.total_kimg",
    "TRAIN.SNAPSHOT_INTERVAL": "train.snapshot_kimg",
    "TRAIN.DISCRIMINATOR_LR": "train.lr_d", "TRAIN.GENERATOR_LR": "train.lr_g",
    "TRAIN.ENCODER_LR": None,            # the GAN trainer keeps the encoders frozen
    "TRAIN.RNN_GRAD_CLIP": None,         # DAMSM pretraining only
    "TRAIN.SMOOTH.GAMMA1": "damsm.gamma1", "TRAIN.SMOOTH.GAMMA2": "damsm.gamma2",
    "TRAIN.SMOOTH.GAMMA3": "damsm.gamma3", "TRAIN.SMOOTH.LAMBDA": "train.damsm_lambda",
    "GAN.DF_DIM": "gan.df_dim", "GAN.GF_DIM": "gan.gf_dim", "GAN.Z_DIM": "gan.z_dim",
    "GAN.CONDITION_DIM": "gan.condition_dim", "GAN.R_NUM": "gan.r_num", "GAN.B_DCGAN": "gan.dcgan",
    "TEXT.CAPTIONS_PER_IMAGE": "data.captions_per_image", "TEXT.EMBEDDING_DIM": "text.embedding_dim",
    "TEXT.WORDS_NUM": "data.words_num",
}
DAMSM_YML_MAP: dict[str, str | None] = {
    "DATASET_NAME": "data.dataset", "WORKERS": "data.workers", "RNN_TYPE": "text.rnn_type",
    "TREE.BRANCH_NUM": None,             # 1: one image size, the encoder's
    "TREE.BASE_SIZE": "damsm.image_size",
    "TRAIN.BATCH_SIZE": "damsm.batch_size", "TRAIN.MAX_EPOCH": "damsm.epochs",
    "TRAIN.SNAPSHOT_INTERVAL": "damsm.snapshot_epochs", "TRAIN.ENCODER_LR": "damsm.lr",
    "TRAIN.RNN_GRAD_CLIP": "damsm.rnn_grad_clip",
    "TRAIN.DISCRIMINATOR_LR": None, "TRAIN.GENERATOR_LR": None, "TRAIN.SMOOTH.LAMBDA": None,
    "TRAIN.SMOOTH.GAMMA1": "damsm.gamma1", "TRAIN.SMOOTH.GAMMA2": "damsm.gamma2",
    "TRAIN.SMOOTH.GAMMA3": "damsm.gamma3",
    "GAN.DF_DIM": None, "GAN.GF_DIM": None, "GAN.Z_DIM": None, "GAN.CONDITION_DIM": None,
    "GAN.R_NUM": None, "GAN.B_DCGAN": None,
    "TEXT.CAPTIONS_PER_IMAGE": "data.captions_per_image", "TEXT.EMBEDDING_DIM": "text.embedding_dim",
    "TEXT.WORDS_NUM": "damsm.words_num",
}


def _flatten_yml(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if not isinstance(key, str):
            raise ConfigError(f"original config: key {name!r} is not a string")
        is_section = any(k.startswith(name + ".") for k in ORIGINAL_DEFAULTS)
        if is_section:
            if not isinstance(value, dict):
                raise ConfigError(f"original config: '{name}' must be a section (a mapping)")
            out.update(_flatten_yml(value, name + "."))
        elif name not in ORIGINAL_DEFAULTS:
            raise ConfigError(f"unknown key '{name}' in an original AttnGAN config")
        else:
            out[name] = value
    return out


def _check_type(name: str, value: Any, default: Any) -> Any:
    # The original merge rejects type changes; we also accept an int where a float is expected.
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"original config: '{name}' must be {type(default).__name__}, got {value!r}")
    return float(value) if isinstance(default, float) else value


def merge_original_yml(raw: dict[str, Any]) -> dict[str, Any]:
    """The original's effective config for a yml: its defaults with the yml merged in (dotted keys)."""
    if not isinstance(raw, dict):
        raise ConfigError("an original AttnGAN config must be a mapping")
    merged = dict(ORIGINAL_DEFAULTS)
    for name, value in _flatten_yml(raw).items():
        merged[name] = _check_type(name, value, ORIGINAL_DEFAULTS[name])
    return merged


def is_damsm_yml(merged: dict[str, Any]) -> bool:
    # DAMSM pretraining ymls train at one 299 px size (code/cfg/DAMSM/*.yml).
    return merged["TREE.BRANCH_NUM"] == 1 and merged["TREE.BASE_SIZE"] == 299


def is_original_yml(raw: dict[str, Any]) -> bool:
    """The original's files use upper-case keys (TREE.BRANCH_NUM, GAN.GF_DIM, ...), ours lower-case."""
    return bool(raw) and all(isinstance(k, str) and k.isupper() for k in raw)


def original_yml_overrides(raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(our preset, overrides over it) for an original AttnGAN .yml (GAN, eval or DAMSM), as the
    original would run it.

    Every key takes the original's value (the yml's, else the original default, so a yml without
    GAN.GF_DIM gets 128 as it would there); unknown keys fail with their name; keys listed in
    IGNORED_KEYS are accepted and ignored. The image encoder resizes with align_corners=True, the
    semantics the original ran under (PyTorch <= 0.3).
    """
    o = merge_original_yml(raw)
    dataset = o["DATASET_NAME"]
    if dataset not in TRAIN_IMAGES:
        raise ConfigError(f"original config: DATASET_NAME '{dataset}' is not supported "
                          f"(choose one of {', '.join(TRAIN_IMAGES)})")
    if is_damsm_yml(o):
        base = "coco" if dataset == "coco" else "bird"
        table = DAMSM_YML_MAP
    else:
        base = "coco" if dataset == "coco" else ("bird-dcgan" if o["GAN.B_DCGAN"] else "bird")
        table = GAN_YML_MAP
    n_train = TRAIN_IMAGES[dataset]
    overrides: dict[str, Any] = {"damsm": {"backbone": "inception", "align_corners": True}}
    for key, target in table.items():
        if target is None:
            continue
        value = o[key]
        if target in ("train.total_kimg", "train.snapshot_kimg"):
            value = value * n_train / 1000  # epochs -> thousands of images
        section, field = target.split(".")
        overrides.setdefault(section, {})[field] = value
    return base, overrides
