"""The round trip: caption each generated image and check that the prompt comes back.

AttnGAN's last slide sent each generated image through a captioning system and printed what it
said. Here an independently trained captioner (attngan train-captioner: real images only, its own
seed) writes a caption for every scored image; the SynthBirds caption grammar (`caption_attributes`)
parses both the prompt and that caption, and the metric is the share of the prompt's attributes
(part colours, bill shape and length, size) that the caption states with the same value, per
attribute and over all of them; BLEU-4 and CIDEr-D of the captions against the prompts go beside it.
The same captioner on real test images with their own captions gives the ceiling (what it can
read at all), and on real images with another image's captions the chance level.

On SynthScenes data the scene caption parser (`parse_scene_caption`) reads both instead, and the
metric is the share of the prompt's statements its caption makes too: each prompted object named
(`objects`), named in its prompted colour (`colours`), and the background (`place`); every share
for all prompts and for the seen and the novel compositions (the prompts' ground truth, as the
scene metrics label them). The ceiling is the captioner on the real renders of the same prompts
(the test images they are captions of), and chance the same captions against another prompt of
their kind (prompts rotated within seen and within novel, as the scene metrics' chance): what a
generator that ignores its text would get.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from attngan.metrics.captioning import attribute_recall, caption_scores
from attngan.metrics.scenes import (KINDS, _norm, caption_truth, context_requests, prompt_requests,
                                    rotated_within_kind, scene_manifest)
from attngan.metrics.spec import pct, register, seen_novel_details

# torch, and the data modules that bring PIL, are imported inside the functions: the metric
# registry imports this module, and reading it (`attngan eval --help`) must not load them.
if TYPE_CHECKING:
    import torch

    from attngan.metrics.context import EvalContext

KEY_PARTS = ("wing", "belly", "crown", "bill")


class CaptionerStream:
    """The captioner's sentence for each image (`captions`, a numpy array of str)."""

    name = "captioner"
    needs_captions = False

    def __init__(self, captioner):
        # The captioner's own decoding (its config's beam_size and mention), as `attngan caption`.
        self.captioner = captioner
        cfg = captioner.config
        self.digest = f"captioner:{captioner.digest}:beam{cfg.beam_size}:mention={cfg.mention}"

    def __call__(self, images: torch.Tensor, captions: list[str] | None = None) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            return {"captions": np.asarray(self.captioner(images.float()), dtype=str)}


def caption_items(ds, items: list[int], stream: CaptionerStream, batch: int = 32) -> list[str]:
    """The stream's captions of dataset items (their first image, quantised to 8 bits as a saved
    image is), in the order given."""
    import torch

    from attngan.metrics.extractors import quantize

    out: list[str] = []
    for s in range(0, len(items), batch):
        images = torch.stack([ds[i]["images"][0] for i in items[s:s + batch]])
        out += [str(c) for c in stream(quantize(images))["captions"]]
    return out


def roundtrip_scores(prompts: list[str], captions: list[str],
                     wanted: list[dict[str, str] | None] | None = None) -> dict[str, Any]:
    """Attribute recall (all, per attribute, the share of captions with every attribute back) and
    BLEU-4 / CIDEr-D of `captions` against the prompt of each (one reference). `wanted`: per
    prompt, the attributes it asks for where known (else the caption grammar reads the prompt)."""
    r = attribute_recall(prompts, captions, wanted=wanted)
    return {"recall": r["all"], "per_attribute": r["per_attribute"], "prompted": r["prompted"],
            "all_back": r["captions_all_back"], **caption_scores(captions, prompts)}


def real_ceiling(captions: list[str], lines: list[list[str]], seed: int = 0) -> dict[str, Any]:
    """The captioner on real images: each image's caption against every caption line of that image
    (the ceiling), and against the lines of another image (a seeded derangement: chance)."""
    prompts = [ln for ls in lines for ln in ls]
    own = [c for c, ls in zip(captions, lines) for _ in ls]
    n = len(lines)
    perm = np.random.default_rng(seed).permutation(n)
    if n > 1:
        perm = np.where(perm == np.arange(n), np.roll(perm, 1), perm)  # no image keeps its own lines
    shuffled = [captions[int(j)] for j, ls in zip(perm, lines) for _ in ls]
    return {"images": n, "own": roundtrip_scores(prompts, own), "shuffled": roundtrip_scores(prompts, shuffled)}


