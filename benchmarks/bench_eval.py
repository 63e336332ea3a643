"""Evaluation costs that decide how long `attngan eval` takes: FID Inception feature extraction
(images/s), the 2048-d Frechet distance (scipy sqrtm), KID and R-precision at the paper's 30,000.

Random weights and features (the cost does not depend on the values).

    python benchmarks/bench_eval.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from attngan.metrics.fid import feature_stats, fid_from_stats, kernel_inception_distance
from attngan.metrics.inception_fid import FIDInception3
from attngan.metrics.r_precision import r_precision


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"attngan eval costs ({name}, torch {torch.__version__})")

    # Extraction: 64 px images (the tiny preset) resized to 299 inside the network.
    net = FIDInception3().eval().to(device)
    batch, batches = (8, 1) if args.quick else (32, 3)
    x = torch.rand(batch, 3, 64, 64, device=device) * 2 - 1
    def extract() -> None:
        with torch.inference_mode():
            for _ in range(batches):
                net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    extract()  # warm-up
    t = seconds(extract)
    print(f"  FID Inception extraction : {batch * batches / t:8.1f} images/s (batch {batch})")

    rng = np.random.default_rng(0)
    n, d = (600, 512) if args.quick else (5000, 2048)
    a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 0.05
    sa, sb = feature_stats(a), feature_stats(b)
    print(f"  Frechet distance {d}-d    : {seconds(lambda: fid_from_stats(sa, sb)):8.2f} s (scipy sqrtm)")
    subsets = 10 if args.quick else 100
    print(f"  KID {subsets} subsets of {min(1000, n)}  : {seconds(lambda: kernel_inception_distance(a, b, num_subsets=subsets)):8.2f} s")
    m = 3000 if args.quick else 30000
    img, sent = rng.normal(size=(m, 256)), rng.normal(size=(m, 256))
    classes = np.arange(m) % 50
    print(f"  R-precision {m} images   : {seconds(lambda: r_precision(img, sent, classes)):8.2f} s (1 + 99 captions each)")


if __name__ == "__main__":
    main()
