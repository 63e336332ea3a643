"""Typed configuration: dataclasses, named presets, YAML overrides.

One `Config` holds every section; `train-damsm` reads `data`, `text` and `damsm`, `train` reads
`data`, `text`, `gan` and `train`. Presets mirror the original release's yml files
(the original code, code/cfg/*.yml); `tiny` is ours, sized for 2 CPU cores.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attngan.errors import AttnGANError, check_seed


class ConfigError(AttnGANError, ValueError):
    """A config file or override that cannot be applied (unknown key, wrong type)."""


@dataclass
class DataConfig:
    dataset: str = "birds"           # birds (CUB / SynthBirds: bbox crop) | coco (no bbox)
    base_size: int = 64              # first stage resolution
    branch_num: int = 3              # number of stages: 64, 128, 256
    captions_per_image: int = 10     # CUB 10, COCO 5
    words_num: int = 18              # longer captions keep a random ordered subset
    workers: int = 2                 # DataLoader workers
    cache: bool = False              # pre-resized bbox crops instead of full JPEG decoding
    short_captions: str = "skip"     # caption files with too few lines: skip | pad
    max_bad_fraction: float = 0.01   # abort when more images than this are unreadable
    vocab_min_count: int = 1         # new data: words seen fewer times in the train captions are dropped
    shuffle_buffer: int = 1000       # WebDataset shards: samples held for shuffling (0/1: stream order)

    @property
    def image_size(self) -> int:     # the last stage's resolution
        return self.base_size * 2 ** (self.branch_num - 1)


@dataclass
class TextConfig:
    embedding_dim: int = 256         # nef: word and sentence feature size (both directions)
    word_dim: int = 300              # token embedding size
    rnn_type: str = "LSTM"           # LSTM | GRU
    dropout: float = 0.5             # on the token embeddings, train mode only
    sentence: str = "last"           # sentence feature: last (original: final LSTM states) | mean


@dataclass
class DAMSMConfig:
    backbone: str = "inception"      # inception (paper, 17x17 regions) | small (CPU presets)
    image_size: int = 299            # encoder input; data is cropped to this for pretraining
    small_width: int = 64            # channels of the small CNN's first block
    small_pool: str = "avg"          # small CNN's global code: avg | avgmax (mean and max, concatenated)
    inception_weights: str = ""      # local torchvision inception_v3_google-*.pth; never downloaded
    align_corners: bool = False      # True reproduces the published encoders' resize
    gamma1: float = 4.0              # attention sharpness over regions (Eq. 9)
    gamma2: float = 5.0              # word-score aggregation (Eq. 10)
    gamma3: float = 10.0             # similarity scale in the posterior (Eq. 11)
    words_num: int = 18
    batch_size: int = 48
    lr: float = 2e-3
    betas: tuple[float, float] = (0.5, 0.999)
    lr_decay: float = 0.98           # per epoch, while lr > min_lr
    min_lr: float = 2e-4
    reset_optimizer: bool = True     # the original re-creates Adam every epoch (moments lost)
    amp: str = "off"                 # image encoder + word-loss matmul in bf16: off | bf16 | auto (where native)
    channels_last: bool = False      # image encoder in NHWC memory layout (faster oneDNN convs on CPU)
    rnn_grad_clip: float = 0.25
    epochs: int = 600
    snapshot_epochs: int = 50
    max_bad_steps: int = 20          # NaN/inf steps tolerated before aborting


@dataclass
class GANConfig:
    gf_dim: int = 32                 # ngf; stage 1 starts at 16*ngf x 4 x 4
    df_dim: int = 64                 # ndf
    z_dim: int = 100
    condition_dim: int = 100         # conditioning-augmentation output size
    r_num: int = 2                   # residual blocks per refinement stage
    dcgan: bool = False              # AttnDCGAN: one image head, one conditional D


@dataclass
class TrainConfig:
    batch_size: int = 20
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    damsm_lambda: float = 5.0        # lambda in L = L_GAN + lambda L_DAMSM
    kl_weight: float = 1.0
    ema_decay: float = 0.999
    total_kimg: float = 5313.0       # 600 epochs of 8,855 images
    snapshot_kimg: float = 100.0
    sample_kimg: float = 20.0
    log_kimg: float = 2.0
    minutes: float = 0.0             # wall-clock budget; 0 = none
    max_bad_steps: int = 20
    # Speed switches; each is benchmarked against all-off in the same run.
    # off | auto (bf16 where the CPU/GPU has it natively, else float32) | bf16 (forced, CPU or CUDA)
    # | fp16 (CUDA, grad scaler); G, the Ds and the image encoder only: losses and softmaxes stay fp32.
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False            # torch.compile G and the Ds
    sync_bn: bool = False            # SyncBatchNorm under DDP
    freeze_d_in_g_step: bool = True  # no D weight gradients during the G update
    reuse_real_features: bool = True  # mismatched-pair term reuses D(real)'s image code


@dataclass
class Config:
    name: str = "bird"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    damsm: DAMSMConfig = field(default_factory=DAMSMConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        return apply_overrides(cls(), d)


def _bird() -> Config:
    return Config(name="bird")


def _bird_attn1() -> Config:
    c = _bird()
    c.name = "bird-attn1"
    c.data.branch_num = 2            # AttnGAN1: 64 -> 128, one attention model
    return c


def _bird_dcgan() -> Config:
    c = _bird()
    c.name = "bird-dcgan"
    c.gan.r_num = 0
    c.gan.dcgan = True
    c.train.batch_size = 30
    c.train.damsm_lambda = 1.0
    c.train.total_kimg = 400 * 8855 / 1000
    return c


def _coco() -> Config:
    c = Config(name="coco")
    c.data.dataset = "coco"
    c.data.captions_per_image = 5
    c.data.words_num = 12
    c.damsm.words_num = 15
    c.damsm.snapshot_epochs = 5
    c.gan.gf_dim = 48
    c.gan.df_dim = 96
    c.gan.r_num = 3
    c.train.batch_size = 14
    c.train.damsm_lambda = 50.0
    c.train.total_kimg = 120 * 82783 / 1000
    return c


def _tiny() -> Config:
    # CPU-sized: 32 -> 64 px, small DAMSM CNN with 8x8 regions, narrow G and D.
    c = Config(name="tiny")
    c.data.base_size = 32
    c.data.branch_num = 2
    # SynthBirds captions run longer than CUB's (a quarter exceed 18 words); a random 18-word subset
    # would often drop the very colour words the tiny models must learn from.
    c.data.words_num = 24
    c.damsm.words_num = 24
    # A mean-pooled sentence and a wider bi-LSTM: the final-state sentence of a 64-unit LSTM was
    # the slowest part of the tiny DAMSM to learn (docs/experiments.md, "The tiny DAMSM").
    c.text.embedding_dim = 256
    c.text.word_dim = 128
    c.text.sentence = "mean"
    c.damsm.backbone = "small"
    c.damsm.image_size = 64
    c.damsm.small_width = 32
    # At a 10-minute budget the tiny encoders underfit (docs/experiments.md), so:
    # no embedding dropout, one Adam for the run (the original's per-epoch reset throws its moments
    # away), and a global code that keeps the max of the top map so a small red crown is not
    # averaged away. Each raised the R-precision reached in 10 minutes on SynthBirds.
    c.text.dropout = 0.0
    c.damsm.small_pool = "avgmax"
    c.damsm.reset_optimizer = False
    # Faster steps, same model: the image encoder and the
    # word loss's region-word matmul in bf16 where the CPU/GPU has it natively (else float32),
    # the image encoder in NHWC.
    c.damsm.amp = "auto"
    c.damsm.channels_last = True
    c.damsm.batch_size = 32
    c.damsm.epochs = 40
    c.damsm.snapshot_epochs = 5
    c.gan.gf_dim = 16
    c.gan.df_dim = 16
    c.gan.z_dim = 32
    c.gan.condition_dim = 32
    c.gan.r_num = 1
    c.train.batch_size = 32
    c.train.total_kimg = 60.0
    c.train.snapshot_kimg = 10.0
    c.train.sample_kimg = 5.0
    c.train.log_kimg = 0.5
    c.train.ema_decay = 0.99
    c.train.amp = "auto"             # bf16 on CPUs/GPUs with native bf16, float32 elsewhere
    return c


def _synthbirds_128() -> Config:
    # AttnGAN2's structure (three stages, two word-attention models) at CPU size: 32 -> 64 -> 128 px.
    # The lower two stages have exactly the `tiny` shapes, so the shipped two-stage model can be
    # grown into it (`attngan train --init`, see MODEL.md); the DAMSM is tiny's (64 px input: the
    # top image is resized to it, as the paper's Inception encoder resizes to 299).
    c = _tiny()
    c.name = "synthbirds-128"
    c.data.branch_num = 3
    c.train.total_kimg = 100.0
    return c


def _coco_tiny() -> Config:
    # COCO's data settings (5 captions an image, no bbox crop) on the `tiny` models, sized for
    # 2 CPU cores; made for SynthScenes (`attngan synth-scenes`). Words: a SynthScenes caption
    # naming two groups runs to 22 words, and COCO's 12 would drop the colours and places the
    # models must learn from.
    c = _tiny()
    c.name = "coco-tiny"
    c.data.dataset = "coco"
    c.data.captions_per_image = 5
    return c


PRESETS = {
    "bird": _bird,
    "bird-attn1": _bird_attn1,
    "bird-dcgan": _bird_dcgan,
    "coco": _coco,
    "tiny": _tiny,
    "coco-tiny": _coco_tiny,
    "synthbirds-128": _synthbirds_128,
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def apply_overrides(cfg: Config, overrides: dict[str, Any], _path: str = "") -> Config:
    """Return a copy of `cfg` with nested `overrides` applied; unknown keys and wrong types fail."""
    cfg = copy.deepcopy(cfg)
    _apply(cfg, overrides, _path)
    validate(cfg)
    return cfg


def _apply(obj: Any, overrides: dict[str, Any], path: str) -> None:
    if not isinstance(overrides, dict):
        raise ConfigError(f"'{path or 'config'}' must be a mapping, got {type(overrides).__name__}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in overrides.items():
        name = f"{path}.{key}" if path else key
        if key not in fields:
            raise ConfigError(f"unknown config key '{name}'")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, name)
            continue
        setattr(obj, key, _coerce(current, value, name))


def _coerce(current: Any, value: Any, name: str) -> Any:
    # Ints are accepted where floats are expected (YAML writes 5 for 5.0); nothing else converts.
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"'{name}' must be true or false, got {value!r}")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{name}' must be a number, got {value!r}")
        return float(value)
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{name}' must be an integer, got {value!r}")
        return value
    if isinstance(current, tuple):
        if (not isinstance(value, (list, tuple)) or len(value) != len(current)
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)):
            raise ConfigError(f"'{name}' must be a list of {len(current)} numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise ConfigError(f"'{name}' must be a string, got {value!r}")
        return value
    return value


def load_config(spec: str, overrides: dict[str, Any] | None = None) -> Config:
    """A preset name, a YAML/JSON file of our keys (may set `preset:`), or an original .yml."""
    if spec in PRESETS:
        cfg = preset(spec)
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"'{spec}' is neither a preset ({', '.join(PRESETS)}) nor a config file")
        cfg = _load_file(path)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


# Validation: the ranges and choices every command relies on. A resolved config (preset, file,
# overrides, a saved model's config.json) is checked as a whole, so a bad value is one line that
# names its key, before any data is read or any file is written.

_CHOICES: dict[str, tuple[str, ...]] = {
    "data.dataset": ("birds", "coco"),
    "data.short_captions": ("skip", "pad"),
    "text.rnn_type": ("LSTM", "GRU"),
    "text.sentence": ("last", "mean"),
    "damsm.backbone": ("inception", "small"),
    "damsm.small_pool": ("avg", "avgmax"),
    "damsm.amp": ("off", "auto", "bf16"),
    "train.amp": ("off", "auto", "bf16", "fp16"),
}
_AT_LEAST_ONE = (
    "data.base_size", "data.branch_num", "data.captions_per_image", "data.words_num",
    "data.vocab_min_count",
    "text.embedding_dim", "text.word_dim",
    "damsm.image_size", "damsm.small_width", "damsm.words_num", "damsm.batch_size",
    "damsm.snapshot_epochs",
    "gan.gf_dim", "gan.df_dim", "gan.z_dim", "gan.condition_dim",
    "train.batch_size",
)
_AT_LEAST_ZERO = ("data.workers", "data.shuffle_buffer", "damsm.epochs", "damsm.max_bad_steps", "gan.r_num",
                  "train.max_bad_steps")
_POSITIVE = ("damsm.gamma1", "damsm.gamma2", "damsm.gamma3", "damsm.lr", "damsm.rnn_grad_clip",
             "train.lr_g", "train.lr_d", "train.total_kimg", "train.snapshot_kimg",
             "train.sample_kimg", "train.log_kimg")
_NON_NEGATIVE = ("damsm.min_lr", "train.damsm_lambda", "train.kl_weight", "train.minutes")
# (low, high, high included): a dropout of 1 would zero every embedding; an lr_decay above 1
# would grow the learning rate without end (it is applied while lr > min_lr).
_RANGES: dict[str, tuple[float, float, bool]] = {
    "data.max_bad_fraction": (0.0, 1.0, True),
    "text.dropout": (0.0, 1.0, False),
    "train.ema_decay": (0.0, 1.0, True),
}
_BETAS = ("damsm.betas", "train.betas")
# Upper bounds of the run's sizes, far above any real run or machine: a typo such as
# data.workers=100000 or --kimg 1e308 is one line instead of a machine taken down or a run that
# never ends. (The sizes of the networks are ARCHITECTURE_LIMITS, below.)
_AT_MOST: dict[str, float] = {
    "data.workers": 256,
    "data.captions_per_image": 1000,
    "train.total_kimg": 1e6,
}
# Upper bounds of the sizes that decide how large the networks are, checked before any is built:
# a saved model's config.json is read from disk, and a gan.gf_dim of 1024 or an r_num of a
# million would otherwise allocate gigabytes before failing. Each is at least twice what the
# original release's configs and presets use (gf_dim 128 is the original's default, df_dim 96
# and r_num 3 its COCO model's, image sizes 256 and 299), so real models pass.
ARCHITECTURE_LIMITS: dict[str, int] = {
    "data.base_size": 256, "data.branch_num": 5, "data.words_num": 256,
    "text.embedding_dim": 1024, "text.word_dim": 1024,
    "damsm.image_size": 1024, "damsm.small_width": 256, "damsm.words_num": 256,
    "gan.gf_dim": 256, "gan.df_dim": 192, "gan.z_dim": 1024, "gan.condition_dim": 1024, "gan.r_num": 16,
}
MAX_IMAGE_SIZE = 1024             # the last stage's resolution (base_size * 2 ** (branch_num - 1))
MAX_VOCABULARY = 200_000          # words of a saved model's vocabulary (COCO's has 27,297)
CAPTIONER_LIMITS: dict[str, int] = {
    "image_size": 1024, "width": 256, "embed_dim": 1024, "hidden_dim": 4096, "attention_dim": 2048,
    "max_len": 512,
}


def check_architecture(cfg: Config) -> None:
    """The sizes of ARCHITECTURE_LIMITS and MAX_IMAGE_SIZE; the first too large is a ConfigError."""
    for key, high in ARCHITECTURE_LIMITS.items():
        if _number(key, _get(cfg, key), int) > high:
            raise ConfigError(f"'{key}' must be at most {high}, got {_get(cfg, key)!r}")
    if cfg.data.image_size > MAX_IMAGE_SIZE:
        raise ConfigError(f"the last stage's image size (data.base_size * 2 ** (data.branch_num - 1)) must be "
                          f"at most {MAX_IMAGE_SIZE}, got {cfg.data.image_size}")


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _number(key: str, value: Any, kind: type) -> float:
    # Configs built in Python bypass _coerce: check the type here too, so the ranges below compare
    # numbers (and a NaN, which fails every comparison, cannot slip through).
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ConfigError(f"'{key}' must be {'a number' if kind is float else 'an integer'}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"'{key}' must be a finite number, got {value!r}")
    return value


def validate(cfg: Config) -> Config:
    """Check ranges and choices of every section; the first problem is a ConfigError (one line,
    naming the key and the value). Returns `cfg` unchanged."""
    try:
        check_seed(cfg.seed)
    except AttnGANError:
        raise ConfigError(f"'seed' must be an integer from 0 to 2**63 - 1, got {cfg.seed!r}") from None
    for key, choices in _CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(f"'{key}' must be one of {', '.join(choices)}, got {value!r}")
    for key in _AT_LEAST_ONE:
        if _number(key, _get(cfg, key), int) < 1:
            raise ConfigError(f"'{key}' must be at least 1, got {_get(cfg, key)!r}")
    for key in _AT_LEAST_ZERO:
        if _number(key, _get(cfg, key), int) < 0:
            raise ConfigError(f"'{key}' must be 0 or more, got {_get(cfg, key)!r}")
    for key in _POSITIVE:
        if _number(key, _get(cfg, key), float) <= 0:
            raise ConfigError(f"'{key}' must be greater than 0, got {_get(cfg, key)!r}")
    for key in _NON_NEGATIVE:
        if _number(key, _get(cfg, key), float) < 0:
            raise ConfigError(f"'{key}' must be 0 or more, got {_get(cfg, key)!r}")
    for key, (low, high, closed) in _RANGES.items():
        value = _number(key, _get(cfg, key), float)
        if not (low <= value <= high if closed else low <= value < high):
            raise ConfigError(f"'{key}' must be from {low:g} to {high:g}"
                              f"{'' if closed else ' (exclusive)'}, got {value!r}")
    for key, high in _AT_MOST.items():
        if _get(cfg, key) > high:
            raise ConfigError(f"'{key}' must be at most {high:g}, got {_get(cfg, key)!r}")
    lr_decay = _number("damsm.lr_decay", cfg.damsm.lr_decay, float)
    if not 0 < lr_decay <= 1:
        raise ConfigError(f"'damsm.lr_decay' must be greater than 0 and at most 1, got {lr_decay!r}")
    for key in _BETAS:
        betas = _get(cfg, key)
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1
                       for b in betas)):
            raise ConfigError(f"'{key}' must be two numbers, each from 0 to 1 (exclusive), got {betas!r}")
    if cfg.text.embedding_dim % 2:
        raise ConfigError(f"'text.embedding_dim' must be even (half per direction of the bi-RNN), "
                          f"got {cfg.text.embedding_dim}")
    check_architecture(cfg)
    return cfg


# --- The original release's .yml configs ------------------------------------------------------
# Read by load_config (upper-case keys); here rather than in legacy.py so that config imports
# nothing of the package beyond errors.

# code/miscc/config.py (commit 0d000e6): every key the original merge accepts, with its default.
# (the original code, code/miscc/config.py)
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


def config_from_original_yml(raw: dict[str, Any]) -> Config:
    """Our Config for an original AttnGAN .yml (GAN, eval or DAMSM), as the original would run it.

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
    damsm = is_damsm_yml(o)
    if damsm:
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
    return apply_overrides(preset(base), overrides)


