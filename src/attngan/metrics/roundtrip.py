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

from typing import Any

import numpy as np
import torch

from attngan.metrics.captioning import attribute_recall, caption_scores

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

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, captions: list[str] | None = None) -> dict[str, np.ndarray]:
        return {"captions": np.asarray(self.captioner(images.float()), dtype=str)}


def caption_items(ds, items: list[int], stream: CaptionerStream, batch: int = 32) -> list[str]:
    """The stream's captions of dataset items (their first image, quantised to 8 bits as a saved
    image is), in the order given."""
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
