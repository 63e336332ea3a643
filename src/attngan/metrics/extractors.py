"""Feature streams: networks that turn batches of images (and captions) into arrays for metrics.

Every stream sees the same batches, so generation runs once however many metrics are asked for.
Images arrive as float B x 3 x H x W in [-1, 1]; `quantize` first rounds them to the 256 levels a
saved PNG holds, because the published numbers score image files, not raw generator output.

The networks are our own copies (inception_fid.py) rather than torch-fidelity's or pytorch-fid's
extractors because three protocols need inputs those libraries do not take: DM-GAN's legacy FID
resizes uint8 images with PIL and feeds torchvision's normalisation formula, the CUB IS classifier
drops a background logit, and every stream must share one pass over float batches. Both peers are
checked against ours in tests/test_metrics_peers.py with the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from attngan.errors import AttnGANError
from attngan.io import bundled_names
from attngan.metrics.inception_fid import (is_fid_inception_file, load_fid_inception, load_slim_inception,
                                           load_torchvision_inception, read_state_dict, tf1_input,
                                           weights_digest)
from attngan.metrics.oracle import load_oracle
from attngan.text import Vocabulary, tokenize


def quantize(images: Tensor) -> Tensor:
    """[-1, 1] floats -> the nearest of the 256 values an 8-bit image file can hold (as [-1, 1])."""
    levels = ((images.float().clamp(-1, 1) + 1) * 127.5).round()
    return levels / 127.5 - 1


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] floats -> uint8 B x 3 x H x W, the pixel values of the saved PNG."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def pil_bilinear(images: Tensor, size: int = 299) -> Tensor:
    """uint8 B x 3 x H x W -> uint8 B x 3 x size x size through PIL's bilinear resize, image by
    image: what torchvision's `Resize` on a PIL image and scipy's `imresize(interp='bilinear')`
    compute on the PNG files the reference scripts read."""
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for a in images.permute(0, 2, 3, 1).cpu().numpy():
        im = Image.fromarray(a, "RGB").resize((size, size), Image.BILINEAR)
        out.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()))
    return torch.stack(out).permute(0, 3, 1, 2).contiguous()


# torchvision's `transform_input`: maps ImageNet-normalised input back to [-1, 1]. The pre-2019
# pytorch-fid (DM-GAN's eval/FID/inception.py) applies it to [0, 1] input instead.
_TV_MEAN = (0.485, 0.456, 0.406)
_TV_STD = (0.229, 0.224, 0.225)


def torchvision_transform_input(x: Tensor) -> Tensor:
    """Per channel c: x * (std_c / 0.5) + (mean_c - 0.5) / 0.5, in float32 as torchvision does."""
    chans = [x[:, c:c + 1] * (_TV_STD[c] / 0.5) + (_TV_MEAN[c] - 0.5) / 0.5 for c in range(3)]
    return torch.cat(chans, 1)


class Stream(Protocol):
    name: str            # key of its arrays in the context
    digest: str          # identity of its weights: part of the real-statistics cache key
    needs_captions: bool

    def __call__(self, images: Tensor, captions: list[str] | None) -> dict[str, np.ndarray]: ...


class FeatureArrays:
    """A stream's output batch by batch, joined into one array per key at the end: what the metrics
    read of the generated images (evaluation.py) and of the real ones (context.py)."""

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {}

    def add(self, out: dict[str, np.ndarray]) -> None:
        for k, v in out.items():
            self._parts.setdefault(k, []).append(v)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self._parts.items()}


# How an InceptionStream turns the network's (pool3, logits) into its output:
#   pool            pool3 features;
#   probs           softmax(fc(pool3)), with the classifier bias;
#   probs_unbiased  softmax(pool3 @ W^T): improved-gan's logits on the 2015 TF graph (its
#                   `softmax` op reads the MatMul before the bias add), torch-fidelity's ISC;
#   probs_drop0     softmax(fc(pool3)[:, 1:]): StackGAN's CUB classifier, whose logit 0 is an
#                   unused background class that DM-GAN's inception_score_bird.py slices off.
OUTPUTS = ("pool", "probs", "probs_unbiased", "probs_drop0")
# How images are prepared: `tensor` resizes the [-1, 1] batch inside the network; `pil_pm1`
# resizes the uint8 image with PIL bilinear and scales to [-1, 1] (StackGAN's inception_score
# with scipy imresize); `dmgan_fid` is DM-GAN's / DF-GAN's FID input (PIL bilinear 299, ToTensor
# to [0, 1], then torchvision's transform_input formula).
PREPROCESS = ("tensor", "pil_pm1", "dmgan_fid")


class InceptionStream:
    """Pool3 features (`pool`) or class probabilities (`probs`) of an Inception network."""

    needs_captions = False

    def __init__(self, name: str, net: torch.nn.Module, digest: str, output: str, device: torch.device,
                 preprocess: str = "tensor"):
        if output not in OUTPUTS:
            raise ValueError(output)
        if preprocess not in PREPROCESS:
            raise ValueError(preprocess)
        self.name, self.digest, self.output, self.preprocess = name, digest, output, preprocess
        self.net = net.to(device).eval()
        self.device = device

    def prepare(self, images: Tensor) -> Tensor:
        """The network input for a [-1, 1] batch under this stream's protocol."""
        if self.preprocess == "tensor":
            return images.to(self.device, torch.float32)
        x = pil_bilinear(to_uint8(images)).to(self.device, torch.float32)
        if self.preprocess == "pil_pm1":
            return x / 127.5 - 1
        return torchvision_transform_input(x / 255.0)

    @torch.inference_mode()
    def __call__(self, images: Tensor, captions: list[str] | None = None) -> dict[str, np.ndarray]:
        pool, logits = self.net(self.prepare(images))
        if self.output == "pool":
            return {"pool": pool.double().cpu().numpy()}
        if self.output == "probs_unbiased":
            logits = pool.double() @ self.net.fc.weight.double().T
        elif self.output == "probs_drop0":
            logits = logits[:, 1:]
        return {"probs": torch.softmax(logits.double(), dim=1).cpu().numpy()}


