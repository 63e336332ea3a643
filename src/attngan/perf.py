"""Speed switches shared by training, inference and the benchmarks.

CPU allocator (what the CLI and AttnGANPipeline set, and why)
-------------------------------------------------------------
glibc's malloc serves every request above its mmap threshold (128 KiB, growing to at most 32 MiB)
with a fresh `mmap` and hands it back with `munmap` on free; smaller freed memory at the top of the
heap is returned with `brk` once it exceeds the trim threshold. AttnGAN's activations are far
larger than 32 MiB (the 256 px stage at batch 16 is ~270 MB per tensor), so on every forward and
backward pass the kernel maps, zero-fills and unmaps the same few GB again: about 0.9-1.1 million
minor page faults per pass at inference batch 16 or training batch 4, a quarter to 40% of the CPU
time. `configure_allocator_env()` therefore:

* calls `mallopt(M_MMAP_MAX, 0)`: no allocation is served by mmap, all come from the heap
  (M_MMAP_THRESHOLD cannot do this: glibc caps it at 32 MiB, below the large activations);
* calls `mallopt(M_TRIM_THRESHOLD, -1)` (SIZE_MAX): freed heap memory is never given back, so the
  next pass reuses pages that are already mapped (no page faults per pass after the first);
* calls `mallopt(M_ARENA_MAX, 1)`: threads started afterwards share the main heap. A thread's own
  arena gets heaps of at most 64 MiB and serves anything larger by mmap whatever M_MMAP_MAX says,
  so an inference thread (`attngan serve`'s batcher) would page-fault as before;
* exports `MALLOC_MMAP_MAX_`, `MALLOC_TRIM_THRESHOLD_` and `MALLOC_ARENA_MAX` so processes started
  from this one (torchrun workers, spawned DataLoader workers) start with the same settings
  (glibc reads these variables only when a process starts; mallopt is the in-process equivalent).

It leaves transparent huge pages alone. PyTorch's `THP_MEM_ALLOC_ENABLE=1` (which an earlier
version set) aligns every tensor of 2 MiB or more to 2 MiB; inside the heap that alignment
fragments it, and the heap settled 40% above the default peak (bird preset, inference batch 16:
2.33 vs 1.63 GB). Without it the same pass peaked at 1.65 GB (the heap's layout varies from run to
run: one run reached 2.07 GB).

The price is that the process keeps its heap at its peak until it exits, instead of returning it
after each pass. The CLI applies the setting before torch is imported, for every command that
runs networks (cli.ALLOCATOR_COMMANDS); `AttnGANPipeline` applies it when it is created, so a
pipeline runs at the same speed from Python as from `attngan generate` or `serve` (threads that
already exist keep the arena they have). `ATTNGAN_ALLOCATOR=default` in the environment leaves
glibc's defaults alone, in both places; on a non-glibc system (macOS, musl) nothing is changed.
`ATTNGAN_ALLOCATOR_APPLIED` records what was done (tests and benchmarks read it).

Other switches (TrainConfig): mixed precision (`amp`: bf16 autocast where the CPU or GPU runs bf16
natively, see `amp_dtype`), channels_last, torch.compile, TF32 matmuls on CUDA
(`configure_backends`), and the inference form of the generator (`fuse_generator`).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import sys
from typing import Any, Iterator

from attngan.errors import AttnGANError

# torch (and the networks) are imported inside the functions: the CLI imports this module to set
# the allocator up before torch is loaded (see above).

OPT_OUT_VAR = "ATTNGAN_ALLOCATOR"            # "default": leave the allocator alone
APPLIED_VAR = "ATTNGAN_ALLOCATOR_APPLIED"    # what configure_allocator_env() did, for children too

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# "Never trim" for the environment variable: glibc's parser refuses SIZE_MAX itself (checked:
# the setting is then silently ignored), 2**63 - 1 is accepted and is just as unreachable.
_NEVER_TRIM = str(2**63 - 1)
# (mallopt parameter, value, what it is called in APPLIED_VAR, the variable children read).
_SETTINGS = ((_M_MMAP_MAX, 0, "M_MMAP_MAX=0", "MALLOC_MMAP_MAX_", "0"),
             (_M_TRIM_THRESHOLD, -1, "M_TRIM_THRESHOLD=max", "MALLOC_TRIM_THRESHOLD_", _NEVER_TRIM),
             (_M_ARENA_MAX, 1, "M_ARENA_MAX=1", "MALLOC_ARENA_MAX", "1"))


# --- CPU allocator --------------------------------------------------------------------------


def _glibc():
    """The process's C library if it is glibc (has mallopt and gnu_get_libc_version), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
        version.restype = ctypes.c_char_p
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        version()
        return libc
    except (OSError, AttributeError):
        return None


