"""Saved models: the folders inference loads, and the atomic writes every saved file goes through.

Every saved model is a folder in one format: config.json and the files it lists, nothing else.
config.json is {"format": "attngan-model", "version": 2, "kind": KIND, "files": [...], ...} plus
the fields of its kind:
  generator  the model folder inference loads ("config", "n_words", optional "model_card"):
             vocab.json, generator, text_encoder and image_encoder .safetensors, optionally
             discriminators.safetensors (import-original --netD);
  damsm      the two encoders the generator trains against ("config", "n_words", "metrics");
  oracle     the SynthBirds oracle (metrics/oracle.py; its OracleConfig fields);
  judge      the SynthScenes judge (networks/scene_judge.py; its JudgeConfig fields);
  captioner  captioner.py's folder ("config", "n_words", "metrics").
write_folder writes one and read_folder checks one (format, version, kind, the listed files); a
name from BUNDLED_MODELS is a folder shipped in the package. Every weight is checked on load
(keys, shapes, dtype, finiteness: load_state), each problem a one-line AttnGANError naming the
file. Training states for --resume are training/checkpoint.py's.

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
from attngan.fileio import (atomic_write, atomic_write_json, check_format, publish_mode, read_json_object,
                            shown, tmp_dir_beside)

FOLDER_FORMAT = "attngan-model"
FOLDER_VERSION = 2
CONFIG_FILE = "config.json"
# What each kind of folder is called in messages.
KIND_NAMES = {"generator": "model", "damsm": "DAMSM", "oracle": "oracle", "captioner": "captioner",
              "judge": "scene judge"}
# The files a model folder's loaders read (its config.json lists them, and may list more).
MODEL_FILES = ("vocab.json", "generator.safetensors", "text_encoder.safetensors", "image_encoder.safetensors")


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


# Saved-model folders: one writer, one reader.

def write_folder(folder: str | Path, kind: str, fields: dict[str, Any],
                 weights: dict[str, dict[str, torch.Tensor]], vocab=None) -> Path:
    """A saved-model folder of `kind`: vocab.json (when `vocab` is given), one safetensors file per
    entry of `weights` (file name -> tensors) and config.json (`fields` with the format, version,
    kind and the list of those files), written into a temporary folder beside `folder` and renamed
    over it once complete."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    files = (["vocab.json"] if vocab is not None else []) + list(weights)
    tmp = tmp_dir_beside(folder)
    try:
        if vocab is not None:
            vocab.save(tmp / "vocab.json")
        for name, tensors in weights.items():
            atomic_save_safetensors(tensors, tmp / name)
        atomic_write_json(tmp / CONFIG_FILE, {**fields, "format": FOLDER_FORMAT, "version": FOLDER_VERSION,
                                              "kind": kind, "files": files})
        replace_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_folder(folder: str | Path, kinds: tuple[str, ...], needs: tuple[str, ...]) -> dict[str, Any]:
    """The config.json of a saved-model folder whose kind is one of `kinds` (the first names it in
    messages), checked: the folder exists, its config.json is of this format and version, and every
    file it lists and every file of `needs` (those its loader reads) is there. Each problem is a
    one-line AttnGANError naming the folder or its config.json. Folders of the older layouts read
    as the current one (see _legacy_kind)."""
    folder = Path(folder)
    name = KIND_NAMES[kinds[0]]
    a_name = f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    if not folder.is_dir():
        raise AttnGANError(f"{name} folder {folder} does not exist")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise AttnGANError(f"{folder} is not {a_name} folder (it has no {CONFIG_FILE})")
    meta = read_json_object(path, f"{name} config")
    kind, files = _legacy_kind(meta), []
    if kind is None:
        check_format(meta, FOLDER_FORMAT, FOLDER_VERSION, path, f"{a_name} config")
        kind, files = meta.get("kind"), meta.get("files")
        if not (isinstance(files, list)
                and all(isinstance(f, str) and f not in ("", "..") and Path(f).name == f for f in files)):
            raise AttnGANError(f"{path}: \"files\" must be a list of the names of the folder's files")
    if kind not in kinds:
        raise AttnGANError(f"{folder} is not {a_name} folder (its kind is {shown(kind)})")
    missing = [f for f in dict.fromkeys([*needs, *files]) if not (folder / f).is_file()]
    if missing:
        raise AttnGANError(f"{name} folder {folder} is incomplete: missing {', '.join(missing)}")
    return meta


# The config.json of each kind before the one format: a model folder {"format_version": 1, ...},
# a DAMSM folder {"config", ...} with no version at all, the oracle and the captioner a "format" of
# their own at version 1.
LEGACY_FORMATS = {"attngan-oracle": "oracle", "attngan-captioner": "captioner"}