def fid_stream(path: str | Path, device: torch.device, resize: str = "pytorch-fid") -> InceptionStream:
    """`fid`/`kid`: pool3 of pytorch-fid's FID Inception on [-1, 1] input. `resize`:
    "pytorch-fid" (F.interpolate bilinear, align_corners=False, pytorch-fid's default) or "tf1"
    (TF1's bilinear resize inside the graph, as torch-fidelity; `inception_fid.tf1_input`)."""
    if resize not in FID_RESIZES:
        raise AttnGANError(f"unknown FID resize '{resize}'; choose from {', '.join(FID_RESIZES)}")
    net = load_fid_inception(path)
    digest = weights_digest(path)
    if resize == "tf1":
        net.input_fn = _tf1_resize()
        digest += ":tf1"   # other real-image features: a cache key of their own
    return InceptionStream("fid_inception", net, digest, "pool", device)


FID_RESIZES = ("pytorch-fid", "tf1")


def _tf1_resize():
    return tf1_input


def legacy_fid_stream(path: str | Path, device: torch.device) -> InceptionStream:
    """`fid_legacy`: DM-GAN's / DF-GAN's eval/FID path on torchvision's ImageNet Inception-v3:
    uint8 PNG -> PIL bilinear 299 -> [0, 1] -> torchvision transform_input formula -> pool3 (the
    network's own align_corners=True resize is then an identity at 299)."""
    net = load_torchvision_inception(path, align_corners=True)
    return InceptionStream("tv_inception_dmgan", net, weights_digest(path), "pool", device, preprocess="dmgan_fid")


CUB_IS_CLASSES = 51   # StackGAN's fine-tuned CUB Inception: 50 test species + background logit 0