# Configs are small: these bounds refuse hostile YAML (an alias "billion laughs" bomb, a file
# nested thousands deep) in milliseconds, long before it could cost memory or blow the stack.
YAML_MAX_DEPTH = 50
YAML_MAX_NODES = 100_000
YAML_MAX_BYTES = 1_000_000

_YAML_LOADER = None


def _yaml_loader():
    """The loader class of yaml_load, built once (yaml is imported only when a config is read)."""
    global _YAML_LOADER
    if _YAML_LOADER is not None:
        return _YAML_LOADER
    import re

    import yaml
    from yaml.events import AliasEvent

    class Loader(yaml.SafeLoader):
        def compose_document(self):
            self._depth, self._nodes = 0, 0
            return super().compose_document()

        def compose_node(self, parent, index):
            if self.check_event(AliasEvent):
                raise yaml.composer.ComposerError(
                    None, None, "YAML aliases (*name) are not accepted in a config; write the value out",
                    self.peek_event().start_mark)
            self._nodes += 1
            if self._nodes > YAML_MAX_NODES:
                raise yaml.composer.ComposerError(None, None, f"more than {YAML_MAX_NODES} values",
                                                  self.peek_event().start_mark)
            self._depth += 1
            if self._depth > YAML_MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {YAML_MAX_DEPTH} deep",
                                                  self.peek_event().start_mark)
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    bool_tag = "tag:yaml.org,2002:bool"
    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != bool_tag]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    # YAML 1.1 wants a dot and a signed exponent in a float: 1e-3 and 2.5e3 would stay strings, and a
    # learning rate written the usual way be refused as "must be a number".
    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
                                 list("-+0123456789."))
    _YAML_LOADER = Loader
    return Loader


