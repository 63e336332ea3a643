"""SynthScenes judge: a small CNN that reads a scene's background and, per COCO category, its count, colour and whether it flies.

It is the scenes' evaluation instrument (as the SynthBirds oracle is the birds'): trained on real
renders only, every composition included, and read by the scene metrics (metrics/scenes.py). The
trunk keeps a spatial map (stride 8) and every category is read from it through dense heads:

  seg      per cell, which category covers it (or none): where each category is;
  colour   per cell, the colour of the object covering it;
  sky      per cell, whether the object covering it is in the sky;
  present  per cell and category, a logit that the category is there; its maximum over the cells
           is the category's presence (multiple-instance pooling: one convincing cell suffices);
  density  per cell and category, the share (0..1) of an object whose centre lies there: a
           category's count is the sum of its map (density counting), at least one where the
           category is present, none where it is not.

A category's colour and place are the cell readings averaged over the cells that category covers
(weights: its seg probability cubed, so that the many cells where it is merely unlikely do not
dilute the few where it is), so a colour is read where the object is whatever the category: a blue
cow is read like a blue bus.
The background comes from the pooled map. A prediction never depends on the rest of the batch
(GroupNorm).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attngan.errors import AttnGANError
from attngan.fileio import meta_int, meta_names
from attngan.io import CONFIG_FILE, load_safetensors, load_state, read_folder, state_dict_for_save, write_folder
from attngan.metrics.inception_fid import weights_digest

JUDGE_KIND = "judge"
WEIGHTS_FILE = "judge.safetensors"
STRIDE = 8                      # input pixels per cell of the dense maps
# The judge's own accuracy it must reach on held-out real renders, per reading, for the scene
# metrics it serves to be valid (background, presence of each category, colour of each present one).
MIN_ACCURACY = {"background": 0.97, "presence": 0.95, "colour": 0.90}


@dataclass
class JudgeConfig:
    categories: list[str]             # COCO category names; density/seg channel k is categories[k]
    colours: list[str]                # colour head class i is colours[i]
    backgrounds: list[str]            # background head class i is backgrounds[i]
    max_count: int = 4                # counts read are clipped to 0..max_count
    image_size: int = 64              # inputs are resized to this
    width: int = 16                   # channels of the first conv block
    accuracy: dict[str, Any] = field(default_factory=dict)   # held-out: {"seen": {...}, "novel": {...}}
    valid: bool = False               # every reading reached MIN_ACCURACY, seen and novel
    info: dict[str, Any] = field(default_factory=dict)        # data, seed, counts, timing

    @property
    def grid(self) -> int:
        return self.image_size // STRIDE


def _block(cin: int, cout: int, stride: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False),
                         nn.GroupNorm(8, cout), nn.SiLU())


class SceneJudge(nn.Module):
    """Image B x 3 x H x W in [-1, 1] (any size) -> dense maps and background logits."""

    def __init__(self, cfg: JudgeConfig) -> None:
        super().__init__()
        if cfg.image_size % STRIDE or cfg.image_size < 4 * STRIDE:
            raise AttnGANError(f"the judge's image_size must be a multiple of {STRIDE} and at least "
                               f"{4 * STRIDE}, got {cfg.image_size}")
        self.cfg = cfg
        w = cfg.width
        self.trunk = nn.Sequential(
            _block(3, w, 2), _block(w, w, 1),                  # S/2
            _block(w, 2 * w, 2), _block(2 * w, 2 * w, 1),      # S/4
            _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 1),  # S/8
        )
        # Dilated blocks widen the view of a cell to a whole object (a near bus is half the image)
        # without losing the grid that tells objects apart.
        self.context = nn.Sequential(_block(4 * w, 4 * w, 1, 2), _block(4 * w, 4 * w, 1, 4))
        c, k = len(cfg.categories), len(cfg.colours)
        # The cell's position joins the features: what flies is high in the image.
        self.dense = nn.Sequential(nn.Conv2d(4 * w + 2, 4 * w, 1), nn.SiLU())
        self.seg = nn.Conv2d(4 * w, 1 + c, 1)
        self.colour = nn.Conv2d(4 * w, k, 1)
        self.sky = nn.Conv2d(4 * w, 1, 1)
        self.density = nn.Conv2d(4 * w, c, 1)
        self.present = nn.Conv2d(4 * w, c, 1)
        self.background = nn.Linear(8 * w, len(cfg.backgrounds))
        # Start from what most cells are: no object, and no object's centre.
        with torch.no_grad():
            self.seg.bias[0] += 2.0
            self.density.bias.fill_(-4.0)
            self.present.bias.fill_(-2.0)
        self.digest = "untrained"

    def prepare(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise AttnGANError(f"the judge expects B x 3 x H x W images, got {tuple(images.shape)}")
        s = self.cfg.image_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images.float(), size=(s, s), mode="bilinear", align_corners=False,
                                   antialias=images.shape[-1] > s)
        return images.float()

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Logits: "seg" B x (1+C) x g x g (channel 0: no object), "colour" B x K x g x g, "sky"
        B x g x g, "density" B x C x g x g (logits of a share in 0..1), "present" B x C (the
        maximum over the cells), "background" B x nB; and "features"
        B x 8w (the pooled map: what the judge-feature FID compares)."""
        h = self.trunk(self.prepare(images))
        h = h + self.context(h)
        feats = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)
        b, _, gh, gw = h.shape
        ys = torch.linspace(-1, 1, gh, device=h.device).view(1, 1, gh, 1).expand(b, 1, gh, gw)
        xs = torch.linspace(-1, 1, gw, device=h.device).view(1, 1, 1, gw).expand(b, 1, gh, gw)
        d = self.dense(torch.cat([h, ys, xs], 1))
        return {"seg": self.seg(d), "colour": self.colour(d), "sky": self.sky(d)[:, 0],
                "density": self.density(d), "present": self.present(d).flatten(2).amax(2),
                "background": self.background(feats),
                "features": feats}

    @torch.no_grad()
    def read(self, images: Tensor) -> dict[str, Tensor]:
        """What the judge sees, per image: "background" B (class index), "count" B x C (0..max),
        "colour" B x C (class index; meaningful where count > 0), "sky" B x C (probability the
        category is in the sky), "features" B x 8w, and "scene_probs" B x (nB * C): p(background) x
        the categories' shares of the object area, the class distribution the judge's IS reads."""
        out = self(images)
        return reading(out, self.cfg.max_count)


