"""The round trip: caption each generated image and check that the prompt comes back.

AttnGAN's last slide sent each generated image through a captioning system and printed what it
said. Here an independently trained captioner (attngan train-captioner: real images only, its own
seed) writes a caption for every scored image; the SynthBirds caption grammar (`caption_attributes`)
parses both the prompt and that caption, and the metric is the share of the prompt's attributes
(part colours, bill shape and length, size) that the caption states with the same value, per
attribute and over all of them; BLEU-4 and CIDEr-D of the captions against the prompts go beside it.
The same captioner on real test images with their own captions gives the ceiling (what it can
read at all), and on real images with another image's captions the chance level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from attngan.metrics.captioning import attribute_recall, caption_scores
from attngan.metrics.spec import pct, register

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


def roundtrip_details(name: str, r: dict[str, Any]) -> list[str]:
    """The report's line: per attribute, BLEU-4 and CIDEr-D, against the real images' ceiling and chance."""
    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    def per(d: dict[str, Any]) -> str:
        return ", ".join(f"{p} {num(v)}%" for p, v in d.items())

    ceil, chance = r["real_ceiling"], r["real_shuffled"]
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
             "the captioner on real test images vs their own captions (chance: another image's)",
    reference="ours (the CaptionBot round trip of AttnGAN's slides; BLEU: Papineni 2002, CIDEr-D: Vedantam 2015, "
              "metrics/captioning.py)",
    streams=("captioner",), real=True, unit="%", higher_is_better=True,
    requires=("captioner", "captions", "synth"), details=roundtrip_details, prompts=True,
)
def roundtrip_captioner(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.data.layout import raw_caption_lines
    captions = [str(c) for c in ctx.generated["captioner"]["captions"]]
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
