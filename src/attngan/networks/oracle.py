"""The SynthBirds oracle's network: a small CNN that reads part colours and species off a 64 px
bird image (metrics/oracle.py trains it and scores with it).

Its config is the folder's own config.json fields (OracleConfig), not a Config section: the oracle
is an evaluator, sized by what it must tell apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attngan.errors import AttnGANError
from attngan.fileio import meta_int, meta_names


@dataclass
class OracleConfig:
    parts: list[str]                  # colour heads, in order
    colours: list[str]                # colour names; a head's class i is colours[i]
    class_ids: list[int]              # species head class i is manifest class_ids[i]
    image_size: int = 64              # inputs are resized to this
    width: int = 16                   # channels of the first conv block
    accuracy: dict[str, float] = field(default_factory=dict)   # held-out, per head
    valid: bool = False               # every part head reached MIN_ACCURACY
    info: dict[str, Any] = field(default_factory=dict)          # data, seed, counts, timing

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    # GroupNorm keeps an image's prediction independent of the rest of the batch.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(8, cout), nn.SiLU())


class AttributeOracle(nn.Module):
    """64 px image -> logits per part colour head and a species head.

    The trunk keeps an 8 x 8 spatial map and flattens it rather than pooling it away: which
    colour belongs to the wing and which to the belly is a question of where it is.
    """

    def __init__(self, cfg: OracleConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.trunk = nn.Sequential(
            _block(3, w, 2),                # 32
            _block(w, 2 * w, 1),
            _block(2 * w, 4 * w, 2),        # 16
            _block(4 * w, 4 * w, 2),        # 8
        )
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 8 * 8, 256), nn.SiLU())
        self.heads = nn.ModuleDict({p: nn.Linear(256, len(cfg.colours)) for p in cfg.parts})
        self.heads["species"] = nn.Linear(256, cfg.num_classes)
        self.digest = "untrained"

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """images B x 3 x H x W in [-1, 1] (any size; resized to cfg.image_size) -> logits per head."""
        h = self.features(images)
        return {name: head(h) for name, head in self.heads.items()}

    def features(self, images: Tensor) -> Tensor:
        """The 256-d representation every head reads."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise AttnGANError(f"the oracle expects B x 3 x H x W images, got {tuple(images.shape)}")
        s = self.cfg.image_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False,
                                   antialias=images.shape[-1] > s)
        return self.hidden(F.adaptive_avg_pool2d(self.trunk(images), 8))

    def predict_colours(self, images: Tensor) -> dict[str, list[str]]:
        """Colour names per part for a batch of images."""
        with torch.inference_mode():
            logits = self(images)
        return {p: [self.cfg.colours[i] for i in logits[p].argmax(1).tolist()] for p in self.cfg.parts}



def oracle_config(meta: dict[str, Any], path: Path) -> OracleConfig:
    """The OracleConfig of a config.json, every field checked (one-line errors naming the key)."""
    def words(key: str) -> list[str]:
        return meta_names(meta, key, path)

    def count(key: str, default: int, low: int, high: int) -> int:
        return meta_int(meta, key, default, low, high, path)

    ids = meta.get("class_ids")
    if not (isinstance(ids, list) and ids and all(type(i) is int and i >= 0 for i in ids)):  # noqa: E721
        raise AttnGANError(f"{path}: \"class_ids\" must be a non-empty list of class numbers")
    for key in ("accuracy", "info"):
        if not isinstance(meta.get(key, {}), dict):
            raise AttnGANError(f"{path}: \"{key}\" must be a JSON object")
    return OracleConfig(parts=words("parts"), colours=words("colours"), class_ids=ids,
                        image_size=count("image_size", 64, 8, 1024), width=count("width", 16, 1, 1024),
                        accuracy=meta.get("accuracy", {}), valid=meta.get("valid") is True,
                        info=meta.get("info", {}))
