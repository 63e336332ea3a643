"""`sharpness`: does a stage add detail, or only pixels?

A refinement stage doubles the resolution, S/2 -> S. Everything the previous stage could draw lies
in the lower half of the new stage's frequency range; what only the new stage can contribute is the
top octave, between the previous stage's Nyquist frequency (S/4 cycles per image) and its own
(S/2). Energy there alone does not show detail: noise has it too (real 64 px images upsampled to
128 px plus Gaussian noise of 7 grey levels hold more top-octave energy than real 128 px images).
What noise lacks is *where* the energy is: in a real image the finest octave is drawn along the
edges and textures the next octave down already shows (a feather edge is sharp where the feather
is), while noise spreads it evenly, unrelated to the image. The metric asks for both.

Per image x at S x S, on the luminance Y = 0.299 R + 0.587 G + 0.114 B with its mean removed and
its orthonormal 2-D DCT-II, with bands by max(kx, ky) (the coefficient's octave):

    hf_share(x)         = E_top / E_all           top octave: max(kx, ky) >= S/2
    structured_share(x) = b of the least-squares line t_c = a + b m_c over a 16 x 16 grid of cells,
                          t_c = the top band's energy in cell c / the image's energy per pixel
                          (mean_c t_c = hf_share), m_c = the octave below's (S/4 <= max(kx, ky) <
                          S/2) energy in c / its mean over the cells (mean 1)

so a is a floor of top-octave energy spread evenly and b the part drawn where the octave below has
structure. Per stage, against real test images at the same size (means over images):

    detail = structured_share / structured_share of real images

1 is as much structure-following top-octave energy as real images hold; ~0 is none, whether the
top octave is empty (an upsampler) or filled at random (noise: its two bands are independent, so
b ~ 0 whatever its energy). Above 1 is more edge-aligned fine energy than real images have
(over-sharpened edges, ringing), not better detail. The energy ratio hf / hf_real is reported
beside it; it is not the metric, since noise passes it.

Each stage after the first is also scored on two baselines built from its previous stage's images
upsampled bilinearly to S: as they are (no new detail at all), and plus grey Gaussian noise scaled
per image so that its top-octave share equals the generated image's (the same energy, none of it
placed by the image). A stage that adds detail beats both.

Why these choices:

* DCT rather than DFT. The DFT treats the image as periodic, so the jump between opposite borders
  puts a cross of spurious high-frequency energy into every spectrum, smooth images included. The
  DCT is the DFT of the mirrored image, which has no such jump; it also matches how bilinear
  resizing with align_corners=False extends the border (edge samples repeated), so a bilinearly
  upsampled smooth image has next to no energy in the top octave.
* Square bands, by max(kx, ky), not discs. The S/2-pixel image represents exactly the coefficients
  with kx < S/2 and ky < S/2, a square; a radial cut would count diagonal frequencies the previous
  stage can already draw. For white noise the top octave holds 3/4 of the energy.
* Structure from the octave below, not from the image: both bands are band-pass, so a flat area
  has neither and an edge has both; orthogonal DCT bands of white noise are independent, so noise
  adds to the floor a, not to b. Local energies, not signed values: the bands are orthogonal, so
  their pixel-wise products sum to 0 for any image. A 16 x 16 grid (8 px cells at 128 px) is fine
  enough to follow a bird's parts and coarse enough that a cell's energy is a stable average.
* Luminance, not each colour channel. Fine detail is seen in luminance; and JPEG sources (CUB)
  store chroma at half resolution, so a per-channel measure would mostly measure the codec.
* Real images at S come from the data loader's own per-stage pipeline (centre crop at the top size,
  each smaller stage downscaled from that crop), i.e. what each stage's discriminator was shown;
  stage 0 uses the same rule.

The real reference is only meaningful when the stored images are at least the loader's load size
(int(S * 76 / 64) for the top stage); a data set stored smaller is upsampled by the loader and its
real top octave collapses.
"""

from __future__ import annotations

from functools import lru_cache

from typing import TYPE_CHECKING, Any

import numpy as np

from attngan.metrics.spec import register

# torch, and the data modules that bring PIL, are imported inside the functions: the metric
# registry imports this module, and reading it (`attngan eval --help`) must not load them.
if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from attngan.metrics.context import EvalContext

# BT.601 luma weights (as JPEG).
LUMA = (0.299, 0.587, 0.114)
DIGEST = "sharpness:v2:dct2-luma-top-octave-structured-share"
GRID = 16  # cells per side for the local energies of `structured_share`


@lru_cache(maxsize=16)
def _dct_matrix(n: int, device: str) -> Tensor:
    """Orthonormal DCT-II matrix C (n x n, float64): coefficients = C @ x."""
    import torch

    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    c = torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)) * (2.0 / n) ** 0.5
    c[0] /= 2 ** 0.5
    return c.to(device)


