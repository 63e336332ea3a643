"""Typed configuration: dataclasses and named presets, each field's limits beside its default.

One `Config` holds every section; `train-damsm` reads `data`, `text` and `damsm`, `train` reads
`data`, `text`, `gan` and `train`. Presets mirror the original release's yml files
(the original code, code/cfg/*.yml); `tiny` is ours, sized for 2 CPU cores. The captioner has its
own `CaptionerConfig` and presets. Reading, overriding and validating any of them is config_io's
job, from the limits declared here (`param(default, at_least=..., at_most=...)`); the original's
yml files are translated by legacy_yml.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from attngan.config_io import (ConfigError, apply_overrides, from_dict, load, param, pick, validate,
                               yaml_load)
from attngan.legacy_yml import is_original_yml, original_yml_overrides

__all__ = [
    "ConfigError", "DataConfig", "TextConfig", "DAMSMConfig", "DAMSMTrainConfig", "DAMSMSection",
    "GANConfig", "TrainConfig", "Config", "CaptionerConfig", "PRESETS", "CAPTIONER_PRESETS",
    "MAX_IMAGE_SIZE", "MAX_VOCABULARY", "preset", "load_config", "load_captioner_config",
    "apply_overrides", "validate", "yaml_load",
]

# Upper bounds: a typo such as data.workers=100000 or --kimg 1e308 is one line instead of a
# machine taken down or a run that never ends. The sizes that decide how large the networks are
# (the `at_most` of base_size, branch_num, words_num, embedding_dim, word_dim, the DAMSM's
# image_size and small_width, every GAN size) are checked before any network is built: a saved
# model's config.json is read from disk, and a gan.gf_dim of 1024 or an r_num of a million would
# otherwise allocate gigabytes before failing. Each is at least twice what the original release's
# configs and presets use (gf_dim 128 is the original's default, df_dim 96 and r_num 3 its COCO
# model's, image sizes 256 and 299), so real models pass.
MAX_IMAGE_SIZE = 1024             # the last stage's resolution (base_size * 2 ** (branch_num - 1))
MAX_VOCABULARY = 200_000          # words of a saved model's vocabulary (COCO's has 27,297)


@dataclass
class DataConfig:
    # birds (CUB / SynthBirds: bbox crop) | coco (no bbox)
    dataset: str = param("birds", choices=("birds", "coco"))
    base_size: int = param(64, at_least=1, at_most=256)   # first stage resolution
    branch_num: int = param(3, at_least=1, at_most=5)     # number of stages: 64, 128, 256
    captions_per_image: int = param(10, at_least=1, at_most=1000)  # CUB 10, COCO 5
    words_num: int = param(18, at_least=1, at_most=256)   # longer captions keep a random ordered subset
    workers: int = param(2, at_least=0, at_most=256)      # DataLoader workers
    cache: bool = False              # pre-resized bbox crops instead of full JPEG decoding
    short_captions: str = param("skip", choices=("skip", "pad"))  # caption files with too few lines: skip | pad
    max_bad_fraction: float = param(0.01, range=(0.0, 1.0))  # abort when more images than this are unreadable
    # new data: words seen fewer times in the train captions are dropped
    vocab_min_count: int = param(1, at_least=1)
    # WebDataset shards: samples held for shuffling (0/1: stream order)
    shuffle_buffer: int = param(1000, at_least=0)

    @property
    def image_size(self) -> int:     # the last stage's resolution
        return self.base_size * 2 ** (self.branch_num - 1)

    def check(self) -> None:
        if self.image_size > MAX_IMAGE_SIZE:
            raise ConfigError(f"the last stage's image size (data.base_size * 2 ** (data.branch_num - 1)) must be "
                              f"at most {MAX_IMAGE_SIZE}, got {self.image_size}")


@dataclass
class TextConfig:
    # nef: word and sentence feature size (both directions)
    embedding_dim: int = param(256, at_least=1, at_most=1024, multiple_of=2,
                               why="half per direction of the bi-RNN")
    word_dim: int = param(300, at_least=1, at_most=1024)  # token embedding size
    rnn_type: str = param("LSTM", choices=("LSTM", "GRU"))
    # A dropout of 1 would zero every embedding.
    dropout: float = param(0.5, range=(0.0, 1.0), open="high")  # on the token embeddings, train mode only
    sentence: str = param("last", choices=("last", "mean"))  # last (original: final LSTM states) | mean


# The DAMSM's settings are two jobs, as the GAN's are (GANConfig, TrainConfig): what the encoders
# are, and how they are pretrained. Saved configs, presets and `--set damsm.X` keep them under the
# one key `damsm` (DAMSMSection has the fields of both), so every config written so far still
# reads, and code that needs only the encoders' part can ask for a DAMSMConfig.

@dataclass
class DAMSMConfig:
    """The encoders: what a saved DAMSM is, and how it scores captions against images."""
    # inception (paper, 17x17 regions) | small (CPU presets)
    backbone: str = param("inception", choices=("inception", "small"))
    image_size: int = param(299, at_least=1, at_most=1024)  # encoder input; data is cropped to this for pretraining
    small_width: int = param(64, at_least=1, at_most=256)   # channels of the small CNN's first block
    # small CNN's global code: avg | avgmax (mean and max, concatenated)
    small_pool: str = param("avg", choices=("avg", "avgmax"))
    align_corners: bool = False      # True reproduces the published encoders' resize
    gamma1: float = param(4.0, above=0)  # attention sharpness over regions (Eq. 9)
    gamma2: float = param(5.0, above=0)  # word-score aggregation (Eq. 10)
    gamma3: float = param(10.0, above=0)  # similarity scale in the posterior (Eq. 11)
    words_num: int = param(18, at_least=1, at_most=256)  # words of a caption the encoders read


@dataclass
class DAMSMTrainConfig:
    """Pretraining the encoders (`attngan train-damsm`)."""
    inception_weights: str = ""      # local torchvision inception_v3_google-*.pth; never downloaded
    batch_size: int = param(48, at_least=1)
    lr: float = param(2e-3, above=0)
    betas: tuple[float, float] = param((0.5, 0.999), range=(0.0, 1.0), open="high")
    # Per epoch, while lr > min_lr: above 1 would grow the learning rate without end.
    lr_decay: float = param(0.98, range=(0.0, 1.0), open="low")
    min_lr: float = param(2e-4, at_least=0)
    reset_optimizer: bool = True     # the original re-creates Adam every epoch (moments lost)
    # image encoder + word-loss matmul in bf16: off | bf16 | auto (where native)
    amp: str = param("off", choices=("off", "auto", "bf16"))
    # The image encoder in NHWC memory layout. On by default: the Inception trunk is frozen, so
    # it runs forward only, where NHWC convolutions are faster (oneDNN on the CPU: the bird DAMSM
    # step ~1.5x) and the BatchNorm backward that is slow in NHWC never runs; the small CNN,
    # which trains, measured faster in NHWC as well (docs/experiments.md).
    channels_last: bool = True
    rnn_grad_clip: float = param(0.25, above=0)
    epochs: int = param(600, at_least=0)
    snapshot_epochs: int = param(50, at_least=1)
    max_bad_steps: int = param(20, at_least=0)  # NaN/inf steps tolerated before aborting


@dataclass
class DAMSMSection(DAMSMTrainConfig, DAMSMConfig):
    """The `damsm` section of a Config: the encoders' fields (DAMSMConfig) then their pretraining's
    (DAMSMTrainConfig), under one key."""


@dataclass
class GANConfig:
    gf_dim: int = param(32, at_least=1, at_most=256)  # ngf; stage 1 starts at 16*ngf x 4 x 4
    df_dim: int = param(64, at_least=1, at_most=192)  # ndf
    z_dim: int = param(100, at_least=1, at_most=1024)
    condition_dim: int = param(100, at_least=1, at_most=1024)  # conditioning-augmentation output size
    r_num: int = param(2, at_least=0, at_most=16)  # residual blocks per refinement stage
    dcgan: bool = False              # AttnDCGAN: one image head, one conditional D


@dataclass
class TrainConfig:
    batch_size: int = param(20, at_least=1)
    lr_g: float = param(2e-4, above=0)
    lr_d: float = param(2e-4, above=0)
    betas: tuple[float, float] = param((0.5, 0.999), range=(0.0, 1.0), open="high")
    damsm_lambda: float = param(5.0, at_least=0)  # lambda in L = L_GAN + lambda L_DAMSM
    kl_weight: float = param(1.0, at_least=0)
    ema_decay: float = param(0.999, range=(0.0, 1.0))
    total_kimg: float = param(5313.0, above=0, at_most=1e6)  # 600 epochs of 8,855 images
    snapshot_kimg: float = param(100.0, above=0)
    sample_kimg: float = param(20.0, above=0)
    log_kimg: float = param(2.0, above=0)
    minutes: float = param(0.0, at_least=0)  # wall-clock budget; 0 = none
    max_bad_steps: int = param(20, at_least=0)
    # Speed switches; each is benchmarked against all-off in the same run.
    # off | auto (bf16 where the CPU/GPU has it natively, else float32) | bf16 (forced, CPU or CUDA)
    # | fp16 (CUDA, grad scaler); G, the Ds and the image encoder only: losses and softmaxes stay fp32.
    amp: str = param("off", choices=("off", "auto", "bf16", "fp16"))
    channels_last: bool = False
    compile: bool = False            # torch.compile G and the Ds
    sync_bn: bool = False            # SyncBatchNorm under DDP
    freeze_d_in_g_step: bool = True  # no D weight gradients during the G update
    reuse_real_features: bool = True  # mismatched-pair term reuses D(real)'s image code


@dataclass
class Config:
    name: str = "bird"
    seed: int = param(0, seed=True)
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    damsm: DAMSMSection = field(default_factory=DAMSMSection)
    gan: GANConfig = field(default_factory=GANConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        return from_dict(cls, d)


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
    # word loss's region-word matmul in bf16 where the CPU/GPU has it natively (else float32).
    c.damsm.amp = "auto"
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


def _grown_128(two_stage: Config, name: str) -> Config:
    # AttnGAN2's structure (three stages, two word-attention models) at CPU size: 32 -> 64 -> 128 px.
    # The lower two stages keep the two-stage preset's shapes exactly, so a trained two-stage model
    # can be grown into it (`attngan train --init`, see MODEL.md); the DAMSM is the two-stage one's
    # (64 px input: the top image is resized to it, as the paper's Inception encoder resizes to 299).
    two_stage.name = name
    two_stage.data.branch_num = 3
    two_stage.train.total_kimg = 100.0
    return two_stage


def _synthbirds_128() -> Config:
    return _grown_128(_tiny(), "synthbirds-128")


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


def _synthscenes_128() -> Config:
    return _grown_128(_coco_tiny(), "synthscenes-128")


PRESETS = {
    "bird": _bird,
    "bird-attn1": _bird_attn1,
    "bird-dcgan": _bird_dcgan,
    "coco": _coco,
    "tiny": _tiny,
    "coco-tiny": _coco_tiny,
    "synthbirds-128": _synthbirds_128,
    "synthscenes-128": _synthscenes_128,
}


def preset(name: str) -> Config:
    """A fresh Config of the named preset."""
    return pick(PRESETS, name)


def _original_yml(raw: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    # The original release's files are told apart by their upper-case keys.
    return original_yml_overrides(raw) if is_original_yml(raw) else None


def load_config(spec: str, overrides: dict[str, Any] | None = None) -> Config:
    """A preset name, a YAML/JSON file of our keys (may set `preset:`), or an original .yml."""
    return load(spec, PRESETS, overrides, default="bird", translate=_original_yml)


# The image captioner (`attngan train-captioner`, networks/captioner.py): its own config, since it
# shares only the data layout with the text-to-image model.

@dataclass
class CaptionerConfig:
    name: str = "captioner"
    seed: int = param(0, seed=True)
    data: DataConfig = field(default_factory=lambda: DataConfig(workers=0, short_captions="pad"))
    # encoder input
    image_size: int = param(64, at_least=8, at_most=1024, multiple_of=8,
                            why="regions are an (image_size / 8)^2 grid")
    width: int = param(32, at_least=1, at_most=256)  # first conv block's channels; regions have 4x as many
    init_encoder: str = ""           # a DAMSM folder whose `small` image trunk starts the region encoder
    embed_dim: int = param(128, at_least=1, at_most=1024)  # word embedding size
    hidden_dim: int = param(256, at_least=1, at_most=4096)  # LSTM units
    attention_dim: int = param(128, at_least=1, at_most=2048)  # hidden size of the soft attention
    dropout: float = param(0.3, range=(0.0, 1.0), open="high")  # before the output layer
    max_len: int = param(40, at_least=1, at_most=512)  # tokens (commas count) learned and decoded, <end> excluded
    batch_size: int = param(64, at_least=1)
    lr: float = param(1e-3, above=0)  # Adam
    betas: tuple[float, float] = param((0.9, 0.999), range=(0.0, 1.0), open="high")
    lr_decay: float = param(0.9, range=(0.0, 1.0), open="low")  # per epoch
    grad_clip: float = param(5.0, above=0)  # global gradient norm
    # lambda of the doubly stochastic attention penalty (SAT Eq. 14)
    attention_reg: float = param(1.0, at_least=0)
    epochs: int = param(20, at_least=0)
    eval_images: int = param(500, at_least=1)  # test images decoded after each epoch
    beam_size: int = param(3, at_least=1, at_most=100)  # the saved model's default decoding (1 = greedy)
    mention: str = ""                # word groups every caption must name, "wings|wing;belly" (constrained beam)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CaptionerConfig":
        return from_dict(cls, d)


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


def _synthscenes_captioner() -> CaptionerConfig:
    # SynthScenes' COCO layout: 5 captions an image, whole images (no bounding-box crop). The
    # network and the batch are the birds captioner's: 10 epochs over 8,000 training images are
    # about 630 steps of 128, a few minutes on two threads (MODEL.md), and its 8 x 8 region grid at
    # 64 px is as fine as the scene judge's reading of the same renders.
    c = CaptionerConfig(name="synthscenes-captioner")
    c.data.dataset = "coco"
    c.data.captions_per_image = 5
    c.data.cache = True
    c.batch_size = 128
    c.lr = 2e-3
    c.epochs = 10
    # A caption names at most two groups and runs to 23 words; every caption of the grammar
    # names every object, its colour and the background, so the decoder needs no constraints.
    c.max_len = 32
    c.beam_size = 1
    return c


CAPTIONER_PRESETS = {"captioner": _captioner, "synthbirds-captioner": _synthbirds_captioner,
                     "synthscenes-captioner": _synthscenes_captioner}


def load_captioner_config(spec: str, overrides: dict[str, Any] | None = None) -> CaptionerConfig:
    """A captioner preset name, or a YAML/JSON file of CaptionerConfig keys (may set `preset:`)."""
    return load(spec, CAPTIONER_PRESETS, overrides, default="captioner", what="captioner preset")
