"""Attribute binding on SynthBirds: does the bird wear the colours its caption names, on the
parts it names them for? And does DAMSM attend to the part a word is about?

`binding_scores` compares the oracle's per-part colour predictions with the colours a caption
asks for: accuracy per attribute mentioned, the share of images with every mentioned attribute
right, and a swap rate (the caption says wing A, belly B with A != B, the oracle sees wing B and
belly A): the failure mode a bag-of-words conditioning would show. `attention_localisation`
measures the share of a word's word-region attention that falls inside the ground-truth mask of
the part it refers to: the colour word the caption binds to the part (the word that tells the
image apart; "black" in "wings that are black") and, for reference, the part noun itself (which
every bird's caption shares, so a DAMSM has no reason to attend with it). `colour_attention` asks
the same of the generator's own word attention on the colours it painted.

The metrics `binding`, `localisation` (with its pass over real images) and `attention_colour` are
declared here, with their report lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attngan.errors import AttnGANError
from attngan.metrics.spec import pct, register

# torch, and the data modules that bring PIL, are imported inside the functions: the metric
# registry imports this module, and reading it (`attngan eval --help`) must not load them.
if TYPE_CHECKING:
    import torch

    from attngan.metrics.context import EvalContext

# The key of the whole object's mask among a image's part masks (SynthBirds' "bird" mask group).
OBJECT = "bird"
# Words of a caption that name a part, as SynthBirds' grammar writes them.
PART_WORDS = {"wing": "wing", "wings": "wing", "belly": "belly", "crown": "crown", "bill": "bill"}


def binding_scores(
    requested: Sequence[Mapping[str, str]],
    predicted: Mapping[str, Sequence[str]],
    parts: Sequence[str],
) -> dict[str, float | int | dict]:
    """Per-attribute accuracy, all-attributes-correct rate and swap rate.

    requested: per image, {part: colour} named by its caption (parts outside `parts` ignored).
    predicted: per part, the oracle's colour for every image.
    """
    n = len(requested)
    for p in parts:
        if len(predicted[p]) != n:
            raise AttnGANError(f"binding: {len(predicted[p])} predictions of '{p}' for {n} images")
    correct = {p: 0 for p in parts}
    mentioned = {p: 0 for p in parts}
    all_ok = images_with_parts = 0
    swaps = pairs = 0
    for i, req in enumerate(requested):
        asked = {p: c for p, c in req.items() if p in parts}
        if not asked:
            continue
        images_with_parts += 1
        ok = True
        for p, colour in asked.items():
            mentioned[p] += 1
            hit = predicted[p][i] == colour
            correct[p] += hit
            ok &= hit
        all_ok += ok
        for p, q in combinations(sorted(asked), 2):
            a, b = asked[p], asked[q]
            if a == b:
                continue
            pairs += 1
            swaps += predicted[p][i] == b and predicted[q][i] == a
    per_part = {p: (correct[p] / mentioned[p] if mentioned[p] else float("nan")) for p in parts}
    return {
        "per_attribute": per_part,
        "mentioned": mentioned,
        "all_correct": all_ok / images_with_parts if images_with_parts else float("nan"),
        "images": images_with_parts,
        "swap_rate": swaps / pairs if pairs else float("nan"),
        "swap_pairs": pairs,
    }


def attention_mass_in_masks(attention: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each attention map's mass inside its mask.

    attention: N x h x w non-negative maps (one per part word); masks: N x H x W in {0, 1} at
    image resolution. Each mask is reduced to the attention grid by area averaging, so a region
    half covered by the part counts half. Returns N shares in [0, 1].
    """
    import torch
    import torch.nn.functional as F

    if attention.dim() != 3 or masks.dim() != 3 or attention.shape[0] != masks.shape[0]:
        raise AttnGANError(f"attention N x h x w and masks N x H x W expected, got {tuple(attention.shape)} and {tuple(masks.shape)}")
    h, w = attention.shape[-2:]
    cover = F.adaptive_avg_pool2d(masks.float()[:, None], (h, w))[:, 0]
    att = attention.float().clamp_min(0)
    total = att.flatten(1).sum(1)
    inside = (att * cover).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-12), torch.zeros_like(total))


