"""Metric registry: name -> function, each with the protocol it measures and the reference
implementation its numbers follow (as stylegan2-ada's metric_main.py), and the feature streams
the metrics read, name -> the function that builds one.

A metric function takes an `EvalContext` (metrics/context.py) whose streams already hold the
features of the scored images, and returns {"value", "std", ...extras}. `streams` names what it
reads from the generated images, `uses` streams it only calls itself (on real images); both are
keys of `STREAMS`. `real` says it also compares against real test images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from attngan.metrics.context import EvalContext


@dataclass(frozen=True)
class MetricSpec:
    name: str
    title: str                     # row label of the Markdown table
    protocol: str                  # what exactly is measured
    reference: str                 # the implementation the numbers follow
    streams: tuple[str, ...]       # feature streams read on the scored images
    real: bool                     # also needs features of real test images
    unit: str                      # "" or "%"
    higher_is_better: bool
    fn: Callable[["EvalContext"], dict[str, Any]]
    requires: tuple[str, ...] = ()  # inputs it cannot run without: keys of REQUIREMENTS
    default: bool = True           # runs when --metrics is not given (and its inputs are there)
    uses: tuple[str, ...] = ()     # streams it needs built but that read no scored image


@dataclass(frozen=True)
class StreamSpec:
    name: str
    # (context, the model's pipeline or None) -> (the stream, its line in the report's "streams")
    build: Callable[["EvalContext", Any], tuple[Any, str]]


# What a metric may need, each as (is it there?, the note a skipped metric gets). `inputs` holds the
# options and what evaluate() found: has_damsm, has_captions, generated, synth.
REQUIREMENTS: dict[str, tuple[Callable[[Any, dict[str, bool]], bool], str]] = {
    "is_classifier": (lambda o, i: bool(o.is_classifier or o.fid_inception or o.oracle or getattr(o, "judge", None)),
                      "needs --is-classifier FILE|ORACLE_DIR, --fid-inception FILE (pt_inception-2015-12-05, "
                      "improved-gan's network), --oracle DIR (SynthBirds) or --judge DIR (SynthScenes)"),
    "fid_inception": (lambda o, i: bool(o.fid_inception),
                      "needs --fid-inception FILE (pytorch-fid's pt_inception-2015-12-05-6726825d.pth)"),
    "inception": (lambda o, i: bool(o.inception),
                  "needs --inception FILE (torchvision's inception_v3_google-*.pth)"),
    "damsm": (lambda o, i: i["has_damsm"], "needs a DAMSM: --model MODEL_DIR or --eval-damsm DIR"),
    "captions": (lambda o, i: i["has_captions"],
                 "needs the images' captions: a captions.json {file name: caption} in the --images folder"),
    "oracle": (lambda o, i: bool(o.oracle), "needs --oracle DIR (train one with `attngan train-oracle`)"),
    "captioner": (lambda o, i: bool(o.captioner),
                  "needs --captioner DIR|NAME (attngan train-captioner; the bundled one: synthbirds-captioner)"),
    "generated": (lambda o, i: i["generated"],
                  "needs generated images (--model): it reads the generator's attention maps"),
    "synth": (lambda o, i: i["synth"],
              "needs SynthBirds data (synth_birds.json in --data, with its part masks and caption grammar)"),
    "judge": (lambda o, i: bool(getattr(o, "judge", None)),
              "needs a SynthScenes judge: --judge DIR (`attngan train-oracle` on SynthScenes data; the "
              "bundled one is used when --data holds synth_scenes.json)"),
}


def missing_input(spec: MetricSpec, options: Any, **inputs: bool) -> str | None:
    """Why `spec` cannot run with these options and inputs (the first missing one), or None."""
    for need in spec.requires:
        present, why = REQUIREMENTS[need]
        if not present(options, inputs):
            return why
    return None


REGISTRY: dict[str, MetricSpec] = {}
# Registration order is the order of the report's "streams" (the Markdown's "Extractors" line).
STREAMS: dict[str, StreamSpec] = {}


def register(**kwargs) -> Callable:
    def wrap(fn: Callable) -> Callable:
        REGISTRY[kwargs["name"]] = MetricSpec(fn=fn, **kwargs)
        return fn

    return wrap


def register_stream(name: str) -> Callable:
    def wrap(build: Callable) -> Callable:
        STREAMS[name] = StreamSpec(name, build)
        return build

    return wrap


@register(
    name="is", title="Inception Score",
    protocol="exp(E KL(p(y|x) || p(y))) in float64, mean ± std over splits with bounds k*N//splits "
             "(paper: 10 of 30,000 images); classifier: --is-classifier, else the --oracle species "
             "head, else the SynthScenes judge's 60 scene classes (background x main category), else "
             "--fid-inception (1008-class TF graph, bias-free logits pool3 @ W); on SynthScenes also "
             "for seen and novel prompts",
    reference="openai/improved-gan inception_score/model.py (COCO); DM-GAN eval/IS/bird/"
              "inception_score_bird.py on StackGAN's CUB Inception, logit 0 dropped (CUB)",
    streams=("is_probs",), real=False, unit="", higher_is_better=True, requires=("is_classifier",),
)
def inception_score_splits(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.inception_score import inception_score

    from attngan.metrics.scenes import by_kind

    probs = ctx.generated["is_probs"]["probs"]
    mean, std = inception_score(probs, splits=ctx.options.splits, shuffle_seed=ctx.options.is_shuffle_seed)
    out = {"value": mean, "std": std, "classifier": ctx.descriptions.get("is_probs", "")}
    # SynthScenes prompts: the score of the seen and of the novel compositions' images apart.
    out.update(by_kind(ctx, lambda sel: inception_score(probs[sel], splits=min(ctx.options.splits, len(sel)),
                                                        shuffle_seed=ctx.options.is_shuffle_seed)[0]))
    return out


@register(
    name="fid", title="FID",
    protocol="Frechet distance of pool3 features, FID Inception (TF 2015-12-05), inputs in [-1, 1] "
             "resized to 299 by F.interpolate bilinear align_corners=False (pytorch-fid; --fid-resize "
             "tf1: torch-fidelity's TF1 resize), vs real test images",
    reference="mseitzer/pytorch-fid src/pytorch_fid/fid_score.py + inception.py (TTUR FID)",
    streams=("fid_inception",), real=True, unit="", higher_is_better=False, requires=("fid_inception",),
)
def fid_pytorch_fid(ctx: "EvalContext") -> dict[str, Any]:
    return _frechet(ctx, "fid_inception", "pool")


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
    return _frechet(ctx, "tv_inception_dmgan", "pool")


@register(
    name="kid", title="KID",
    protocol="unbiased MMD^2, kernel (x.y/d + 1)^3, 100 subsets of <= 1000, FID Inception pool3 vs real test images",
    reference="Binkowski et al. 2018; torch-fidelity metric_kid.py (same estimator as stylegan2-ada's)",
    streams=("fid_inception",), real=True, unit="", higher_is_better=False, requires=("fid_inception",),
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
    protocol="top-1 of the true caption vs 99 mismatched captions by DAMSM cosine(image code, "
             "sentence), mean ± std over splits; --rp-protocol dmgan (default): negatives drawn "
             "with replacement from all test captions of other classes, ties are hits, hits "
             "shuffled into 10 splits, the conditioning sentence embedding; set: negatives from "
             "the scored set, ties miss",
    reference="DM-GAN code/trainer.py sampling() + datasets.py get_mis_caption()",
    streams=("damsm",), real=False, unit="%", higher_is_better=True, requires=("damsm", "captions"),
)
def r_precision_dmgan(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.r_precision import r_precision, r_precision_dmgan

    d = ctx.generated["damsm"]
    protocol = ctx.options.rp_protocol
    if protocol == "dmgan" and ctx.class_ids_given:
        pool, pool_classes = ctx.caption_pool()
        mean, std, _ = r_precision_dmgan(d["img"], d["sent"], ctx.class_ids, pool, pool_classes, n_neg=99,
                                         splits=ctx.options.splits, seed=ctx.options.seed)
    else:
        # A folder without class ids in captions.json cannot be matched to the test split's classes.
        protocol = "set"
        mean, std = r_precision(d["img"], d["sent"], ctx.class_ids, n_neg=99, splits=ctx.options.splits,
                                seed=ctx.options.seed)
    out = {"value": 100 * mean, "std": 100 * std, "encoders": ctx.descriptions.get("damsm", ""),
           "sampling": protocol}
    from attngan.metrics.scenes import by_kind

    def subset(sel):
        splits = max(1, min(ctx.options.splits, len(sel) // 8))
        if protocol == "dmgan":
            return 100 * r_precision_dmgan(d["img"][sel], d["sent"][sel], ctx.class_ids[sel], pool, pool_classes,
                                           n_neg=99, splits=splits, seed=ctx.options.seed)[0]
        return 100 * r_precision(d["img"][sel], d["sent"][sel], ctx.class_ids[sel], n_neg=99, splits=splits,
                                 seed=ctx.options.seed)[0]

    # SynthScenes prompts: the seen and the novel compositions apart.
    out.update(by_kind(ctx, subset, minimum=8))
    return out


@register(
    name="binding", title="Attribute binding",
    protocol="SynthBirds oracle colour of wing/belly/crown/bill == caption's, per attribute "
             "mentioned; value = all mentioned attributes right; plus swap rate",
    reference="ours (SynthBirds ground truth)",
    streams=("oracle",), real=False, unit="%", higher_is_better=True, requires=("captions", "oracle"),
)
def binding_oracle(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.data.synth_birds import caption_attributes
    from attngan.metrics.binding import binding_scores

    oracle = ctx.streams["oracle"].oracle
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
    protocol="share of DAMSM word-region attention inside the part's ground-truth mask, real test "
             "images, of the colour word the caption binds to that part (\"black\" in \"wings that "
             "are black\"; a colour stated for two parts is left out); value = mean over wing, belly, "
             "crown, bill; chance = mean mask area; per_part_noun: the same for the part nouns",
    reference="ours (SynthBirds ground truth)",
    streams=(), uses=("damsm",), real=False, unit="%", higher_is_better=True, requires=("damsm", "synth"),
)
def localisation_damsm(ctx: "EvalContext") -> dict[str, Any]:
    per_kind, n = ctx.real_localisation()

    def table(per_part: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {p: {"share": _pct(v["share"]), "chance": _pct(v["chance"]), "n": v["n"]} for p, v in per_part.items()}

    shares = [v["share"] for v in per_kind["colour"].values()]
    return {
        "value": _pct(float(np.mean(shares))) if shares else float("nan"), "std": None,
        "per_part": table(per_kind["colour"]), "per_part_noun": table(per_kind["noun"]),
        "n": n, "encoders": ctx.descriptions.get("damsm", ""),
    }


@register(
    name="attention_colour", title="Word attention on its colour",
    protocol="generated images: share of G's word attention, per attentional stage, of each colour "
             "word the caption binds to one part, on the regions G painted that colour (a region's "
             "colour: the SynthBirds palette colour nearest its mean RGB in the top image); value = "
             "the mean over words and stages; chance = the share of such regions",
    reference="ours (the paper's attention figures, as a number)",
    streams=("colour_attention",), real=False, unit="%", higher_is_better=True, requires=("generated", "synth"),
)
def attention_colour_generator(ctx: "EvalContext") -> dict[str, Any]:
    d = ctx.generated["colour_attention"]
    per_stage = [{"stage": int(k), "share": _pct(float(d["share"][d["stage"] == k].mean())),
                  "chance": _pct(float(d["chance"][d["stage"] == k].mean())), "n": int((d["stage"] == k).sum())}
                 for k in sorted(set(d["stage"].tolist()))]
    return {"value": _pct(float(d["share"].mean())) if len(d["share"]) else float("nan"), "std": None,
            "chance": _pct(float(d["chance"].mean())) if len(d["chance"]) else float("nan"),
            "per_attention_stage": per_stage}


@register(
    name="fid_oracle", title="FID (oracle features)",
    protocol="Frechet distance of the SynthBirds oracle's 256-d penultimate features (64 px), vs "
             "real test images; SynthBirds only, not comparable with Inception FIDs",
    reference="ours (FID formula of mseitzer/pytorch-fid on a domain classifier's features)",
    streams=("oracle",), real=True, unit="", higher_is_better=False, requires=("oracle",),
)
def fid_oracle_features(ctx: "EvalContext") -> dict[str, Any]:
    return _frechet(ctx, "oracle", "hidden")


@register(
    name="sharpness", title="High-frequency detail",
    protocol="per stage of size S: share of the mean-removed luminance DCT-II energy in the top "
             "octave (max(kx, ky) >= S/2: above the previous stage's Nyquist), generated over real "
             "test images (the loader's centre crop, smaller stages downscaled from it); value = the "
             "top stage's ratio, ± std over splits; 1 = real images' detail, ~0 = only upsampled",
    reference="ours (metrics/sharpness.py)",
    # A diagnostic of the stages, not one of the published comparisons: it runs when named.
    streams=("sharpness",), real=True, unit="", higher_is_better=True, default=False,
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


@register(
    name="roundtrip", title="Round trip (caption attributes back)",
    protocol="an independent captioner captions each image (its own decoding: beam, words it must "
             "name); share of the prompt's "
             "SynthBirds attributes (caption_attributes) its caption states with the same value, "
             "all and per attribute; BLEU-4 and CIDEr-D of the captions vs the prompts; ceiling: "
             "the captioner on real test images vs their own captions (chance: another image's)",
    reference="ours (the seed's CaptionBot round trip; BLEU: Papineni 2002, CIDEr-D: Vedantam 2015, "
              "metrics/captioning.py)",
    streams=("captioner",), real=True, unit="%", higher_is_better=True,
    requires=("captioner", "captions", "synth"),
)
def roundtrip_captioner(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.data.layout import raw_caption_lines
    from attngan.metrics.roundtrip import caption_items, real_ceiling, roundtrip_scores

    captions = [str(c) for c in ctx.generated["captioner"]["captions"]]
    gen = roundtrip_scores(list(ctx.full_captions), captions)
    # The ceiling on as many real test images as images are scored (a seeded sample across
    # species), in the split's order: captions and caption lines must stay paired.
    ds = ctx.real_dataset(ctx.image_size)
    n = min(len(ds), ctx.options.real_images or ctx.options.num_images)
    items = sorted(np.random.default_rng(ctx.options.seed).permutation(len(ds))[:n].tolist())
    real_captions = caption_items(ds, items, ctx.streams["captioner"], ctx.options.batch)
    lines = raw_caption_lines(ds) or [[ds.caption_text(i, 0)] for i in range(len(ds))]
    real = real_ceiling(real_captions, [lines[i] for i in items], seed=ctx.options.seed)
    return {
        "value": _pct(gen["recall"]), "std": None,
        "per_attribute": {k: _pct(v) for k, v in gen["per_attribute"].items()},
        "prompted": gen["prompted"], "all_back": _pct(gen["all_back"]),
        "bleu4": gen["bleu4"], "cider_d": gen["cider_d"],
        "real_ceiling": {"recall": _pct(real["own"]["recall"]),
                         "per_attribute": {k: _pct(v) for k, v in real["own"]["per_attribute"].items()},
                         "bleu4": real["own"]["bleu4"], "cider_d": real["own"]["cider_d"],
                         "images": real["images"]},
        "real_shuffled": {"recall": _pct(real["shuffled"]["recall"]),
                          "per_attribute": {k: _pct(v) for k, v in real["shuffled"]["per_attribute"].items()},
                          "bleu4": real["shuffled"]["bleu4"], "cider_d": real["shuffled"]["cider_d"]},
        "examples": [{"prompt": p, "caption": c} for p, c in list(zip(ctx.full_captions, captions))[:8]],
        "captioner": ctx.descriptions.get("captioner", ""),
    }


_SCENE_KINDS = "; every score for all prompts, the seen and the novel compositions (prompts' ground truth)"


@register(
    name="scene_objects", title="Scene objects found (recall)",
    protocol="SynthScenes judge: share of the prompt's object categories it finds in the image (recall); "
             "precision: share of the categories it finds that the prompt names; chance: the images "
             "against another prompt of their kind" + _SCENE_KINDS,
    reference="ours (SynthScenes ground truth)",
    streams=("judge",), real=False, unit="%", higher_is_better=True, requires=("captions", "judge"),
)
def scene_objects_judge(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.scenes import scene_metric

    return scene_metric(ctx, "objects_recall", extra="objects_precision")


@register(
    name="scene_place", title="Scene place (background) right",
    protocol="SynthScenes judge: the background it reads is the prompt's (street, grass, lake, beach, "
             "snow); object_place: each prompted object found in its place (sky or ground); chance: "
             "another prompt of the kind" + _SCENE_KINDS,
    reference="ours (SynthScenes ground truth)",
    streams=("judge",), real=False, unit="%", higher_is_better=True, requires=("captions", "judge"),
)
def scene_place_judge(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.scenes import scene_metric

    return scene_metric(ctx, "place", extra="object_place")


@register(
    name="scene_colour", title="Scene object colour right",
    protocol="SynthScenes judge: each prompted object found and in its prompted colour (10 colours); "
             "chance: another prompt of the kind" + _SCENE_KINDS,
    reference="ours (SynthScenes ground truth)",
    streams=("judge",), real=False, unit="%", higher_is_better=True, requires=("captions", "judge"),
)
def scene_colour_judge(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.scenes import scene_metric

    return scene_metric(ctx, "colour")


@register(
    name="scene_count", title="Scene count right",
    protocol="SynthScenes judge: the count it reads (0-4) equals the prompt's, for each object whose "
             "prompt states a number (\"two cows\"; not \"some\"/\"a herd of\"); chance: another prompt "
             "of the kind" + _SCENE_KINDS,
    reference="ours (SynthScenes ground truth)",
    streams=("judge",), real=False, unit="%", higher_is_better=True, requires=("captions", "judge"),
)
def scene_count_judge(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.scenes import scene_metric

    return scene_metric(ctx, "count")


@register(
    name="composition", title="Composition (all of the prompt right)",
    protocol="SynthScenes judge: share of prompts with every prompted object found, in its colour and "
             "place (sky or ground), on the prompt's background; novel_seen_ratio = novel / seen "
             "(1.0: the model composes as well as it remembers); chance: another prompt of the kind"
             + _SCENE_KINDS,
    reference="ours (SynthScenes ground truth; the paper's novel-scene claim, as a number)",
    streams=("judge",), real=False, unit="%", higher_is_better=True, requires=("captions", "judge"),
)
def composition_judge(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.scenes import scene_metric

    out = scene_metric(ctx, "composition")
    seen, novel = out.get("seen"), out.get("novel")
    out["novel_seen_ratio"] = (novel / seen if seen and novel is not None and not math.isnan(novel)
                               else float("nan"))
    return out


@register(
    name="fid_judge", title="FID (judge features)",
    protocol="Frechet distance of the SynthScenes judge's pooled features (mean and max of its "
             "stride-8 map), vs real test images; seen and novel: each kind's images vs the real "
             "test images of that kind; SynthScenes only, not comparable with Inception FIDs",
    reference="ours (FID formula of mseitzer/pytorch-fid on a domain network's features)",
    streams=("judge",), real=True, unit="", higher_is_better=False, requires=("judge",),
)
def fid_judge_features(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.metrics.scenes import fid_by_kind

    out = _frechet(ctx, "judge", "features")
    out.update(fid_by_kind(ctx))
    return out


def _frechet(ctx: "EvalContext", stream: str, key: str) -> dict[str, Any]:
    """The Frechet distance between the generated and the real images' `key` features of `stream`."""
    from attngan.metrics.fid import feature_stats, fid_from_stats

    real = ctx.real_features(stream)[key]
    value = fid_from_stats(feature_stats(ctx.generated[stream][key]), feature_stats(real))
    return {"value": value, "std": None, "n_real": int(real.shape[0])}


