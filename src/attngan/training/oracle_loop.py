"""SynthBirds oracle training: a held-out share of each class measures the oracle it keeps.

The oracle (metrics/oracle.py: the network, its folder, its loader) learns every SynthBirds image
but a per-class held-out fraction, on the framing the GAN draws at (random crops of the bird's box
while training, the centre crop when testing). It trains in minutes and is saved once, so its
per-epoch log and the images it saw go into the folder's config (`info`) rather than a run folder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from attngan.data.cache import stored_size
from attngan.data.layout import load_cropped, read_image_list
from attngan.data.synth_captions import COLOURS
from attngan.errors import AttnGANError
from attngan.metrics.inception_fid import weights_digest
from attngan.metrics.oracle import (MIN_ACCURACY, ORACLE_PARTS, WEIGHTS_FILE, AttributeOracle, OracleConfig,
                                    save_oracle)
from attngan.perf import resolve_device
from attngan.training.runstate import RunState


@dataclass
class OracleData:
    images: Tensor            # N x 3 x L x L uint8, L = stored size (random 64 crops come from it)
    labels: dict[str, Tensor]  # head -> N class indices
    keys: list[str]
    classes: np.ndarray       # N manifest class ids


def load_oracle_data(root: str | Path, colours: list[str], parts: tuple[str, ...] = ORACLE_PARTS,
                     image_size: int = 64, progress: bool = True) -> tuple[OracleData, list[int]]:
    """Every train and test image of a SynthBirds folder, framed as the GAN sees them.

    The GAN's data pipeline crops the bird's box, resizes the shorter side to int(S * 76 / 64) and
    takes S x S crops; the oracle learns on the same framing (random crops while training, the
    centre crop when testing) so it reads generated images at the scale they are drawn.
    """
    root = Path(root)
    manifest = _read_manifest(root)
    load = stored_size(image_size)
    arrays, keys, classes = [], [], []
    labels: dict[str, list[int]] = {p: [] for p in parts}
    index = {c: i for i, c in enumerate(colours)}
    for split in ("train", "test"):
        images = read_image_list(root, split)
        for key, path, bbox in tqdm(list(zip(images.keys, images.paths, images.bboxes)),
                                    desc=f"oracle data ({split})", disable=not progress, leave=False):
            entry = manifest.get(key)
            if entry is None:
                raise AttnGANError(f"{key} is not in {root / 'synth_birds.json'}")
            arr = load_cropped(path, bbox, load)
            h, w = arr.shape[:2]
            top, left = (h - load) // 2, (w - load) // 2
            arrays.append(arr[top:top + load, left:left + load])
            for p in parts:
                colour = entry["parts"].get(p)
                if colour not in index:
                    raise AttnGANError(f"{key}: part '{p}' has colour {colour!r}, not one of the oracle's colours")
                labels[p].append(index[colour])
            keys.append(key)
            classes.append(int(entry["class_id"]))
    class_ids = sorted(set(classes))
    cls_index = {c: i for i, c in enumerate(class_ids)}
    data = OracleData(
        images=torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(),
        labels={**{p: torch.tensor(v) for p, v in labels.items()},
                "species": torch.tensor([cls_index[c] for c in classes])},
        keys=keys, classes=np.asarray(classes),
    )
    return data, class_ids


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / "synth_birds.json"
    if not path.is_file():
        raise AttnGANError(f"{root} has no synth_birds.json: the oracle needs SynthBirds ground truth "
                           "(make data with `attngan synth-birds`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AttnGANError(f"cannot parse {path}: {e}") from None
    images = manifest.get("images")
    if not isinstance(images, dict) or not images:
        raise AttnGANError(f"{path} lists no images")
    return images


def heldout_split(classes: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held-out): `fraction` of each class held out, at least one where a class
    has two images or more."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(classes):
        idx = rng.permutation(np.flatnonzero(classes == c))
        k = max(1, int(round(fraction * len(idx)))) if len(idx) >= 2 else 0
        held.extend(idx[:k].tolist())
        train.extend(idx[k:].tolist())
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def _augment(batch: Tensor, size: int, gen: torch.Generator) -> Tensor:
    """Random size x size crops and horizontal flips of uint8 images -> [-1, 1] floats."""
    n, _, h, w = batch.shape
    out = torch.empty(n, 3, size, size)
    tops = torch.randint(0, h - size + 1, (n,), generator=gen)
    lefts = torch.randint(0, w - size + 1, (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    for i in range(n):
        crop = batch[i, :, tops[i]:tops[i] + size, lefts[i]:lefts[i] + size]
        out[i] = crop.flip(-1) if flips[i] else crop
    out = out / 127.5 - 1
    # A little pixel noise: generated images are never as clean as renders.
    return out + 0.03 * torch.randn(out.shape, generator=gen)


def _centre(batch: Tensor, size: int) -> Tensor:
    h, w = batch.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return batch[:, :, top:top + size, left:left + size].float() / 127.5 - 1


@torch.no_grad()
def oracle_accuracy(oracle: AttributeOracle, images: Tensor, labels: dict[str, Tensor], batch: int = 256) -> dict[str, float]:
    """Held-out accuracy per head on centre crops of uint8 images."""
    oracle.eval()
    device = next(oracle.parameters()).device
    correct = {h: 0 for h in labels}
    for s in range(0, images.shape[0], batch):
        logits = oracle(_centre(images[s:s + batch], oracle.cfg.image_size).to(device))
        for h in labels:
            correct[h] += int((logits[h].argmax(1).cpu() == labels[h][s:s + batch]).sum())
    n = max(1, images.shape[0])
    return {h: c / n for h, c in correct.items()}


def train_oracle(
    data_dir: str | Path,
    out_dir: str | Path | None,
    *,
    minutes: float = 5.0,
    max_epochs: int = 200,
    seed: int = 0,
    heldout: float = 0.1,
    width: int = 16,
    batch: int = 32,
    lr: float = 2e-3,
    device: str = "auto",
    progress: bool = True,
    data: tuple[OracleData, list[int]] | None = None,
) -> AttributeOracle:
    """Train the oracle on all SynthBirds images but a held-out share per class; save it to out_dir.

    Stops when the time budget or `max_epochs` runs out, or once every head is perfect on the
    held-out images; keeps the epoch with the best worst-attribute accuracy; its per-epoch log
    goes into `info["history"]`.
    """
    t_start = time.perf_counter()
    dev = resolve_device(device)
    torch.manual_seed(seed)
    colours = list(COLOURS)
    data, class_ids = data if data is not None else load_oracle_data(data_dir, colours, progress=progress)
    train_idx, held_idx = heldout_split(data.classes, heldout, seed)
    if len(held_idx) == 0 or len(train_idx) == 0:
        raise AttnGANError(f"{len(data.keys)} images are too few to train and hold out an oracle")
    cfg = OracleConfig(parts=list(ORACLE_PARTS), colours=colours, class_ids=class_ids, width=width)
    oracle = AttributeOracle(cfg).to(dev)
    opt = torch.optim.AdamW(oracle.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    held_labels = {h: v[held_idx] for h, v in data.labels.items()}
    held_images = data.images[held_idx]
    deadline = t_start + 60 * minutes if minutes > 0 else math.inf
    epochs = 0
    run = RunState(None, "oracle")
    bar = tqdm(total=max_epochs, desc="oracle epochs", disable=not progress)
    for epoch in range(max_epochs):
        oracle.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
        for s in range(0, len(order), batch):
            # Cosine decay over whichever budget (epochs or minutes) runs out first.
            done = max((epoch + s / len(order)) / max_epochs,
                       (time.perf_counter() - t_start) / (deadline - t_start) if math.isfinite(deadline) else 0.0)
            for group in opt.param_groups:
                group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(done, 1.0))))
            idx = order[s:s + batch]
            x = _augment(data.images[idx], cfg.image_size, gen).to(dev)
            logits = oracle(x)
            loss = sum(F.cross_entropy(logits[h], data.labels[h][idx].to(dev)) for h in logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run.add_images(len(idx))
            if time.perf_counter() > deadline:
                break
        epochs = epoch + 1
        acc = oracle_accuracy(oracle, held_images, held_labels)
        score = (min(acc[p] for p in cfg.parts), float(np.mean(list(acc.values()))))
        run.keep_best(oracle, epochs, acc, score)
        run.log({"epoch": epochs, "kimg": run.kimg, "loss": float(loss.detach()),
                 **{f"heldout_{h}": round(v, 5) for h, v in acc.items()}})
        bar.update(1)
        bar.set_postfix(worst_part=f"{score[0]:.3f}", species=f"{acc['species']:.3f}", loss=f"{loss.item():.3f}")
        if min(acc.values()) >= 1.0 or time.perf_counter() > deadline:
            break
    bar.close()
    run.restore_best(oracle)
    acc = run.best_result
    cfg.accuracy = {h: round(v, 5) for h, v in acc.items()}
    cfg.valid = all(acc[p] >= MIN_ACCURACY for p in cfg.parts)
    cfg.info = {
        "data": str(Path(data_dir).resolve()) if data_dir else None, "seed": seed, "heldout_fraction": heldout,
        "train_images": int(len(train_idx)), "heldout_images": int(len(held_idx)),
        "epochs": epochs, "best_epoch": run.best_epoch, "seconds": round(time.perf_counter() - t_start, 1),
        "min_accuracy": MIN_ACCURACY, "images_seen": run.images_seen, "history": run.rows,
    }
    oracle.eval()
    if out_dir is not None:
        save_oracle(oracle, out_dir)
        oracle.digest = _digest_of(Path(out_dir))
    return oracle


def _digest_of(folder: Path) -> str:
    return weights_digest(folder / WEIGHTS_FILE)