def yaml_load(text: str) -> Any:
    """yaml.safe_load, except that only true/false are booleans (YAML 1.1 also reads on/off/yes/no
    as booleans, which turned `amp: off`, a documented value, into False and a type error), 1e-3 is
    a number, and aliases, deep nesting and huge documents are refused (yaml.YAMLError)."""
    import yaml

    if len(text) > YAML_MAX_BYTES:
        raise yaml.YAMLError(f"a config is at most {YAML_MAX_BYTES} characters, got {len(text)}")
    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass


def _load_file(path: Path) -> Config:
    import yaml

    try:
        raw = yaml_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse config {path}: {e}".splitlines()[0]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    # The original release's yml files use upper-case keys (TREE.BRANCH_NUM, GAN.GF_DIM, ...).
    if raw and all(isinstance(k, str) and k.isupper() for k in raw):
        return config_from_original_yml(raw)
    raw = dict(raw)
    base = preset(raw.pop("preset", "bird"))
    return apply_overrides(base, raw)


# The image captioner (`attngan train-captioner`, networks/captioner.py): its own config, since it
# shares only the data layout with the text-to-image model.

@dataclass
class CaptionerConfig:
    name: str = "captioner"
    seed: int = 0
    data: DataConfig = field(default_factory=lambda: DataConfig(workers=0, short_captions="pad"))
    image_size: int = 64             # encoder input; regions are an (image_size / 8)^2 grid
    width: int = 32                  # first conv block's channels; regions have 4x as many
    init_encoder: str = ""           # a DAMSM folder whose `small` image trunk starts the region encoder
    embed_dim: int = 128             # word embedding size
    hidden_dim: int = 256            # LSTM units
    attention_dim: int = 128         # hidden size of the soft attention
    dropout: float = 0.3             # before the output layer
    max_len: int = 40                # tokens (commas count) learned and decoded, <end> excluded
    batch_size: int = 64
    lr: float = 1e-3                 # Adam
    betas: tuple[float, float] = (0.9, 0.999)
    lr_decay: float = 0.9            # per epoch
    grad_clip: float = 5.0           # global gradient norm
    attention_reg: float = 1.0       # lambda of the doubly stochastic attention penalty (SAT Eq. 14)
    epochs: int = 20
    eval_images: int = 500           # test images decoded after each epoch
    beam_size: int = 3               # the saved model's default decoding (1 = greedy)
    mention: str = ""                # word groups every caption must name, "wings|wing;belly" (constrained beam)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CaptionerConfig":
        cfg = cls()
        _apply(cfg, d, "")
        return validate_captioner(cfg)


