"""Metric registry: name -> function, each with the protocol it measures and the reference
implementation its numbers follow (as stylegan2-ada's metric_main.py).

A metric function takes an `EvalContext` (metrics/evaluation.py) whose streams already hold the
features of the scored images, and returns {"value", "std", ...extras}. `streams` names what it
reads from the generated images; `real` says it also compares against real test images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from attngan.metrics.evaluation import EvalContext


@dataclass(frozen=True)
class MetricSpec:
    name: str
    title: str                     # row label of the Markdown table
    protocol: str                  # what exactly is measured
    reference: str                 # the implementation the numbers follow
    needs: str                     # weights / inputs, as CLI flags (README and skip notes)
    streams: tuple[str, ...]       # feature streams read on the scored images
    real: bool                     # also needs features of real test images
    unit: str                      # "" or "%"
    higher_is_better: bool
    fn: Callable[["EvalContext"], dict[str, Any]]


REGISTRY: dict[str, MetricSpec] = {}


def register(**kwargs) -> Callable:
    def wrap(fn: Callable) -> Callable:
        REGISTRY[kwargs["name"]] = MetricSpec(fn=fn, **kwargs)
        return fn

    return wrap


@register(
    name="is", title="Inception Score",
    protocol="exp(E KL(p(y|x) || p(y))) in float64, mean ± std over splits (paper: 10 of 30,000 "
             "images); classifier: --is-classifier, else --inception, else the --oracle species head",
    reference="openai/improved-gan inception_score (StackGAN-inception-model for CUB)",
    needs="--is-classifier FILE|ORACLE_DIR, or --inception FILE, or (SynthBirds) --oracle DIR",
    streams=("is_probs",), real=False, unit="", higher_is_better=True,
)
def inception_score_splits(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.inception_score import inception_score

    mean, std = inception_score(ctx.generated["is_probs"]["probs"], splits=ctx.options.splits)
    return {"value": mean, "std": std, "classifier": ctx.descriptions.get("is_probs", "")}


@register(
    name="fid", title="FID",
    protocol="Frechet distance of pool3 features, FID Inception (TF 2015-12-05), bilinear 299 "
             "(align_corners=False), inputs in [-1, 1], vs real test images",
    reference="mseitzer/pytorch-fid (TTUR FID)",
    needs="--fid-inception FILE (pt_inception-2015-12-05-6726825d.pth)",
    streams=("fid_inception",), real=True, unit="", higher_is_better=False,
)
def fid_pytorch_fid(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.fid import feature_stats, fid_from_stats

    real = ctx.real_features("fid_inception")["pool"]
    value = fid_from_stats(feature_stats(ctx.generated["fid_inception"]["pool"]), feature_stats(real))
    return {"value": value, "std": None, "n_real": int(real.shape[0])}


@register(
    name="fid_legacy", title="FID (legacy)",
    protocol="Frechet distance of pool3 features, torchvision ImageNet Inception-v3, bilinear 299 "
             "(align_corners=True), inputs in [-1, 1], vs real test images",
    reference="DM-GAN / DF-GAN evaluation (early pytorch-fid on torchvision weights)",
    needs="--inception FILE (torchvision inception_v3_google-*.pth)",
    streams=("tv_inception_ac",), real=True, unit="", higher_is_better=False,
)
def fid_legacy_torchvision(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.fid import feature_stats, fid_from_stats

    real = ctx.real_features("tv_inception_ac")["pool"]
    value = fid_from_stats(feature_stats(ctx.generated["tv_inception_ac"]["pool"]), feature_stats(real))
    return {"value": value, "std": None, "n_real": int(real.shape[0])}


@register(
    name="fid_oracle", title="FID (oracle features)",
    protocol="Frechet distance of the SynthBirds oracle's 256-d penultimate features (64 px), vs "
             "real test images; SynthBirds only, not comparable with Inception FIDs",
    reference="ours (FID formula of mseitzer/pytorch-fid on a domain classifier's features)",
    needs="--oracle DIR (attngan train-oracle)",
    streams=("oracle",), real=True, unit="", higher_is_better=False,
)
def fid_oracle_features(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.fid import feature_stats, fid_from_stats

    real = ctx.real_features("oracle")["hidden"]
    value = fid_from_stats(feature_stats(ctx.generated["oracle"]["hidden"]), feature_stats(real))
    return {"value": value, "std": None, "n_real": int(real.shape[0])}


@register(
    name="kid", title="KID",
    protocol="unbiased MMD^2, kernel (x.y/d + 1)^3, 100 subsets of <= 1000, FID Inception pool3 vs real test images",
    reference="Binkowski et al. 2018; stylegan2-ada metrics/kernel_inception_distance.py",
    needs="--fid-inception FILE (pt_inception-2015-12-05-6726825d.pth)",
    streams=("fid_inception",), real=True, unit="", higher_is_better=False,
)
def kid_poly3(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.fid import kernel_inception_distance

    real = ctx.real_features("fid_inception")["pool"]
    o = ctx.options
    mean, std = kernel_inception_distance(ctx.generated["fid_inception"]["pool"], real,
                                          num_subsets=o.kid_subsets, subset_size=o.kid_subset_size, seed=o.seed)
    return {"value": mean, "std": std, "n_real": int(real.shape[0])}


@register(
    name="r_precision", title="R-precision",
    protocol="top-1 of the true caption vs 99 captions of other classes by DAMSM cosine(image code, "
             "sentence), mean ± std over splits (DM-GAN: 10)",
    reference="DM-GAN (MinfengZhu/DM-GAN) R-precision",
    needs="a DAMSM: the model's own or --eval-damsm DIR; with --images, captions.json in the folder",
    streams=("damsm",), real=False, unit="%", higher_is_better=True,
)
def r_precision_dmgan(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.r_precision import r_precision

    d = ctx.generated["damsm"]
    mean, std = r_precision(d["img"], d["sent"], ctx.class_ids, n_neg=99, splits=ctx.options.splits,
                            seed=ctx.options.seed)
    return {"value": 100 * mean, "std": 100 * std, "encoders": ctx.descriptions.get("damsm", "")}


@register(
    name="binding", title="Attribute binding",
    protocol="SynthBirds oracle colour of wing/belly/crown/bill == caption's, per attribute "
             "mentioned; value = all mentioned attributes right; plus swap rate",
    reference="ours (SynthBirds ground truth)",
    needs="--oracle DIR (attngan train-oracle), captions with SynthBirds attributes",
    streams=("oracle",), real=False, unit="%", higher_is_better=True,
)
def binding_oracle(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.data.synth_birds import caption_attributes
    from attngan.metrics.binding import binding_scores

    oracle = ctx.oracle
    preds = ctx.generated["oracle"]
    predicted = {p: [oracle.cfg.colours[int(i)] for i in preds[p]] for p in oracle.cfg.parts}
    # The caption as written (the ids the model reads have lost its commas).
    requested = [caption_attributes(c) for c in ctx.full_captions]
    s = binding_scores(requested, predicted, oracle.cfg.parts)
    void = not oracle.cfg.valid
    # A part whose oracle head is below MIN_ACCURACY cannot be scored; the others still can, so
    # their accuracies are kept while the all-attributes value is void.
    from attngan.metrics.oracle import MIN_ACCURACY
    weak = sorted(p for p in s["per_attribute"] if oracle.cfg.accuracy.get(p, 0.0) < MIN_ACCURACY)
    out = {
        "value": _pct(s["all_correct"]), "std": None,
        "per_attribute": {p: None if p in weak else _pct(v) for p, v in s["per_attribute"].items()},
        "mentioned": s["mentioned"], "swap_rate": _pct(s["swap_rate"]), "swap_pairs": s["swap_pairs"],
        "oracle_accuracy": oracle.cfg.accuracy, "void": void,
    }
    if void:
        out["note"] = ("void: the oracle is below 97% on a held-out attribute"
                       + (f" ({', '.join(weak)}; the other parts' accuracies stand)" if weak else ""))
    return out


@register(
    name="localisation", title="Attention localisation",
    protocol="share of DAMSM word-region attention of part words (wing(s), belly, crown, bill) "
             "inside the part's ground-truth mask, real test images; chance = mean mask area",
    reference="ours (SynthBirds ground truth)",
    needs="a DAMSM (the model's own or --eval-damsm DIR) and SynthBirds data with part masks",
    streams=(), real=False, unit="%", higher_is_better=True,
)
def localisation_damsm(ctx: "EvalContext") -> dict[str, Any]:
    per_part, n = ctx.real_localisation()
    shares = [v["share"] for v in per_part.values()]
    return {
        "value": _pct(float(np.mean(shares))) if shares else float("nan"), "std": None,
        "per_part": {p: {"share": _pct(v["share"]), "chance": _pct(v["chance"]), "n": v["n"]}
                     for p, v in per_part.items()},
        "n": n, "encoders": ctx.descriptions.get("damsm", ""),
    }


@register(
    name="sharpness", title="High-frequency detail",
    protocol="per stage of size S: share of the mean-removed luminance DCT-II energy in the top "
             "octave (max(kx, ky) >= S/2: above the previous stage's Nyquist), generated over real "
             "test images (the loader's centre crop, smaller stages downscaled from it); value = the "
             "top stage's ratio, ± std over splits; 1 = real images' detail, ~0 = only upsampled",
    reference="ours (metrics/sharpness.py)",
    needs="nothing beyond --data (the split's real images)",
    streams=("sharpness",), real=True, unit="", higher_is_better=True,
)
def sharpness_top_octave(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.sharpness import stage_table

    real = ctx.real_features("sharpness", sizes=ctx.stage_sizes)
    out = stage_table(ctx.generated["sharpness"], real, ctx.stage_ids, ctx.stage_sizes, ctx.options.splits)
    # Above 1 is more top-octave energy than real images hold (noise or artefacts), not better.
    out["target"] = 1.0
    if len(ctx.stage_ids) == 1 and ctx.stage_ids[0] not in (None, 0):
        out["note"] = "one image head (DCGAN): only the top stage's images exist"
    return out


def _pct(x: float) -> float:
    return float("nan") if x is None or (isinstance(x, float) and math.isnan(x)) else 100.0 * float(x)