def part_noun_positions(tokens: Sequence[str]) -> list[tuple[int, str]]:
    """(position, part) of each word that names a part ("wings" -> wing)."""
    return [(t, PART_WORDS[w]) for t, w in enumerate(tokens) if w in PART_WORDS]


def colour_word_positions(tokens: Sequence[str], caption: str) -> list[tuple[int, str]]:
    """(position, part) of each colour word the caption binds to one part ("wings that are
    black": black -> wing), by SynthBirds' caption grammar. A colour stated for two parts, or
    written twice, is left out: its word cannot be assigned to one region."""
    from attngan.data.synth_birds import caption_attributes

    bound: dict[str, list[str]] = {}
    for part, colour in caption_attributes(caption).items():
        if part in PART_NAMES:
            bound.setdefault(colour, []).append(part)
    return [(t, bound[w][0]) for t, w in enumerate(tokens)
            if len(bound.get(w, ())) == 1 and list(tokens).count(w) == 1]


# The parts with ground-truth masks.
PART_NAMES = ("wing", "belly", "crown", "bill")


def attention_localisation(
    attention: torch.Tensor,
    positions: Sequence[Sequence[tuple[int, str]]],
    part_masks: Sequence[Mapping[str, np.ndarray | torch.Tensor]],
) -> dict[str, dict[str, float]]:
    """Mean share of a word's attention inside the mask of the part it refers to, per part.

    attention: B x T x h x w word-region attention (row b, word t); positions: per caption, the
    (word position, part) pairs to score (part_noun_positions, colour_word_positions);
    part_masks: per image, {part: H x W mask}, and optionally {OBJECT: the whole bird's mask}.
    Reports two chance levels on the attention grid: "chance", the part's mean area (a map uniform
    over the image), and, with the object's mask, "object_chance": the share a map uniform over the
    object's own regions puts on the part. The second is the baseline to beat: any attention that
    merely finds the bird gets it.
    """
    import torch
    import torch.nn.functional as F

    maps, masks, objects, names = [], [], [], []
    for b, pairs in enumerate(positions):
        for t, part in pairs:
            if t >= attention.shape[1] or part not in part_masks[b]:
                continue
            maps.append(attention[b, t])
            masks.append(torch.as_tensor(np.asarray(part_masks[b][part]), dtype=torch.float32))
            if OBJECT in part_masks[b]:
                objects.append(torch.as_tensor(np.asarray(part_masks[b][OBJECT]), dtype=torch.float32))
            names.append(part)
    out: dict[str, dict[str, float]] = {}
    if not maps:
        return out
    shares = attention_mass_in_masks(torch.stack(maps), torch.stack(masks))
    h, w = attention.shape[-2:]
    areas = F.adaptive_avg_pool2d(torch.stack(masks)[:, None], (h, w)).flatten(1).mean(1)
    within = None
    if len(objects) == len(maps):
        # A map uniform over the object's regions (each region weighted by how much of it is object).
        uniform = F.adaptive_avg_pool2d(torch.stack(objects)[:, None], (h, w))[:, 0]
        within = attention_mass_in_masks(uniform, torch.stack(masks))
    for part in sorted(set(names)):
        idx = [i for i, n in enumerate(names) if n == part]
        out[part] = {"share": float(shares[idx].mean()), "chance": float(areas[idx].mean()), "n": len(idx)}
        if within is not None:
            out[part]["object_chance"] = float(within[idx].mean())
    return out


