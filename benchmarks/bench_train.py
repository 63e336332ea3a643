"""Training speed (images/s) of the bird and tiny presets: speed switches off vs on, same run.

Random-weight networks and random inputs (no data set needed): bird is the full AttnGAN (64, 128,
256 px stages and Ds) with the paper's DAMSM Inception-v3 image encoder (random weights) and a
bi-LSTM text encoder; tiny is the CPU preset. One iteration is exactly the training loop's
(text encoder, then `gan_loop.gan_step`: G forward, one Adam step per D, one G step with the DAMSM
losses, EMA); data loading is excluded. Each configuration runs in its own long-lived subprocess
(allocator settings apply only from a process's start, as the CLI applies them), and the "off" and
the other process take turns, one timed iteration each, so both see the same load from other jobs
(benchmarks/_paired.py). Reported: images/s, minor page faults per iteration, peak memory, achieved
GFLOP/s (FlopCounterMode) against a 2048x2048 float32 matmul timed in the same process, and the
median per-round speed-up.

    python benchmarks/bench_train.py [--quick] [--device cpu|cuda] [--threads 2]
        [--presets bird,tiny] [--configs on,alloc,freeze,reuse,channels_last] [--rounds N]
    python benchmarks/bench_train.py --precision [--quick] [--presets synthbirds-128]

Switches: alloc (perf.configure_allocator_env), freeze (train.freeze_d_in_g_step), reuse
(train.reuse_real_features), channels_last, amp (forced bf16 autocast, train.amp=bf16: emulated on
CPUs without native bf16), tf32 (perf.configure_backends, CUDA), compile (opt-in).
"on" = alloc + freeze + reuse on the CPU, + amp + channels_last + tf32 on a GPU.
Batch: bird 4 on the CPU, 20 (the paper's) on a GPU; tiny uses its preset's 32.

--precision: the synthbirds-128 preset's training images/s in float32 (train.amp=off) against its
default (train.amp=auto: bf16 where the CPU or GPU has native bf16, float32 elsewhere), both with
the preset's other settings as `attngan train` runs them, interleaved in one run; prints the CPU
(or GPU) it ran on and whether bf16 is native there. Without native bf16 the two rows run the same
float32 path and the ratio is ~1.0 by construction.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import _measure
from _paired import add_common_arguments, child_argv, switches_of, load_average, paired_speedup, run_paired, serve

SWITCHES = ("alloc", "freeze", "reuse", "channels_last", "amp", "tf32", "compile")
CONFIGS = {"off": set(), "on": {"alloc", "freeze", "reuse"}}  # + amp, channels_last on a GPU


# --- Child: one preset x configuration --------------------------------------------------------


def setup(spec: dict):
    """Build one preset's networks for one configuration; return its timed step, info, finish()."""
    switches = set(spec["switches"])
    if "alloc" in switches:
        from attngan.perf import configure_allocator_env

        configure_allocator_env()  # before torch is imported, as the CLI does

    import torch

    from attngan.config import preset
    from attngan.networks import (build_discriminators, build_generator, build_image_encoder,
                                  build_text_encoder)
    from attngan import perf
    from attngan.losses import GANLoss
    from attngan.training.gan_loop import GANModels, gan_step

    dev = torch.device(spec["device"])
    if dev.type == "cpu":
        torch.set_num_threads(spec["threads"])
    if "tf32" in switches:
        perf.configure_backends(dev)  # TF32 matmuls/convolutions on CUDA (a no-op on the CPU)
    torch.manual_seed(0)
    cfg = preset(spec["preset"])
    B = spec["batch"]
    t = cfg.train
    t.batch_size = B
    t.freeze_d_in_g_step = "freeze" in switches
    t.reuse_real_features = "reuse" in switches
    t.channels_last = "channels_last" in switches
    t.compile = "compile" in switches
    # "amp" forces bf16 (emulated on CPUs without native bf16); --precision passes train.amp itself.
    t.amp = spec.get("amp") or ("bf16" if "amp" in switches else "off")

    # The networks, wrapped as train_gan wraps them (one process: no DDP).
    n_words = 5000
    text_encoder = build_text_encoder(cfg, n_words).to(dev).eval().requires_grad_(False)
    image_encoder = build_image_encoder(cfg).to(dev).eval().requires_grad_(False)
    G = build_generator(cfg, cfg.text.embedding_dim).to(dev)
    Ds = build_discriminators(cfg).to(dev)
    models = GANModels.create(cfg, G, Ds, dev)
    loss = GANLoss(cfg, image_encoder)  # stores the encoder channels-last as training does

    # Two random batches, cycled, built before timing.
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
    count = [0]

    def iteration() -> None:
        # What train_gan does per batch once the loader has delivered it.
        b = batches[count[0] % 2]
        count[0] += 1
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
        iteration()
    flops = _measure.count_flops(iteration)
    info = {"switches": sorted(switches), "preset": spec["preset"], "batch": B, "torch": torch.__version__,
            "gflop_per_iter": flops / 1e9, "allocator": os.environ.get("ATTNGAN_ALLOCATOR_APPLIED", "default"),
            "amp": t.amp, "precision": perf.describe_amp(t.amp, dev),
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else f"cpu, {torch.get_num_threads()} threads"}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def finish() -> dict:
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _measure.peak_rss_mb()
        gflops = _measure.matmul_peak_gflops(dev) if spec.get("matmul_peak", True) else float("nan")
        return {"peak_mem_mb": peak, "matmul_peak_gflops": gflops}

    return {"iteration": iteration}, info, finish