def _pct(x: float) -> float:
    return float("nan") if x is None or (isinstance(x, float) and math.isnan(x)) else 100.0 * float(x)


# Feature streams. Each builder loads its network from the options; the imports stay inside so
# that reading the registry (`attngan eval --help`) does not import torch.

@register_stream("sharpness")
def _sharpness(ctx: "EvalContext", pipe) -> tuple[Any, str]:
    from attngan.metrics.sharpness import SharpnessStream

    return SharpnessStream(ctx.device), "luminance DCT-II top-octave energy share, every stage"


@register_stream("fid_inception")
def _fid_inception(ctx: "EvalContext", pipe) -> tuple[Any, str]:
    from attngan.metrics.extractors import fid_stream

    o = ctx.options
    return (fid_stream(o.fid_inception, ctx.device, resize=o.fid_resize),
            f"FID Inception {Path(o.fid_inception).name}, {o.fid_resize} resize")


@register_stream("tv_inception_dmgan")
def _tv_inception_dmgan(ctx: "EvalContext", pipe) -> tuple[Any, str]:
    from attngan.metrics.extractors import legacy_fid_stream

    path = ctx.options.inception
    return (legacy_fid_stream(path, ctx.device), f"torchvision Inception-v3 {Path(path).name}, DM-GAN "
                                                 "eval/FID input (PIL bilinear 299, [0, 1], transform_input)")


