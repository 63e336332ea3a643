"""Saved models: the folders inference loads, and the atomic writes every saved file goes through.

Every saved model is a folder in one format: config.json and the files it lists, nothing else.
config.json is {"format": "attngan-model", "version": 2, "kind": KIND, "files": [...], ...} plus
the fields of its kind:
  generator  the model folder inference loads ("config", "n_words", optional "model_card"):
             vocab.json, generator, text_encoder and image_encoder .safetensors, optionally
             discriminators.safetensors (import-original --netD);
  damsm      the two encoders the generator trains against ("config", "n_words", "metrics");
  oracle     the SynthBirds oracle (networks/oracle.py; its OracleConfig fields);
  judge      the SynthScenes judge (networks/scene_judge.py; its JudgeConfig fields);
  captioner  captioner.py's folder ("config", "n_words", "metrics").
write_folder writes one and read_folder checks one (format, version, kind, the listed files).

Every kind loads one way: `resolve(name_or_path, kind)` finds the folder (a folder, a run folder's
snapshot, or a bundled name), `load(name_or_path, kind)` reads and checks it and builds its
networks through the table KINDS, without initialising them first. Every weight is checked on
load (keys, shapes, dtype, finiteness: load_state), each problem a one-line AttnGANError naming
the file. Folders of the project's older layouts read as the current one through io_migrate.py.
Training states for --resume are training/checkpoint.py's.

Every write goes to a temporary beside its target and is renamed over it, so a process killed at
any moment leaves the last complete file (attngan.rundir removes the temporaries it leaves).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

from attngan.config import MAX_VOCABULARY, CaptionerConfig, Config, ConfigError
from attngan.errors import AttnGANError
from attngan.fileio import (atomic_write, atomic_write_json, check_format, publish_mode, read_json_object,
                            shown, tmp_dir_beside, tmp_path_beside)
from attngan.io_migrate import old_folder_kind, old_run_snapshot
from attngan.networks import build_discriminators, build_generator, build_image_encoder, build_text_encoder
from attngan.networks.captioner import build_captioner
from attngan.networks.oracle import AttributeOracle, OracleConfig, oracle_config
from attngan.text import Vocabulary

FOLDER_FORMAT = "attngan-model"
FOLDER_VERSION = 2
CONFIG_FILE = "config.json"
# What each kind of folder is called in messages.
KIND_NAMES = {"generator": "model", "damsm": "DAMSM", "oracle": "oracle", "captioner": "captioner",
              "judge": "scene judge"}


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
        # The previous version moves onto a fresh empty temporary folder (rename may replace an
        # empty folder), so a kill between the two renames leaves a name only the project makes.
        real_dir = target.is_dir() and not target.is_symlink()
        old = tmp_dir_beside(target) if real_dir else tmp_path_beside(target)
        os.replace(target, old)
        os.replace(tmp_dir, target)
        if real_dir:
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
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
        # float8 is floating point too, but torch cannot even test it for NaN.
        if value.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise AttnGANError(f"{name} is {str(value.dtype).removeprefix('torch.')}; "
                               "weights must be floating point (float16, bfloat16, float32 or float64)")
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise AttnGANError(f"{name} has {bad} NaN/inf value{'s' if bad > 1 else ''}")
    elif value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise AttnGANError(f"{name} is {str(value.dtype).removeprefix('torch.')}; "
                           f"the network holds {str(expected.dtype).removeprefix('torch.')} there")


def load_state(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """Fill `module` from the state dict `sd`, every tensor checked first (names, shapes, the kind
    of number, finiteness). A module built on the meta device (load's way: no initialisation to
    throw away) takes the tensors as its own; any other copies them in."""
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
    values = {k: v.to(own[k].dtype) for k, v in sd.items()}
    if not any(t.is_meta for t in own.values()):
        module.load_state_dict(values, strict=False)
        return
    for k, t in own.items():  # BatchNorm counters that folders of older layouts lack
        values.setdefault(k, torch.zeros(t.shape, dtype=t.dtype))
    module.load_state_dict(values, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:  # a tensor outside the state dict: the network must make it in a way load can see
        raise RuntimeError(f"{what}: {left[:3]} have no saved value")


# Saved-model folders: one writer, one reader.

def write_folder(folder: str | Path, kind: str, fields: dict[str, Any],
                 weights: dict[str, dict[str, torch.Tensor]], vocab: Vocabulary | None = None) -> Path:
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
    as the current one (io_migrate.old_folder_kind)."""
    folder = Path(folder)
    name = KIND_NAMES[kinds[0]]
    a_name = f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    if not folder.is_dir():
        raise AttnGANError(f"{name} folder {folder} does not exist")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise AttnGANError(f"{folder} is not {a_name} folder (it has no {CONFIG_FILE})")
    meta = read_json_object(path, f"{name} config")
    kind, files = old_folder_kind(meta), []
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