def colour_attention(images: torch.Tensor, attention: Sequence[torch.Tensor], tokens: Sequence[Sequence[str]],
                     captions: Sequence[str]) -> dict[str, np.ndarray]:
    """Does G attend with a colour word where it paints that colour? For each generated image,
    attentional stage and colour word the caption binds to one part (colour_word_positions): the
    share of the word's attention on regions whose colour is that word's, and the share of such
    regions (what a uniform map would get). A region's colour is the SynthBirds palette colour
    nearest to the top image's mean RGB over the region.

    images: B x 3 x H x W in [-1, 1]; attention: per attentional stage B x T x h x w. Returns arrays
    "share", "chance" and "stage" (the 0-based index of the image stage the map serves), one entry
    per scored word and stage.
    """
    import torch
    import torch.nn.functional as F

    from attngan.data.synth_render import COLOUR_RGB

    names = list(COLOUR_RGB)
    palette = torch.tensor([COLOUR_RGB[c] for c in names], dtype=torch.float32)
    rgb = (images.float().clamp(-1, 1) + 1) * 127.5
    # The scored words, found once for every stage: (image, word position, palette index).
    found = [(b, t, names.index(words[t])) for b, words in enumerate(tokens)
             for t, _part in colour_word_positions(words, captions[b]) if words[t] in COLOUR_RGB]
    share, chance, stage = [], [], []
    for k, att in enumerate(attention):
        kept = [(b, t, c) for b, t, c in found if t < att.shape[1]]
        if not kept:
            continue
        rows, words_at, colours = (torch.tensor(x) for x in zip(*kept))
        region = F.adaptive_avg_pool2d(rgb, att.shape[-2:]).permute(0, 2, 3, 1)          # B x h x w x 3
        colour = ((region[..., None, :] - palette) ** 2).sum(-1).argmin(-1)             # B x h x w
        painted = (colour[rows] == colours[:, None, None]).float()                       # N x h x w
        a = att[rows, words_at].float().clamp_min(0)
        share.append(((a * painted).flatten(1).sum(1) / a.flatten(1).sum(1).clamp_min(1e-12)).double())
        chance.append(painted.flatten(1).mean(1).double())
        stage.append(torch.full((len(kept),), k + 1))  # the image stage it refines: attention k serves stage k + 1
    cat = lambda xs, dtype: torch.cat(xs).numpy() if xs else np.zeros(0, dtype=dtype)  # noqa: E731
    return {"share": cat(share, np.float64), "chance": cat(chance, np.float64), "stage": cat(stage, np.int64)}


class ColourAttentionStream:
    """colour_attention on each generated batch (it reads G's attention maps and words)."""

    name = "colour_attention"
    reads_batch = True

    def from_batch(self, batch) -> dict[str, np.ndarray]:
        if batch.attention is None or batch.tokens is None:
            raise AttnGANError("colour attention needs generated images (--model): G's attention maps")
        return colour_attention(batch.images, batch.attention, batch.tokens, batch.full_captions)


def load_part_masks(root, split: str, size: int, parts: Sequence[str] = ("wing", "belly", "crown", "bill", OBJECT)):
    """A function key -> {part: size x size bool mask} framed as the data loader frames the image
    (OBJECT: the whole bird).

    Mirrors TextImageDataset with train=False: bbox crop (attngan.data.layout.bbox_crop_box),
    shorter side resized to int(size * 76 / 64), centre crop of size x size.
    """
    from attngan.data.cache import stored_size
    from attngan.data.layout import bbox_crop_box, read_image_list, shorter_side_dims
    from attngan.data.synth_birds import load_manifest, part_mask

    root = Path(root)
    manifest = load_manifest(root)
    images = read_image_list(root, split)
    boxes = dict(zip(images.keys, images.bboxes))
    full = int(manifest["size"])
    load = stored_size(size)

    def masks_for(key: str) -> dict[str, np.ndarray]:
        box = bbox_crop_box(boxes[key], full, full) or (0, 0, full, full)
        w, h = shorter_side_dims(box[2] - box[0], box[3] - box[1], load)
        top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
        out = {}
        for p in parts:
            m = part_mask(manifest, key, p, size=(h, w), crop=box)
            out[p] = m[top:top + size, left:left + size]
        return out

    return masks_for