# --- Parent -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, "few rounds, off and on only (< 3 min on 2 CPU cores)")
    parser.add_argument("--presets", default=None, help="default: bird,tiny (--precision: synthbirds-128)")
    parser.add_argument("--batch", type=int, default=None,
                        help="--precision only: batch size (default: the preset's, half of it with --quick)")
    parser.add_argument("--precision", action="store_true",
                        help="float32 (train.amp=off) vs the preset's default train.amp (auto) only "
                             "(< 1 min with --quick on 2 CPU cores)")
    parser.add_argument("--configs", default=None,
                        help="comma-separated: on, or switches joined by + (default: on; without --quick "
                             "the bird preset also runs each switch alone); each is paired with off")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed iterations per configuration (default: 2 bird / 3 tiny with --quick, "
                             "else 5 / 10)")
    parser.add_argument("--channels-last", action="store_true", help="add channels_last to 'on'")
    parser.add_argument("--compile", action="store_true", help="add torch.compile to 'on'")
    args = parser.parse_args()
    if args.child:
        serve(lambda: setup(json.loads(args.child)))
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.precision:
        return run_precision(args, device)
    args.presets = args.presets or "bird,tiny"
    if device == "cuda":
        CONFIGS["on"].update({"amp", "channels_last", "tf32"})
    if args.channels_last:
        CONFIGS["on"].add("channels_last")
    if args.compile:
        CONFIGS["on"].add("compile")
    t_start = time.time()
    load_before = load_average()
    results: dict[tuple[str, str], dict] = {}
    for preset_name in args.presets.split(","):
        names = args.configs.split(",") if args.configs else ["on"]
        if not args.configs and not args.quick and preset_name == "bird":
            names += ["alloc", "freeze", "reuse", "channels_last"]
        batch = {"bird": 20 if device == "cuda" else 4}.get(preset_name)
        if batch is None:
            from attngan.config import preset

            batch = preset(preset_name).train.batch_size
        big = preset_name in ("bird", "bird-attn1", "coco")
        rounds = args.rounds or ((2 if big else 3) if args.quick else (5 if big else 10))
        for name in (n for n in names if n != "off"):  # each configuration interleaved with "off"
            argvs = {n: child_argv(__file__, {"preset": preset_name, "switches": sorted(switches_of(n, CONFIGS, SWITCHES)),
                                              "device": device, "threads": args.threads, "batch": batch})
                     for n in ("off", name)}
            results[(preset_name, name)] = run_paired(argvs, {"iteration": (0 if big else 1, rounds)})
    report(results, args, time.time() - t_start, load_before)


def _summary(r: dict) -> dict:
    sec = statistics.median(r["steps"]["iteration"]["seconds"])
    return {"sec": sec, "img_s": r["info"]["batch"] / sec, "gflops": r["info"]["gflop_per_iter"] / sec,
            "faults": statistics.median(r["steps"]["iteration"]["faults"]), **r["info"], **r["final"]}


