"""Data loading throughput for CUB-layout data at 256 px (bird preset): cache off vs on.

Writes a CUB-layout folder of JPEGs of about CUB's size (500 x 400, a bird-sized box each) into a
temporary folder (or reuses --data), then times a 2-worker loader at the bird preset's batch size
over whole epochs, first with full JPEG decoding, then with the pre-resized cache. The bar is
3x the bird preset's training speed on this CPU (about 0.5 img/s), i.e. 1.5 items/s.

    python benchmarks/bench_data.py [--quick] [--images 200] [--workers 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from attngan.config import preset
from attngan.data.cache import build_cache
from attngan.data.dataset import TextImageDataset, make_loader
from attngan.data.vocab import load_vocab

WORDS = "a bird with red blue brown wings belly crown small short pointed bill black white".split()


def write_fixture(root: Path, n: int, seed: int = 0) -> None:
    """n photos-like JPEGs (smooth noise background, an ellipse 'bird' inside its bbox)."""
    rng = np.random.default_rng(seed)
    cub = root / "CUB_200_2011"
    keys, boxes = [], []
    for i in range(n):
        c = i % 10 + 1
        key = f"{c:03d}.Class_{c}/Class_{c}_{i:04d}"
        w, h = int(rng.integers(440, 520)), int(rng.integers(330, 420))
        noise = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
        img = Image.fromarray(noise).resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
        bw, bh = int(w * rng.uniform(0.4, 0.8)), int(h * rng.uniform(0.4, 0.8))
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        ImageDraw.Draw(img).ellipse((x, y, x + bw, y + bh), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        (cub / "images" / key).parent.mkdir(parents=True, exist_ok=True)
        img.save(cub / "images" / f"{key}.jpg", quality=90)
        (root / "text" / key).parent.mkdir(parents=True, exist_ok=True)
        (root / "text" / f"{key}.txt").write_text("\n".join(
            " ".join(rng.choice(WORDS, size=int(rng.integers(6, 20)))) for _ in range(10)))
        keys.append(key)
        boxes.append((x, y, bw, bh))
    (cub / "images.txt").write_text("".join(f"{i + 1} {k}.jpg\n" for i, k in enumerate(keys)))
    (cub / "bounding_boxes.txt").write_text(
        "".join(f"{i + 1} {x}.0 {y}.0 {w}.0 {h}.0\n" for i, (x, y, w, h) in enumerate(boxes)))
    for split, part in (("train", keys[: n - n // 5]), ("test", keys[n - n // 5:])):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / "filenames.pickle").write_bytes(pickle.dumps(part, protocol=2))


def items_per_second(ds, batch: int, workers: int, epochs: int) -> float:
    loader = make_loader(ds, batch, shuffle=True, workers=workers, drop_last=True, seed=0)
    n, start = 0, None
    for epoch in range(epochs + 1):  # epoch 0 starts the workers and is not timed
        for b in loader:
            if epoch > 0:
                n += len(b["keys"])
        if epoch == 0:
            start = time.perf_counter()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 images, 1 timed epoch")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", type=Path, help="a CUB-layout folder to use (or to create)")
    args = parser.parse_args()
    n, epochs = (100, 1) if args.quick else (args.images, args.epochs)
    cfg = preset("bird")
    batch = cfg.train.batch_size

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "birds"
        if not (root / "train" / "filenames.pickle").is_file():
            t = time.perf_counter()
            write_fixture(root, n)
            print(f"wrote {n} CUB-layout JPEGs (~500x400) to {root} in {time.perf_counter() - t:.1f}s")
        vocab = load_vocab(root)
        data = replace(cfg.data, workers=args.workers)
        plain = TextImageDataset(root, "train", data, vocab)
        off = items_per_second(plain, batch, args.workers, epochs)
        t = time.perf_counter()
        build_cache(root, "train", cfg.data.image_size, workers=args.workers)
        built = time.perf_counter() - t
        cached = TextImageDataset(root, "train", replace(data, cache=True), vocab)
        on = items_per_second(cached, batch, args.workers, epochs)
        print(f"{len(plain)} train items at {plain.image_sizes} px, batch {batch}, {args.workers} "
              f"workers, {epochs} timed epoch(s)")
        print(f"cache off: {off:8.1f} items/s")
        print(f"cache on:  {on:8.1f} items/s   (built once in {built:.1f}s)")
        print(f"ratio on/off: {on / off:.2f}x; bar 1.5 items/s (3x bird training): "
              f"{'met' if min(on, off) >= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