def config_from_meta(meta: dict[str, Any], path: Path, config_type: type = Config):
    """The validated config (a `config_type`: Config, or CaptionerConfig) under meta["config"];
    `path` (the file it came from) is named in errors. Validation includes the architecture limits
    (the `at_most` of every size field in config.py), so a config that asks for huge networks is
    refused here, before any is built."""
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise AttnGANError(f"{path} has no \"config\" object" if raw is None else
                           f"{path}: \"config\" must be a JSON object, got {type(raw).__name__}")
    try:
        return config_type.from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# Saving each kind.

def save_model_folder(out_dir: str | Path, cfg: Config, vocab: Vocabulary, generator: torch.nn.Module,
                      text_encoder: torch.nn.Module, image_encoder: torch.nn.Module,
                      half: bool = False, extra: dict[str, Any] | None = None,
                      discriminators: torch.nn.Module | None = None) -> Path:
    if getattr(generator, "is_fused", False):  # its BatchNorm layers are gone: no folder could load it
        raise AttnGANError("a generator with BatchNorm folded cannot be saved; load it with fuse=False")
    weights = {GENERATOR_FILE: state_dict_for_save(generator, half),
               TEXT_ENCODER_FILE: state_dict_for_save(text_encoder, half),
               IMAGE_ENCODER_FILE: state_dict_for_save(image_encoder, half)}
    if discriminators is not None:
        weights[DISCRIMINATORS_FILE] = state_dict_for_save(discriminators, half)
    fields = {"config": cfg.to_dict(), "n_words": len(vocab), **(extra or {})}
    return write_folder(out_dir, "generator", fields, weights, vocab)


def save_damsm_folder(folder: Path, cfg: Config, vocab: Vocabulary, text_encoder, image_encoder,
                      metrics: dict[str, Any] | None = None) -> Path:
    weights = {TEXT_ENCODER_FILE: state_dict_for_save(text_encoder),
               IMAGE_ENCODER_FILE: state_dict_for_save(image_encoder)}
    fields = {"config": cfg.to_dict(), "n_words": len(vocab), "metrics": metrics or {}}
    return write_folder(folder, "damsm", fields, weights, vocab)


# Loading: one resolver and one loader for every kind, driven by the table KINDS.
#
# Like a from_pretrained of a model hub: a name or a folder in, the folder's config.json read and
# validated, every network built from its config on the meta device (no random init that the
# weights would overwrite) and filled from its weights file, checked tensor by tensor.

GENERATOR_FILE = "generator.safetensors"
TEXT_ENCODER_FILE = "text_encoder.safetensors"
IMAGE_ENCODER_FILE = "image_encoder.safetensors"
DISCRIMINATORS_FILE = "discriminators.safetensors"
CAPTIONER_FILE = "captioner.safetensors"
ORACLE_FILE = "oracle.safetensors"
VOCAB_FILE = "vocab.json"
ASSETS = Path(__file__).parent / "assets"


