"""What the benchmarks measure besides time: page faults, peak memory, FLOPs, the device's matmul
peak (the reference the achieved GFLOP/s are compared with) and which CPU they ran on."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any


def minor_faults() -> int:
    """Minor page faults of this process so far (each one a 4 KiB or 2 MiB page the kernel mapped)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB: since it started, or since reset_peak_rss()
    (Linux's VmHWM; elsewhere getrusage's peak, which macOS reports in bytes)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Start peak_rss_mb() afresh from the current resident memory (Linux: clear_refs 5 resets
    VmHWM); False where that is not possible, and the peak stays the whole process's."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_description() -> dict:
    """The CPU's model name and the /proc/cpuinfo flags that decide bf16 speed (Linux; elsewhere
    the platform module's name and no flags)."""
    import platform

    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return {"name": name or platform.processor() or platform.machine(),
            "flags": {f: f in flags for f in wanted} if flags else {}}


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
