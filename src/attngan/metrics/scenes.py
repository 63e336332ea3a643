"""Scene metrics on SynthScenes: does a generated scene hold the objects, colours, counts and place its prompt names, for seen and for novel compositions?

Each prompt is read with the caption parser (data/scene_captions.py): its background, and per
object group its category, colour, exact count (when stated) and place (the sky or the ground).
Its composition label (seen or novel) is the ground truth of the test image the caption belongs to
(synth_scenes.json) when the prompt is one of the data set's captions, else whether any stated
(object, place) or (colour, object) pair is held out of training (`is_held_out`). The judge
(networks/scene_judge.py) reads the generated image; `scene_scores` compares the two:

  scene_objects  recall: prompted categories the judge finds; precision: found categories that
                 were prompted;
  scene_place    the background right; also each object's place (sky or ground) right;
  scene_colour   each prompted object found in its prompted colour;
  scene_count    each stated count read exactly;
  composition    prompts with every object found, in its colour and place, on the right background.

Every score is given for all prompts, the seen and the novel ones; chance is the same images
scored against another prompt of the same kind (prompts rotated by one): what images that ignore
their text but look like the model's would get.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attngan.errors import AttnGANError
from attngan.metrics.fid import feature_stats, fid_from_stats, frechet
from attngan.metrics.spec import register, seen_novel_details

# torch, and the data modules that bring PIL, are imported inside the functions: the metric
# registry imports this module, and reading it (`attngan eval --help`) must not load them.
if TYPE_CHECKING:
    import torch

KINDS = ("seen", "novel")
_WORDS = re.compile(r"[a-z]+")


def _norm(text: str) -> str:
    return " ".join(_WORDS.findall(text.lower()))


def caption_truth(manifest: dict | None, split: str = "test") -> dict[str, str]:
    """Normalised caption text -> composition ("seen"/"novel") of the `split` images it describes.

    A caption shared by images of both kinds is left out (the parser then decides)."""
    out: dict[str, str] = {}
    clash: set[str] = set()
    if manifest is None:
        return out
    for t in manifest["images"].values():
        if t.get("split") != split:
            continue
        for c in t.get("captions", ()):
            k = _norm(c)
            if out.setdefault(k, t["composition"]) != t["composition"]:
                clash.add(k)
    for k in clash:
        del out[k]
    return out


def prompt_requests(captions: Sequence[str], truth: dict[str, str] | None = None) -> list[dict]:
    """Per prompt: {"background", "objects": [{category, colour, count, place}], "composition"}."""
    from attngan.data.scene_captions import parse_scene_caption
    from attngan.data.synth_scenes import is_held_out

    out = []
    for text in captions:
        p = parse_scene_caption(text)
        objects = [{"category": o["category"], "colour": o["colour"], "count": o["count"], "place": o["place"]}
                   for o in p["objects"]]
        kind = (truth or {}).get(_norm(text))
        if kind is None:
            kind = "novel" if any(is_held_out(o["category"], o["colour"] or "", o["place"] or "") for o in objects) \
                else "seen"
        out.append({"background": p["background"], "objects": objects, "composition": kind})
    return out


def scene_scores(requests: Sequence[dict], judged: dict[str, np.ndarray], categories: Sequence[str],
                 colours: Sequence[str], backgrounds: Sequence[str]) -> dict[str, Any]:
    """Per-prompt hits of every scene reading, and their shares for all / seen / novel prompts.

    judged: the judge's readings per image: "background" N (index), "count" N x C, "colour"
    N x C (index), "sky" N x C (probability). Returns {metric: {"all", "seen", "novel", "n_all",
    "n_seen", "n_novel"}} for objects_recall, objects_precision, place, object_place, colour,
    count, composition."""
    n = len(requests)
    for k in ("background", "count", "colour", "sky"):
        if len(judged[k]) != n:
            raise AttnGANError(f"scene scores: {len(judged[k])} judge readings of '{k}' for {n} prompts")
    cat_index = {c: i for i, c in enumerate(categories)}
    # Per prompt: lists of 0/1 hits of each reading (a prompt may contribute several).
    per: dict[str, list[list[int]]] = {m: [] for m in ("objects_recall", "objects_precision", "place",
                                                        "object_place", "colour", "count", "composition")}
    for i, req in enumerate(requests):
        count, colour, sky = judged["count"][i], judged["colour"][i], judged["sky"][i]
        found = {categories[c] for c in np.flatnonzero(np.asarray(count) > 0)}
        objs = [o for o in req["objects"] if o["category"] in cat_index]
        prompted = {o["category"] for o in objs}
        recall, colour_hits, count_hits, place_hits = [], [], [], []
        for o in objs:
            c = cat_index[o["category"]]
            there = int(count[c] > 0)
            recall.append(there)
            if o["colour"] is not None:
                colour_hits.append(int(there and colours[int(colour[c])] == o["colour"]))
            if o["count"] is not None:
                count_hits.append(int(int(count[c]) == o["count"]))
            if o["place"] is not None:
                place_hits.append(int(there and (sky[c] > 0.5) == (o["place"] == "sky")))
        bg = [] if req["background"] is None else [int(backgrounds[int(judged["background"][i])] == req["background"])]
        per["objects_recall"].append(recall)
        per["objects_precision"].append([int(c in prompted) for c in sorted(found)])
        per["place"].append(bg)
        per["object_place"].append(place_hits)
        per["colour"].append(colour_hits)
        per["count"].append(count_hits)
        per["composition"].append([int(bool(objs) and all(recall) and all(colour_hits) and all(place_hits)
                                       and all(bg))] if objs else [])
    kinds = [r["composition"] for r in requests]
    out = {}
    for m, rows in per.items():
        out[m] = {}
        for kind in ("all", *KINDS):
            hits = [h for r, k in zip(rows, kinds) if kind == "all" or k == kind for h in r]
            out[m][kind] = float(np.mean(hits)) if hits else float("nan")
            out[m][f"n_{kind}"] = len(hits)
    return out


def rotated_within_kind(requests: Sequence[dict]) -> list[dict]:
    """Each prompt replaced by the next prompt of its kind (seen or novel): the chance pairing."""
    out = list(requests)
    for kind in KINDS:
        idx = [i for i, r in enumerate(requests) if r["composition"] == kind]
        for a, b in zip(idx, idx[1:] + idx[:1]):
            out[a] = {**requests[b], "composition": kind}
    return out


class JudgeStream:
    """The SynthScenes judge's readings of each image (background, count, colour, sky per category),
    its pooled features ("features": the judge-feature FID) and its scene-class distribution
    ("scene_probs": the judge's IS)."""

    name = "judge"
    needs_captions = False

    def __init__(self, judge, device: torch.device):
        self.judge = judge.to(device).eval()
        self.digest = judge.digest
        self.device = device

    def __call__(self, images: torch.Tensor, captions: list[str] | None = None) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            r = self.judge.read(images.to(self.device, torch.float32))
        out = {k: v.cpu().numpy() for k, v in r.items()}
        out["features"] = out["features"].astype(np.float64)
        out["scene_probs"] = out["scene_probs"].astype(np.float64)
        return out


class JudgeSceneProbs(JudgeStream):
    """The judge's scene-class distribution as an IS classifier stream."""

    name = "is_probs"

    def __call__(self, images: torch.Tensor, captions: list[str] | None = None) -> dict[str, np.ndarray]:
        return {"probs": super().__call__(images)["scene_probs"]}


def bundled_judge_dir():
    """The judge shipped in the package (assets/synthscenes-eval/judge)."""
    return Path(__file__).resolve().parents[1] / "assets" / "synthscenes-eval" / "judge"


# What the registry's metrics call: the context's prompts read once, scored by kind.

def scene_manifest(ctx) -> dict | None:
    """The data folder's SynthScenes ground truth, or None when it is not SynthScenes."""
    if "scene_manifest" not in ctx.memo:
        from attngan.data.synth_scenes import load_manifest

        scenes = ctx.ground_truth == "synth_scenes"
        ctx.memo["scene_manifest"] = load_manifest(ctx.data_root) if scenes else None
    return ctx.memo["scene_manifest"]


def context_requests(ctx) -> list[dict] | None:
    """The scored prompts' statements and kinds (None when the images have no captions, or when
    neither the data nor the prompts are SynthScenes')."""
    if "scene_requests" not in ctx.memo:
        captions = ctx.full_captions or ctx.captions
        reqs = None
        if captions:
            manifest = scene_manifest(ctx)
            reqs = prompt_requests(captions, caption_truth(manifest, ctx.options.split))
            # Free prompts that name no SynthScenes object are no scene prompts.
            if manifest is None and not any(r["objects"] for r in reqs):
                reqs = None
        ctx.memo["scene_requests"] = reqs
    return ctx.memo["scene_requests"]


def by_kind(ctx, fn, minimum: int = 2) -> dict[str, Any]:
    """{"seen": fn(indices of the seen prompts), "novel": ..., "n_seen", "n_novel"} on SynthScenes
    prompts (a kind with fewer than `minimum` images gets None); {} for any other data."""
    if scene_manifest(ctx) is None:
        return {}
    reqs = context_requests(ctx)
    if reqs is None:
        return {}
    out: dict[str, Any] = {}
    for kind in KINDS:
        sel = np.flatnonzero([r["composition"] == kind for r in reqs])
        out[kind] = fn(sel) if len(sel) >= minimum else None
        out[f"n_{kind}"] = int(len(sel))
    return out


def scene_metric(ctx, key: str, extra: str | None = None) -> dict[str, Any]:
    """One scene reading's result: value (all prompts, %), seen, novel, their counts, chance (the
    images against another prompt of their kind) and, with `extra`, a second reading beside it."""
    from attngan.networks.scene_judge import MIN_ACCURACY

    reqs = context_requests(ctx)
    if reqs is None:
        raise AttnGANError("the scene metrics need the prompts of the images (SynthScenes captions)")
    judge = ctx.streams["judge"].judge
    judged = ctx.generated["judge"]
    cfg = judge.cfg
    memo = ctx.memo.setdefault("scene_scores", {})
    if not memo:
        memo["real"] = scene_scores(reqs, judged, cfg.categories, cfg.colours, cfg.backgrounds)
        memo["chance"] = scene_scores(rotated_within_kind(reqs), judged, cfg.categories, cfg.colours, cfg.backgrounds)

    def pct(v):
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else 100.0 * v

    def table(scores):
        return {"all": pct(scores["all"]), "seen": pct(scores["seen"]), "novel": pct(scores["novel"])}

    s, c = memo["real"][key], memo["chance"][key]
    out: dict[str, Any] = {
        "value": pct(s["all"]) if s["all"] == s["all"] else float("nan"), "std": None,
        "seen": pct(s["seen"]), "novel": pct(s["novel"]),
        "n": len(reqs), "n_scored": s["n_all"], "n_seen": s["n_seen"], "n_novel": s["n_novel"],
        "chance": table(c), "judge_accuracy": cfg.accuracy,
    }
    if extra is not None:
        out[extra] = table(memo["real"][extra])
        out[f"{extra}_chance"] = table(memo["chance"][extra])
    if not cfg.valid:
        out["void"] = True
        out["note"] = (f"void: the judge is below its bars on held-out real renders "
                       f"({', '.join(f'{h} {100 * v:.0f}%' for h, v in MIN_ACCURACY.items())})")
    return out


def fid_by_kind(ctx) -> dict[str, Any]:
    """The judge-feature FID of the seen and of the novel prompts' images, each against the real
    test images of that kind (None for a kind with fewer than 2 images on either side)."""
    manifest = scene_manifest(ctx)
    reqs = context_requests(ctx)
    if manifest is None or reqs is None:
        return {}
    real = ctx.real_features("judge")["features"]
    keys = ctx.real_dataset(ctx.image_size).keys[: len(real)]
    real_kind = np.asarray([manifest["images"].get(k, {}).get("composition") for k in keys])
    gen = ctx.generated["judge"]["features"]
    gen_kind = np.asarray([r["composition"] for r in reqs])
    out: dict[str, Any] = {}
    for kind in KINDS:
        a, b = gen[gen_kind == kind], real[real_kind == kind]
        out[kind] = fid_from_stats(feature_stats(a), feature_stats(b)) if len(a) >= 2 and len(b) >= 2 else None
        out[f"n_{kind}"], out[f"n_real_{kind}"] = int(len(a)), int(len(b))
    return out


# The metrics, declared here with their maths (registered by importing this module).

_SCENE_KINDS = "; every score for all prompts, the seen and the novel compositions (prompts' ground truth)"
_SCENE = dict(streams=("judge",), real=False, unit="%", higher_is_better=True, requires=("captions", "judge"),
              reference="ours (SynthScenes ground truth)", details=seen_novel_details)


@register(
    name="scene_objects", title="Scene objects found (recall)",
    protocol="SynthScenes judge: share of the prompt's object categories it finds in the image (recall); "
             "precision: share of the categories it finds that the prompt names; chance: the images "
             "against another prompt of their kind" + _SCENE_KINDS,
    **_SCENE,
)
def scene_objects_judge(ctx) -> dict[str, Any]:
    return scene_metric(ctx, "objects_recall", extra="objects_precision")


@register(
    name="scene_place", title="Scene place (background) right",
    protocol="SynthScenes judge: the background it reads is the prompt's (street, grass, lake, beach, "
             "snow); object_place: each prompted object found in its place (sky or ground); chance: "
             "another prompt of the kind" + _SCENE_KINDS,
    **_SCENE,
)
def scene_place_judge(ctx) -> dict[str, Any]:
    return scene_metric(ctx, "place", extra="object_place")


@register(
    name="scene_colour", title="Scene object colour right",
    protocol="SynthScenes judge: each prompted object found and in its prompted colour (10 colours); "
             "chance: another prompt of the kind" + _SCENE_KINDS,
    **_SCENE,
)
def scene_colour_judge(ctx) -> dict[str, Any]:
    return scene_metric(ctx, "colour")


@register(
    name="scene_count", title="Scene count right",
    protocol="SynthScenes judge: the count it reads (0-4) equals the prompt's, for each object whose "
             "prompt states a number (\"two cows\"; not \"some\"/\"a herd of\"); chance: another prompt "
             "of the kind" + _SCENE_KINDS,
    **_SCENE,
)
def scene_count_judge(ctx) -> dict[str, Any]:
    return scene_metric(ctx, "count")


@register(
    name="composition", title="Composition (all of the prompt right)",
    protocol="SynthScenes judge: share of prompts with every prompted object found, in its colour and "
             "place (sky or ground), on the prompt's background; novel_seen_ratio = novel / seen "
             "(1.0: the model composes as well as it remembers); chance: another prompt of the kind"
             + _SCENE_KINDS,
    **{**_SCENE, "reference": "ours (SynthScenes ground truth; the paper's novel-scene claim, as a number)"},
)
def composition_judge(ctx) -> dict[str, Any]:
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
    details=seen_novel_details,
)
def fid_judge_features(ctx) -> dict[str, Any]:
    out = frechet(ctx, "judge", "features")
    out.update(fid_by_kind(ctx))
    return out