def _generator(cfg: Config, n_words: int) -> torch.nn.Module:
    return build_generator(cfg, cfg.text.embedding_dim, init=False)


def _discriminators(cfg: Config, n_words: int) -> torch.nn.Module:
    return build_discriminators(cfg, init=False)


def _text_encoder(cfg: Config, n_words: int) -> torch.nn.Module:
    return build_text_encoder(cfg, n_words)


def _image_encoder(cfg: Config, n_words: int) -> torch.nn.Module:
    return build_image_encoder(cfg)


def _captioner(cfg: CaptionerConfig, n_words: int) -> torch.nn.Module:
    return build_captioner(cfg, n_words)


def _oracle(cfg: OracleConfig, n_words: int) -> torch.nn.Module:
    return AttributeOracle(cfg)


@dataclass(frozen=True)
class Part:
    """One network of a saved folder."""
    file: str                                          # its weights file in the folder
    build: Callable[[Any, int], torch.nn.Module]       # (config, vocabulary size) -> the network
    default: bool = True                               # built by load() unless `parts` says otherwise
    optional: bool = False                             # a folder may lack its file


@dataclass(frozen=True)
class Kind:
    """How a kind of saved thing is found, read and built."""
    folder_kinds: tuple[str, ...]                      # config.json kinds that serve (the first names it)
    read_config: Callable[[dict[str, Any], Path], Any]  # (config.json, its path) -> validated config
    parts: dict[str, Part]
    vocab: bool = True                                 # the folder holds vocab.json
    bundled: dict[str, str] = field(default_factory=dict)  # name -> folder under ASSETS; the first is the default
    run_snapshot: str | None = None                    # the folder inside a run folder that holds one
    old_run: Callable[[Path, Path], Path] | None = None  # (run, snapshot) -> the snapshot old runs meant


def _model_config(meta: dict[str, Any], path: Path) -> Config:
    return config_from_meta(meta, path)


def _captioner_config(meta: dict[str, Any], path: Path) -> CaptionerConfig:
    return config_from_meta(meta, path, CaptionerConfig)


ENCODERS = {"text_encoder": Part(TEXT_ENCODER_FILE, _text_encoder),
            "image_encoder": Part(IMAGE_ENCODER_FILE, _image_encoder)}
# Models shipped inside the package, by name; the first one found is the default.
BUNDLED_MODELS = ("synthbirds-128", "synthbirds-tiny", "synthscenes-128")
KINDS: dict[str, Kind] = {
    # The inference model folder; `attngan train` writes it as a run folder's model/.
    "generator": Kind(("generator",), _model_config,
                      {"generator": Part(GENERATOR_FILE, _generator), **ENCODERS,
                       "discriminators": Part(DISCRIMINATORS_FILE, _discriminators, default=False, optional=True)},
                      bundled={n: n for n in BUNDLED_MODELS}, run_snapshot="model"),
    # The two encoders the generator trains against; a model folder holds the ones its generator
    # was trained against, so it serves as a DAMSM too (and a bundled model's name names them).
    "damsm": Kind(("damsm", "generator"), _model_config, dict(ENCODERS),
                  bundled={**{n: n for n in BUNDLED_MODELS}, "synthbirds-eval": "synthbirds-eval/damsm_eval",
                           "synthscenes-eval": "synthscenes-eval/damsm_eval"},
                  run_snapshot="best", old_run=old_run_snapshot),
    "captioner": Kind(("captioner",), _captioner_config,
                      {"captioner": Part(CAPTIONER_FILE, _captioner)},
                      bundled={"synthbirds-captioner": "synthbirds-captioner",
                               "synthscenes-captioner": "synthscenes-captioner"}, run_snapshot="best"),
    "oracle": Kind(("oracle",), oracle_config, {"oracle": Part(ORACLE_FILE, _oracle)},
                   vocab=False, bundled={"synthbirds-eval": "synthbirds-eval/oracle"}),
}


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown kind of saved folder {kind!r}; one of {', '.join(KINDS)}")
    return KINDS[kind]