def allocator_opted_out() -> bool:
    """True when ATTNGAN_ALLOCATOR=default (or off, 0) asks to leave glibc's malloc alone."""
    return os.environ.get(OPT_OUT_VAR, "").strip().lower() in ("default", "off", "0")


def configure_allocator_env() -> dict[str, str]:
    """Keep large CPU buffers in the heap between passes (see the module docstring). Idempotent;
    process-wide. Returns what was set (empty when opted out or not on glibc).

    Best called before torch is imported and before other threads start (the CLI does so); later
    calls still hold for every allocation from then on, except in threads that already have an
    arena of their own."""
    applied: dict[str, str] = {}
    if allocator_opted_out():
        os.environ[APPLIED_VAR] = "default"
        return applied
    libc = _glibc()
    if libc is not None:
        done = []
        for param, value, name, var, env_value in _SETTINGS:
            # Each call returns 1 on success; a failure leaves glibc's default, which is only slower.
            if libc.mallopt(param, value) == 1:
                done.append(name)
                os.environ[var] = env_value
        if done:
            applied["mallopt"] = " ".join(done)
    os.environ[APPLIED_VAR] = "; ".join(f"{k}={v}" for k, v in applied.items()) or "none"
    return applied


# --- Backends, precision, memory format -----------------------------------------------------