# SynthScenes: the scene caption parser reads prompts and captions.

SCENE_READINGS = ("objects", "colours", "place")


def scene_hits(request: dict[str, Any], caption: str) -> dict[str, list[int]]:
    """One prompt's statements (`request`, as metrics.scenes.prompt_requests reads a prompt) against
    what `caption` states: per reading, one 0/1 per statement. objects: each prompted category
    named; colours: each prompted object with a stated colour named in that colour; place: the
    prompt's background, when it names one, is the caption's. `precision`: per category the
    caption names, whether the prompt names it."""
    from attngan.data.scene_captions import parse_scene_caption

    said: dict[str, set[str | None]] = {}
    parsed = parse_scene_caption(caption)
    for o in parsed["objects"]:
        said.setdefault(o["category"], set()).add(o["colour"])
    objs = request["objects"]
    prompted = {o["category"] for o in objs}
    return {"objects": [int(o["category"] in said) for o in objs],
            "colours": [int(o["colour"] in said.get(o["category"], ())) for o in objs if o["colour"] is not None],
            "place": [] if request["background"] is None else [int(parsed["background"] == request["background"])],
            "precision": [int(c in prompted) for c in sorted(said)]}


def scene_readback(prompts: list[str], captions: list[str], requests: list[dict] | None = None) -> dict[str, Any]:
    """The shares of the prompts' statements that the captions make too, pooled over statements,
    for all prompts and per composition: {reading: {"all", "seen", "novel", "n_all", "n_seen",
    "n_novel"}} for objects, colours, place, `recall` (the three together), `all_back` (prompts
    with every statement back) and `objects_precision` (named categories that were prompted).
    `requests`: the prompts' statements and kinds (default: read from the prompts, the kind from
    their held-out pairs). A share without statements is None."""
    if len(prompts) != len(captions):
        raise ValueError(f"{len(captions)} captions for {len(prompts)} prompts")
    reqs = prompt_requests(prompts) if requests is None else requests
    rows = []
    for req, cap in zip(reqs, captions):
        hits = scene_hits(req, cap)
        together = [h for k in SCENE_READINGS for h in hits[k]]
        rows.append({**{k: hits[k] for k in SCENE_READINGS}, "recall": together,
                     "all_back": [int(all(together))] if together else [],
                     "objects_precision": hits["precision"]})
    kinds = [r["composition"] for r in reqs]
    out: dict[str, Any] = {}
    for key in (*SCENE_READINGS, "recall", "all_back", "objects_precision"):
        out[key] = {}
        for kind in ("all", *KINDS):
            hits = [h for row, k in zip(rows, kinds) if kind in ("all", k) for h in row[key]]
            out[key][kind] = float(np.mean(hits)) if hits else None
            out[key][f"n_{kind}"] = len(hits)
    return out


def _pct(v: float | None) -> float | None:
    return None if v is None else 100.0 * v


def _kinds(r: dict[str, Any]) -> dict[str, float | None]:
    """A scene_readback entry as percentages: all, seen, novel."""
    return {k: _pct(r[k]) for k in ("all", *KINDS)}


def scene_summary(r: dict[str, Any]) -> dict[str, Any]:
    """scene_readback as the report gives it (percentages)."""
    return {"recall": _pct(r["recall"]["all"]), "seen": _pct(r["recall"]["seen"]),
            "novel": _pct(r["recall"]["novel"]),
            "per_attribute": {k: _pct(r[k]["all"]) for k in SCENE_READINGS},
            "per_kind": {k: _kinds(r[k]) for k in (*SCENE_READINGS, "all_back")}}


def ceiling_images(manifest: dict, split: str, prompts: list[str], n_max: int) -> tuple[list[str], list[int]]:
    """The real renders of the prompts: (the keys of the `split` images they are captions of, for
    each prompt the index of its image in that list, -1 for one that is no caption of the split).
    Images are taken in the prompts' order, at most `n_max` of them (a prompt of a later image
    gets -1)."""
    by_text: dict[str, str] = {}
    for key, t in sorted(manifest["images"].items()):
        if t.get("split") == split:
            for c in t.get("captions", ()):
                by_text.setdefault(_norm(c), key)
    keys: list[str] = []
    where: dict[str, int] = {}
    index = []
    for p in prompts:
        key = by_text.get(_norm(p))
        if key is not None and key not in where and len(keys) < n_max:
            where[key] = len(keys)
            keys.append(key)
        index.append(where.get(key, -1) if key is not None else -1)
    return keys, index


