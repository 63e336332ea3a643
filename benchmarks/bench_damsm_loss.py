"""DAMSM word loss, forward + backward: vectorised `words_loss` vs the original's per-caption loop.

The loop is the reference kept in tests/test_losses.py (it mirrors code/miscc/losses.py). Both run
in this one process on the same inputs: batch 48, nef 256, 17x17 regions, 18 words (bird DAMSM).
A second table compares the two ways `words_loss` computes cos(c, e), building the region context
(`direct`) or going through the regions' Gram matrix (`gram`), at both the bird shape and the tiny
preset's (batch 32, nef 256, 8x8 regions, 24 words); `auto` picks gram when regions < channels.
A third table times a whole `tiny` DAMSM training step (both encoders, word and sentence losses,
backward, Adam) with each of the two paths, so the step-level gain is measured, not inferred, and
the step as the `tiny` preset now runs it (text encoder unpacked on the CPU, image encoder
channels_last, image encoder and the word loss's region-word matmul in bf16 where the CPU has it
natively) against the earlier float32 step (packed
bi-LSTM, NCHW float32 image encoder), on the same weights and batch.

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


def median_times(a, b, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of a() and b() after one warm-up each, interleaved so that load from other
    processes hits both alike."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(a, device))
        tb.append(timed(b, device))
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 timed repeats instead of 6")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--step-only", action="store_true", help="only the whole tiny-step table")
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats = 2 if args.quick else 6
    if args.step_only:
        return compare_tiny_steps(device, repeats)
    reference = load_reference()
    b, nef, grid, t = args.batch, 256, 17, 18
    inputs = make_inputs(b, nef, grid, t, device)

    def run(loss_fn):
        return run_on(inputs, loss_fn)

    fast, slow = median_times(run(words_loss), run(reference), repeats, device)
    diff = abs(run(words_loss)() - run(reference)())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"words_loss fwd+bwd, batch {b}, nef {nef}, {grid}x{grid} regions, {t} words ({name}, torch {torch.__version__})")
    print(f"  vectorised : median {fast * 1e3:8.1f} ms over {repeats} runs")
    print(f"  per-caption: median {slow * 1e3:8.1f} ms over {repeats} runs")
    print(f"  speed-up   : {slow / fast:.2f}x   |loss difference| {diff:.2e}")

    print("words_loss fwd+bwd, cos(c, e) through the context (direct) vs the Gram matrix (gram):")
    for b, grid, t in ((args.batch, 17, 18), (32, 8, 24)):
        inputs = make_inputs(b, nef, grid, t, device)
        direct_step = run_on(inputs, lambda *a: words_loss(*a, context="direct"))
        gram_step = run_on(inputs, lambda *a: words_loss(*a, context="gram"))
        d, g = median_times(direct_step, gram_step, repeats, device)
        diff = abs(direct_step() - gram_step())
        print(f"  batch {b}, {grid}x{grid} regions, {t} words: direct {d * 1e3:7.1f} ms, gram {g * 1e3:7.1f} ms, "
              f"gram speed-up {d / g:.2f}x, |loss difference| {diff:.2e}")
    compare_tiny_steps(device, repeats)


def compare_tiny_steps(device: torch.device, repeats: int) -> None:
    from attngan.perf import native_bf16

    print("tiny DAMSM training step (encoders + losses + backward + Adam), direct vs gram:")
    n = 32
    d, g = median_times(tiny_step("direct", device, n), tiny_step("gram", device, n), repeats, device)
    print(f"  batch {n}: direct {d * 1e3:7.1f} ms ({n / d:5.0f} img/s), gram {g * 1e3:7.1f} ms "
          f"({n / g:5.0f} img/s), step speed-up {d / g:.2f}x")
    print("tiny DAMSM training step, earlier float32 step (packed bi-LSTM, NCHW fp32 CNN) vs the preset's "
          f"(unpacked text encoder on CPU, channels_last CNN, CNN and region-word matmul in bf16: "
          f"{native_bf16(device)}):")
    old, new = median_times(tiny_step("gram", device, n, preset_speedups=False),
                            tiny_step("gram", device, n), repeats, device)
    print(f"  batch {n}: earlier {old * 1e3:7.1f} ms ({n / old:5.0f} img/s), preset {new * 1e3:7.1f} ms "
          f"({n / new:5.0f} img/s), step speed-up {old / new:.2f}x")


def tiny_step(context: str, device: torch.device, batch: int = 32, preset_speedups: bool = True):
    """One training step of the `tiny` preset's DAMSM on fixed random captions and images, through
    the training loop's own `_damsm_losses`. preset_speedups=False: the packed bi-LSTM and a float32
    NCHW image encoder (the step before damsm.amp, damsm.channels_last and the unpacked CPU path)."""
    from attngan.config import preset
    from attngan.networks import build_image_encoder, build_text_encoder
    from attngan.training.damsm_loop import _damsm_losses
    from attngan.perf import encoder_autocast

    cfg, n_words = preset("tiny"), 80
    if not preset_speedups:
        cfg.damsm.amp, cfg.damsm.channels_last = "off", False
    torch.manual_seed(0)  # same weights and data for every variant
    text_encoder = build_text_encoder(cfg, n_words).to(device).train()
    image_encoder = build_image_encoder(cfg).to(device).train()
    if cfg.damsm.channels_last:
        image_encoder = image_encoder.to(memory_format=torch.channels_last)
    if not preset_speedups:
        text_encoder._rnn_unpacked = text_encoder._rnn_packed  # the packed bi-LSTM on the CPU too
    params = list(text_encoder.parameters()) + list(image_encoder.parameters())
    opt = torch.optim.Adam(params, lr=cfg.damsm.lr, betas=cfg.damsm.betas)
    t = cfg.damsm.words_num
    # SynthBirds captions: most fill 16-24 of the 24 word slots.
    cap_lens = torch.randint(16, t + 1, (batch,)).sort(descending=True).values
    cap_lens[0] = t
    captions = torch.randint(1, n_words, (batch, t)) * (torch.arange(t) < cap_lens[:, None])
    images = torch.rand(batch, 3, cfg.damsm.image_size, cfg.damsm.image_size) * 2 - 1
    batch_dict = {"captions": captions, "cap_lens": cap_lens, "class_ids": torch.arange(batch),
                  "images": [images]}

    def amp():
        return encoder_autocast(cfg.damsm.amp, device)

    def step():
        terms, *_ = _damsm_losses(cfg, text_encoder, image_encoder, batch_dict, device, amp, context)
        opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        opt.step()
    return step


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
