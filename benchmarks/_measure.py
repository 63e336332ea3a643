"""What the benchmarks measure besides time: page faults, peak memory, FLOPs and the device's
matmul peak (the reference the achieved GFLOP/s are compared with)."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any


def minor_faults() -> int:
    """Minor page faults of this process so far (each one a 4 KiB or 2 MiB page the kernel mapped)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` (matmuls and convolutions, forward and backward), by
    torch.utils.flop_counter.FlopCounterMode; elementwise ops are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_gflops(device: Any = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an n x n float32 matmul on `device`: the reference peak the benchmarks
    compare against (best of `repeats`)."""
    import torch

    dev = torch.device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    out = torch.empty(n, n, device=dev)
    best = float("inf")
    for _ in range(repeats + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        torch.matmul(a, b, out=out)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
