"""Feature streams: networks that turn batches of images (and captions) into arrays for metrics.

Every stream sees the same batches, so generation runs once however many metrics are asked for.
Images arrive as float B x 3 x H x W in [-1, 1]; `quantize` first rounds them to the 256 levels a
saved PNG holds, because the published numbers score image files, not raw generator output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attngan.errors import AttnGANError
from attngan.metrics.inception_fid import (
    is_fid_inception_file,
    load_fid_inception,
    load_torchvision_inception,
    read_state_dict,
    weights_digest,
)


def quantize(images: Tensor) -> Tensor:
    """[-1, 1] floats -> the nearest of the 256 values an 8-bit image file can hold (as [-1, 1])."""
    levels = ((images.float().clamp(-1, 1) + 1) * 127.5).round()
    return levels / 127.5 - 1


class Stream(Protocol):
    name: str            # key of its arrays in the context
    digest: str          # identity of its weights: part of the real-statistics cache key
    needs_captions: bool

    def __call__(self, images: Tensor, captions: list[str] | None) -> dict[str, np.ndarray]: ...


class InceptionStream:
    """Pool3 features (`pool`) or softmax class probabilities (`probs`) of an Inception network."""

    needs_captions = False

    def __init__(self, name: str, net: torch.nn.Module, digest: str, output: str, device: torch.device):
        if output not in ("pool", "probs"):
            raise ValueError(output)
        self.name, self.digest, self.output = name, digest, output
        self.net = net.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def __call__(self, images: Tensor, captions: list[str] | None = None) -> dict[str, np.ndarray]:
        pool, logits = self.net(images.to(self.device, torch.float32))
        if self.output == "pool":
            return {self.output: pool.double().cpu().numpy()}
        return {self.output: torch.softmax(logits.double(), dim=1).cpu().numpy()}


def fid_stream(path: str | Path, device: torch.device) -> InceptionStream:
    """`fid`/`kid`: pool3 of pytorch-fid's FID Inception, TF-style resize (align_corners=False)."""
    return InceptionStream("fid_inception", load_fid_inception(path), weights_digest(path), "pool", device)


def legacy_fid_stream(path: str | Path, device: torch.device) -> InceptionStream:
    """`fid_legacy`: pool3 of torchvision's ImageNet Inception-v3, resize with align_corners=True."""
    net = load_torchvision_inception(path, align_corners=True)
    return InceptionStream("tv_inception_ac", net, weights_digest(path), "pool", device)


def classifier_stream(path: str | Path, device: torch.device) -> tuple[InceptionStream | "OracleSpeciesStream", str]:
    """The IS classifier and a description of it, from a weights file or an oracle folder.

    * an oracle folder (config.json + oracle.safetensors): its species head (SynthBirds);
    * a pt_inception-2015-12-05 file (1008 classes): the TF graph improved-gan scores with;
    * any torchvision-layout Inception-v3 state dict: ImageNet (1000 classes, the COCO protocol
      in PyTorch ports) or a fine-tuned N-class model (the CUB protocol's 50-class classifier).
    """
    p = Path(path)
    if p.is_dir():
        from attngan.metrics.oracle import load_oracle

        oracle = load_oracle(p, device)
        return OracleSpeciesStream(oracle, device), f"SynthBirds oracle species head ({oracle.num_classes} classes)"
    sd = read_state_dict(p)
    digest = weights_digest(p)
    if is_fid_inception_file(sd):
        net = load_fid_inception(p)
        return InceptionStream("is_probs", net, digest, "probs", device), "pt_inception-2015-12-05 (TF graph, 1008 classes)"
    net = load_torchvision_inception(p, align_corners=False)
    n = net.fc.out_features
    what = "torchvision ImageNet Inception-v3 (1000 classes)" if n == 1000 else f"Inception-v3 fine-tuned to {n} classes"
    return InceptionStream("is_probs", net, digest, "probs", device), what


class _OracleBase:
    """A stream over the SynthBirds oracle, in eval mode on `device`."""

    needs_captions = False

    def __init__(self, oracle, device: torch.device):
        self.oracle = oracle.to(device).eval()
        self.digest = oracle.digest
        self.device = device


class OracleSpeciesStream(_OracleBase):
    """IS classifier from the SynthBirds oracle's species head."""

    name = "is_probs"

    @torch.inference_mode()
    def __call__(self, images: Tensor, captions: list[str] | None = None) -> dict[str, np.ndarray]:
        logits = self.oracle(images.to(self.device, torch.float32))["species"]
        return {"probs": torch.softmax(logits.double(), dim=1).cpu().numpy()}


class OracleStream(_OracleBase):
    """Per-part colour predictions of the SynthBirds oracle (argmax ids per head) and its 256-d
    penultimate features (`hidden`, for the oracle-feature FID)."""

    name = "oracle"

    @torch.inference_mode()
    def __call__(self, images: Tensor, captions: list[str] | None = None) -> dict[str, np.ndarray]:
        hidden = self.oracle.features(images.to(self.device, torch.float32))
        out = {head: layer(hidden).argmax(1).cpu().numpy() for head, layer in self.oracle.heads.items()}
        out["hidden"] = hidden.double().cpu().numpy()
        return out


class DamsmStream:
    """Global image codes and sentence codes from a DAMSM text/image encoder pair.

    Captions are given as text and re-tokenised with this DAMSM's own vocabulary, so a separately
    trained evaluation DAMSM (another vocabulary, another words_num) scores the same captions.
    """

    name = "damsm"
    needs_captions = True

    def __init__(self, text_encoder, image_encoder, vocab, words_num: int, device: torch.device, digest: str):
        self.text_encoder = text_encoder.to(device).eval()
        self.image_encoder = image_encoder.to(device).eval()
        self.vocab, self.words_num, self.device, self.digest = vocab, words_num, device, digest

    def encode_captions(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        from attngan.text import tokenize

        ids = []
        for text in captions:
            word_ids, _ = self.vocab.encode_tokens(tokenize(text))
            if not word_ids:
                raise AttnGANError(f"caption {text[:60]!r} has no word in the DAMSM vocabulary")
            ids.append(word_ids[: self.words_num])
        lens = torch.tensor([len(x) for x in ids], dtype=torch.long)
        out = torch.zeros(len(ids), int(lens.max()), dtype=torch.long)
        for i, x in enumerate(ids):
            out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        return out, lens

    @torch.inference_mode()
    def __call__(self, images: Tensor, captions: list[str] | None) -> dict[str, np.ndarray]:
        if captions is None:
            raise AttnGANError("the DAMSM stream needs the captions of the images")
        ids, lens = self.encode_captions(captions)
        _, sent = self.text_encoder(ids.to(self.device), lens.to(self.device))
        _, code = self.image_encoder(images.to(self.device, torch.float32))
        return {"img": code.double().cpu().numpy(), "sent": sent.double().cpu().numpy()}


def resize_images(images: Tensor, size: int) -> Tensor:
    """Bilinear resize with antialiasing for downscaling (a smaller network's input size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=images.shape[-1] > size)
