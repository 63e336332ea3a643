"""Inference speed of the bird preset (256 px): speed switches off vs on, in the same run.

Random-weight networks (bird G with random BatchNorm statistics, bird text encoder) and random
captions; the path timed is AttnGANPipeline.generate_from_ids (inference_mode, text encoder + G).
Each configuration runs in its own long-lived subprocess, so the allocator setting
(attngan.perf.configure_allocator_env, which the pipeline applies when it is created) applies to
its process only and the all-off process runs with glibc's defaults (ATTNGAN_ALLOCATOR=default);
the processes take turns, one timed pass each, so both see the same load from other jobs
(benchmarks/_paired.py). Reported per configuration:
batch-1 latency (median, one caption), batch-16 throughput, minor page faults per pass, peak RSS,
achieved GFLOP/s against a 2048x2048 float32 matmul timed in the same process; then the on/off
ratios (median of per-round ratios) and the largest pixel difference between their images
(at most 1e-3 in float32: the folding only moves float error; bf16 moves more, ~1e-2).

    python benchmarks/bench_infer.py [--quick] [--device cpu|cuda] [--threads 2] [--compile]
        [--configs on,alloc,fuse,on+bf16] [--rounds N]

Switches: alloc (perf.configure_allocator_env, applied by the pipeline; off = ATTNGAN_ALLOCATOR=
default), fuse (the generator's inference form, AttnGANPipeline(fuse=True): BatchNorm and the
upsampling folded into the convolutions, channels-last), bf16 (AttnGANPipeline(amp="bf16"): bf16
autocast, opt-in; on a CPU without native bf16 it is emulated and slow), tf32
(perf.configure_backends, CUDA), compile (torch.compile of G; minutes to compile on a CPU, so
opt-in). "on" = alloc + fuse: what `attngan generate`, `attngan serve` and
AttnGANPipeline.from_pretrained run by default; + tf32 on a GPU (so GPU images may differ by more
than 1e-3). "off" = neither: the plain generator under glibc's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import _measure
from _paired import add_common_arguments, child_argv, switches_of, load_average, paired_speedup, run_paired, serve

SWITCHES = ("alloc", "fuse", "bf16", "tf32", "compile")
# "on" is the default path of `attngan generate` / `serve` / AttnGANPipeline.
PRESETS_ON = {"off": set(), "on": {"alloc", "fuse"}}  # + tf32 on a GPU
CAPTION_WORDS = 12


# --- Child: one configuration -----------------------------------------------------------------


def setup(spec: dict):
    """Build the pipeline for one configuration; return its timed steps, info and finish()."""
    switches = set(spec["switches"])
    if "alloc" not in switches:
        os.environ["ATTNGAN_ALLOCATOR"] = "default"  # the pipeline would apply it otherwise
    import torch

    from attngan.config import preset
    from attngan.networks import build_generator, build_text_encoder
    from attngan.pipeline import AttnGANPipeline
    from attngan.text import Vocabulary
    from attngan import perf

    dev = torch.device(spec["device"])
    if dev.type == "cpu":
        torch.set_num_threads(spec["threads"])
    if "tf32" in switches:
        perf.configure_backends(dev)  # TF32 matmuls/convolutions on CUDA (a no-op on the CPU)
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
    pipe = AttnGANPipeline(cfg, vocab, text_encoder, G, device=dev, fuse="fuse" in switches,
                           amp="bf16" if "bf16" in switches else "off")
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

    batches = {1: inputs(1, seed=1), 16: inputs(16, seed=16)}
    last = {}

    def generate(batch: int) -> None:
        last[batch] = pipe.generate_from_ids(*batches[batch])  # images come back on the CPU

    # FLOPs of one batch-1 pass (convolutions and matmuls; linear in the batch).
    flops1 = _measure.count_flops(lambda: generate(1))
    info = {"switches": sorted(switches), "torch": torch.__version__, "gflop_per_image": flops1 / 1e9,
            "allocator": os.environ.get("ATTNGAN_ALLOCATOR_APPLIED", "default"),
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else f"cpu, {torch.get_num_threads()} threads"}

    def finish() -> dict:
        torch.save(last[16].images[-1], spec["images_out"])
        peak = (torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _measure.peak_rss_mb())
        return {"peak_mem_mb": peak, "matmul_peak_gflops": _measure.matmul_peak_gflops(dev)}

    return {"latency": lambda: generate(1), "throughput": lambda: generate(16)}, info, finish


# --- Parent: run the configurations and compare ----------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, "fewer rounds, off and on only (< 3 min on 2 CPU cores)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile to the 'on' configuration")
    parser.add_argument("--configs", default=None,
                        help="comma-separated: off, on, or switches joined by + (default: off,on; "
                             "without --quick also each switch alone); each is paired with off")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds per configuration (default: 5 latency / 3 throughput with "
                             "--quick, else 15 / 6)")
    args = parser.parse_args()
    if args.child:
        serve(lambda: setup(json.loads(args.child)))
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        PRESETS_ON["on"].add("tf32")
    if args.compile:
        PRESETS_ON["on"].add("compile")
    names = args.configs.split(",") if args.configs else (
        ["on"] if args.quick else ["on", "alloc", "fuse", "on+bf16"])
    names = [n for n in names if n != "off"]
    lat_rounds = args.rounds or (5 if args.quick else 15)
    thr_rounds = args.rounds or (3 if args.quick else 6)
    t_start = time.time()
    load_before = load_average()
    results, images = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:  # each configuration is timed in rounds interleaved with "off"
            argvs = {}
            for n in ("off", name):
                spec = {"switches": sorted(switches_of(n, PRESETS_ON, SWITCHES)), "device": device, "threads": args.threads,
                        "images_out": str(Path(tmp) / f"{n}.pt")}
                argvs[n] = child_argv(__file__, spec)
            res = run_paired(argvs, {"latency": (2, lat_rounds), "throughput": (1, thr_rounds)})
            results[name] = res
            images[name] = torch.load(Path(tmp) / f"{name}.pt", weights_only=True)
            images["off"] = torch.load(Path(tmp) / "off.pt", weights_only=True)
    report(results, images, args, time.time() - t_start, load_before)


def _summary(r: dict) -> dict:
    lat, thr = r["steps"]["latency"], r["steps"]["throughput"]
    sec16 = statistics.median(thr["seconds"])
    return {"lat": statistics.median(lat["seconds"]), "img_s": 16 / sec16, "sec16": sec16,
            "faults16": statistics.median(thr["faults"]), "faults1": statistics.median(lat["faults"]),
            "gflops": r["info"]["gflop_per_image"] * 16 / sec16, **r["final"]}


def report(results: dict, images: dict, args, seconds: float, load_before: str) -> None:
    first = next(iter(results.values()))["off"]["info"]
    print(f"bird preset inference, 256 px, text encoder + G ({first['device']}, torch {first['torch']}); "
          f"{'quick' if args.quick else 'full'} run, {seconds:.0f} s; load average before {load_before}, "
          f"after {load_average()}")
    print(f"{first['gflop_per_image']:.1f} GFLOP per image; medians over interleaved rounds")
    print(f"{'config':<34}{'lat@1 ms':>9}{'img/s@16':>10}{'faults/pass@16':>16}{'faults@1':>10}"
          f"{'peak MB':>9}{'GFLOP/s':>9}{'matmul':>8}{'% peak':>8}")
    rows = []
    for name, pair in results.items():
        for n in ("off", name):
            rows.append((f"{n} [{','.join(pair[n]['info']['switches'])}]" + (" (vs " + name + ")" if n == "off" else ""),
                         _summary(pair[n])))
    for label, s in rows:
        print(f"{label:<34}{s['lat'] * 1e3:>9.0f}{s['img_s']:>10.2f}{s['faults16']:>16.0f}{s['faults1']:>10.0f}"
              f"{s['peak_mem_mb']:>9.0f}{s['gflops']:>9.1f}{s['matmul_peak_gflops']:>8.0f}"
              f"{100 * s['gflops'] / s['matmul_peak_gflops']:>7.0f}%")
    print("ratios vs off, median of per-round ratios (higher is better):")
    for name, pair in results.items():
        off, on = pair["off"]["steps"], pair[name]["steps"]
        diff = float((images[name] - images["off"]).abs().max())
        print(f"  {name:<14} throughput@16 x{paired_speedup(off['throughput']['seconds'], on['throughput']['seconds']):.2f}"
              f"   latency@1 x{paired_speedup(off['latency']['seconds'], on['latency']['seconds']):.2f}"
              f"   peak memory x{_summary(pair[name])['peak_mem_mb'] / _summary(pair['off'])['peak_mem_mb']:.2f}"
              f"   images {'equal within 1e-3' if diff <= 1e-3 else 'differ by more than 1e-3'} (max {diff:.1e}"
              f"{', bf16' if 'bf16' in pair[name]['info']['switches'] else ''})")
    for name, pair in results.items():
        s_off, s_on = _summary(pair["off"]), _summary(pair[name])
        print(f"  seconds per image, batch 16 vs batch 1: off {1 / s_off['img_s']:.3f} vs {s_off['lat']:.3f}; "
              f"{name} {1 / s_on['img_s']:.3f} vs {s_on['lat']:.3f}")


if __name__ == "__main__":
    main()
