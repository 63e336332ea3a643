"""Saved models: the folders inference loads, and the atomic writes every saved file goes through.

A model folder holds what inference needs and nothing else (GUIDE.md, example 7): config.json
(format version, the resolved Config), vocab.json and safetensors weights. The generator's folder
has the generator and both DAMSM encoders; a DAMSM folder has the encoders; a name from
BUNDLED_MODELS is a folder shipped in the package. Every weight is checked on load (keys, shapes,
dtype, finiteness: load_state) and every config.json is validated (config_from_meta), each problem
a one-line AttnGANError naming the file. Training states for --resume are training/checkpoint.py's.

Every write goes to a temporary beside its target and is renamed over it, so a process killed at
any moment leaves the last complete file (attngan.rundir removes the temporaries it leaves).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from attngan.config import Config, ConfigError
from attngan.errors import AttnGANError
from attngan.fileio import atomic_write, atomic_write_json, publish_mode, read_json_object, tmp_dir_beside

FORMAT_VERSION = 1
MODEL_FILES = ("config.json", "vocab.json", "generator.safetensors", "text_encoder.safetensors",
               "image_encoder.safetensors")


# Atomic writes of tensors (bytes and JSON: attngan.fileio, which needs no torch).

def atomic_torch_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path,
                            metadata: dict[str, str] | None = None) -> None:
    # safetensors refuses shared or non-contiguous storage: give it plain copies.
    plain = {k: v.detach().contiguous().clone().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp), metadata=metadata))


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise AttnGANError(f"missing weights file {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise AttnGANError(f"cannot read weights file {path}: {e}".splitlines()[0]) from None


def replace_dir(tmp_dir: Path, target: Path) -> None:
    """Move a fully written folder over `target` (which may exist) with a short rename window."""
    target = Path(target)
    publish_mode(tmp_dir)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(tmp_dir, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, target)


def state_dict_for_save(module: torch.nn.Module, half: bool = False) -> dict[str, torch.Tensor]:
    sd = {k: v for k, v in module.state_dict().items()}
    if half:
        # BN statistics and counters stay exact; weights go to fp16 (bundled model size).
        sd = {k: (v.half() if v.is_floating_point() and "running_" not in k else v)
              for k, v in sd.items()}
    return sd


def check_tensor(value: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """A saved tensor must have the kind of number the network holds there (a float weight from
    float16/bfloat16/float32/float64, an integer counter from an integer) and be finite: NaN, bool,
    int8 or complex weights would load, cast, and draw garbage."""
    if expected.is_floating_point():
        if not value.is_floating_point():
            raise AttnGANError(f"{name} is {str(value.dtype).removeprefix('torch.')}; "
                               "weights must be floating point")
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise AttnGANError(f"{name} has {bad} NaN/inf value{'s' if bad > 1 else ''}")
    elif value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise AttnGANError(f"{name} is {str(value.dtype).removeprefix('torch.')}; "
                           f"the network holds {str(expected.dtype).removeprefix('torch.')} there")


def load_state(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise AttnGANError(f"{what}: weights do not fit this network "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in sd.items():
        if own[k].shape != v.shape:
            raise AttnGANError(f"{what}: '{k}' has shape {tuple(v.shape)}, "
                               f"the network expects {tuple(own[k].shape)}")
        check_tensor(v, own[k], f"{what}: '{k}'")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=False)


# The inference model folder.

def save_model_folder(out_dir: str | Path, cfg: Config, vocab, generator: torch.nn.Module,
                      text_encoder: torch.nn.Module, image_encoder: torch.nn.Module,
                      half: bool = False, extra: dict[str, Any] | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir_beside(out_dir)
    try:
        meta = {"format_version": FORMAT_VERSION, "config": cfg.to_dict(), "n_words": len(vocab)}
        meta.update(extra or {})
        atomic_write_json(tmp / "config.json", meta)
        vocab.save(tmp / "vocab.json")
        atomic_save_safetensors(state_dict_for_save(generator, half), tmp / "generator.safetensors")
        atomic_save_safetensors(state_dict_for_save(text_encoder, half),
                                tmp / "text_encoder.safetensors")
        atomic_save_safetensors(state_dict_for_save(image_encoder, half),
                                tmp / "image_encoder.safetensors")
        replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def read_model_config(model_dir: str | Path) -> tuple[Config, dict[str, Any]]:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise AttnGANError(f"model folder {model_dir} does not exist")
    missing = [f for f in MODEL_FILES if not (model_dir / f).is_file()]
    if missing:
        raise AttnGANError(f"model folder {model_dir} is incomplete: missing {', '.join(missing)}")
    meta = read_json_object(model_dir / "config.json", "model config")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        shown = repr(version) if len(repr(version)) <= 40 else repr(version)[:40] + "..."
        raise AttnGANError(f"model folder {model_dir} has format version {shown}; "
                           f"this attngan reads version {FORMAT_VERSION}")
    return config_from_meta(meta, model_dir / "config.json"), meta


def read_config_json(path: str | Path, what: str = "config") -> tuple[Config, dict[str, Any]]:
    """A folder's config.json ({"config": {...}, ...}: model and DAMSM folders) -> (validated
    Config, the whole JSON object); every problem is a one-line AttnGANError naming the file."""
    meta = read_json_object(path, what)
    return config_from_meta(meta, Path(path)), meta


def config_from_meta(meta: dict[str, Any], path: Path) -> Config:
    """The validated Config under meta["config"]; `path` (the file it came from) is named in errors."""
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise AttnGANError(f"{path} has no \"config\" object" if raw is None else
                           f"{path}: \"config\" must be a JSON object, got {type(raw).__name__}")
    try:
        return Config.from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# Bundled models.

ASSETS = Path(__file__).parent / "assets"
# Models shipped inside the package, by name; the first one found is the default.
BUNDLED_MODELS = ("synthbirds-128", "synthbirds-tiny")


def bundled_model_names() -> list[str]:
    return [n for n in BUNDLED_MODELS if (ASSETS / n / "config.json").is_file()]


def bundled_model_dir(name: str | None = None) -> Path:
    """A model shipped inside the package: `name` (e.g. "synthbirds-tiny") or the default one."""
    names = bundled_model_names()
    if name is None:
        if not names:
            raise AttnGANError("no bundled model in this installation; pass --model MODEL_DIR")
        name = names[0]
    if name not in names:
        raise AttnGANError(f"no bundled model named '{name}'; bundled: {', '.join(names) or 'none'}")
    return ASSETS / name


def resolve_model(model: str | Path | None) -> Path:
    """A model folder, or the name of a bundled model (a folder of that name wins), or None: the default."""
    if model is None:
        return bundled_model_dir()
    path = Path(model)
    if not path.exists() and str(model) in BUNDLED_MODELS:
        return bundled_model_dir(str(model))
    return path


# DAMSM folders: the two encoders the generator trains against, frozen.

DAMSM_FILES = ("config.json", "vocab.json", "text_encoder.safetensors", "image_encoder.safetensors")


def save_damsm_folder(folder: Path, cfg: Config, vocab, text_encoder, image_encoder,
                      metrics: dict[str, Any] | None = None) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir_beside(folder)
    atomic_write_json(tmp / "config.json", {"config": cfg.to_dict(), "n_words": len(vocab),
                                            "metrics": metrics or {}})
    vocab.save(tmp / "vocab.json")
    atomic_save_safetensors(state_dict_for_save(text_encoder), tmp / "text_encoder.safetensors")
    atomic_save_safetensors(state_dict_for_save(image_encoder), tmp / "image_encoder.safetensors")
    replace_dir(tmp, folder)


def damsm_folder(path: str | Path) -> Path:
    """The folder whose encoders `path` names: a DAMSM run folder's best/ snapshot, a snapshot
    folder, or a model folder or bundled model name; checked complete.

    A run folder written before best/ recorded how it was selected chose it by R-precision on the
    test split, the split evaluation scores on; its last/ is used instead."""
    path = resolve_model(path)  # a bundled model's name: its encoders
    if (path / "best" / "config.json").is_file():
        meta = read_json_object(path / "best" / "config.json", "DAMSM config")
        metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        chosen_on_test = "selection" not in metrics and (path / "last" / "config.json").is_file()
        path = path / ("last" if chosen_on_test else "best")
    if not path.is_dir():
        raise AttnGANError(f"DAMSM folder {path} does not exist")
    missing = [f for f in DAMSM_FILES if not (path / f).is_file()]
    if missing:
        raise AttnGANError(f"DAMSM folder {path} is incomplete: missing {', '.join(missing)}")
    return path


def read_damsm_config(path: str | Path) -> Config:
    """The config the encoders of `path` (see damsm_folder) were built with, without loading them."""
    return read_config_json(damsm_folder(path) / "config.json", "DAMSM config")[0]


def with_damsm_sections(cfg: Config, dcfg: Config, overrides: dict[str, Any] | None = None) -> Config:
    """`cfg` with the text and DAMSM sections of the encoders it trains against (they fix the text
    features' layout). An override the user gave for one of those keys that the encoders contradict
    is a one-line error naming the key, rather than silently dropped."""
    for section in ("text", "damsm"):
        given = (overrides or {}).get(section) or {}
        theirs = getattr(dcfg, section)
        for key, value in given.items():
            have = getattr(theirs, key, None)
            if have is not None and _same(getattr(getattr(cfg, section), key), have) is False:
                raise AttnGANError(f"--set {section}.{key}={value!r} contradicts the DAMSM, whose "
                                   f"encoders were trained with {section}.{key}={have!r}; drop the "
                                   "--set or train a DAMSM with it")
    cfg.text, cfg.damsm = dcfg.text, dcfg.damsm
    return cfg


def _same(a: Any, b: Any) -> bool:
    return (list(a) if isinstance(a, tuple) else a) == (list(b) if isinstance(b, tuple) else b)


def load_damsm(path: str | Path, device: torch.device | str = "cpu"):
    """A DAMSM run folder (uses its best/ snapshot), a snapshot folder, or a model folder or bundled
    model name (its encoders) -> (cfg, vocab, text, image)."""
    from attngan.networks import build_image_encoder, build_text_encoder
    from attngan.text import Vocabulary

    path = damsm_folder(path)
    cfg, meta = read_config_json(path / "config.json", "DAMSM config")
    vocab = Vocabulary.load(path / "vocab.json")
    text_encoder = build_text_encoder(cfg, len(vocab))
    image_encoder = build_image_encoder(cfg)
    load_state(text_encoder, load_safetensors(path / "text_encoder.safetensors"), "DAMSM text encoder")
    load_state(image_encoder, load_safetensors(path / "image_encoder.safetensors"), "DAMSM image encoder")
    return cfg, vocab, text_encoder.to(device), image_encoder.to(device)