def reading(out: dict[str, Tensor], max_count: int) -> dict[str, Tensor]:
    """The per-image readings of the judge's raw outputs (see SceneJudge.read)."""
    seg = out["seg"].float().softmax(1)
    mass = seg[:, 1:].flatten(2).sum(2)                                   # B x C: area in cells
    weights = seg[:, 1:] ** 3                                             # B x C x g x g
    norm = weights / weights.flatten(2).sum(2).clamp_min(1e-9)[..., None, None]
    colour_p = out["colour"].float().softmax(1)                           # B x K x g x g
    colour = torch.einsum("bchw,bkhw->bck", norm, colour_p)
    sky = (norm * torch.sigmoid(out["sky"].float())[:, None]).flatten(2).sum(2)
    present = out["present"].float() > 0
    count = torch.sigmoid(out["density"].float()).flatten(2).sum(2).round().clamp(1, max_count).long()
    count = torch.where(present, count, torch.zeros_like(count))
    bg = out["background"].float().softmax(1)
    share = mass / mass.sum(1, keepdim=True).clamp_min(1e-6)
    scene = (bg[:, :, None] * share[:, None, :]).flatten(1)
    return {"background": bg.argmax(1), "count": count, "colour": colour.argmax(2), "sky": sky,
            "features": out["features"].float(), "scene_probs": scene}


# Saving and loading.

def save_judge(judge: SceneJudge, out_dir: str | Path, half: bool = True) -> Path:
    """A judge folder (attngan.io's format, kind "judge": config.json with the JudgeConfig fields,
    and judge.safetensors, in half precision unless `half` is false)."""
    return write_folder(out_dir, JUDGE_KIND, asdict(judge.cfg),
                        {WEIGHTS_FILE: state_dict_for_save(judge, half=half)})


def _judge_config(meta: dict[str, Any], path: Path) -> JudgeConfig:
    """The JudgeConfig of a config.json, every field checked (one-line errors naming the key)."""
    def words(key: str) -> list[str]:
        return meta_names(meta, key, path)

    def count(key: str, default: int, low: int, high: int) -> int:
        return meta_int(meta, key, default, low, high, path)

    for key in ("accuracy", "info"):
        if not isinstance(meta.get(key, {}), dict):
            raise AttnGANError(f"{path}: \"{key}\" must be a JSON object")
    size = count("image_size", 64, 4 * STRIDE, 1024)
    if size % STRIDE:
        raise AttnGANError(f"{path}: \"image_size\" must be a multiple of {STRIDE}, got {size}")
    return JudgeConfig(categories=words("categories"), colours=words("colours"), backgrounds=words("backgrounds"),
                       max_count=count("max_count", 4, 1, 64), image_size=size,
                       width=count("width", 16, 8, 512), accuracy=meta.get("accuracy", {}),
                       valid=meta.get("valid") is True, info=meta.get("info", {}))


def load_judge(path: str | Path, device: torch.device | str = "cpu") -> SceneJudge:
    """A judge folder (made by `attngan train-oracle` on SynthScenes data), in eval mode."""
    folder = Path(path)
    meta = read_folder(folder, (JUDGE_KIND,), (WEIGHTS_FILE,))
    w_path = folder / WEIGHTS_FILE
    judge = SceneJudge(_judge_config(meta, folder / CONFIG_FILE))
    load_state(judge, load_safetensors(w_path), str(w_path))
    judge.digest = weights_digest(w_path)
    return judge.to(device).eval()
