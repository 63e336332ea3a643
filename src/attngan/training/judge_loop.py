"""SynthScenes judge training (networks/scene_judge.py): dense targets from the renders' exact masks, and the judge's own held-out accuracy.

Every image of a SynthScenes folder is read with its mask (masks/*.png: 0 sky, 1 ground, 2 + k
object k) and its ground truth (synth_scenes.json); the targets are pooled to the judge's grid:
per cell the share of each category and of no object, the colour and place (sky or ground) of the
objects covering it, and per category a density map holding one unit per object at its visible
box's centre (split bilinearly between the four nearest cells), whose sum is the count.

The judge is an instrument, not a generator: it learns from every split and composition, novel
ones included, except a held-out share of the test split (half seen, half novel compositions) on
which its accuracy is measured and stored in its config. Novel training images are repeated in
each epoch (they are a small share of the renders). Training stops at the time budget or the
epoch cap and keeps the epoch with the best worst reading.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from attngan.data.scene_render import BACKGROUNDS, CATEGORY_NAMES, COLOURS
from attngan.data.synth_scenes import GENERATOR_VERSION, MASK_FIRST_OBJECT, load_manifest
from attngan.errors import AttnGANError
from attngan.networks.scene_judge import (JudgeConfig, MIN_ACCURACY, SceneJudge, load_judge, reading,
                                          save_judge)
from attngan.perf import resolve_device
from attngan.training.runstate import RunState


@dataclass
class JudgeData:
    images: Tensor              # N x 3 x S x S uint8 at the judge's input size
    seg: Tensor                 # N x (1 + C) x g x g float: share of no object / each category
    colour: Tensor              # N x K x g x g float: share of each colour among the objects
    sky: Tensor                 # N x g x g float: share of sky objects among the objects
    density: Tensor             # N x C x g x g float: objects' centres
    background: Tensor          # N class indices
    count: Tensor               # N x C true counts
    obj_colour: Tensor          # N x C colour index of the category's group (-1 where absent)
    obj_sky: Tensor             # N x C 1 where the category's group is in the sky (-1 where absent)
    keys: list[str]
    split: list[str]            # "train" / "test"
    composition: list[str]      # "seen" / "novel"


def load_judge_data(root: str | Path, cfg: JudgeConfig, progress: bool = True,
                    limit: int | None = None) -> JudgeData:
    """Every image of a SynthScenes folder with its dense targets on the judge's grid."""
    root = Path(root)
    manifest = load_manifest(root)
    entries = list(manifest["images"].items())
    if limit is not None:
        entries = entries[:limit]
    if not entries:
        raise AttnGANError(f"{root / 'synth_scenes.json'} lists no images")
    s, g = cfg.image_size, cfg.grid
    cats = {c: i for i, c in enumerate(cfg.categories)}
    cols = {c: i for i, c in enumerate(cfg.colours)}
    bgs = {b: i for i, b in enumerate(cfg.backgrounds)}
    n, c, k = len(entries), len(cats), len(cols)
    data = JudgeData(
        images=torch.zeros(n, 3, s, s, dtype=torch.uint8), seg=torch.zeros(n, 1 + c, g, g),
        colour=torch.zeros(n, k, g, g), sky=torch.zeros(n, g, g), density=torch.zeros(n, c, g, g),
        background=torch.zeros(n, dtype=torch.long), count=torch.zeros(n, c, dtype=torch.long),
        obj_colour=torch.full((n, c), -1, dtype=torch.long), obj_sky=torch.full((n, c), -1, dtype=torch.long),
        keys=[], split=[], composition=[])
    for i, (key, t) in enumerate(tqdm(entries, desc="judge data", disable=not progress, leave=False)):
        try:
            with Image.open(root / t["file_name"]) as im:
                im = im.convert("RGB")
                full = im.width
                if im.width != s:
                    im = im.resize((s, s), Image.BILINEAR)
                data.images[i] = torch.from_numpy(np.array(im)).permute(2, 0, 1)
            with Image.open(root / t["mask"]) as m:
                labels = np.asarray(m, dtype=np.uint8).astype(np.int64)
        except OSError as e:
            raise AttnGANError(f"cannot read {key} of {root}: {e}".splitlines()[0]) from None
        if t["background"] not in bgs:
            raise AttnGANError(f"{key}: background {t['background']!r} is not one the judge knows")
        objs = t["objects"]
        # Per mask value: the category (0 = no object), colour (-1 = none), sky flag.
        lut_cat = np.zeros(MASK_FIRST_OBJECT + len(objs), dtype=np.int64)
        lut_col = np.full_like(lut_cat, -1)
        lut_sky = np.zeros_like(lut_cat)
        for j, o in enumerate(objs):
            if o["category"] not in cats or o["colour"] not in cols:
                raise AttnGANError(f"{key}: object {o['category']!r} in {o['colour']!r} is not one the judge knows")
            lut_cat[MASK_FIRST_OBJECT + j] = 1 + cats[o["category"]]
            lut_col[MASK_FIRST_OBJECT + j] = cols[o["colour"]]
            lut_sky[MASK_FIRST_OBJECT + j] = int(o["place"] == "sky")
        labels = np.minimum(labels, len(lut_cat) - 1)
        cell = cells(labels.shape[0], g)
        data.seg[i] = torch.from_numpy(_pool(cell, lut_cat[labels], 1 + c, g))
        col_map = lut_col[labels]
        data.colour[i] = torch.from_numpy(_pool(cell, np.where(col_map >= 0, col_map, k), k + 1, g)[:k])
        sky_obj = np.where(col_map >= 0, lut_sky[labels], 2)
        data.sky[i] = torch.from_numpy(_pool(cell, sky_obj, 3, g)[1])
        for o in objs:
            x, y, w, h = o["bbox"]
            if w <= 0 or h <= 0:
                continue
            _splat(data.density[i, cats[o["category"]]], (x + w / 2) / full * g - 0.5, (y + h / 2) / full * g - 0.5)
        data.background[i] = bgs[t["background"]]
        for grp in t["groups"]:
            ci = cats[grp["category"]]
            data.count[i, ci] = grp["count"]
            data.obj_colour[i, ci] = cols[grp["colour"]]
            data.obj_sky[i, ci] = int(grp["place"] == "sky")
        data.keys.append(key)
        data.split.append(t["split"])
        data.composition.append(t["composition"])
    return data


