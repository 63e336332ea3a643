"""Frechet Inception Distance and Kernel Inception Distance from feature matrices.

Everything here works on plain arrays (N x D features) so it can be tested without a network.
The FID follows pytorch-fid (mseitzer/pytorch-fid, `calculate_frechet_distance`): statistics in
float64, the matrix square root from scipy, an eps offset on the diagonals when the covariance
product is near-singular, and a check that the imaginary part the square root may pick up from
round-off is negligible. KID follows Binkowski et al. 2018 ("Demystifying MMD GANs"): the
unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets.

These formulas are kept here rather than imported from pytorch-fid, torch-fidelity or clean-fid:
they are a few lines each, they also serve the oracle-feature FID and cached statistics, and none
of those libraries is a runtime dependency. tests/test_metrics_peers.py checks that they equal
pytorch-fid's `calculate_frechet_distance`, torch-fidelity's FID and its `kid_features_to_metric`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from attngan.errors import AttnGANError
from attngan.metrics.spec import register

if TYPE_CHECKING:
    from attngan.metrics.context import EvalContext


@dataclass(frozen=True)
class GaussianStats:
    """Mean and covariance of a feature set (float64), the sufficient statistics of the FID."""

    mu: np.ndarray       # D
    sigma: np.ndarray    # D x D
    n: int               # number of feature vectors they summarise


def feature_stats(features: np.ndarray) -> GaussianStats:
    """Mean and unbiased covariance (rowvar=False, ddof=1, as numpy.cov) in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise AttnGANError(f"FID needs at least 2 feature vectors as an N x D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise AttnGANError("features contain NaN or inf; the images or the extractor are broken")
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return GaussianStats(mu=mu, sigma=sigma, n=int(x.shape[0]))


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
    max_imag: float = 1e-3,
) -> float:
    """d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the Frechet distance of two Gaussians."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise AttnGANError(
            f"FID statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # A (near-)singular product, e.g. fewer samples than dimensions: regularise both
        # covariances by eps*I, as pytorch-fid does, rather than return garbage.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # The exact square root of a product of PSD matrices has real eigenvalues; a large
        # imaginary part means the statistics are broken, a tiny one is round-off.
        worst = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if worst > max_imag:
            raise AttnGANError(f"FID matrix square root has an imaginary component {worst:.3g}; statistics are ill-conditioned")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(value)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    # Singular products are expected (fewer samples than dimensions) and handled by the caller.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        import scipy.linalg  # here: the registry imports this module, and scipy is slow to load

        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(a)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    s1, s2 = feature_stats(features1), feature_stats(features2)
    return frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma)


def fid_from_stats(s1: GaussianStats, s2: GaussianStats) -> float:
    return frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (x.y / D + coef0)^degree, the KID kernel (gamma = 1 / feature dimension)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equally sized samples: the diagonals of k(x,x), k(y,y) are excluded."""
    m = x.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.sum() / (m * m))


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and std of the unbiased polynomial-kernel MMD^2 over random subsets.

    Each subset draws `subset_size` vectors without replacement from each set (capped at the
    smaller set's size), as in Binkowski et al. and the stylegan2-ada implementation.
    """
    x = np.asarray(features1, dtype=np.float64)
    y = np.asarray(features2, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise AttnGANError(f"KID needs two N x D feature arrays with the same D, got {x.shape} and {y.shape}")
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise AttnGANError(f"KID needs at least 2 feature vectors in each set, got {x.shape[0]} and {y.shape[0]}")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        xs = x[rng.choice(x.shape[0], m, replace=False)]
        ys = y[rng.choice(y.shape[0], m, replace=False)]
        values[i] = mmd2_unbiased(xs, ys)
    return float(values.mean()), float(values.std())


@register(
    name="fid", title="FID",
    protocol="Frechet distance of pool3 features, FID Inception (TF 2015-12-05), inputs in [-1, 1] "
             "resized to 299 by F.interpolate bilinear align_corners=False (pytorch-fid; --fid-resize "
             "tf1: torch-fidelity's TF1 resize), vs real test images",
    reference="mseitzer/pytorch-fid src/pytorch_fid/fid_score.py + inception.py (TTUR FID)",
    streams=("fid_inception",), real=True, unit="", higher_is_better=False, requires=("fid_inception",),
)
def fid_pytorch_fid(ctx: "EvalContext") -> dict[str, Any]:
    return frechet(ctx, "fid_inception", "pool")


@register(
    name="fid_legacy", title="FID (legacy)",
    protocol="Frechet distance of pool3 features, torchvision ImageNet Inception-v3; each 8-bit "
             "image resized to 299 by PIL bilinear, ToTensor [0, 1], then torchvision's "
             "transform_input formula x*std/0.5 + (mean-0.5)/0.5 (the pre-2019 pytorch-fid "
             "normalisation), vs real test images",
    reference="DM-GAN eval/FID/fid_score.py + inception.py (DF-GAN's early code/eval/FID/"
              "fid_score.py loads square images the same way)",
    streams=("tv_inception_dmgan",), real=True, unit="", higher_is_better=False, requires=("inception",),
)
def fid_legacy_torchvision(ctx: "EvalContext") -> dict[str, Any]:
    return frechet(ctx, "tv_inception_dmgan", "pool")


@register(
    name="kid", title="KID",
    protocol="unbiased MMD^2, kernel (x.y/d + 1)^3, 100 subsets of <= 1000, FID Inception pool3 vs real test images",
    reference="Binkowski et al. 2018; torch-fidelity metric_kid.py (same estimator as stylegan2-ada's)",
    streams=("fid_inception",), real=True, unit="", higher_is_better=False, requires=("fid_inception",),
)
def kid_poly3(ctx: "EvalContext") -> dict[str, Any]:
    real = ctx.real_features("fid_inception")["pool"]
    o = ctx.options
    mean, std = kernel_inception_distance(ctx.generated["fid_inception"]["pool"], real,
                                          num_subsets=o.kid_subsets, subset_size=o.kid_subset_size, seed=o.seed)
    return {"value": mean, "std": std, "n_real": int(real.shape[0])}


@register(
    name="fid_oracle", title="FID (oracle features)",
    protocol="Frechet distance of the SynthBirds oracle's 256-d penultimate features (64 px), vs "
             "real test images; SynthBirds only, not comparable with Inception FIDs",
    reference="ours (FID formula of mseitzer/pytorch-fid on a domain classifier's features)",
    streams=("oracle",), real=True, unit="", higher_is_better=False, requires=("oracle",),
)
def fid_oracle_features(ctx: "EvalContext") -> dict[str, Any]:
    return frechet(ctx, "oracle", "hidden")


def frechet(ctx: "EvalContext", stream: str, key: str) -> dict[str, Any]:
    """The Frechet distance between the generated and the real images' `key` features of `stream`."""
    real = ctx.real_features(stream)[key]
    value = fid_from_stats(feature_stats(ctx.generated[stream][key]), feature_stats(real))
    return {"value": value, "std": None, "n_real": int(real.shape[0])}
