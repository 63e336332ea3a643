"""Throughput of the SynthBirds generator at 256 px (images/s, whole pipeline incl. file writes).

Target: 10,000 images at 256 px in under 5 minutes on 2 cores, i.e. >= 34 images/s with 2 workers.
The machine's load average is printed too: other jobs on a shared CPU slow every number here.

    python benchmarks/bench_synth_birds.py [--quick] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from attngan.data.synth_birds import generate_synth_birds, make_species, render_bird

TARGET_IMAGES_PER_S = 10_000 / 300


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few seconds (CI)")
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    n = 80 if args.quick else 1000

    results = {"size": args.size, "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    # Rendering alone (no files): where the time goes.
    species = make_species(50, seed=0)
    k = 20 if args.quick else 100
    t = time.perf_counter()
    for i in range(k):
        render_bird(species[i % 50], np.random.default_rng(i), args.size)
    results["render_only_ms"] = round((time.perf_counter() - t) / k * 1000, 2)

    for workers in (1, 2):
        count = n if workers == 2 else n // 2
        with tempfile.TemporaryDirectory() as tmp:
            t, c = time.perf_counter(), _cpu_seconds()
            generate_synth_birds(os.path.join(tmp, "birds"), images=count, classes=min(200, count),
                                 size=args.size, seed=0, workers=workers, progress=False)
            dt, cpu = time.perf_counter() - t, _cpu_seconds() - c
        results[f"images_per_s_{workers}w"] = round(count / dt, 1)
        results[f"images_{workers}w"] = count
        # CPU time (this process + its finished workers) does not depend on other users' load.
        results[f"cpu_ms_per_image_{workers}w"] = round(cpu / count * 1000, 2)
    results["idle_2core_images_per_s"] = round(2000 / results["cpu_ms_per_image_2w"], 1)
    results["load_after"] = os.getloadavg()[0]
    rate = results["images_per_s_2w"]
    results["minutes_for_10k_2w"] = round(10_000 / rate / 60, 2)
    results["meets_target"] = rate >= TARGET_IMAGES_PER_S
    print(f"SynthBirds at {args.size} px: render only {results['render_only_ms']} ms/image; "
          f"1 worker {results['images_per_s_1w']} img/s, 2 workers {rate} img/s "
          f"(10,000 images in {results['minutes_for_10k_2w']} min; target >= "
          f"{TARGET_IMAGES_PER_S:.1f} img/s: {'met' if results['meets_target'] else 'NOT met'}); "
          f"CPU {results['cpu_ms_per_image_2w']} ms/image, i.e. "
          f"{results['idle_2core_images_per_s']} img/s on 2 idle cores; "
          f"load average {results['load_before']:.1f} -> {results['load_after']:.1f} "
          f"on {results['cpus']} CPUs (shared)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