def _legacy_kind(meta: dict[str, Any]) -> str | None:
    """The kind of a config.json in an older layout, or None for any other (the current format).

    Folders in those layouts keep loading, since users' runs and earlier installations hold them;
    their files are the ones their loaders read (an old config.json lists none)."""
    if meta.get("format") in LEGACY_FORMATS and meta.get("version") == 1:
        return LEGACY_FORMATS[meta["format"]]
    if "format" not in meta and "version" not in meta:
        if meta.get("format_version") == 1:
            return "generator"
        if "format_version" not in meta and "config" in meta:
            return "damsm"
    return None


def config_from_meta(meta: dict[str, Any], path: Path, config_type: type = Config):
    """The validated config (a `config_type`: Config, or CaptionerConfig) under meta["config"];
    `path` (the file it came from) is named in errors."""
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise AttnGANError(f"{path} has no \"config\" object" if raw is None else
                           f"{path}: \"config\" must be a JSON object, got {type(raw).__name__}")
    try:
        return config_type.from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# The inference model folder.

def save_model_folder(out_dir: str | Path, cfg: Config, vocab, generator: torch.nn.Module,
                      text_encoder: torch.nn.Module, image_encoder: torch.nn.Module,
                      half: bool = False, extra: dict[str, Any] | None = None,
                      discriminators: torch.nn.Module | None = None) -> Path:
    weights = {"generator.safetensors": state_dict_for_save(generator, half),
               "text_encoder.safetensors": state_dict_for_save(text_encoder, half),
               "image_encoder.safetensors": state_dict_for_save(image_encoder, half)}
    if discriminators is not None:
        weights["discriminators.safetensors"] = state_dict_for_save(discriminators, half)
    fields = {"config": cfg.to_dict(), "n_words": len(vocab), **(extra or {})}
    return write_folder(out_dir, "generator", fields, weights, vocab)


def read_model_config(model_dir: str | Path) -> tuple[Config, dict[str, Any]]:
    """(the validated Config, the whole config.json) of a model folder, checked (read_folder)."""
    meta = read_folder(model_dir, ("generator",), MODEL_FILES)
    return config_from_meta(meta, Path(model_dir) / CONFIG_FILE), meta


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

DAMSM_FILES = ("vocab.json", "text_encoder.safetensors", "image_encoder.safetensors")
# A model folder holds the encoders its generator was trained against: it serves as a DAMSM too.
DAMSM_KINDS = ("damsm", "generator")


def save_damsm_folder(folder: Path, cfg: Config, vocab, text_encoder, image_encoder,
                      metrics: dict[str, Any] | None = None) -> Path:
    weights = {"text_encoder.safetensors": state_dict_for_save(text_encoder),
               "image_encoder.safetensors": state_dict_for_save(image_encoder)}
    fields = {"config": cfg.to_dict(), "n_words": len(vocab), "metrics": metrics or {}}
    return write_folder(folder, "damsm", fields, weights, vocab)


def damsm_folder(path: str | Path) -> Path:
    """The folder whose encoders `path` names: a DAMSM run folder's best/ snapshot, a snapshot
    folder, or a model folder or bundled model name; checked (read_folder)."""
    return _read_damsm(path)[0]


def _read_damsm(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(the folder damsm_folder names, its checked config.json).

    A run folder written before best/ recorded how it was selected (metrics["selection"]) chose
    it by R-precision on the test split, the split evaluation scores on; its last/ is used instead."""
    path = resolve_model(path)  # a bundled model's name: its encoders
    if (path / "best" / CONFIG_FILE).is_file():
        chosen_on_test = False
        if (path / "last" / CONFIG_FILE).is_file():  # only run folders of older releases have last/
            meta = read_json_object(path / "best" / CONFIG_FILE, "DAMSM config")
            chosen_on_test = "selection" not in (meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {})
        path = path / ("last" if chosen_on_test else "best")
    return path, read_folder(path, DAMSM_KINDS, DAMSM_FILES)


def read_damsm_config(path: str | Path) -> Config:
    """The config the encoders of `path` (see damsm_folder) were built with, without loading them."""
    folder, meta = _read_damsm(path)
    return config_from_meta(meta, folder / CONFIG_FILE)


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

    path, meta = _read_damsm(path)
    cfg = config_from_meta(meta, path / CONFIG_FILE)
    vocab = Vocabulary.load(path / "vocab.json")
    text_encoder = build_text_encoder(cfg, len(vocab))
    image_encoder = build_image_encoder(cfg)
    load_state(text_encoder, load_safetensors(path / "text_encoder.safetensors"), "DAMSM text encoder")
    load_state(image_encoder, load_safetensors(path / "image_encoder.safetensors"), "DAMSM image encoder")
    return cfg, vocab, text_encoder.to(device), image_encoder.to(device)