def _captioner() -> CaptionerConfig:
    return CaptionerConfig(name="captioner")


def _synthbirds_captioner() -> CaptionerConfig:
    # Ten epochs over the 8,837 SynthBirds training images take about 25 minutes on one CPU thread
    # beside other work (the shipped captioner is epoch 8 of such a run, MODEL.md). Batches of 128:
    # on one thread the decoder's 20-odd small steps cost about as much for 128 captions as for 64
    # (measured: 0.34 s vs 0.37 s forward), so images per second nearly double.
    c = CaptionerConfig(name="synthbirds-captioner")
    c.data.cache = True
    c.batch_size = 128
    c.lr = 2e-3
    c.epochs = 10
    # Decoding: the captioner reads wing colours as well as belly colours when asked (100% with
    # "a bird with wings that are" as the prefix) but its most likely caption rarely names the
    # wings, so captions must name the two parts every demo prompt names, one hypothesis per
    # constraint state (wider beams ranked by mean log-probability preferred "the wings and belly
    # are white", shorter and wrong more often; MODEL.md has the measurements).
    c.beam_size = 1
    c.mention = "wings|wing;belly|abdomen"
    return c


CAPTIONER_PRESETS = {"captioner": _captioner, "synthbirds-captioner": _synthbirds_captioner}