def bundled_names(kind: str) -> list[str]:
    """The names of the bundled folders of `kind` in this installation, the default first."""
    return [n for n, sub in _kind(kind).bundled.items() if (ASSETS / sub / CONFIG_FILE).is_file()]


def bundled_dir(kind: str, name: str | None = None) -> Path:
    """A folder of `kind` shipped inside the package: `name`, or the default one."""
    names, what = bundled_names(kind), KIND_NAMES[kind]
    if name is None:
        if not names:
            raise AttnGANError(f"no bundled {what} in this installation; pass a {what} folder")
        name = names[0]
    if name not in names:
        raise AttnGANError(f"no bundled {what} named '{name}'; bundled: {', '.join(names) or 'none'}")
    return ASSETS / _kind(kind).bundled[name]


def resolve(name_or_path: str | Path | None, kind: str) -> Path:
    """The folder of `kind` that `name_or_path` names: a folder of that kind; a run folder (its
    snapshot: a GAN run's model/, a DAMSM or captioner run's best/); the name of a bundled folder
    (a folder of that name wins); or None: the default bundled one. Whether it is a folder of that
    kind is read_folder's to check (load does)."""
    spec = _kind(kind)
    if name_or_path is None:
        return bundled_dir(kind)
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in spec.bundled:
        return bundled_dir(kind, str(name_or_path))
    if spec.run_snapshot is not None and (path / spec.run_snapshot / CONFIG_FILE).is_file():
        snapshot = path / spec.run_snapshot
        return spec.old_run(path, snapshot) if spec.old_run is not None else snapshot
    return path


@dataclass
class Loaded:
    """A saved folder read by `load`: where it is, its config.json, the validated config, the
    vocabulary (None for a kind without one) and the networks built, in eval mode."""
    kind: str
    folder: Path
    meta: dict[str, Any]
    config: Any
    vocab: Vocabulary | None
    modules: dict[str, torch.nn.Module] = field(default_factory=dict)

    def build(self, part: str, device: torch.device | str = "cpu") -> torch.nn.Module:
        """One more network of the folder (one that `load` was told to leave out)."""
        kind = _kind(self.kind)
        if kind.vocab and self.vocab is None:  # read() leaves it: the networks are sized by it
            self.vocab = _read_vocab(self.folder, self.meta, self.kind)
        spec = kind.parts[part]
        module = _build(spec, self.config, len(self.vocab) if self.vocab is not None else 0,
                        self.folder / spec.file)
        self.modules[part] = module.to(device).eval()
        return self.modules[part]


def read(name_or_path: str | Path | None, kind: str) -> Loaded:
    """A saved folder of `kind` (see resolve for what may name it), checked, with its validated
    config; no vocabulary read and no network built."""
    spec = _kind(kind)
    folder = resolve(name_or_path, kind)
    needs = ((VOCAB_FILE,) if spec.vocab else ()) + tuple(p.file for p in spec.parts.values() if not p.optional)
    meta = read_folder(folder, spec.folder_kinds, needs)
    return Loaded(kind, folder, meta, spec.read_config(meta, folder / CONFIG_FILE), None)


def load(name_or_path: str | Path | None, kind: str, device: torch.device | str = "cpu",
         parts: tuple[str, ...] | None = None) -> Loaded:
    """Read a saved folder of `kind` (see resolve for what may name it), its vocabulary, and build
    its networks: those of `parts`, or by default every part of the kind not marked otherwise (a
    model folder's discriminators are built only when asked for). Every problem is a one-line
    AttnGANError: the folder (read_folder), its config (validated, architecture limits included,
    before any network is built), its vocabulary, and every weight (load_state)."""
    spec = _kind(kind)
    unknown = [p for p in parts or () if p not in spec.parts]
    if unknown:
        raise ValueError(f"a {kind} folder has no part {unknown[0]!r}; its parts: {', '.join(spec.parts)}")
    loaded = read(name_or_path, kind)
    if spec.vocab:  # read here even when no network is asked for: callers use it
        loaded.vocab = _read_vocab(loaded.folder, loaded.meta, kind)
    for name, part in spec.parts.items():
        wanted = part.default if parts is None else name in parts
        if wanted and not (part.optional and not (loaded.folder / part.file).is_file()):
            loaded.build(name, device)
    return loaded


