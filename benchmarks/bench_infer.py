"""Inference speed of the bird preset (256 px): every speed switch off vs on, in the same run.

Random-weight networks (bird G with random BatchNorm statistics, bird text encoder) and random
captions; the path timed is AttnGANPipeline.generate_from_ids (inference_mode, text encoder + G).
Each configuration runs in its own subprocess, so the allocator settings that the CLI applies
before torch loads (attngan.training.perf.configure_allocator_env) really apply, and the all-off
process really runs with glibc's defaults. Reported per configuration: batch-1 latency (p50,
one caption), batch-16 throughput, minor page faults per pass, peak RSS, achieved GFLOP/s vs a
2048x2048 float32 matmul measured in the same process; then the on/off ratios and the largest
pixel difference between their images (must stay below 1e-3: BN folding only moves float error).

    python benchmarks/bench_infer.py [--quick] [--device cpu|cuda] [--threads 2] [--compile]
        [--configs off,on,alloc,fuse,channels_last]

Switches: alloc (perf.configure_allocator_env), fuse (BatchNorm folded into the convolutions,
pipeline.fuse()), channels_last, compile (torch.compile of G; slow to start, so opt-in).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWITCHES = ("alloc", "fuse", "channels_last", "compile")
PRESETS_ON = {"off": set(), "on": {"alloc", "fuse", "channels_last"}}
# Variables the allocator switch sets; removed from every child so "off" really is off.
ALLOCATOR_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_",
                 "THP_MEM_ALLOC_ENABLE", "ATTNGAN_ALLOCATOR_APPLIED", "ATTNGAN_ALLOCATOR")
CAPTION_WORDS = 12


# --- Child: one configuration ---------------------------------------------------------------


def child(spec: dict) -> dict:
    switches = set(spec["switches"])
    if "alloc" in switches:
        from attngan.training.perf import configure_allocator_env

        configure_allocator_env()  # before torch is imported, as the CLI does
    import torch

    from attngan.config import preset
    from attngan.networks import build_generator, build_text_encoder
    from attngan.pipeline import AttnGANPipeline
    from attngan.text import Vocabulary
    from attngan.training import perf

    dev = torch.device(spec["device"])
    if dev.type == "cpu":
        torch.set_num_threads(spec["threads"])
    perf.configure_backends(dev)
    torch.manual_seed(0)
    cfg = preset("bird")
    vocab = Vocabulary(["<end>"] + [f"w{i}" for i in range(1, 5000)])
    text_encoder = build_text_encoder(cfg, len(vocab))
    G = build_generator(cfg, cfg.text.embedding_dim)
    g = torch.Generator().manual_seed(1)
    for m in G.modules():  # trained-looking BN statistics, so folding them is not a no-op
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
    pipe = AttnGANPipeline(cfg, vocab, text_encoder, G, device=dev)
    if "fuse" in switches:
        pipe.fuse()
    if "channels_last" in switches:
        pipe.generator = pipe.generator.to(memory_format=torch.channels_last)
    if "compile" in switches:
        pipe.generator = perf.maybe_compile(pipe.generator, True)

    def inputs(batch: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        lens = torch.randint(4, CAPTION_WORDS + 1, (batch,), generator=gen).sort(descending=True).values
        lens[0] = CAPTION_WORDS
        ids = torch.randint(1, len(vocab), (batch, CAPTION_WORDS), generator=gen)
        ids[torch.arange(CAPTION_WORDS)[None] >= lens[:, None]] = 0
        z, eps = pipe.sample_noise(batch, seed)
        return ids, lens, z, eps

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed_passes(batch: int, warmup: int, reps: int) -> tuple[list[float], list[int], object]:
        ids, lens, z, eps = inputs(batch, seed=batch)
        times, faults, out = [], [], None
        for r in range(warmup + reps):
            sync()
            f0, t0 = perf.minor_faults(), time.perf_counter()
            out = pipe.generate_from_ids(ids, lens, z, eps)
            sync()
            if r >= warmup:
                times.append(time.perf_counter() - t0)
                faults.append(perf.minor_faults() - f0)
        return times, faults, out

    quick = spec["quick"]
    result: dict = {"switches": sorted(switches), "device": _device_name(torch, dev),
                    "torch": torch.__version__, "allocator": os.environ.get("ATTNGAN_ALLOCATOR_APPLIED", "default")}
    lat, lat_faults, _ = timed_passes(1, warmup=2, reps=5 if quick else 15)
    thr, thr_faults, out = timed_passes(16, warmup=1, reps=2 if quick else 5)
    result.update(latency_p50_s=statistics.median(lat), latency_faults=statistics.median(lat_faults),
                  batch16_s=statistics.median(thr), batch16_img_s=16 / statistics.median(thr),
                  batch16_faults=statistics.median(thr_faults))
    # FLOPs of one batch-1 pass (convolutions and matmuls; linear in the batch).
    ids, lens, z, eps = inputs(1, seed=1)
    flops1 = perf.count_flops(lambda: pipe.generate_from_ids(ids, lens, z, eps))
    result["gflop_per_image"] = flops1 / 1e9
    result["gflops_batch16"] = flops1 * 16 / statistics.median(thr) / 1e9
    result["matmul_peak_gflops"] = perf.matmul_peak_gflops(dev)
    if dev.type == "cuda":
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        result["peak_mem_mb"] = perf.peak_rss_mb()
    torch.save(out.images[-1], spec["images_out"])
    return result


def _device_name(torch, dev) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu, {torch.get_num_threads()} threads"


# --- Parent: run the configurations and compare ----------------------------------------------


def run_child(spec: dict, script: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    proc = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], env=env,
                          capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"configuration {spec['name']} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def switches_of(name: str) -> set[str]:
    if name in PRESETS_ON:
        return set(PRESETS_ON[name])
    parts = set(name.split("+"))
    unknown = parts - set(SWITCHES)
    if unknown:
        sys.exit(f"unknown configuration {name!r}: use off, on, or switches joined by + ({', '.join(SWITCHES)})")
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, off and on only (< 3 min on 2 CPU cores)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    parser.add_argument("--compile", action="store_true", help="add torch.compile to the 'on' configuration")
    parser.add_argument("--configs", default=None,
                        help="comma-separated: off, on, or switches joined by + (default: off,on; "
                             "without --quick also each switch alone)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="run the configurations this many times, interleaved; the best round counts "
                             "(default 1 with --quick, else 2)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    if args.compile:
        PRESETS_ON["on"].add("compile")
    names = args.configs.split(",") if args.configs else (
        ["off", "on"] if args.quick else ["off", "on", "alloc", "fuse", "channels_last"])
    rounds = args.rounds or (1 if args.quick else 2)
    t_start = time.time()
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):  # interleaved, so load from other processes hits every config alike
            for name in names:
                spec = {"name": name, "switches": sorted(switches_of(name)), "device": args.device,
                        "threads": args.threads, "quick": args.quick,
                        "images_out": str(Path(tmp) / f"{name}.pt")}
                runs[name].append(run_child(spec, os.path.abspath(__file__)))
        # Best round per configuration: other engineers' jobs only ever slow a round down.
        results = {name: {**max(rs, key=lambda r: r["batch16_img_s"]),
                          "latency_p50_s": min(r["latency_p50_s"] for r in rs)}
                   for name, rs in runs.items()}
        import torch

        images = {name: torch.load(Path(tmp) / f"{name}.pt", weights_only=True) for name in names}
    report(results, images, args, time.time() - t_start)


def report(results: dict, images: dict, args, seconds: float) -> None:
    base = results.get("off")
    first = next(iter(results.values()))
    print(f"bird preset inference, 256 px ({first['device']}, torch {first['torch']}); "
          f"{'quick' if args.quick else 'full'} run, {seconds:.0f} s")
    print(f"float32 matmul 2048^2 peak in this run: {max(r['matmul_peak_gflops'] for r in results.values()):.1f} GFLOP/s; "
          f"{first['gflop_per_image']:.1f} GFLOP per image")
    hdr = (f"{'config':<28}{'lat p50 ms':>11}{'img/s @16':>11}{'faults/pass@16':>16}{'faults@1':>10}"
           f"{'peak MB':>9}{'GFLOP/s':>9}{'% peak':>8}{'max |dimg|':>12}")
    print(hdr)
    for name, r in results.items():
        diff = float((images[name] - images["off"]).abs().max()) if "off" in images else float("nan")
        print(f"{name + ' [' + ','.join(r['switches']) + ']':<28}{r['latency_p50_s'] * 1e3:>11.0f}"
              f"{r['batch16_img_s']:>11.2f}{r['batch16_faults']:>16.0f}{r['latency_faults']:>10.0f}"
              f"{r['peak_mem_mb']:>9.0f}{r['gflops_batch16']:>9.1f}"
              f"{100 * r['gflops_batch16'] / r['matmul_peak_gflops']:>7.0f}%{diff:>12.2e}")
    if base is None:
        return
    print("ratios vs off (higher is better):")
    for name, r in results.items():
        if name == "off":
            continue
        diff = float((images[name] - images["off"]).abs().max())
        print(f"  {name:<20} throughput@16 x{r['batch16_img_s'] / base['batch16_img_s']:.2f}   "
              f"latency@1 x{base['latency_p50_s'] / r['latency_p50_s']:.2f}   "
              f"faults/pass@16 {base['batch16_faults']:.0f} -> {r['batch16_faults']:.0f}   "
              f"images {'equal within 1e-3' if diff <= 1e-3 else 'DIFFER'} ({diff:.1e})")
    per_image = {n: 1 / r["batch16_img_s"] for n, r in results.items()}
    print("seconds per image, batch 16 vs batch 1: " + "; ".join(
        f"{n} {per_image[n]:.3f} vs {results[n]['latency_p50_s']:.3f}" for n in results))


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
