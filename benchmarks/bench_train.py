"""Training speed (images/s) of the bird and tiny presets: every speed switch off vs on, same run.

Random-weight networks and random inputs (no data set needed): bird is the full AttnGAN (64, 128,
256 px stages and Ds) with the paper's DAMSM Inception-v3 image encoder (random weights) and a bi-LSTM
text encoder; tiny is the CPU preset. One iteration is exactly the training loop's
(`gan_loop.gan_step`, after the text encoder): G forward, one Adam step per D, one G step with the
DAMSM losses, EMA; data loading is excluded. Each configuration runs in its own subprocess, so the
allocator settings the CLI applies before torch loads really apply (and "off" runs with glibc's
defaults). Reported: images/s, minor page faults per iteration, peak memory, achieved GFLOP/s
(FlopCounterMode) against a 2048x2048 float32 matmul measured in the same process, and ratios.

    python benchmarks/bench_train.py [--quick] [--device cpu|cuda] [--threads 2]
        [--presets bird,tiny] [--configs off,on,alloc,freeze,reuse,channels_last]

Switches: alloc (perf.configure_allocator_env), freeze (train.freeze_d_in_g_step), reuse
(train.reuse_real_features), channels_last, amp (bf16 autocast, CUDA only), compile (opt-in).
Batch: bird 4 on the CPU, 20 (the paper's) on a GPU; tiny uses its preset's 32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SWITCHES = ("alloc", "freeze", "reuse", "channels_last", "amp", "compile")
CONFIGS = {"off": set(), "on": {"alloc", "freeze", "reuse"}}  # + amp, channels_last on a GPU
ALLOCATOR_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_",
                 "THP_MEM_ALLOC_ENABLE", "ATTNGAN_ALLOCATOR_APPLIED", "ATTNGAN_ALLOCATOR")


# --- Child: one preset x configuration --------------------------------------------------------


def child(spec: dict) -> dict:
    switches = set(spec["switches"])
    if "alloc" in switches:
        from attngan.training.perf import configure_allocator_env

        configure_allocator_env()  # before torch is imported, as the CLI does
    import copy

    import torch

    from attngan.config import preset
    from attngan.networks import (build_discriminators, build_generator, build_image_encoder,
                                  build_text_encoder)
    from attngan.training import perf
    from attngan.training.gan_loop import GANLoss, GANModels, gan_step

    dev = torch.device(spec["device"])
    if dev.type == "cpu":
        torch.set_num_threads(spec["threads"])
    perf.configure_backends(dev)
    torch.manual_seed(0)
    cfg = preset(spec["preset"])
    B = spec["batch"]
    t = cfg.train
    t.batch_size = B
    t.freeze_d_in_g_step = "freeze" in switches
    t.reuse_real_features = "reuse" in switches
    t.channels_last = "channels_last" in switches
    t.compile = "compile" in switches
    t.amp = "bf16" if "amp" in switches else "off"  # perf.autocast ignores it on the CPU

    # The networks, wrapped as train_gan wraps them (one process: no DDP).
    n_words = 5000
    text_encoder = build_text_encoder(cfg, n_words).to(dev).eval().requires_grad_(False)
    image_encoder = build_image_encoder(cfg).to(dev).eval().requires_grad_(False)
    G = build_generator(cfg, cfg.text.embedding_dim).to(dev)
    Ds = build_discriminators(cfg).to(dev)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    if t.channels_last:
        G, Ds = G.to(memory_format=torch.channels_last), Ds.to(memory_format=torch.channels_last)
        image_encoder = image_encoder.to(memory_format=torch.channels_last)
    opt_G = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=t.betas)
    opt_Ds = [torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=t.betas) for D in Ds]
    amp = lambda: perf.autocast(t.amp, dev)  # noqa: E731
    models = GANModels(G, Ds, G_ema, perf.maybe_compile(G, t.compile),
                       [perf.maybe_compile(D, t.compile) for D in Ds], opt_G, opt_Ds,
                       perf.grad_scaler(t.amp, dev), amp,
                       Ds_g=[perf.maybe_compile(D, t.compile) for D in Ds])
    loss = GANLoss(cfg, image_encoder, amp)

    # Random batches (a few, cycled), built before timing.
    gen = torch.Generator().manual_seed(1)
    sizes = [cfg.data.base_size * 2**i for i in range(cfg.data.branch_num)]
    T = cfg.data.words_num
    batches = []
    for _ in range(2):
        lens = torch.randint(5, T + 1, (B,), generator=gen).sort(descending=True).values
        lens[0] = T
        captions = torch.randint(1, n_words, (B, T), generator=gen)
        captions[torch.arange(T)[None] >= lens[:, None]] = 0
        reals = [(torch.rand(B, 3, s, s, generator=gen) * 2 - 1).to(dev) for s in sizes]
        if t.channels_last:
            reals = [perf.to_channels_last(x) for x in reals]
        batches.append({"captions": captions.to(dev), "cap_lens": lens.to(dev), "reals": reals,
                        "class_ids": torch.randint(0, 150, (B,), generator=gen).to(dev)})

    def iteration(b) -> None:
        # What train_gan does per batch once the loader has delivered it.
        with torch.no_grad():
            words, sent = text_encoder(b["captions"], b["cap_lens"])
        mask = b["captions"] == 0
        z = torch.randn(B, cfg.gan.z_dim, device=dev)
        _, finite = gan_step(models, loss, cfg, b["reals"], words, sent, mask, b["cap_lens"],
                             b["class_ids"], z)
        if not finite:
            raise RuntimeError("non-finite losses in the benchmark")
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    # The first iteration warms up (allocations, compile) and, unless compiling, counts the FLOPs.
    if t.compile:
        iteration(batches[0])
    flops = perf.count_flops(lambda: iteration(batches[0]))
    for i in range(spec["warmup"] - 1):
        iteration(batches[i % 2])
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times, faults = [], []
    for i in range(spec["reps"]):
        f0, t0 = perf.minor_faults(), time.perf_counter()
        iteration(batches[i % 2])
        times.append(time.perf_counter() - t0)
        faults.append(perf.minor_faults() - f0)
    sec = statistics.median(times)
    return {
        "switches": sorted(switches), "preset": spec["preset"], "batch": B,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "sec_per_iter": sec, "img_s": B / sec, "times": times,
        "faults_per_iter": statistics.median(faults), "gflop_per_iter": flops / 1e9,
        "gflops": flops / sec / 1e9, "matmul_peak_gflops": perf.matmul_peak_gflops(dev),
        "peak_mem_mb": (torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda"
                        else perf.peak_rss_mb()),
        "allocator": os.environ.get("ATTNGAN_ALLOCATOR_APPLIED", "default"),
    }


# --- Parent -----------------------------------------------------------------------------------


def run_child(spec: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{spec['preset']} / {spec['name']} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def switches_of(name: str) -> set[str]:
    if name in CONFIGS:
        return set(CONFIGS[name])
    parts = set(name.split("+"))
    if parts - set(SWITCHES):
        sys.exit(f"unknown configuration {name!r}: use off, on, or switches joined by + ({', '.join(SWITCHES)})")
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations, off and on only (< 3 min on 2 CPU cores)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    parser.add_argument("--presets", default="bird,tiny")
    parser.add_argument("--configs", default=None,
                        help="comma-separated: off, on, or switches joined by + (default: off,on; without "
                             "--quick the bird preset also runs each switch alone)")
    parser.add_argument("--channels-last", action="store_true", help="add channels_last to 'on'")
    parser.add_argument("--compile", action="store_true", help="add torch.compile to 'on'")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        CONFIGS["on"].update({"amp", "channels_last"})
    if args.channels_last:
        CONFIGS["on"].add("channels_last")
    if args.compile:
        CONFIGS["on"].add("compile")
    t_start = time.time()
    results: dict[tuple[str, str], dict] = {}
    for preset_name in args.presets.split(","):
        names = args.configs.split(",") if args.configs else ["off", "on"]
        if not args.configs and not args.quick and preset_name == "bird":
            names += ["alloc", "freeze", "reuse", "channels_last"]
        batch = {"bird": 20 if device == "cuda" else 4}.get(preset_name)
        if batch is None:
            from attngan.config import preset

            batch = preset(preset_name).train.batch_size
        big = preset_name in ("bird", "bird-attn1", "coco")
        for name in names:
            spec = {"name": name, "preset": preset_name, "switches": sorted(switches_of(name)),
                    "device": device, "threads": args.threads, "batch": batch,
                    "warmup": 1 if args.quick or big else 2,
                    "reps": (2 if big else 3) if args.quick else (5 if big else 10)}
            results[(preset_name, name)] = run_child(spec)
    report(results, args, time.time() - t_start)


def report(results: dict, args, seconds: float) -> None:
    first = next(iter(results.values()))
    print(f"training iteration, random data ({first['device']}, torch {first['torch']}); "
          f"{'quick' if args.quick else 'full'} run, {seconds:.0f} s")
    print(f"float32 matmul 2048^2 peak in this run: {max(r['matmul_peak_gflops'] for r in results.values()):.1f} GFLOP/s")
    print(f"{'preset':<7}{'config':<40}{'batch':>6}{'s/iter':>8}{'img/s':>8}{'faults/iter':>13}"
          f"{'peak MB':>9}{'GFLOP/it':>9}{'GFLOP/s':>9}{'% peak':>8}")
    for (p, name), r in results.items():
        label = f"{name} [{','.join(r['switches'])}]"
        print(f"{p:<7}{label:<40}{r['batch']:>6}{r['sec_per_iter']:>8.2f}{r['img_s']:>8.2f}"
              f"{r['faults_per_iter']:>13.0f}{r['peak_mem_mb']:>9.0f}{r['gflop_per_iter']:>9.1f}"
              f"{r['gflops']:>9.1f}{100 * r['gflops'] / r['matmul_peak_gflops']:>7.0f}%")
    print("ratios vs off (images/s, higher is better):")
    for (p, name), r in results.items():
        base = results.get((p, "off"))
        if name == "off" or base is None:
            continue
        print(f"  {p:<6} {name:<16} x{r['img_s'] / base['img_s']:.2f}   faults/iter "
              f"{base['faults_per_iter']:.0f} -> {r['faults_per_iter']:.0f}   peak MB "
              f"{base['peak_mem_mb']:.0f} -> {r['peak_mem_mb']:.0f}")


if __name__ == "__main__":
    main()
