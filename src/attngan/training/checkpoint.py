"""Saved files: atomic writes, the inference model folder, and the resumable training state.

Two kinds of file (GUIDE.md, example 7): a model folder that inference needs and nothing else
(config + vocabulary + safetensors weights), and a training state for `--resume` (live networks,
optimisers, EMA, RNG states, counters). Every write goes to a temporary file in the destination
folder and is renamed over the target, so a run killed at any moment leaves the last complete file.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from attngan.config import Config, ConfigError
from attngan.errors import AttnGANError
from attngan.fileio import (atomic_write_json, publish_mode, read_json_object, tmp_dir_beside,
                            tmp_path_beside)

FORMAT_VERSION = 1
MODEL_FILES = ("config.json", "vocab.json", "generator.safetensors", "text_encoder.safetensors",
               "image_encoder.safetensors")


# Atomic writes (bytes and JSON live in attngan.fileio, which needs no torch).

def atomic_torch_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_beside(path)
    try:
        torch.save(obj, tmp)
        publish_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path,
                            metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_beside(path)
    try:
        # safetensors refuses shared or non-contiguous storage: give it plain copies.
        save_file({k: v.detach().contiguous().clone().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata=metadata)
        publish_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


# RNG states (for exact resume).

def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": _py_random_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# What each loop's state.pt holds, by a key only that kind has (states written before the "kind"
# entry existed are recognised by it too).
STATE_KINDS = {"attngan": "G", "damsm": "text_encoder"}
STATE_TITLES = {"attngan": "an AttnGAN (attngan train)", "damsm": "a DAMSM (attngan train-damsm)"}


def load_training_state(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """A state.pt; with `kind` ("attngan" or "damsm"), a state of another kind is a one-line
    error that names both, rather than a KeyError deep in the resume."""
    path = Path(path)
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AttnGANError(f"cannot read training state {path}: {e}".splitlines()[0]) from None
    if kind is None:
        return st
    found = st.get("kind") if isinstance(st, dict) else None
    if found is None and isinstance(st, dict):
        found = next((k for k, key in STATE_KINDS.items() if key in st), None)
    if found != kind:
        what = STATE_TITLES.get(found, "not an attngan") if isinstance(found, str) else "not an attngan"
        raise AttnGANError(f"{path} is {what} training state, not {STATE_TITLES[kind]} one; "
                           "use another --out")
    return st