def _read_vocab(folder: Path, meta: dict[str, Any], kind: str) -> Vocabulary:
    vocab = Vocabulary.load(folder / VOCAB_FILE)
    n_words = meta.get("n_words", len(vocab))
    if len(vocab) != n_words:
        raise AttnGANError(f"{folder}: vocab.json has {len(vocab)} words, the {KIND_NAMES[kind]} "
                           f"was built for {shown(n_words)}")
    if len(vocab) > MAX_VOCABULARY:
        raise AttnGANError(f"{folder}: vocab.json has {len(vocab)} words; at most {MAX_VOCABULARY} "
                           "are accepted (the word embedding is sized by it)")
    return vocab


def _build(part: Part, config: Any, n_words: int, weights: Path) -> torch.nn.Module:
    """The network of `part`, built without initialising it and filled from `weights` (named in
    every error)."""
    sd = load_safetensors(weights)
    with torch.device("meta"), _SkipFills():
        module = part.build(config, n_words)
    load_state(module, sd, str(weights))
    return module


# In-place methods that change what a tensor is, not what it holds: never skipped.
_SHAPING = {"requires_grad_", "resize_", "set_", "as_strided_", "squeeze_", "unsqueeze_", "transpose_",
            "t_", "swapdims_", "swapaxes_", "share_memory_", "retain_grad"}


class _SkipFills(TorchFunctionMode):
    """Skips the in-place fills of a network's constructor (its random init) on meta tensors: the
    saved weights replace them, and on the meta device several (normal_, clamp_) are Python code
    that loads torch's compiler stack on first use, seconds and a hundred megabytes, to fill
    nothing."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by name
        if (name.endswith("_") and not name.startswith("_") and name not in _SHAPING
                and isinstance(target, torch.Tensor) and target.is_meta):
            return target
        return func(*args, **kwargs)


# The older entry points, each one line over resolve/load.

def resolve_model(model: str | Path | None) -> Path:
    """A model folder, a GAN run folder (its model/), the name of a bundled model (a folder of that
    name wins), or None: the default."""
    return resolve(model, "generator")


def bundled_model_names() -> list[str]:
    return bundled_names("generator")


def bundled_model_dir(name: str | None = None) -> Path:
    """A model shipped inside the package: `name` (e.g. "synthbirds-tiny") or the default one."""
    return bundled_dir("generator", name)


def read_model_config(model_dir: str | Path) -> tuple[Config, dict[str, Any]]:
    """(the validated Config, the whole config.json) of a model folder, checked (read_folder);
    no network is built."""
    loaded = read(model_dir, "generator")
    return loaded.config, loaded.meta


def damsm_folder(path: str | Path) -> Path:
    """The folder whose encoders `path` names: a DAMSM run folder's snapshot, a snapshot folder, or
    a model folder or bundled name; checked (read_folder)."""
    return read(path, "damsm").folder


def read_damsm_config(path: str | Path) -> Config:
    """The config the encoders of `path` (see damsm_folder) were built with, without loading them."""
    return read(path, "damsm").config


def load_damsm(path: str | Path, device: torch.device | str = "cpu"):
    """A DAMSM run folder, a snapshot folder, or a model folder or bundled name (its encoders)
    -> (cfg, vocab, text encoder, image encoder), in eval mode."""
    loaded = load(path, "damsm", device)
    return loaded.config, loaded.vocab, loaded.modules["text_encoder"], loaded.modules["image_encoder"]


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