def damsm_localisation(damsm, dataset, masks_for, num_images: int, batch: int, device,
                       progress: bool = False) -> tuple[dict[str, dict[str, dict[str, float]]], int]:
    """DAMSM word attention vs SynthBirds part masks on the first `num_images` real images of
    `dataset` (its centre crops at the image encoder's size; `masks_for` = load_part_masks of the
    same split and size), per part: of the colour words bound to a part ("colour") and of the
    part nouns ("noun"). `damsm`: a metrics.extractors.DamsmStream."""
    import torch
    from tqdm.auto import tqdm

    from attngan.losses import damsm_attention

    n = min(num_images, len(dataset))
    sums: dict[str, dict[str, list[float]]] = {"colour": {}, "noun": {}}
    for s in tqdm(range(0, n, batch), desc="attention localisation", disable=not progress, leave=False):
        items = [dataset[i] for i in range(s, min(s + batch, n))]
        images = torch.stack([it["images"][0] for it in items])
        texts = [dataset.caption_text(i, 0) for i in range(s, s + len(items))]
        ids, lens = damsm.encode_captions(texts)
        with torch.inference_mode():
            words, _ = damsm.text_encoder(ids.to(device), lens.to(device))
            regions, _ = damsm.image_encoder(images.to(device))
            _, attn = damsm_attention(words, regions, damsm.gamma1, ids.to(device) == 0)
        tokens = [[damsm.vocab.id_to_word[int(t)] for t in row[: int(m)]] for row, m in zip(ids, lens)]
        masks = [masks_for(it["key"]) for it in items]
        attn = attn.float().cpu()
        for kind, positions in (("colour", [colour_word_positions(t, c) for t, c in zip(tokens, texts)]),
                                ("noun", [part_noun_positions(t) for t in tokens])):
            for part, v in attention_localisation(attn, positions, masks).items():
                acc = sums[kind].setdefault(part, [0.0, 0.0, 0.0, 0])
                acc[0] += v["share"] * v["n"]
                acc[1] += v["chance"] * v["n"]
                acc[2] += v.get("object_chance", float("nan")) * v["n"]
                acc[3] += v["n"]
    return {kind: {p: {"share": a[0] / a[3], "chance": a[1] / a[3], "object_chance": a[2] / a[3], "n": a[3]}
                   for p, a in d.items()} for kind, d in sums.items()}, n


def localisation_summary(per_kind: dict[str, dict[str, dict[str, float]]], n: int) -> dict:
    """The localisation result (percentages): value = the colour words' mean share over the parts,
    chance = the mean within-object share (a map uniform over the bird), image_chance = the mean
    part area (a map uniform over the image), per part and for the part nouns."""
    def pct(v: float) -> float:
        return 100.0 * v

    def table(per_part):
        return {p: {"share": pct(v["share"]), "chance": pct(v["object_chance"]),
                    "image_chance": pct(v["chance"]), "n": v["n"]} for p, v in per_part.items()}

    colour = per_kind["colour"]
    mean = (lambda key: pct(float(np.mean([v[key] for v in colour.values()])))) if colour else (lambda key: float("nan"))
    return {"value": mean("share"), "std": None, "chance": mean("object_chance"),
            "image_chance": mean("chance"), "per_part": table(colour), "per_part_noun": table(per_kind["noun"]),
            "n": n}


def real_localisation(ctx: "EvalContext") -> tuple[dict[str, dict[str, dict[str, float]]], int]:
    """DAMSM word attention vs SynthBirds part masks on real split images (damsm_localisation with
    the evaluation's DAMSM, split, images and batch)."""
    damsm = ctx.streams["damsm"]
    size = damsm.image_encoder.image_size
    ds = ctx.real_dataset(size, center=True)   # the part masks are of the centre crop
    o = ctx.options
    return damsm_localisation(damsm, ds, load_part_masks(ctx.data_root, o.split, size), o.num_images, o.batch,
                              ctx.device, o.progress)


# The report's lines below its table.

def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def binding_details(name: str, r: dict[str, Any]) -> list[str]:
    per = ", ".join(f"{p} {_num(v)}%" for p, v in r["per_attribute"].items())
    return [f"- `{name}`: per attribute {per}; swap rate {_num(r.get('swap_rate'))}% of {r.get('swap_pairs')} pairs"
            + (" — **void**: oracle below 97%" if r.get("void") else "")]


def localisation_details(name: str, r: dict[str, Any]) -> list[str]:
    colour = ", ".join(f"{p} {_num(v['share'])}% (chance {_num(v['chance'])}%)" for p, v in r["per_part"].items())
    noun = ", ".join(f"{p} {_num(v['share'])}%" for p, v in r["per_part_noun"].items())
    return [f"- `{name}`: {colour}", f"- `{name}`, the part nouns' attention: {noun}"]


def attention_colour_details(name: str, r: dict[str, Any]) -> list[str]:
    per = ", ".join(f"stage {row['stage'] + 1} {_num(row['share'])}% (chance {_num(row['chance'])}%)"
                    for row in r["per_attention_stage"])
    return [f"- `{name}`: {per}"]


# The metrics.