def cells(size: int, g: int) -> np.ndarray:
    """size x size: the index of the grid cell (of g x g) each pixel falls in."""
    row = np.minimum(np.arange(size) * g // size, g - 1)
    return row[:, None] * g + row[None, :]


def _pool(cell: np.ndarray, classes: np.ndarray, n: int, g: int) -> np.ndarray:
    """n x g x g: per cell, the share of its pixels of each class (0..n-1)."""
    counts = np.bincount((cell * n + classes).ravel(), minlength=g * g * n).reshape(g * g, n)
    return (counts / counts.sum(1, keepdims=True)).T.reshape(n, g, g).astype(np.float32)


def _splat(plane: Tensor, x: float, y: float) -> None:
    """Add one unit at (x, y) in cell coordinates (cell centres at integers), bilinearly, keeping
    the whole unit inside the grid."""
    g = plane.shape[-1]
    x, y = min(max(x, 0.0), g - 1.0), min(max(y, 0.0), g - 1.0)
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    fx, fy = x - x0, y - y0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            if wx * wy > 0:
                plane[min(y0 + dy, g - 1), min(x0 + dx, g - 1)] += wx * wy


def heldout_split(data: JudgeData, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held-out): `fraction` of the test split's seen images and of its novel
    ones held out; everything else trains."""
    rng = np.random.default_rng(seed)
    held = []
    for kind in ("seen", "novel"):
        idx = np.flatnonzero([s == "test" and c == kind for s, c in zip(data.split, data.composition)])
        idx = rng.permutation(idx)
        held.extend(idx[: int(round(fraction * len(idx)))].tolist())
    held_arr = np.sort(np.asarray(held, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(data.keys)), held_arr)
    return train, held_arr


def _augment(data: JudgeData, idx: np.ndarray, gen: torch.Generator, cfg: JudgeConfig) -> tuple[Tensor, dict]:
    """A batch: horizontal flips (targets flipped with it), half of it seen through a 64 px
    bottleneck (generated images are often 64 px upsampled), and pixel noise."""
    x = data.images[idx].float() / 127.5 - 1
    t = {"seg": data.seg[idx], "colour": data.colour[idx], "sky": data.sky[idx], "density": data.density[idx]}
    flip = torch.rand(len(idx), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    t = {k: torch.where(flip.view(-1, *[1] * (v.dim() - 1)), v.flip(-1), v) for k, v in t.items()}
    if cfg.image_size > 64:
        low = torch.rand(len(idx), generator=gen) < 0.5
        if low.any():
            small = F.interpolate(x[low], size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
            x[low] = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
    x = x + 0.03 * torch.randn(x.shape, generator=gen)
    return x, t


def judge_loss(out: dict[str, Tensor], t: dict[str, Tensor], background: Tensor, count: Tensor) -> Tensor:
    seg = -(t["seg"] * F.log_softmax(out["seg"], 1)).sum(1).mean()
    obj = t["colour"].sum(1)                                        # share of the cell that is object
    w = obj / obj.sum().clamp_min(1e-6)
    colour = (-(t["colour"] * F.log_softmax(out["colour"], 1)).sum(1) / obj.clamp_min(1e-6) * w).sum()
    sky_t = (t["sky"] / obj.clamp_min(1e-6)).clamp(0, 1)
    sky = (F.binary_cross_entropy_with_logits(out["sky"], sky_t, reduction="none") * w).sum()
    # Centres are rare cells: each one weighs as much as all the empty cells of its map.
    td = t["density"].clamp(0, 1)
    d = torch.sigmoid(out["density"])
    pos = 1.0 + (td > 0).float() * out["density"][0, 0].numel() / 4
    density = (F.binary_cross_entropy_with_logits(out["density"], td, reduction="none") * pos).mean() \
        + (d.sum((2, 3)) - t["density"].sum((2, 3))).abs().mean()
    present = F.binary_cross_entropy_with_logits(out["present"], (count > 0).float())
    return seg + colour + sky + density + present + F.cross_entropy(out["background"], background)


@torch.no_grad()
def judge_accuracy(judge: SceneJudge, data: JudgeData, idx: np.ndarray | None = None,
                   batch: int = 128) -> dict[str, dict[str, float]]:
    """The judge's readings against the truth, for the seen and the novel images of `idx`
    (default: every image): background, presence of each category (12 per image), and for each
    category present its colour, count and place (sky or ground); plus "n" images."""
    judge.eval()
    device = next(judge.parameters()).device
    idx = np.arange(len(data.keys)) if idx is None else np.asarray(idx)
    out: dict[str, dict[str, float]] = {}
    for kind in ("seen", "novel"):
        sel = idx[[data.composition[i] == kind for i in idx]] if len(idx) else idx
        if len(sel) == 0:
            continue
        hits = {"background": 0, "presence": 0, "colour": 0, "count": 0, "place": 0}
        present = 0
        for s in range(0, len(sel), batch):
            b = sel[s:s + batch]
            r = reading(judge(data.images[b].float().to(device) / 127.5 - 1), judge.cfg.max_count)
            r = {k: v.cpu() for k, v in r.items()}
            count, mask = data.count[b], data.count[b] > 0
            hits["background"] += int((r["background"] == data.background[b]).sum())
            hits["presence"] += int(((r["count"] > 0) == mask).sum())
            hits["colour"] += int((r["colour"] == data.obj_colour[b])[mask].sum())
            hits["count"] += int((r["count"] == count)[mask].sum())
            hits["place"] += int(((r["sky"] > 0.5).long() == data.obj_sky[b])[mask].sum())
            present += int(mask.sum())
        n, c = len(sel), len(judge.cfg.categories)
        out[kind] = {"background": hits["background"] / n, "presence": hits["presence"] / (n * c),
                     "colour": hits["colour"] / max(1, present), "count": hits["count"] / max(1, present),
                     "place": hits["place"] / max(1, present), "n": n}
    return out


def _worst(acc: dict[str, dict[str, float]]) -> float:
    """The smallest margin of a required reading over its bar, seen and novel alike."""
    return min(acc[kind][h] - MIN_ACCURACY[h] for kind in acc for h in MIN_ACCURACY)


def train_judge(
    data_dir: str | Path,
    out_dir: str | Path | None,
    *,
    minutes: float = 10.0,
    max_epochs: int = 40,
    seed: int = 0,
    heldout: float = 0.5,
    width: int = 16,
    image_size: int = 64,
    batch: int = 32,
    lr: float = 4e-3,
    device: str = "auto",
    progress: bool = True,
    data: JudgeData | None = None,
    init: str | Path | None = None,
    novel_repeat: int = 4,
) -> SceneJudge:
    """Train the judge on a SynthScenes folder (all but `heldout` of its test split) and save it.

    `init`: a judge folder to continue from (its input size and width are kept; the schedule
    starts again), so a judge below its bars can be trained further without starting over."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    dev = resolve_device(device)
    torch.manual_seed(seed)
    start = None
    if init is not None:
        start = load_judge(init)
        image_size, width = start.cfg.image_size, start.cfg.width
    cfg = JudgeConfig(categories=list(CATEGORY_NAMES), colours=list(COLOURS), backgrounds=list(BACKGROUNDS),
                      image_size=image_size, width=width)
    if start is not None and (start.cfg.categories, start.cfg.colours, start.cfg.backgrounds) != \
            (cfg.categories, cfg.colours, cfg.backgrounds):
        raise AttnGANError(f"{init} reads other categories, colours or backgrounds than SynthScenes has")
    data = data if data is not None else load_judge_data(data_dir, cfg, progress=progress)
    if data.images.shape[-1] != image_size:
        raise AttnGANError(f"the judge data is at {data.images.shape[-1]} px, the judge reads {image_size} px")
    if start is not None:
        # The held-out images must stay those the starting judge never trained on.
        seed_split = start.cfg.info.get("split_seed", start.cfg.info.get("seed", seed))
        heldout = start.cfg.info.get("heldout_fraction_of_test", heldout)
    else:
        seed_split = seed
    train_idx, held_idx = heldout_split(data, heldout, seed_split)
    if len(held_idx) == 0 or len(train_idx) == 0:
        raise AttnGANError(f"{len(data.keys)} images are too few to train and hold out a judge "
                           "(the held-out images come from the test split)")
    # Novel compositions are a small part of the renders (half the test split); each is seen
    # `novel_repeat` times an epoch so that the judge reads them as well as the seen ones.
    novel = np.asarray([data.composition[i] == "novel" for i in train_idx], dtype=bool)
    epoch_order = np.concatenate([train_idx] + [train_idx[novel]] * (novel_repeat - 1))
    judge = SceneJudge(cfg)
    if start is not None:
        judge.load_state_dict({k: v.float() for k, v in start.state_dict().items()})
    judge = judge.to(dev)
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    deadline = t_start + 60 * minutes if minutes > 0 else math.inf
    run = RunState(None, "judge")
    epochs = 0
    if start is not None:
        # The starting judge is the one to beat: a continuation never ships a worse one.
        acc = judge_accuracy(judge, data, held_idx)
        run.keep_best(judge, 0, acc, _worst(acc))
    bar = tqdm(total=max_epochs, desc="judge epochs", disable=not progress)
    for epoch in range(max_epochs):
        judge.train()
        order = epoch_order[torch.randperm(len(epoch_order), generator=gen).numpy()]
        for s in range(0, len(order), batch):
            # One-cycle: a short warm-up, then cosine decay over whichever budget runs out first.
            done = max((epoch + s / len(order)) / max_epochs,
                       (time.perf_counter() - t_start) / (deadline - t_start) if math.isfinite(deadline) else 0.0)
            warm = min(1.0, (epoch * len(order) + s) / (20 * batch))
            for group in opt.param_groups:
                group["lr"] = lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(done, 1.0))))
            idx = order[s:s + batch]
            x, t = _augment(data, idx, gen, cfg)
            out = judge(x.to(dev))
            loss = judge_loss(out, {k: v.to(dev) for k, v in t.items()}, data.background[idx].to(dev),
                              data.count[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if time.perf_counter() > deadline:
                break
        epochs = epoch + 1
        acc = judge_accuracy(judge, data, held_idx)
        score = _worst(acc)
        run.keep_best(judge, epochs, acc, score)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", worst_margin=f"{score:+.3f}")
        if time.perf_counter() > deadline:
            break
    bar.close()
    run.restore_best(judge)
    cfg.accuracy = {kind: {h: (round(v, 5) if h != "n" else v) for h, v in a.items()}
                    for kind, a in run.best_result.items()}
    cfg.valid = run.best_score >= 0
    cfg.info = {
        "seed": seed, "split_seed": seed_split, "novel_repeat": novel_repeat,
        "heldout_fraction_of_test": heldout, "train_images": int(len(train_idx)),
        "heldout_images": int(len(held_idx)), "epochs": epochs, "best_epoch": run.best_epoch,
        "seconds": round(time.perf_counter() - t_start, 1), "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "min_accuracy": MIN_ACCURACY, "threads": torch.get_num_threads(),
    }
    if start is not None:
        # The whole training of the judge: this run's and what its starting point had behind it.
        before = start.cfg.info
        cfg.info["continued_from"] = {k: before.get(k) for k in ("seed", "epochs", "seconds", "cpu_seconds")}
        if "continued_from" in before:
            cfg.info["continued_from"]["earlier"] = before["continued_from"]

    cfg.info["generator_version"] = GENERATOR_VERSION
    judge.eval()
    if out_dir is not None:
        save_judge(judge, out_dir)

        judge = load_judge(out_dir, dev)
    return judge
