"""`sharpness`: does a stage add detail, or only pixels?

A refinement stage doubles the resolution, S/2 -> S. Everything the previous stage could draw lies
in the lower half of the new stage's frequency range; what only the new stage can contribute is the
top octave, between the previous stage's Nyquist frequency (S/4 cycles per image) and its own
(S/2). The statistic is the share of an image's energy in that octave:

    hf_share(x) = E_top / E_all    for one image x at S x S,

computed on the luminance Y = 0.299 R + 0.587 G + 0.114 B with its mean removed. The spectrum is
the orthonormal 2-D DCT-II, and the top octave is every coefficient (kx, ky) with
max(kx, ky) >= S/2: exactly the coefficients an S/2-pixel image has no counterpart for. Reported
per stage as the mean hf_share of the generated images over the mean hf_share of real test images
at the same size, so 1.0 means as much fine detail as real images, and a stage that only upsamples
its input scores about 0.

Why these choices:

* DCT rather than DFT. The DFT treats the image as periodic, so the jump between opposite borders
  puts a cross of spurious high-frequency energy into every spectrum, smooth images included. The
  DCT is the DFT of the mirrored image, which has no such jump; it also matches how bilinear
  resizing with align_corners=False extends the border (edge samples repeated), so a bilinearly
  upsampled smooth image has next to no energy in the top octave (the interpolation kernel lets
  through images of a frequency f with a gain that falls as f^3 for small f).
* A square band, max(kx, ky) >= S/2, not a disc. The S/2-pixel image represents exactly the
  coefficients with kx < S/2 and ky < S/2, a square; a radial cut would count diagonal frequencies
  the previous stage can already draw. For white noise the top octave holds 3/4 of the energy.
* Luminance, not each colour channel. Fine detail is seen in luminance; and JPEG sources (CUB)
  store chroma at half resolution, so the real images' chroma has almost nothing in the top
  octave and a per-channel ratio would mostly measure the codec.
* Mean share per image (not the share of the pooled spectrum), so a few high-contrast images do
  not outweigh the rest, and contrast differences between generated and real images cancel.
* Real images at S come from the data loader's own per-stage pipeline (centre crop at the top size,
  each smaller stage downscaled from that crop), i.e. what each stage's discriminator was shown;
  stage 0 uses the same rule (the top octave, above S_0/4 cycles per image).

Each stage after the first is also reported with its previous stage's images bilinearly upsampled
to S (and quantised like any image file): the share an upsampler with no new detail gets, which
is the baseline the stage should beat.

Reading the numbers: a ratio well above 1 is more top-octave energy than real images hold (noise,
checkerboard artefacts), not better detail. The real reference is only meaningful when the stored
images are at least the loader's load size (int(S * 76 / 64) for the top stage); a data set stored
smaller is upsampled by the loader, its real share collapses and every ratio inflates.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# BT.601 luma weights (as JPEG).
LUMA = (0.299, 0.587, 0.114)
DIGEST = "sharpness:v1:dct2-luma-top-octave-square"


@lru_cache(maxsize=16)
def _dct_matrix(n: int, device: str) -> Tensor:
    """Orthonormal DCT-II matrix C (n x n, float64): coefficients = C @ x."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    c = torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)) * (2.0 / n) ** 0.5
    c[0] /= 2 ** 0.5
    return c.to(device)


def luminance(images: Tensor) -> Tensor:
    """B x 3 x H x W -> B x H x W (float64).

    Weighted in float32: its rounding (~1e-7 of a pixel) is far below 8-bit quantisation.
    """
    x = images.float()
    y = LUMA[0] * x[:, 0] + LUMA[1] * x[:, 1] + LUMA[2] * x[:, 2]
    return y.to(torch.float64)


def high_band_share(images: Tensor) -> Tensor:
    """Per image: share of the mean-removed luminance DCT energy with max(kx, ky) >= S/2.

    images: B x 3 x S x S (any range; S even). A flat image (no energy at all) counts as 0.
    The transform runs in float64: a smooth image's share is ~1e-4, below what the TF32 matmuls
    that training enables on GPUs would resolve.
    """
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected B x 3 x S x S images, got {tuple(images.shape)}")
    s = images.shape[-1]
    if s % 2 or s < 4:
        raise ValueError(f"the image size must be even and at least 4, got {s}")
    y = luminance(images)
    y = y - y.mean(dim=(1, 2), keepdim=True)
    # The transform is orthonormal, so the total energy is the pixels' (Parseval) and only the
    # low S/2 x S/2 block of coefficients is needed: 3/8 of the full transform's work.
    c = _dct_matrix(s, str(y.device))[: s // 2]
    total = y.square().sum(dim=(1, 2))
    low = (c @ y @ c.T).square().sum(dim=(1, 2))
    high = (total - low).clamp_min(0)
    return torch.where(total > 0, high / total.clamp_min(1e-300), torch.zeros_like(total))


def upsample(images: Tensor, size: int) -> Tensor:
    """Bilinear (align_corners=False), as the baseline "no new detail" upsampler."""
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)


class SharpnessStream:
    """Per stage i: hf_share of the stage's images (`hf_i`) and of stage i-1 upsampled (`up_i`).

    Reads every stage of a batch (a list of B x 3 x S_i x S_i tensors, smallest first; one tensor
    for a folder of images or a DCGAN generator), quantised to 8 bits like the other streams.
    """

    name = "sharpness"
    digest = DIGEST
    needs_captions = False
    reads_stages = True

    def __init__(self, device: torch.device):
        self.device = device

    @torch.inference_mode()
    def __call__(self, stages: list[Tensor] | Tensor, captions: list[str] | None = None) -> dict[str, np.ndarray]:
        from attngan.metrics.extractors import quantize

        if isinstance(stages, Tensor):
            stages = [stages]
        out: dict[str, np.ndarray] = {}
        prev = None
        for i, x in enumerate(stages):
            x = quantize(x.to(self.device))
            out[f"hf_{i}"] = high_band_share(x).cpu().numpy()
            if prev is not None and prev.shape[-1] * 2 == x.shape[-1]:
                out[f"up_{i}"] = high_band_share(quantize(upsample(prev, x.shape[-1]))).cpu().numpy()
            prev = x
        return out


def stage_table(generated: dict[str, np.ndarray], real: dict[str, np.ndarray], stage_ids: list,
                sizes: list[int], splits: int) -> dict:
    """The metric's result: value = the top stage's ratio (std over `splits`), plus per_stage rows."""
    rows = []
    for i, (stage, size) in enumerate(zip(stage_ids, sizes)):
        hf = float(np.mean(generated[f"hf_{i}"]))
        real_hf = float(np.mean(real[f"hf_{i}"]))
        row = {"stage": stage, "size": int(size), "hf_share": hf, "real_hf_share": real_hf,
               "ratio": _ratio(hf, real_hf), "upsampled_prev_hf_share": None, "upsampled_prev_ratio": None}
        if f"up_{i}" in generated:
            up = float(np.mean(generated[f"up_{i}"]))
            row["upsampled_prev_hf_share"] = up
            row["upsampled_prev_ratio"] = _ratio(up, real_hf)
        rows.append(row)
    top = len(sizes) - 1
    real_top = float(np.mean(real[f"hf_{top}"]))
    chunks = [c for c in np.array_split(generated[f"hf_{top}"], splits) if len(c)]
    per_split = [_ratio(float(np.mean(c)), real_top) for c in chunks]
    std = float(np.std(per_split)) if len(per_split) > 1 else None
    return {"value": rows[-1]["ratio"], "std": std, "per_stage": rows,
            "n_real": int(len(real[f"hf_{top}"]))}


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")
