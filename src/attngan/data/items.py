"""One training or evaluation item's pieces, shared by every data source (folder datasets and
streamed shards): the caption padded or subsampled to `words_num`, and the image cropped once at
the largest size and downscaled from that crop for the smaller stages."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def pad_caption(ids: np.ndarray, t: int, train: bool, generator: torch.Generator | None,
                key: tuple[int, int]) -> tuple[torch.Tensor, int]:
    """(LongTensor t zero-padded, length). Longer captions keep t words at sorted random positions
    (the original): drawn from `generator` when training, fixed per `key` otherwise."""
    if len(ids) > t:
        if train:
            pos = torch.randperm(len(ids), generator=generator)[:t].sort().values.numpy()
        else:
            pos = np.sort(np.random.default_rng(list(key)).choice(len(ids), t, replace=False))
        ids = ids[pos]
    out = torch.zeros(t, dtype=torch.long)
    out[:len(ids)] = torch.from_numpy(ids.astype(np.int64))
    return out, len(ids)


def multi_scale_crops(full: np.ndarray, image_sizes: list[int], train: bool,
                      generator: torch.Generator | None) -> list[torch.Tensor]:
    """One crop of the largest size (random + random flip when training, centred otherwise) and
    every smaller size downscaled from it, as [-1, 1] tensors."""
    size = max(image_sizes)
    h, w = full.shape[:2]
    if train:
        g = generator
        top = int(torch.randint(0, h - size + 1, (), generator=g))
        left = int(torch.randint(0, w - size + 1, (), generator=g))
        flip = bool(torch.rand((), generator=g) < 0.5)
    else:  # center crop, as torchvision's CenterCrop
        top, left, flip = int(round((h - size) / 2)), int(round((w - size) / 2)), False
    crop = full[top:top + size, left:left + size]
    if flip:
        crop = crop[:, ::-1]
    crop = np.ascontiguousarray(crop)
    out = []
    for s in image_sizes:
        arr = crop if s == size else np.array(Image.fromarray(crop).resize((s, s), Image.BILINEAR))
        if not arr.flags.writeable:  # a view of the read-only cache
            arr = arr.copy()
        # ToTensor then Normalize(0.5, 0.5): x / 127.5 - 1.
        out.append(torch.from_numpy(arr).permute(2, 0, 1).float().contiguous().div_(127.5).sub_(1.0))
    return out