def _scene_roundtrip(ctx: "EvalContext", captions: list[str]) -> dict[str, Any]:
    """The round trip on SynthScenes prompts: objects, colours and place read back, per kind, with
    the ceiling on the prompts' real renders and chance by rotation within kind."""
    prompts = list(ctx.full_captions or ctx.captions)
    reqs = context_requests(ctx)
    manifest = scene_manifest(ctx)
    gen = scene_readback(prompts, captions, reqs)
    chance = scene_readback(prompts, captions, rotated_within_kind(reqs))

    # The ceiling: the captioner on the real renders of the same prompts.
    ds = ctx.real_dataset(ctx.image_size)
    n_max = min(len(ds), ctx.options.real_images or ctx.options.num_images)
    keys, index = ceiling_images(manifest, ctx.options.split, prompts, n_max)
    if keys:
        pairs = [(p, r, j) for p, r, j in zip(prompts, reqs, index) if j >= 0]
    else:  # prompts of one's own: a seeded sample of real test images against their first caption
        from attngan.data.layout import raw_caption_lines

        chosen = sorted(np.random.default_rng(ctx.options.seed).permutation(len(ds))[:n_max].tolist())
        keys = [ds.keys[i] for i in chosen]
        lines = raw_caption_lines(ds) or [[ds.caption_text(i, 0)] for i in range(len(ds))]
        own = [lines[i][0] for i in chosen]
        own_reqs = prompt_requests(own, caption_truth(manifest, ctx.options.split))
        pairs = [(p, r, j) for j, (p, r) in enumerate(zip(own, own_reqs))]
    row = {k: i for i, k in enumerate(ds.keys)}
    real_captions = caption_items(ds, [row[k] for k in keys], ctx.streams["captioner"], ctx.options.batch)
    real_prompts, real_reqs = [p for p, _, _ in pairs], [r for _, r, _ in pairs]
    real_caps = [real_captions[j] for *_, j in pairs]
    real = scene_readback(real_prompts, real_caps, real_reqs)
    real_chance = scene_readback(real_prompts, real_caps, rotated_within_kind(real_reqs))
    words = caption_scores(captions, prompts)
    real_words = caption_scores(real_caps, real_prompts)
    summary = scene_summary(gen)
    return {
        "value": summary["recall"] if summary["recall"] is not None else float("nan"), "std": None,
        "seen": summary["seen"], "novel": summary["novel"],
        **{f"n_{kind}": sum(r["composition"] == kind for r in reqs) for kind in KINDS},
        "chance": _kinds(chance["recall"]),
        "per_attribute": summary["per_attribute"], "per_kind": summary["per_kind"],
        "chance_per_attribute": {k: _kinds(chance[k]) for k in SCENE_READINGS},
        "prompted": {k: gen[k]["n_all"] for k in SCENE_READINGS},
        "all_back": summary["per_kind"]["all_back"]["all"],
        "objects_precision": _kinds(gen["objects_precision"]),
        "bleu4": words["bleu4"], "cider_d": words["cider_d"],
        "real_ceiling": {**scene_summary(real), "images": len(keys), "prompts": len(pairs), **real_words},
        "real_shuffled": scene_summary(real_chance),
        "examples": [{"prompt": p, "caption": c} for p, c in list(zip(prompts, captions))[:8]],
        "captioner": ctx.descriptions.get("captioner", ""),
    }