def classifier_stream(path: str | Path, device: torch.device) -> tuple[InceptionStream | "OracleSpeciesStream", str]:
    """The IS classifier and a description of it, from a weights file or an oracle folder.

    * an oracle folder (config.json + oracle.safetensors) or a bundled one's name: its species head
      (SynthBirds);
    * a pt_inception-2015-12-05 file (1008 classes): the TF graph openai/improved-gan scores with
      (the COCO protocol): TF1's bilinear resize to 299 inside the graph and bias-free logits
      pool3 @ W, as improved-gan and torch-fidelity;
    * a torchvision-named Inception-v3 state dict with 51 classes: StackGAN's CUB classifier
      converted from its TF-slim checkpoint (the CUB protocol), run with slim's padding-free pools
      (`SlimInception3`): PIL bilinear 299 on the uint8 image, [-1, 1], logit 0 (background)
      dropped before the softmax, as DM-GAN's inception_score_bird.py;
    * any other torchvision-layout Inception-v3 (N classes): softmax of all N logits. torchvision's
      ImageNet model (1000 classes) is not a published IS protocol: its numbers compare with nothing.
    """
    p = Path(path)
    if p.is_dir() or (not p.exists() and str(path) in bundled_names("oracle")):
        oracle = load_oracle(p, device)
        return OracleSpeciesStream(oracle, device), f"SynthBirds oracle species head ({oracle.num_classes} classes)"
    sd = read_state_dict(p)
    digest = weights_digest(p)
    if is_fid_inception_file(sd):
        # improved-gan feeds the graph the 0..255 image and the graph resizes it (TF1 bilinear).
        net = load_fid_inception(p)
        net.input_fn = _tf1_resize()
        return (InceptionStream("is_probs", net, digest + ":tf1", "probs_unbiased", device),
                "pt_inception-2015-12-05 (TF graph, 1008 classes, TF1 resize in the graph, bias-free "
                "logits as improved-gan)")
    w = sd.get("fc.weight")
    if w is not None and w.shape[0] == CUB_IS_CLASSES:
        net = load_slim_inception(p)
        return (InceptionStream("is_probs", net, digest, "probs_drop0", device, preprocess="pil_pm1"),
                "CUB Inception-v3, TF-slim layers (51 logits, background logit 0 dropped; PIL bilinear 299)")
    net = load_torchvision_inception(p, align_corners=False)
    n = net.fc.out_features
    what = ("torchvision ImageNet Inception-v3 (1000 classes; not a published IS protocol)" if n == 1000
            else f"Inception-v3 fine-tuned to {n} classes")
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

    Protocol "dmgan" with the model's own DAMSM scores what DM-GAN's `sampling` scores: the sentence
    embedding that conditioned G (the word ids G read, through the same text encoder) and the top
    stage's image before it is saved to 8 bits. Otherwise (an evaluation DAMSM, or a folder of
    images) captions are given as text and re-tokenised with this DAMSM's own vocabulary, keeping
    its first words_num words, and the 8-bit image is encoded.
    """

    name = "damsm"
    needs_captions = True
    reads_batch = True

    def __init__(self, text_encoder, image_encoder, vocab: Vocabulary, words_num: int, device: torch.device, digest: str,
                 protocol: str = "dmgan", own: bool = False, gamma1: float = 4.0):
        self.text_encoder = text_encoder.to(device).eval()
        self.image_encoder = image_encoder.to(device).eval()
        self.vocab, self.words_num, self.device, self.digest = vocab, words_num, device, digest
        self.protocol, self.own = protocol, own
        self.gamma1 = gamma1  # the DAMSM's attention sharpness (its config's damsm.gamma1): localisation

    def encode_captions(self, captions: list[str]) -> tuple[Tensor, Tensor]:
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
    def sentences(self, ids: Tensor, lens: Tensor) -> Tensor:
        ids = ids[:, : int(lens.max())]
        _, sent = self.text_encoder(ids.to(self.device), lens.to(self.device))
        return sent

    @torch.inference_mode()
    def __call__(self, images: Tensor, captions: list[str] | None) -> dict[str, np.ndarray]:
        if captions is None:
            raise AttnGANError("the DAMSM stream needs the captions of the images")
        sent = self.sentences(*self.encode_captions(captions))
        _, code = self.image_encoder(images.to(self.device, torch.float32))
        return {"img": code.double().cpu().numpy(), "sent": sent.double().cpu().numpy()}

    @torch.inference_mode()
    def from_batch(self, batch) -> dict[str, np.ndarray]:
        if self.protocol != "dmgan":
            return self(batch.images, batch.captions)
        if batch.captions is None:
            raise AttnGANError("the DAMSM stream needs the captions of the images")
        conditioned = self.own and batch.caption_ids is not None
        images = batch.stages[-1] if conditioned and batch.stages else batch.images
        if conditioned:
            sent = self.sentences(batch.caption_ids, batch.caption_lens)
        else:
            sent = self.sentences(*self.encode_captions(batch.captions))
        _, code = self.image_encoder(images.to(self.device, torch.float32))
        return {"img": code.double().cpu().numpy(), "sent": sent.double().cpu().numpy()}

    @torch.inference_mode()
    def encode_pool(self, dataset, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Sentence codes of every caption of `dataset` (as G reads them with the model's own DAMSM,
        else re-tokenised text) and the class of each caption's image."""
        pairs = [(i, k) for i in range(len(dataset)) for k in range(dataset.cfg.captions_per_image)]
        codes = []
        for s in range(0, len(pairs), batch):
            chunk = pairs[s:s + batch]
            if self.own:
                got = [dataset.padded_caption(i, k) for i, k in chunk]
                ids = torch.stack([g[0] for g in got])
                lens = torch.tensor([g[1] for g in got], dtype=torch.long)
            else:
                ids, lens = self.encode_captions([dataset.caption_text(i, k) for i, k in chunk])
            codes.append(self.sentences(ids, lens).double().cpu().numpy())
        classes = np.asarray([dataset.class_ids[i] for i, _ in pairs])
        return np.concatenate(codes), classes


def resize_images(images: Tensor, size: int) -> Tensor:
    """Bilinear resize with antialiasing for downscaling (a smaller network's input size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=images.shape[-1] > size)