@register(
    name="binding", title="Attribute binding",
    protocol="SynthBirds oracle colour of wing/belly/crown/bill == caption's, per attribute "
             "mentioned; value = all mentioned attributes right; plus swap rate",
    reference="ours (SynthBirds ground truth)",
    streams=("oracle",), real=False, unit="%", higher_is_better=True, requires=("captions", "oracle"),
    details=binding_details, prompts=True,
)
def binding_oracle(ctx: "EvalContext") -> dict[str, Any]:
    from attngan.data.synth_birds import caption_attributes

    oracle = ctx.streams["oracle"].oracle
    preds = ctx.generated["oracle"]
    predicted = {p: [oracle.cfg.colours[int(i)] for i in preds[p]] for p in oracle.cfg.parts}
    # The caption as written (the ids the model reads have lost its commas), or what a prompt
    # file states it asks for.
    requested = [a if a is not None else caption_attributes(c) for c, a in zip(ctx.full_captions, ctx.wanted())]
    s = binding_scores(requested, predicted, oracle.cfg.parts)
    void = not oracle.cfg.valid
    # A part whose oracle head is below MIN_ACCURACY cannot be scored; the others still can, so
    # their accuracies are kept while the all-attributes value is void.
    from attngan.metrics.oracle import MIN_ACCURACY
    weak = sorted(p for p in s["per_attribute"] if oracle.cfg.accuracy.get(p, 0.0) < MIN_ACCURACY)
    out = {
        "value": pct(s["all_correct"]), "std": None,
        "per_attribute": {p: None if p in weak else pct(v) for p, v in s["per_attribute"].items()},
        "mentioned": s["mentioned"], "swap_rate": pct(s["swap_rate"]), "swap_pairs": s["swap_pairs"],
        "oracle_accuracy": oracle.cfg.accuracy, "void": void,
    }
    if void:
        out["note"] = ("void: the oracle is below 97% on a held-out attribute"
                       + (f" ({', '.join(weak)}; the other parts' accuracies stand)" if weak else ""))
    return out


@register(
    name="localisation", title="Attention localisation (DAMSM)",
    protocol="share of DAMSM word-region attention inside the part's ground-truth mask, real test "
             "images, of the colour word the caption binds to that part (\"black\" in \"wings that "
             "are black\"; a colour stated for two parts is left out); value = mean over wing, belly, "
             "crown, bill; chance = a map uniform over the bird's own regions (image_chance: uniform "
             "over the image); per_part_noun: the same for the part nouns. A property of the DAMSM, "
             "not of a generator's images",
    reference="ours (SynthBirds ground truth)",
    # Not one of a generator's comparisons: it reads no generated image. It runs when named, and
    # `attngan eval-damsm` reports it on SynthBirds.
    streams=(), uses=("damsm",), real=False, unit="%", higher_is_better=True, requires=("damsm", "synth"),
    default=False, details=localisation_details,
)
def localisation_damsm(ctx: "EvalContext") -> dict[str, Any]:
    per_kind, n = real_localisation(ctx)
    return {**localisation_summary(per_kind, n), "encoders": ctx.descriptions.get("damsm", "")}


@register(
    name="attention_colour", title="Word attention on its colour",
    protocol="generated images: share of G's word attention, per attentional stage, of each colour "
             "word the caption binds to one part, on the regions G painted that colour (a region's "
             "colour: the SynthBirds palette colour nearest its mean RGB in the top image); value = "
             "the mean over words and stages; chance = the share of such regions",
    reference="ours (the paper's attention figures, as a number)",
    streams=("colour_attention",), real=False, unit="%", higher_is_better=True, requires=("generated", "synth"),
    details=attention_colour_details, prompts=True,
)
def attention_colour_generator(ctx: "EvalContext") -> dict[str, Any]:
    d = ctx.generated["colour_attention"]
    per_stage = [{"stage": int(k), "share": pct(float(d["share"][d["stage"] == k].mean())),
                  "chance": pct(float(d["chance"][d["stage"] == k].mean())), "n": int((d["stage"] == k).sum())}
                 for k in sorted(set(d["stage"].tolist()))]
    return {"value": pct(float(d["share"].mean())) if len(d["share"]) else float("nan"), "std": None,
            "chance": pct(float(d["chance"].mean())) if len(d["chance"]) else float("nan"),
            "per_attention_stage": per_stage}