def report(results: dict, args, seconds: float, load_before: str) -> None:
    first = next(iter(results.values()))["off"]["info"]
    print(f"training iteration, random data ({first['device']}, torch {first['torch']}); "
          f"{'quick' if args.quick else 'full'} run, {seconds:.0f} s; load average before {load_before}, "
          f"after {load_average()}")
    print("medians over interleaved rounds; GFLOP/it counted by FlopCounterMode (convolutions, matmuls)")
    print(f"{'preset':<7}{'config':<40}{'batch':>6}{'s/iter':>8}{'img/s':>8}{'faults/iter':>13}"
          f"{'peak MB':>9}{'GFLOP/it':>9}{'GFLOP/s':>9}{'matmul':>8}{'% peak':>8}")
    for (p, name), pair in results.items():
        for n in ("off", name):
            s = _summary(pair[n])
            label = f"{n} [{','.join(s['switches'])}]" + (f" (vs {name})" if n == "off" else "")
            print(f"{p:<7}{label:<40}{s['batch']:>6}{s['sec']:>8.2f}{s['img_s']:>8.2f}{s['faults']:>13.0f}"
                  f"{s['peak_mem_mb']:>9.0f}{s['gflop_per_iter']:>9.1f}{s['gflops']:>9.1f}"
                  f"{s['matmul_peak_gflops']:>8.0f}{100 * s['gflops'] / s['matmul_peak_gflops']:>7.0f}%")
    print("ratios vs off, median of per-round ratios (images/s, higher is better):")
    for (p, name), pair in results.items():
        off, on = _summary(pair["off"]), _summary(pair[name])
        speedup = paired_speedup(pair["off"]["steps"]["iteration"]["seconds"], pair[name]["steps"]["iteration"]["seconds"])
        print(f"  {p:<6} {name:<28} x{speedup:.2f}   faults/iter {off['faults']:.0f} -> {on['faults']:.0f}"
              f"   peak MB {off['peak_mem_mb']:.0f} -> {on['peak_mem_mb']:.0f}")


# --- Precision: float32 vs the preset's default train.amp -------------------------------------


def run_precision(args, device: str) -> None:
    import torch

    from attngan.config import preset
    from attngan import perf

    preset_name = args.presets or "synthbirds-128"
    if "," in preset_name:
        sys.exit("--precision compares one preset; pass a single name to --presets")
    cfg = preset(preset_name)
    default_amp = cfg.train.amp
    switches = {"alloc"} | ({"freeze"} if cfg.train.freeze_d_in_g_step else set()) \
        | ({"reuse"} if cfg.train.reuse_real_features else set()) \
        | ({"channels_last"} if cfg.train.channels_last else set()) | ({"tf32"} if device == "cuda" else set())
    rounds = args.rounds or (3 if args.quick else 10)
    batch = args.batch or (cfg.train.batch_size // 2 if args.quick else cfg.train.batch_size)
    t_start = time.time()
    load_before = load_average()
    argvs = {name: child_argv(__file__, {"preset": preset_name, "switches": sorted(switches), "device": device,
                                         "threads": args.threads, "batch": batch, "amp": amp, "matmul_peak": False})
             for name, amp in (("float32", "off"), ("default", default_amp))}
    # The FLOP-counting iteration in each child's setup is its warm-up.
    res = run_paired(argvs, {"iteration": (0 if args.quick else 1, rounds)})
    seconds = time.time() - t_start

    dev = torch.device(device)
    if dev.type == "cuda":
        where = torch.cuda.get_device_name(dev)
    else:
        cpu = _measure.cpu_description()
        flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["flags"].items()) or "unknown"
        where = f"{cpu['name']}, {args.threads} threads; cpu flags: {flags}"
    native = perf.native_bf16(dev)
    info = res["default"]["info"]
    note = f" (--quick; the preset trains at {cfg.train.batch_size})" if batch != cfg.train.batch_size else ""
    print(f"{preset_name} training, float32 (train.amp=off) vs the preset's default "
          f"(train.amp={default_amp}); random data, batch {info['batch']}{note}, torch {info['torch']}")
    print(f"device: {device}, {where}; native bf16: {'yes' if native else 'no'}"
          f" -> the default runs {info['precision']}")
    print(f"{'quick' if args.quick else 'full'} run, {rounds} interleaved rounds, {seconds:.0f} s; "
          f"load average before {load_before}, after {load_average()}")
    print(f"{'config':<10}{'precision':<58}{'s/iter':>8}{'img/s':>8}{'peak MB':>9}")
    for name in ("float32", "default"):
        s = _summary(res[name])
        print(f"{name:<10}{s['precision']:<58}{s['sec']:>8.2f}{s['img_s']:>8.2f}{s['peak_mem_mb']:>9.0f}")
    ratio = paired_speedup(res["float32"]["steps"]["iteration"]["seconds"],
                           res["default"]["steps"]["iteration"]["seconds"])
    same = "" if perf.amp_dtype(default_amp, dev) is not None else " (same float32 path: ~1.0 expected)"
    print(f"default vs float32: x{ratio:.2f} images/s, median of per-round ratios{same}")


if __name__ == "__main__":
    main()