@register_stream("is_probs")
def _is_probs(ctx: "EvalContext", pipe) -> tuple[Any, str]:
    from attngan.metrics.extractors import classifier_stream

    o = ctx.options
    if not (o.is_classifier or o.oracle) and getattr(o, "judge", None):
        from attngan.metrics.scenes import JudgeSceneProbs
        from attngan.networks.scene_judge import load_judge

        judge = load_judge(o.judge, ctx.device)
        return (JudgeSceneProbs(judge, ctx.device),
                f"SynthScenes judge {Path(o.judge).name}: p(background) x the categories' shares of the object area")
    path = o.is_classifier or o.oracle or o.fid_inception
    stream, what = classifier_stream(path, ctx.device)
    return stream, f"{what}: {Path(path).name}"


@register_stream("oracle")
def _oracle(ctx: "EvalContext", pipe) -> tuple[Any, str]:
    from attngan.metrics.extractors import OracleStream
    from attngan.metrics.oracle import load_oracle

    path = ctx.options.oracle
    oracle = load_oracle(path, ctx.device)
    return OracleStream(oracle, ctx.device), f"SynthBirds oracle {Path(path).name} (valid={oracle.cfg.valid})"


@register_stream("judge")
def _judge(ctx: "EvalContext", pipe) -> tuple[Any, str]:
    from attngan.metrics.scenes import JudgeStream
    from attngan.networks.scene_judge import load_judge

    path = ctx.options.judge
    judge = load_judge(path, ctx.device)
    return JudgeStream(judge, ctx.device), f"SynthScenes judge {Path(path).name} (valid={judge.cfg.valid})"