def resolve_device(spec: str = "auto"):
    """--device: auto (this process's CUDA GPU under torchrun's LOCAL_RANK, else the CPU), cpu,
    cuda or cuda:N; a one-line error for anything else or for CUDA without a GPU."""
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise AttnGANError(f"unknown device '{spec}' (use auto, cpu, cuda or cuda:N)") from None
    # torch knows more device types (meta, xla, ...) than a model can run on here: a meta tensor
    # holds no data, and generating on one failed deep inside with a traceback.
    if device.type not in ("cpu", "cuda", "mps"):
        raise AttnGANError(f"unsupported device '{spec}' (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AttnGANError("--device cuda was asked for but no CUDA GPU is available")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise AttnGANError("--device mps was asked for but no MPS device is available")
    return device


def configure_backends(device: Any) -> None:
    """TF32 matmuls and convolutions and cuDNN autotuning on CUDA; nothing changes on the CPU
    (CPU float32 results stay exact, the benchmarks compare images within 1e-3)."""
    import torch

    if torch.device(device).type != "cuda":
        return
    torch.set_float32_matmul_precision("high")  # TF32 tensor cores for float32 matmuls
    torch.backends.cudnn.benchmark = True       # fixed shapes per stage: autotune once


AMP_MODES = ("off", "auto", "bf16", "fp16")


def amp_dtype(amp: str, device: Any):
    """The autocast dtype that TrainConfig.amp resolves to on this device, or None (float32).

    off: float32. auto: bf16 where the device runs it natively (`native_bf16`: CUDA GPUs with bf16,
    CPUs with AVX512-BF16 or AMX), float32 elsewhere: emulated bf16 is slower than float32, so auto
    never picks it. bf16: bf16 on the CPU and CUDA whatever the hardware (emulated where not native;
    for precision comparisons such as benchmarks/amp_learns.py). fp16: CUDA only, with a grad scaler;
    float32 on other devices (CPU fp16 convolutions are emulated and fp16 needs loss scaling).
    Only the networks follow autocast; the losses, softmaxes, KL and DAMSM similarities are float32.
    """
    import torch

    if amp not in AMP_MODES:
        raise AttnGANError(f"train.amp must be off, auto, bf16 or fp16, got '{amp}'")
    device = torch.device(device)
    if amp == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    if amp == "bf16":
        return torch.bfloat16 if device.type in ("cpu", "cuda") else None
    if amp == "fp16":
        return torch.float16 if device.type == "cuda" else None
    return None


def describe_amp(amp: str, device: Any) -> str:
    """What train.amp runs as on this device, in words (for logs and benchmark tables)."""
    import torch

    dtype = amp_dtype(amp, device)
    native = native_bf16(device)
    kind = torch.device(device).type
    if dtype is None:
        why = "" if amp == "off" else (f", no native bf16 on this {kind}" if amp == "auto"
                                      else f", {amp} is not used on {kind}")
        return f"float32 (train.amp={amp}{why})"
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    how = "" if name == "fp16" else (", native" if native else ", emulated: slower than float32")
    return f"{name} autocast (train.amp={amp}{how})"


def amp_hint(amp: str, device: Any) -> str | None:
    """A one-line hint when a run trains in float32 (train.amp=off) on a device with native bf16,
    where train.amp=auto would train faster; None otherwise."""
    if amp != "off" or not native_bf16(device):
        return None
    import torch

    return (f"this {torch.device(device).type} has native bf16: --set train.amp=auto trains in bf16 "
            f"autocast, faster (float32 stays the default: the original's numerics)")


def autocast(amp: str, device: Any):
    """A context manager: autocast to `amp_dtype(amp, device)`, or a no-op where that is float32.
    The losses cast their inputs to float32 (softmaxes, DAMSM cosines, BCE), see GANLoss."""
    import torch

    dtype = amp_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


NATIVE_BF16_ENV = "ATTNGAN_NATIVE_BF16"


def native_bf16(device: Any) -> bool:
    """True where bf16 matmuls and convolutions run on native hardware: CUDA GPUs that support
    bf16, CPUs with AVX512-BF16 or AMX. Elsewhere PyTorch emulates bf16 and it is slower than fp32.

    `ATTNGAN_NATIVE_BF16=0|1` overrides the answer for the CPU, so that `amp=auto` resolves the same
    on every machine (the test suite pins it to 0 and runs the bf16 path explicitly, emulated where
    the CPU lacks it) or is tried as it would resolve on the other kind of CPU."""
    import torch

    device = torch.device(device)
    forced = os.environ.get(NATIVE_BF16_ENV, "")
    if device.type == "cpu" and forced in ("0", "1"):
        return forced == "1"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:  # by default PyTorch also counts GPUs that only emulate bf16 (before Ampere)
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:
            return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so probed
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def encoder_autocast(amp: str, device: Any):
    """Autocast for DAMSM pretraining (damsm.amp, a DAMSMTrainConfig field), on CPU as well as CUDA:
    off | bf16 | auto (bf16 where `native_bf16`, else float32). It covers the image encoder and the word loss's
    region-word matmul; their results are cast back and the softmaxes, cosines and matching losses
    run in float32. The modes mean what they mean for train.amp (`autocast`), fp16 excepted."""
    if amp not in ("off", "bf16", "auto"):
        raise AttnGANError(f"damsm.amp must be off, bf16 or auto, got '{amp}'")
    return autocast(amp, device)


def grad_scaler(amp: str, device: Any):
    """A GradScaler that is active only for fp16 on CUDA (bf16 has float32's exponent range)."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=amp_dtype(amp, device) == torch.float16)


def to_channels_last(x):
    """4-D tensors to channels_last (NHWC in memory); other tensors unchanged."""
    import torch

    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def frozen(modules) -> Iterator[None]:
    """No weight gradients for `modules` inside the block (inputs still get theirs): the G step
    back-propagates through the discriminators without computing their ~98M weight gradients."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def maybe_compile(module, enabled: bool, **kwargs):
    """torch.compile(module) when enabled (attribute access falls through to the module)."""
    if not enabled:
        return module
    import torch

    # Several discriminators share one forward; each size is its own graph.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
    return torch.compile(module, **kwargs)


# --- Inference: BatchNorm folding -----------------------------------------------------------


def _fold_bn(layer, bn) -> None:
    """Fold eval-mode BatchNorm `bn` into the conv / linear `layer` that feeds it, in place:
    W' = W * g / sqrt(v + eps) per output channel, b' = (b - m) * g / sqrt(v + eps) + beta."""
    import torch

    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    w = layer.weight.detach().double()
    inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
    scale = inv_std * (bn.weight.detach().double() if bn.weight is not None else 1.0)
    shift = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(scale)
    b = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(scale)
    w = w * scale.view(-1, *([1] * (w.dim() - 1)))
    b = (b - bn.running_mean.double()) * scale + shift
    dtype = layer.weight.dtype
    layer.weight = torch.nn.Parameter(w.to(dtype), requires_grad=False)
    layer.bias = torch.nn.Parameter(b.to(dtype), requires_grad=False)


def _inference_only(module, args) -> None:
    if module.training:
        raise AttnGANError("a fused generator (BatchNorm folded) is for inference only; call .eval()")


def fuse_generator(generator, inplace: bool = False, channels_last: bool = False):
    """A copy of `generator` (or, `inplace`, the generator itself, for a caller that owns it) for
    eval-mode inference: every BatchNorm folded into the bias-free convolution or linear layer
    before it, and the blocks in their inference form (networks/inference.py): each UpBlock's
    nearest x2 upsampling folded into its convolution (2.25x fewer multiply-adds, no upsampled
    copy), each ResBlock adding its identity in place. `channels_last` stores the convolution
    weights channels-last, so every feature map after the first convolution is NHWC (oneDNN runs
    NHWC convolutions without converting their inputs and outputs; the pipeline uses it).

    Outputs match the unfused generator in eval mode within float error (about 1e-6); the result
    refuses to run in train mode (batch statistics cannot be folded). Handles Generator (InitStage
    fc+BN, UpBlock, ResBlock); any BatchNorm left unfolded is an error, so a new block type is not
    silently skipped.
    """
    import torch
    from torch import nn

    from attngan.networks.attngan import InitStage, NextStage, ResBlock, UpBlock
    from attngan.networks.inference import FoldedNextStage, FoldedResBlock, FoldedUpBlock

    fused = (generator if inplace else copy.deepcopy(generator)).eval()
    for parent in list(fused.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, UpBlock):
                _fold_bn(child.conv, child.bn)
                setattr(parent, name, FoldedUpBlock(child.conv.weight.detach(), child.conv.bias.detach()))
            elif isinstance(child, ResBlock):
                _fold_bn(child.conv1, child.bn1)
                _fold_bn(child.conv2, child.bn2)
                setattr(parent, name, FoldedResBlock(child.conv1, child.conv2))
    for parent in list(fused.modules()):  # after the blocks inside them are folded
        for name, child in list(parent.named_children()):
            if isinstance(child, NextStage):
                setattr(parent, name, FoldedNextStage(child.attn, child.res, child.up))
            elif isinstance(child, InitStage) and not isinstance(child.bn, nn.Identity):
                _fold_bn(child.fc, child.bn)
                child.bn = nn.Identity()
    left = [n for n, m in fused.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"fuse_generator: no folding rule for BatchNorm layers {left[:3]}")
    fused.requires_grad_(False)
    if channels_last:
        fused.to(memory_format=torch.channels_last)
    if not getattr(fused, "is_fused", False):
        fused.register_forward_pre_hook(_inference_only)
    fused.is_fused = True
    return fused