def load_captioner_config(spec: str, overrides: dict[str, Any] | None = None) -> CaptionerConfig:
    """A captioner preset name, or a YAML/JSON file of CaptionerConfig keys (may set `preset:`)."""
    if spec in CAPTIONER_PRESETS:
        cfg = CAPTIONER_PRESETS[spec]()
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"'{spec}' is neither a captioner preset ({', '.join(CAPTIONER_PRESETS)}) "
                              "nor a config file")
        import yaml

        try:
            raw = yaml_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot parse config {path}: {e}".splitlines()[0]) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
        raw = dict(raw)
        name = raw.pop("preset", "captioner")
        if name not in CAPTIONER_PRESETS:
            raise ConfigError(f"unknown captioner preset '{name}'; choose one of {', '.join(CAPTIONER_PRESETS)}")
        cfg = CAPTIONER_PRESETS[name]()
        _apply(cfg, raw, "")
    if overrides:
        cfg = copy.deepcopy(cfg)
        _apply(cfg, overrides, "")
    return validate_captioner(cfg)


def validate_captioner(cfg: CaptionerConfig) -> CaptionerConfig:
    """Ranges and choices of a captioner config; the first problem is a one-line ConfigError."""
    try:
        check_seed(cfg.seed)
    except AttnGANError:
        raise ConfigError(f"'seed' must be an integer from 0 to 2**63 - 1, got {cfg.seed!r}") from None
    if cfg.data.dataset not in _CHOICES["data.dataset"]:
        raise ConfigError(f"'data.dataset' must be one of {', '.join(_CHOICES['data.dataset'])}, "
                          f"got {cfg.data.dataset!r}")
    for key in ("width", "embed_dim", "hidden_dim", "attention_dim", "max_len", "batch_size",
                "eval_images", "beam_size", "data.captions_per_image"):
        obj, name = (cfg.data, key[5:]) if key.startswith("data.") else (cfg, key)
        if _number(key, getattr(obj, name), int) < 1:
            raise ConfigError(f"'{key}' must be at least 1, got {getattr(obj, name)!r}")
    for key in ("epochs", "data.workers"):
        obj, name = (cfg.data, key[5:]) if key.startswith("data.") else (cfg, key)
        if _number(key, getattr(obj, name), int) < 0:
            raise ConfigError(f"'{key}' must be 0 or more, got {getattr(obj, name)!r}")
    for key, high in CAPTIONER_LIMITS.items():
        if _number(key, getattr(cfg, key), int) > high:
            raise ConfigError(f"'{key}' must be at most {high}, got {getattr(cfg, key)!r}")
    for key, high in (("data.workers", _AT_MOST["data.workers"]), ("beam_size", 100)):
        obj, name = (cfg.data, key[5:]) if key.startswith("data.") else (cfg, key)
        if getattr(obj, name) > high:
            raise ConfigError(f"'{key}' must be at most {high:g}, got {getattr(obj, name)!r}")
    if _number("image_size", cfg.image_size, int) < 8 or cfg.image_size % 8:
        raise ConfigError(f"'image_size' must be a positive multiple of 8, got {cfg.image_size!r}")
    for key in ("lr", "grad_clip"):
        if _number(key, getattr(cfg, key), float) <= 0:
            raise ConfigError(f"'{key}' must be greater than 0, got {getattr(cfg, key)!r}")
    if _number("attention_reg", cfg.attention_reg, float) < 0:
        raise ConfigError(f"'attention_reg' must be 0 or more, got {cfg.attention_reg!r}")
    if not 0 <= _number("dropout", cfg.dropout, float) < 1:
        raise ConfigError(f"'dropout' must be from 0 to 1 (exclusive), got {cfg.dropout!r}")
    if not 0 < _number("lr_decay", cfg.lr_decay, float) <= 1:
        raise ConfigError(f"'lr_decay' must be greater than 0 and at most 1, got {cfg.lr_decay!r}")
    betas = cfg.betas
    if (not isinstance(betas, (tuple, list)) or len(betas) != 2
            or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1 for b in betas)):
        raise ConfigError(f"'betas' must be two numbers, each from 0 to 1 (exclusive), got {betas!r}")
    return cfg