@register_stream("colour_attention")
def _colour_attention(ctx: "EvalContext", pipe) -> tuple[Any, str]:
    from attngan.metrics.binding import ColourAttentionStream

    return ColourAttentionStream(), "the generator's word attention maps, SynthBirds palette colours"


@register_stream("captioner")
def _captioner(ctx: "EvalContext", pipe) -> tuple[Any, str]:
    from attngan.captioner import Captioner
    from attngan.metrics.roundtrip import CaptionerStream

    name = ctx.options.captioner
    captioner = Captioner.from_pretrained(name, device=str(ctx.device))
    c = captioner.config
    return CaptionerStream(captioner), (f"captioner {name} ({c.name}, beam {c.beam_size}"
                                        + (f", must mention {c.mention}" if c.mention else "")
                                        + "), trained on real images only")


@register_stream("damsm")
def _damsm(ctx: "EvalContext", pipe) -> tuple[Any, str]:
    from attngan.metrics.extractors import DamsmStream

    o = ctx.options
    if o.eval_damsm:
        from attngan.io import load_damsm

        cfg, vocab, text_enc, img_enc = load_damsm(o.eval_damsm, ctx.device)
        what, digest = f"evaluation DAMSM {o.eval_damsm}", f"damsm:{Path(o.eval_damsm).resolve()}"
    else:
        cfg, vocab, text_enc, img_enc = pipe.config, pipe.vocab, pipe.text_encoder, pipe.image_encoder
        what, digest = "the model's own DAMSM (the encoders G was trained against: optimistic)", "model"
    stream = DamsmStream(text_enc, img_enc, vocab, cfg.damsm.words_num, ctx.device, digest,
                         protocol=o.rp_protocol, own=not o.eval_damsm, gamma1=cfg.damsm.gamma1)
    return stream, what
