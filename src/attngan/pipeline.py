"""AttnGANPipeline: captions in, every stage's image and every attention map out.

One `__call__` that the CLI (`attngan generate`), the demo report and the web app all wrap.
Runs in eval mode under `torch.inference_mode`, batched, CPU or GPU. By default the generator runs
in its inference form (`perf.fuse_generator`: BatchNorm and upsampling folded into the
convolutions, channels-last) in float32, and a pipeline on the CPU applies the allocator setting
(`perf.configure_allocator_env`, opt out with ATTNGAN_ALLOCATOR=default) when it is created, so
it runs as fast from Python as from the CLI. `amp="auto"` or `"bf16"` opts in to bf16 autocast.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attngan.config import Config
from attngan.errors import AttnGANError, check_seed
from attngan.io import (BUNDLED_MODELS, Loaded, bundled_model_dir,  # noqa: F401 - part of this API
                        bundled_model_names, load, resolve_model)
from attngan.perf import autocast, configure_allocator_env, fuse_generator, resolve_device
from attngan.text import Vocabulary, tokenize
from attngan.viz import to_pil

log = logging.getLogger(__name__)

# Inference precision: float32 (exact), bf16 where native, bf16 always (see perf.amp_dtype).
AMP_MODES = ("off", "auto", "bf16")


@dataclass
class PipelineOutput:
    images: list[torch.Tensor]          # per stage: B x 3 x H x W in [-1, 1], on the CPU
    attention: list[torch.Tensor]       # per attentional stage: B x T x h x w (pre-upsample maps)
    tokens: list[list[str]]             # the words each caption was generated from
    dropped: list[list[str]] = field(default_factory=list)  # out-of-vocabulary words, per caption
    seed: int | None = None

    def to_pil(self, stage: int = -1) -> list:
        """The images of one stage (default: the last, largest) as PIL images."""
        return [to_pil(img) for img in self.images[stage]]


class CaptionError(AttnGANError):
    """A caption the model cannot draw from; `dropped` holds its out-of-vocabulary words."""

    def __init__(self, message: str, dropped: list[str] | None = None):
        super().__init__(message)
        self.dropped = list(dropped or [])


@dataclass
class EncodedCaption:
    ids: list[int]             # the word ids the model reads (at most words_num)
    tokens: list[str]          # those words
    dropped: list[str]         # out-of-vocabulary words, left out
    truncated: list[str]       # known words beyond words_num, left out


class AttnGANPipeline:
    def __init__(self, config: Config, vocab: Vocabulary, text_encoder: torch.nn.Module,
                 generator: torch.nn.Module, image_encoder: torch.nn.Module | None = None,
                 device: str | torch.device = "cpu", source: Loaded | None = None,
                 fuse: bool = True, amp: str = "off"):
        """`fuse` runs a folded copy of `generator` (see `fuse`; the module passed in is left as it
        is, apart from eval mode). `amp`: off (float32, the default), auto (bf16 autocast where the
        device runs bf16 natively, float32 elsewhere) or bf16 (bf16 even where emulated: slower)."""
        self.config = config
        self.vocab = vocab
        self.device = torch.device(device)
        if amp not in AMP_MODES:  # a one-line error here, not at the first caption
            raise AttnGANError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
        self.amp = amp
        if self.device.type == "cpu":
            configure_allocator_env()  # process-wide and idempotent: see attngan.perf
        self.text_encoder = text_encoder.to(self.device).eval()
        self.generator = generator.to(self.device).eval()
        if fuse:
            self.fuse()
        self._image_encoder = image_encoder.to(self.device).eval() if image_encoder is not None else None
        self.source = source  # the model folder read (io.load), where the image encoder is built from
        self.words_num = config.data.words_num

    # Loading.

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None, device: str = "auto",
                        fuse: bool = True, image_encoder: bool = False, amp: str = "off") -> "AttnGANPipeline":
        """Load a model folder (see attngan/io.py), a GAN run folder (its model/), a bundled model
        by name ("synthbirds-128", "synthbirds-tiny", "synthscenes-128"), or None: the default
        bundled model (synthbirds-128).

        `fuse` runs the generator's inference form (outputs equal the unfused generator's to float
        rounding, about 1e-6; pass False to keep the generator trainable or to save it).
        The DAMSM image encoder, which generation never runs, is built on first use of
        `image_encoder` unless `image_encoder=True` builds it now. `amp`: see the constructor."""
        dev = resolve_device(device)
        parts = ("generator", "text_encoder") + (("image_encoder",) if image_encoder else ())
        loaded = load(model_dir, "generator", dev, parts)
        m = loaded.modules
        generator = m["generator"]
        if fuse:  # folded in place: the pipeline owns this generator, so no second copy is made
            generator = m["generator"] = fuse_generator(generator.eval(), inplace=True, channels_last=True)
        return cls(loaded.config, loaded.vocab, m["text_encoder"], generator, m.get("image_encoder"),
                   dev, source=loaded, fuse=fuse, amp=amp)

    @property
    def image_encoder(self) -> torch.nn.Module | None:
        """The DAMSM image encoder the generator was trained against (the model's own DAMSM, for
        evaluation and localisation), built from the model folder on first use."""
        if self._image_encoder is None and self.source is not None:
            self._image_encoder = self.source.build("image_encoder", self.device)
        return self._image_encoder

    @image_encoder.setter
    def image_encoder(self, module: torch.nn.Module | None) -> None:
        self._image_encoder = module

    def fuse(self) -> "AttnGANPipeline":
        """Run the generator's inference form: a copy with BatchNorm folded into the convolutions,
        the upsampling folded into the convolution after it, channels-last (eval-mode outputs
        unchanged to float rounding). A no-op when it already runs it."""
        if not getattr(self.generator, "is_fused", False):
            self.generator = fuse_generator(self.generator, channels_last=True)
        return self

    # Text.

    def encode_caption(self, text: str) -> EncodedCaption:
        """One caption as the model reads it: the tokenizer's words, out-of-vocabulary ones left out,
        the first `words_num` known ones kept. A caption with nothing left is a CaptionError."""
        if not isinstance(text, str) or not text.strip():
            raise CaptionError("the caption is empty")
        words = tokenize(text)
        if not words:
            raise CaptionError("the caption has no words (the tokenizer keeps ASCII letters and digits)")
        ids, dropped = self.vocab.encode_tokens(words)
        if not ids:
            raise CaptionError(f"none of the caption's words is in the model's vocabulary "
                               f"({len(self.vocab)} words)", dropped)
        kept, rest = ids[: self.words_num], ids[self.words_num:]
        return EncodedCaption(kept, [self.vocab.id_to_word[i] for i in kept], list(dropped),
                              [self.vocab.id_to_word[i] for i in rest])

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[list[str]], list[list[str]]]:
        """Word ids (B x T, 0-padded), lengths, the kept tokens and the dropped OOV words."""
        if isinstance(captions, str):
            captions = [captions]
        if not captions:
            raise AttnGANError("no captions given")
        ids, tokens, dropped = [], [], []
        for text in captions:
            enc = self.encode_caption(text)
            if enc.dropped:
                log.warning("out-of-vocabulary words dropped from %r: %s", text[:60], ", ".join(enc.dropped))
            if enc.truncated:
                log.warning("caption %r has %d known words; keeping the first %d",
                            text[:60], len(enc.ids) + len(enc.truncated), self.words_num)
            ids.append(enc.ids)
            tokens.append(enc.tokens)
            dropped.append(enc.dropped)
        lens = torch.tensor([len(x) for x in ids], dtype=torch.long)
        out = torch.zeros(len(ids), int(lens.max()), dtype=torch.long)
        for i, x in enumerate(ids):
            out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        return out, lens, tokens, dropped

    @torch.inference_mode()
    def encode_text(self, captions: torch.Tensor, cap_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder(captions.to(self.device), cap_lens.to(self.device))

    # Generation.

    def sample_noise(self, batch: int, seed: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """z and the conditioning-augmentation epsilon, drawn on the CPU so seeds agree across devices."""
        if seed is not None:
            seed = check_seed(seed)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        z = torch.randn(batch, self.config.gan.z_dim, generator=gen)
        eps = torch.randn(batch, self.config.gan.condition_dim, generator=gen)
        return z, eps

    @torch.inference_mode()
    def generate_from_ids(self, captions: torch.Tensor, cap_lens: torch.Tensor,
                          noise: torch.Tensor | None = None, ca_noise: torch.Tensor | None = None,
                          seed: int | None = None) -> PipelineOutput:
        B = captions.shape[0]
        z, eps = self.sample_noise(B, seed)
        noise = z if noise is None else noise
        ca_noise = eps if ca_noise is None else ca_noise
        if noise.shape != (B, self.config.gan.z_dim):
            raise AttnGANError(f"noise must be {B} x {self.config.gan.z_dim}, got {tuple(noise.shape)}")
        if ca_noise.shape != (B, self.config.gan.condition_dim):
            raise AttnGANError(f"ca_noise must be {B} x {self.config.gan.condition_dim}, "
                               f"got {tuple(ca_noise.shape)}")
        T = int(cap_lens.max())
        captions = captions[:, :T].to(self.device)
        words, sent = self.text_encoder(captions, cap_lens.to(self.device))
        mask = captions == 0
        with autocast(self.amp, self.device):
            images, attention, _, _ = self.generator(noise.to(self.device), sent, words, mask,
                                                     ca_noise=ca_noise.to(self.device))
        # Contiguous: a channels-last generator's images would otherwise reach the caller with
        # channels-last strides.
        return PipelineOutput(images=[x.float().cpu().contiguous() for x in images],
                              attention=[a.float().cpu().contiguous() for a in attention],
                              tokens=[[self.vocab.id_to_word[int(i)] for i in row[: int(n)]]
                                      for row, n in zip(captions.cpu(), cap_lens)],
                              seed=seed)

    def __call__(self, captions: list[str] | str, seed: int | None = None,
                 noise: torch.Tensor | None = None, ca_noise: torch.Tensor | None = None,
                 batch_size: int = 16) -> PipelineOutput:
        ids, lens, tokens, dropped = self.tokenize(captions)
        B = ids.shape[0]
        z, eps = self.sample_noise(B, seed)
        noise = z if noise is None else torch.as_tensor(noise, dtype=torch.float32)
        ca_noise = eps if ca_noise is None else torch.as_tensor(ca_noise, dtype=torch.float32)
        parts = []
        for s in range(0, B, batch_size):
            sl = slice(s, s + batch_size)
            parts.append(self.generate_from_ids(ids[sl], lens[sl], noise[sl], ca_noise[sl]))
        out = _concat(parts)
        out.tokens, out.dropped, out.seed = tokens, dropped, seed
        return out


def _concat(parts: list[PipelineOutput]) -> PipelineOutput:
    if len(parts) == 1:
        return parts[0]

    def cat_padded(maps: list[torch.Tensor]) -> torch.Tensor:
        # Attention maps of different chunks can have different T: pad words with zeros.
        T = max(m.shape[1] for m in maps)
        return torch.cat([torch.nn.functional.pad(m, (0, 0, 0, 0, 0, T - m.shape[1])) for m in maps])

    n_img = len(parts[0].images)
    n_att = len(parts[0].attention)
    return PipelineOutput(
        images=[torch.cat([p.images[i] for p in parts]) for i in range(n_img)],
        attention=[cat_padded([p.attention[i] for p in parts]) for i in range(n_att)],
        tokens=sum((p.tokens for p in parts), []),
    )
