"""DAMSM word loss, forward + backward: vectorised `words_loss` vs the original's per-caption loop.

The loop is the reference kept in tests/test_losses.py (it mirrors code/miscc/losses.py). Both run
in this one process on the same inputs: batch 48, nef 256, 17x17 regions, 18 words (bird DAMSM).

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
    torch.manual_seed(0)
    b, nef, grid, t = args.batch, 256, 17, 18
    regions = (torch.randn(b, nef, grid, grid) * 0.3).to(device)
    words = torch.randn(b, nef, t).to(device)
    cap_lens = torch.randint(4, t + 1, (b,)).sort(descending=True).values.to(device)
    cap_lens[0] = t
    class_ids = torch.randint(0, 150, (b,)).to(device)

    def run(loss_fn):
        def step():
            r, w = regions.clone().requires_grad_(), words.clone().requires_grad_()
            l0, l1, _ = loss_fn(r, w, cap_lens, class_ids, 4.0, 5.0, 10.0)
            (l0 + l1).backward()
            return float((l0 + l1).detach())
        return step

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


if __name__ == "__main__":
    main()