def roundtrip_details(name: str, r: dict[str, Any]) -> list[str]:
    """The report's line: per attribute, BLEU-4 and CIDEr-D, against the real images' ceiling and chance."""
    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    def per(d: dict[str, Any]) -> str:
        return ", ".join(f"{p} {num(v)}%" for p, v in d.items())

    ceil, chance = r["real_ceiling"], r["real_shuffled"]
    if "per_kind" in r:  # SynthScenes
        return [f"- `{name}`: generated images: {per(r['per_attribute'])}; everything back {num(r.get('all_back'))}%; "
                f"BLEU-4 {num(r.get('bleu4'))}, CIDEr-D {num(r.get('cider_d'))} vs the prompts. Ceiling (the "
                f"real renders of the same prompts, {ceil['images']} images): {num(ceil['recall'])}% "
                f"({per(ceil['per_attribute'])}; seen {num(ceil['seen'])}%, novel {num(ceil['novel'])}%). "
                f"Chance (another prompt of the kind): {num(r['chance']['all'])}%",
                *seen_novel_details(name, r)]
    return [f"- `{name}`: generated images: per attribute {per(r['per_attribute'])}; every attribute back "
            f"{num(r.get('all_back'))}%; BLEU-4 {num(r.get('bleu4'))}, CIDEr-D {num(r.get('cider_d'))} vs "
            f"the prompts. Ceiling (real test images, own captions, {ceil['images']} images): "
            f"{num(ceil['recall'])}% ({per(ceil['per_attribute'])}); BLEU-4 {num(ceil['bleu4'])}, "
            f"CIDEr-D {num(ceil['cider_d'])}. Chance (another image's captions): {num(chance['recall'])}%"]


@register(
    name="roundtrip", title="Round trip (caption attributes back)",
    protocol="an independent captioner captions each image (its own decoding: beam, words it must "
             "name); share of the prompt's "
             "SynthBirds attributes (caption_attributes) its caption states with the same value, "
             "all and per attribute; BLEU-4 and CIDEr-D of the captions vs the prompts; ceiling: "
             "the captioner on real test images vs their own captions (chance: another image's). "
             "SynthScenes: share of the prompt's objects, their colours and the background "
             "(parse_scene_caption) its caption states, all, seen and novel prompts; ceiling: the "
             "captioner on the prompts' real renders; chance: another prompt of the kind",
    reference="ours (the CaptionBot round trip of AttnGAN's slides; BLEU: Papineni 2002, CIDEr-D: Vedantam 2015, "
              "metrics/captioning.py)",
    streams=("captioner",), real=True, unit="%", higher_is_better=True,
    requires=("captioner", "captions", "grammar"), details=roundtrip_details, prompts=True,
)
def roundtrip_captioner(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.data.layout import raw_caption_lines
    captions = [str(c) for c in ctx.generated["captioner"]["captions"]]
    if scene_manifest(ctx) is not None:
        return _scene_roundtrip(ctx, captions)
    gen = roundtrip_scores(list(ctx.full_captions), captions, wanted=ctx.wanted())
    # The ceiling on as many real test images as images are scored (a seeded sample across
    # species), in the split's order: captions and caption lines must stay paired.
    ds = ctx.real_dataset(ctx.image_size)
    n = min(len(ds), ctx.options.real_images or ctx.options.num_images)
    items = sorted(np.random.default_rng(ctx.options.seed).permutation(len(ds))[:n].tolist())
    real_captions = caption_items(ds, items, ctx.streams["captioner"], ctx.options.batch)
    lines = raw_caption_lines(ds) or [[ds.caption_text(i, 0)] for i in range(len(ds))]
    real = real_ceiling(real_captions, [lines[i] for i in items], seed=ctx.options.seed)
    return {
        "value": pct(gen["recall"]), "std": None,
        "per_attribute": {k: pct(v) for k, v in gen["per_attribute"].items()},
        "prompted": gen["prompted"], "all_back": pct(gen["all_back"]),
        "bleu4": gen["bleu4"], "cider_d": gen["cider_d"],
        "real_ceiling": {"recall": pct(real["own"]["recall"]),
                         "per_attribute": {k: pct(v) for k, v in real["own"]["per_attribute"].items()},
                         "bleu4": real["own"]["bleu4"], "cider_d": real["own"]["cider_d"],
                         "images": real["images"]},
        "real_shuffled": {"recall": pct(real["shuffled"]["recall"]),
                          "per_attribute": {k: pct(v) for k, v in real["shuffled"]["per_attribute"].items()},
                          "bleu4": real["shuffled"]["bleu4"], "cider_d": real["shuffled"]["cider_d"]},
        "examples": [{"prompt": p, "caption": c} for p, c in list(zip(ctx.full_captions, captions))[:8]],
        "captioner": ctx.descriptions.get("captioner", ""),
    }
