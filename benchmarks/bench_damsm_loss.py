"""DAMSM word loss, forward + backward: vectorised `words_loss` vs the original's per-caption loop.

The loop is the reference kept in tests/test_losses.py (it mirrors code/miscc/losses.py). Both run
in this one process on the same inputs: batch 48, nef 256, 17x17 regions, 18 words (bird DAMSM).
A second table compares the two ways `words_loss` computes cos(c, e), building the region context
(`direct`) or going through the regions' Gram matrix (`gram`), at both the bird shape and the tiny
preset's (batch 32, nef 256, 8x8 regions, 24 words); `auto` picks gram when regions < channels.

    python benchmarks/bench_damsm_loss.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch

from attngan.losses import words_loss


def load_reference():
    path = Path(__file__).resolve().parents[1] / "tests" / "test_losses.py"
    spec = importlib.util.spec_from_file_location("_attngan_test_losses", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_words_loss


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 timed repeats instead of 6")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=48)
    args = parser.parse_args()
    device = torch.device(args.device)
    reference = load_reference()
    b, nef, grid, t = args.batch, 256, 17, 18
    inputs = make_inputs(b, nef, grid, t, device)

    def run(loss_fn):
        return run_on(inputs, loss_fn)

    repeats = 2 if args.quick else 6
    fast_step, slow_step = run(words_loss), run(reference)
    fast_step(), slow_step()  # warm-up
    fast, slow = [], []
    for _ in range(repeats):  # interleaved, so load from other processes hits both alike
        fast.append(timed(fast_step, device))
        slow.append(timed(slow_step, device))
    diff = abs(run(words_loss)() - run(reference)())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"words_loss fwd+bwd, batch {b}, nef {nef}, {grid}x{grid} regions, {t} words ({name}, torch {torch.__version__})")
    print(f"  vectorised : median {statistics.median(fast) * 1e3:8.1f} ms over {repeats} runs")
    print(f"  per-caption: median {statistics.median(slow) * 1e3:8.1f} ms over {repeats} runs")
    print(f"  speed-up   : {statistics.median(slow) / statistics.median(fast):.2f}x   |loss difference| {diff:.2e}")

    print("words_loss fwd+bwd, cos(c, e) through the context (direct) vs the Gram matrix (gram):")
    for b, grid, t in ((args.batch, 17, 18), (32, 8, 24)):
        inputs = make_inputs(b, nef, grid, t, device)
        direct_step = run_on(inputs, lambda *a: words_loss(*a, context="direct"))
        gram_step = run_on(inputs, lambda *a: words_loss(*a, context="gram"))
        direct_step(), gram_step()  # warm-up
        d_times, g_times = [], []
        for _ in range(repeats):
            d_times.append(timed(direct_step, device))
            g_times.append(timed(gram_step, device))
        d, g = statistics.median(d_times), statistics.median(g_times)
        diff = abs(direct_step() - gram_step())
        print(f"  batch {b}, {grid}x{grid} regions, {t} words: direct {d * 1e3:7.1f} ms, gram {g * 1e3:7.1f} ms, "
              f"gram speed-up {d / g:.2f}x, |loss difference| {diff:.2e}")


def make_inputs(b: int, nef: int, grid: int, t: int, device: torch.device):
    torch.manual_seed(0)
    regions = (torch.randn(b, nef, grid, grid) * 0.3).to(device)
    words = torch.randn(b, nef, t).to(device)
    cap_lens = torch.randint(4, t + 1, (b,)).sort(descending=True).values.to(device)
    cap_lens[0] = t
    return regions, words, cap_lens, torch.randint(0, 150, (b,)).to(device)


def run_on(inputs, loss_fn):
    regions, words, cap_lens, class_ids = inputs

    def step():
        r, w = regions.clone().requires_grad_(), words.clone().requires_grad_()
        l0, l1, _ = loss_fn(r, w, cap_lens, class_ids, 4.0, 5.0, 10.0)
        (l0 + l1).backward()
        return float((l0 + l1).detach())
    return step


if __name__ == "__main__":
    main()