def luminance(images: Tensor) -> Tensor:
    """B x 3 x H x W -> B x H x W (float64).

    Weighted in float32: its rounding (~1e-7 of a pixel) is far below 8-bit quantisation.
    """
    import torch

    x = images.float()
    y = LUMA[0] * x[:, 0] + LUMA[1] * x[:, 1] + LUMA[2] * x[:, 2]
    return y.to(torch.float64)


def high_band_share(images: Tensor) -> Tensor:
    """Per image: share of the mean-removed luminance DCT energy with max(kx, ky) >= S/2.

    images: B x 3 x S x S (any range; S even). A flat image (no energy at all) counts as 0.
    The transform runs in float64: a smooth image's share is ~1e-4, below what the TF32 matmuls
    that training enables on GPUs would resolve.
    """
    import torch

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
    import torch.nn.functional as F

    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)


def bands(images: Tensor) -> tuple[Tensor, Tensor]:
    """The luminance's top octave (max(kx, ky) >= S/2) and the octave below it (S/4 <= max < S/2)
    as images: B x S x S each (float64)."""
    import torch

    if images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected B x 3 x S x S images, got {tuple(images.shape)}")
    s = images.shape[-1]
    if s % 4 or s < 8:
        raise ValueError(f"the image size must be a multiple of 4 and at least 8, got {s}")
    y = luminance(images)
    c = _dct_matrix(s, str(y.device))
    coef = c @ y @ c.T
    k = torch.arange(s, device=y.device)
    octave = torch.maximum(k[:, None], k[None, :])
    top = coef * (octave >= s // 2)
    mid = coef * ((octave >= s // 4) & (octave < s // 2))
    return c.T @ top @ c, c.T @ mid @ c


def structured_share(images: Tensor) -> Tensor:
    """Per image: the share of its energy in the top octave that follows the octave below.

    Over a GRID x GRID grid of cells, t_c = the top band's mean energy in cell c over the image's
    mean energy per pixel (so mean_c t_c = hf_share), m_c = the next octave's energy in c over its
    mean (mean 1); the least-squares line t = a + b m splits the top octave into a floor a spread
    evenly and b m drawn where the next octave has structure. Returns b (0 where m is flat).
    """
    import torch
    import torch.nn.functional as F

    top, mid = bands(images)
    s = images.shape[-1]
    cell = max(s // GRID, 1)
    y = luminance(images)
    energy = (y - y.mean(dim=(1, 2), keepdim=True)).square().mean(dim=(1, 2))
    e_top = F.avg_pool2d(top.square()[:, None], cell).flatten(1)
    e_mid = F.avg_pool2d(mid.square()[:, None], cell).flatten(1)
    t = e_top / energy.clamp_min(1e-300)[:, None]
    m = e_mid / e_mid.mean(1, keepdim=True).clamp_min(1e-300)
    m = m - m.mean(1, keepdim=True)
    var = m.square().mean(1)
    b = (m * (t - t.mean(1, keepdim=True))).mean(1) / var.clamp_min(1e-300)
    return torch.where((var > 1e-12) & (energy > 0), b, torch.zeros_like(b))


def matched_noise(upsampled: Tensor, target_share: Tensor, seed: int = 0) -> Tensor:
    """`upsampled` plus grey Gaussian noise scaled per image so that the luminance's top-octave
    share becomes `target_share` (as far as noise can: at most white noise's 3/4), in float."""
    import torch

    x = upsampled.float()
    g = torch.Generator(device="cpu").manual_seed(seed)
    n = torch.randn(x.shape[0], 1, *x.shape[-2:], generator=g).to(x.device)
    y = luminance(x)
    y = y - y.mean(dim=(1, 2), keepdim=True)
    nn_ = n[:, 0].double() - n[:, 0].double().mean(dim=(1, 2), keepdim=True)
    # Shares are energy ratios: top(y + a n) / all(y + a n) with the cross terms ~0 (independent).
    s = x.shape[-1]
    c = _dct_matrix(s, str(y.device))[: s // 2]

    def split(v):
        total = v.square().sum(dim=(1, 2))
        return total - (c @ v @ c.T).square().sum(dim=(1, 2)), total

    top_y, all_y = split(y)
    top_n, all_n = split(nn_)
    t = target_share.to(y).clamp(max=0.999 * top_n.div(all_n).min().item())
    a2 = ((t * all_y - top_y) / (top_n - t * all_n)).clamp_min(0)
    return x + (a2.sqrt().float()[:, None, None, None] * n)


class SharpnessStream:
    """Per stage i: top-octave share and its structured part of the stage's images (`hf_i`,
    `st_i`), and of the two baselines from stage i-1: upsampled (`up_hf_i`, `up_st_i`) and
    upsampled plus noise of the generated image's top-octave share (`mn_hf_i`, `mn_st_i`).

    Reads every stage of a batch (a list of B x 3 x S_i x S_i tensors, smallest first; one tensor
    for a folder of images or a DCGAN generator), quantised to 8 bits like the other streams.
    """

    name = "sharpness"
    digest = DIGEST
    needs_captions = False
    reads_stages = True

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, stages: list[Tensor] | Tensor, captions: list[str] | None = None) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            return self._scores(stages)

    def _scores(self, stages: list[Tensor] | Tensor) -> dict[str, np.ndarray]:
        import torch

        from attngan.metrics.extractors import quantize

        if isinstance(stages, torch.Tensor):
            stages = [stages]
        out: dict[str, np.ndarray] = {}
        prev = None

        def score(key: str, images: Tensor) -> Tensor:
            hf = high_band_share(images)
            out[f"{key}hf_{i}"] = hf.cpu().numpy()
            out[f"{key}st_{i}"] = structured_share(images).cpu().numpy()
            return hf

        for i, x in enumerate(stages):
            x = quantize(x.to(self.device))
            hf = score("", x)
            if prev is not None and prev.shape[-1] * 2 == x.shape[-1]:
                up = upsample(prev, x.shape[-1])
                score("up_", quantize(up))
                score("mn_", quantize(matched_noise(up, hf, seed=i)))
            prev = x
        return out


def stage_table(generated: dict[str, np.ndarray], real: dict[str, np.ndarray], stage_ids: list,
                sizes: list[int], splits: int) -> dict:
    """The metric's result: value = the top stage's detail (std over `splits`), plus per_stage
    rows with the top-octave shares, their energy ratio to real images and both baselines."""
    rows = []
    for i, (stage, size) in enumerate(zip(stage_ids, sizes)):
        real_hf = float(np.mean(real[f"hf_{i}"]))
        real_st = float(np.mean(real[f"st_{i}"]))
        row = {"stage": stage, "size": int(size), "real_hf_share": real_hf, "real_structured_share": real_st}
        for key, label in (("", ""), ("up_", "upsampled_prev_"), ("mn_", "matched_noise_")):
            names = ("hf_share", "ratio", "structured_share", "detail")
            if f"{key}hf_{i}" not in generated:
                row.update({f"{label}{k}": None for k in names})
                continue
            hf = float(np.mean(generated[f"{key}hf_{i}"]))
            st = float(np.mean(generated[f"{key}st_{i}"]))
            row.update(zip((f"{label}{k}" for k in names), (hf, _ratio(hf, real_hf), st, _ratio(st, real_st))))
        rows.append(row)
    top = len(sizes) - 1
    real_st = float(np.mean(real[f"st_{top}"]))
    chunks = [c for c in np.array_split(generated[f"st_{top}"], splits) if len(c)]
    per_split = [_ratio(float(np.mean(c)), real_st) for c in chunks]
    std = float(np.std(per_split)) if len(per_split) > 1 else None
    return {"value": rows[-1]["detail"], "std": std, "per_stage": rows,
            "n_real": int(len(real[f"hf_{top}"]))}


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def sharpness_details(name: str, r: dict[str, Any]) -> list[str]:
    """The report's per-stage table: the ratios and the two baselines that must score low."""
    def ratio(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"- `{name}` per stage (detail = top-octave energy that follows the octave below, "
             "generated / real; energy ratio = all top-octave energy, generated / real, which "
             "noise also passes):", "",
             "| Stage | Size | Detail | Energy ratio | Previous stage upsampled: detail | "
             "+ noise of the same energy: detail |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in r["per_stage"]:
        stage = "top" if row["stage"] is None else row["stage"]
        lines.append(f"| {stage} | {row['size']} | {ratio(row['detail'])} | {ratio(row['ratio'])} | "
                     f"{ratio(row['upsampled_prev_detail'])} | {ratio(row['matched_noise_detail'])} |")
    return lines + [""]


@register(
    name="sharpness", title="High-frequency detail",
    protocol="per stage of size S: the part of the luminance's top-octave DCT-II energy (above the "
             "previous stage's Nyquist) that follows where the octave below has energy (slope over "
             "a 16x16 grid of cells), generated over real test images (the loader's centre crop, "
             "smaller stages downscaled from it); value = the top stage's ratio, ± std over splits; "
             "1 = real images' detail, ~0 = upsampled, with or without noise of the same energy",
    reference="ours (metrics/sharpness.py)",
    # A diagnostic of the stages, not one of the published comparisons: it runs when named.
    streams=("sharpness",), real=True, unit="", higher_is_better=True, default=False,
    details=sharpness_details,
)
def sharpness_top_octave(ctx: "EvalContext") -> dict[str, Any]:
    real = ctx.real_features("sharpness", sizes=ctx.stage_sizes)
    out = stage_table(ctx.generated["sharpness"], real, ctx.stage_ids, ctx.stage_sizes, ctx.options.splits)
    # Above 1 is more edge-aligned fine energy than real images hold (ringing), not better.
    out["target"] = 1.0
    if len(ctx.stage_ids) == 1 and ctx.stage_ids[0] not in (None, 0):
        out["note"] = "one image head (DCGAN): only the top stage's images exist"
    return out
