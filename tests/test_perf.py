"""Speed switches change speed, not results: BN folding, the allocator settings, frozen Ds in the
G step, amp (bf16 only where native for `auto`; losses and softmaxes in float32 under autocast),
D's small-map products and the UpBlock's upsampling folded into its convolution in training
(attngan.perf, networks/attngan.py and gan_loop.gan_step)."""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attngan.config import preset
from attngan.errors import AttnGANError
from attngan.networks.damsm import ShapeError
from attngan.networks import build_discriminators, build_generator, build_image_encoder
from attngan import perf

# Measuring helpers (page faults, FLOPs) live with the benchmarks that report them.
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _random_bn_statistics(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * 0.2 + 1)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)


def _inputs(cfg, batch: int, T: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    nef = cfg.text.embedding_dim
    lens = torch.randint(1, T + 1, (batch,), generator=g)
    lens[0] = T
    return (torch.randn(batch, cfg.gan.z_dim, generator=g), torch.randn(batch, nef, generator=g),
            torch.randn(batch, nef, T, generator=g), torch.arange(T)[None] >= lens[:, None],
            torch.randn(batch, cfg.gan.condition_dim, generator=g))


# --- BatchNorm folding ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["tiny", "r_num2_three_stages", "dcgan"])
def test_fused_generator_matches_the_plain_one(variant):
    cfg = preset("tiny")
    if variant == "r_num2_three_stages":
        cfg.gan.r_num, cfg.data.branch_num, cfg.data.base_size = 2, 3, 16
    if variant == "dcgan":
        cfg.gan.dcgan, cfg.gan.r_num = True, 0
    torch.manual_seed(0)
    G = build_generator(cfg, cfg.text.embedding_dim)
    _random_bn_statistics(G)
    G.eval()
    before = copy.deepcopy(G.state_dict())
    fused = perf.fuse_generator(G)

    # No BatchNorm left; the folded layers carry a bias now; the original is untouched.
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert fused.stage0.fc.bias is not None
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())
    z, sent, words, mask, eps = _inputs(cfg, batch=5)
    with torch.inference_mode():
        ref_imgs, ref_att, ref_mu, _ = G(z, sent, words, mask, ca_noise=eps)
        imgs, att, mu, _ = fused(z, sent, words, mask, ca_noise=eps)
    assert len(imgs) == len(ref_imgs)
    for a, b in zip(imgs, ref_imgs):
        assert float((a - b).abs().max()) < 1e-5
        assert float((b - b.mean()).abs().max()) > 0.05  # the check is not on constant images
    for a, b in zip(att, ref_att):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(mu, ref_mu)


@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_blocks_compute_what_the_blocks_compute(channels_last):
    from attngan.networks.attngan import ResBlock, UpBlock
    from attngan.networks.attngan import upsampled_kernel
    from attngan.networks.inference import FoldedResBlock, FoldedUpBlock

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for cin, cout, size in ((8, 4, 4), (6, 3, 5), (16, 8, 12)):  # odd sizes and widths too
        up = UpBlock(cin, cout)
        _random_bn_statistics(up)
        up.eval()
        x = torch.randn(3, cin, size, size).contiguous(memory_format=fmt)
        with torch.inference_mode():
            ref = up(x)
            folded = perf.fuse_generator(torch.nn.Sequential(up), channels_last=channels_last)[0]
            out = folded(x)
        assert isinstance(folded, FoldedUpBlock) and out.shape == ref.shape == (3, cout, 2 * size, 2 * size)
        assert out.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
        res = ResBlock(cin)
        _random_bn_statistics(res)
        res.eval()
        with torch.inference_mode():
            ref = res(x)
            folded = perf.fuse_generator(torch.nn.Sequential(res))[0]
            out = folded(x)
        assert isinstance(folded, FoldedResBlock)
        torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
    # The phase kernels themselves: nearest x2 then a 3x3 kernel, against four 2x2 kernels.
    w = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2), w, padding=1)
    kernel = upsampled_kernel(w)
    k = [kernel[:, :, dy::2, dx::2] for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1))]
    for p, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        z = torch.nn.functional.conv2d(x, k[p], padding=1)
        torch.testing.assert_close(z[:, :, dy:dy + 6, dx:dx + 6], ref[:, :, dy::2, dx::2], atol=1e-12, rtol=0)


def test_fused_generator_refuses_train_mode():
    cfg = preset("tiny")
    fused = perf.fuse_generator(build_generator(cfg, cfg.text.embedding_dim))
    z, sent, words, mask, eps = _inputs(cfg, batch=2)
    fused.train()
    with pytest.raises(AttnGANError, match="inference only"):
        fused(z, sent, words, mask, ca_noise=eps)


def test_pipeline_runs_the_inference_form_by_default_and_leaves_the_given_generator_alone(tiny_model_dir):
    from attngan.networks.inference import FoldedUpBlock
    from attngan.pipeline import AttnGANPipeline

    captions = ["a bird with black wings and a white belly", "this bird has a short pointed bill"]
    plain = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu", fuse=False)
    fast = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu")
    assert getattr(fast.generator, "is_fused", False) and not getattr(plain.generator, "is_fused", False)
    assert any(isinstance(m, FoldedUpBlock) for m in fast.generator.modules())
    a, b = plain(captions, seed=3), fast(captions, seed=3)
    for x, y in zip(a.images, b.images):
        assert y.is_contiguous()  # channels-last inside, plain layout for the caller
        assert float((x - y).abs().max()) < 1e-5
    for x, y in zip(a.attention, b.attention):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    # Built from modules: the pipeline folds a copy; the generator passed in keeps its BatchNorm.
    given = plain.generator
    built = AttnGANPipeline(plain.config, plain.vocab, plain.text_encoder, given)
    assert getattr(built.generator, "is_fused", False) and built.generator is not given
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in given.modules())
    c = built(captions, seed=3)
    for x, y in zip(b.images, c.images):
        assert torch.equal(x, y)


def test_pipeline_bf16_is_opt_in_and_close_to_float32(tiny_model_dir):
    from attngan.networks.inference import FoldedUpBlock
    from attngan.pipeline import AttnGANPipeline

    captions = ["a bird with black wings and a white belly", "this bird has a short pointed bill"]
    exact = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu")
    auto = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu", amp="auto")
    low = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu", amp="bf16")
    assert exact.amp == "off"
    seen: dict[str, set] = {"off": set(), "bf16": set()}
    for name, pipe in (("off", exact), ("bf16", low)):
        for m in pipe.generator.modules():
            if isinstance(m, (torch.nn.Conv2d, FoldedUpBlock)):
                m.register_forward_hook(lambda mod, a, out, s=seen[name]: s.add(out.dtype))
    a, b, c = exact(captions, seed=3), auto(captions, seed=3), low(captions, seed=3)
    assert seen == {"off": {torch.float32}, "bf16": {torch.bfloat16}}
    # auto is float32 on a CPU without native bf16 (the suite pins that): the same images.
    for x, y in zip(a.images + a.attention, b.images + b.attention):
        assert torch.equal(x, y)
    # bf16: float32 images back, close to float32's but not equal.
    assert all(x.dtype == torch.float32 for x in c.images)
    diffs = [float((x - y).abs().max()) for x, y in zip(a.images, c.images)]
    assert max(diffs) < 0.05 and max(diffs) > 0, diffs
    with pytest.raises(AttnGANError, match="amp must be one of off, auto, bf16"):
        AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu", amp="fp8")


def test_generate_amp_option(tiny_model_dir, tmp_path, capsys):
    from attngan import cli

    out = tmp_path / "g"
    assert cli.main(["generate", "--model", str(tiny_model_dir), "--amp", "bf16", "--out", str(out),
                     "a bird with black wings"]) == 0
    assert len(list(out.glob("*_stage*.png"))) == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["generate", "--model", str(tiny_model_dir), "--amp", "fp16", "a bird"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--amp" in err


# --- Allocator ----------------------------------------------------------------------------------

# A child process reallocates a 64 MiB buffer and reports the page faults after warm-up: in the
# main thread, then in a thread started afterwards (as `attngan serve` runs inference). How the
# allocator gets set up is the first argument: "plain" (not at all), "cli" (as the CLI does,
# before torch is imported) or "pipeline" (by creating an AttnGANPipeline, torch already loaded).
_FAULTS_CHILD = r"""
import os, sys, threading
if sys.argv[1] == "cli":
    from attngan import cli
    cli._configure_allocator()
import torch
if sys.argv[1] == "pipeline":
    from attngan.pipeline import AttnGANPipeline
    pipe = AttnGANPipeline.from_pretrained(sys.argv[3], device="cpu")
    pipe(["a bird with black wings"], seed=0)
sys.path.insert(0, sys.argv[2])
from _measure import minor_faults
torch.set_num_threads(1)

def faults() -> int:
    for _ in range(16):  # warm-up: glibc 2.36 memalign needs a few rounds to find reusable chunks
        x = torch.ones(16 * 2**20); del x
    f0 = minor_faults()
    for _ in range(3):
        x = torch.ones(16 * 2**20); del x
    return minor_faults() - f0

main = faults()
box = []
t = threading.Thread(target=lambda: box.append(faults()))
t.start(); t.join()
print(main, box[0], os.environ.get("ATTNGAN_ALLOCATOR_APPLIED"), os.environ.get("MALLOC_MMAP_MAX_"),
      os.environ.get("MALLOC_ARENA_MAX"), sep="|")
"""


def _faults(mode: str, model_dir="", **env) -> tuple[int, int, str, str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("MALLOC_", "ATTNGAN_ALLOCATOR", "THP_MEM"))}
    out = subprocess.run([sys.executable, "-c", _FAULTS_CHILD, mode, str(BENCHMARKS), str(model_dir)],
                         env={**clean, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True,
                         timeout=300, check=True).stdout.strip().splitlines()[-1].split("|")
    return int(out[0]), int(out[1]), out[2], out[3], out[4]


# Three 64 MiB buffers mapped afresh fault 3 x 16k times (4 KiB pages).
_FRESH = 3 * 10_000


@pytest.mark.skipif(perf._glibc() is None, reason="mallopt needs glibc")
def test_cli_allocator_settings_stop_the_page_faults():
    # glibc default: each 64 MiB buffer is mmapped, zero-filled and unmapped again.
    main, thread, marker, _, _ = _faults("plain")
    assert marker == "None" and main > _FRESH and thread > _FRESH
    # What the CLI sets before torch loads: the freed buffer stays in the heap and is reused, also
    # by a thread started later (it shares the main heap instead of an arena of its own).
    main_cli, thread_cli, marker, mmap_max, arenas = _faults("cli")
    assert "M_MMAP_MAX=0" in marker and "M_TRIM_THRESHOLD=max" in marker and "M_ARENA_MAX=1" in marker
    assert mmap_max == "0" and arenas == "1"
    assert main_cli < 0.05 * main and thread_cli < 0.05 * thread, (main_cli, thread_cli, main, thread)
    # No transparent-huge-page alignment: it fragmented the heap (more peak memory).
    assert "THP" not in marker
    # Processes started from a configured one (torchrun workers, spawned loader workers) get the
    # same settings from the environment it exported.
    perf_env = subprocess.run([sys.executable, "-c", "import os; from attngan.perf import "
                               "configure_allocator_env as c; c(); print(os.environ['MALLOC_MMAP_MAX_'], "
                               "os.environ['MALLOC_TRIM_THRESHOLD_'], os.environ['MALLOC_ARENA_MAX'])"],
                              capture_output=True, text=True, timeout=120, check=True).stdout.split()
    env = {"MALLOC_MMAP_MAX_": perf_env[0], "MALLOC_TRIM_THRESHOLD_": perf_env[1], "MALLOC_ARENA_MAX": perf_env[2]}
    main_child, thread_child, marker, _, _ = _faults("plain", **env)
    assert marker == "None" and main_child < 0.05 * main and thread_child < 0.05 * thread
    # The opt-out leaves glibc alone.
    main_out, _, marker, _, _ = _faults("cli", ATTNGAN_ALLOCATOR="default")
    assert marker == "default" and main_out > _FRESH


@pytest.mark.skipif(perf._glibc() is None, reason="mallopt needs glibc")
def test_a_pipeline_created_from_python_applies_the_allocator_setting(tiny_model_dir):
    # No CLI involved: torch is loaded first, then the library sets the allocator up when the
    # pipeline is created, so the same call runs as it would under `attngan generate`.
    main, thread, marker, mmap_max, _ = _faults("pipeline", tiny_model_dir)
    assert "M_MMAP_MAX=0" in marker and mmap_max == "0"
    main_off, thread_off, marker_off, _, _ = _faults("pipeline", tiny_model_dir, ATTNGAN_ALLOCATOR="default")
    assert marker_off == "default" and main_off > _FRESH and thread_off > _FRESH
    assert main < 0.05 * main_off and thread < 0.05 * thread_off, (main, thread, main_off, thread_off)


def _allocator_after(argv: list[str]) -> str:
    code = (f"import os; from attngan import cli; cli.main({argv!r}); "
            "print('APPLIED=' + str(os.environ.get('ATTNGAN_ALLOCATOR_APPLIED')))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "ATTNGAN_ALLOCATOR"))}
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=300).stdout
    return out.rsplit("APPLIED=", 1)[1].strip()


def test_cli_main_configures_the_allocator_for_commands_that_run_networks(tmp_path):
    train = ["train", "--config", "tiny", "--data", "x", "--damsm", "x", "--out", str(tmp_path / "r"),
             "--dry-run"]
    applied = _allocator_after(train)
    assert applied != "None"
    if perf._glibc() is not None:
        assert "M_MMAP_MAX=0" in applied
    # Inference too (a bad seed fails before any model is read); an empty command line sets nothing.
    assert _allocator_after(["generate", "--seed", "-1", "--out", str(tmp_path / "g"), "a bird"]) == applied
    assert _allocator_after([]) == "None"


# --- Training switches ------------------------------------------------------------------------


def _tiny_models(cfg, device: str = "cpu"):
    """G, Ds, EMA and optimisers wired as train_gan wires them for one process."""
    from attngan.training.gan_loop import GANModels

    torch.manual_seed(0)
    G = build_generator(cfg, cfg.text.embedding_dim).to(device)
    Ds = build_discriminators(cfg).to(device)
    return GANModels.create(cfg, G, Ds, torch.device(device))


def _tiny_batch(cfg, B: int = 4, T: int = 6):
    g = torch.Generator().manual_seed(5)
    lens = torch.tensor([T, T - 1, 3, 2][:B])
    sizes = [cfg.data.base_size * 2**i for i in range(cfg.data.branch_num)]
    nef = cfg.text.embedding_dim
    return {"reals": [torch.rand(B, 3, s, s, generator=g) * 2 - 1 for s in sizes],
            "words": torch.randn(B, nef, T, generator=g), "sent": torch.randn(B, nef, generator=g),
            "mask": torch.arange(T)[None] >= lens[:, None], "cap_lens": lens,
            "class_ids": torch.arange(B), "z": torch.randn(B, cfg.gan.z_dim, generator=g),
            "ca_noise": torch.randn(B, cfg.gan.condition_dim, generator=g)}


def test_small_map_convolutions_compute_what_the_convolutions_compute(monkeypatch):
    from attngan.networks import attngan

    torch.manual_seed(0)
    for cin, cout, k, stride, pad, size, bias in ((16, 32, 4, 2, 1, 8, False), (32, 16, 3, 1, 1, 4, True),
                                                  (8, 8, 4, 2, 1, 32, False)):
        conv = torch.nn.Conv2d(cin, cout, k, stride, pad, bias=bias)
        x = torch.randn(3, cin, size, size, requires_grad=True)
        y, ref = attngan.small_map_conv(conv, x), conv(x)
        small = ref.shape[2] * ref.shape[3] <= attngan.SMALL_MAP_PIXELS
        assert y.is_contiguous() is not small  # the matrix product hands back channels-last
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
        g = torch.randn_like(ref)
        for a, b in zip(torch.autograd.grad(y, (x, conv.weight), g), torch.autograd.grad(ref, (x, conv.weight), g)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # A whole discriminator (64 px: its last blocks map 8x8 and 4x4), against plain convolutions.
    cfg = preset("tiny")
    D = build_discriminators(cfg)[-1]
    x = torch.rand(4, 3, D.image_size, D.image_size) * 2 - 1
    sent = torch.randn(4, cfg.text.embedding_dim)
    outs = {}
    for pixels in (attngan.SMALL_MAP_PIXELS, 0):
        monkeypatch.setattr(attngan, "SMALL_MAP_PIXELS", pixels)
        D.zero_grad(set_to_none=True)
        code = D(x)
        loss = sum(o.sum() for o in D.logits(code, sent))
        loss.backward()
        outs[pixels] = (code.detach(), [q.grad.clone() for q in D.parameters()])
    (a, ga), (b, gb) = outs.values()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pixels", ["default", 0])
def test_discriminator_stacked_batches_equal_separate_calls(monkeypatch, pixels):
    """D(cat[real, fake], batches=2) in train mode: the codes, the running statistics and every
    gradient as from D(real) and D(fake) called one after the other; with SMALL_MAP_PIXELS 0
    (no layer joined) the same holds through the per-batch path alone."""
    from attngan.networks import attngan

    if pixels != "default":
        monkeypatch.setattr(attngan, "SMALL_MAP_PIXELS", pixels)
    torch.manual_seed(0)
    cfg = preset("tiny")
    sep = build_discriminators(cfg)[-1].train()  # 64 px: its last layers map 8x8 and 4x4
    joined = copy.deepcopy(sep)
    real = torch.rand(3, 3, sep.image_size, sep.image_size) * 2 - 1
    fake = (torch.rand(3, 3, sep.image_size, sep.image_size) * 2 - 1).requires_grad_()
    sent = torch.randn(3, cfg.text.embedding_dim)
    w = torch.randn(2, 3, 8 * sep.ndf, 4, 4)

    def run(D, codes):
        loss = sum((c * wi).sum() + sum(o.sum() for o in D.logits(c, sent)) for c, wi in zip(codes, w))
        grads = torch.autograd.grad(loss, [fake, *D.parameters()])
        return [c.detach() for c in codes], grads

    a, ga = run(sep, [sep(real), sep(fake)])
    b, gb = run(joined, list(joined(torch.cat([real, fake]), batches=2).chunk(2)))
    # Relative to each tensor's largest value: the joined matrix products sum in another order
    # (9e-7 of the largest value with AVX-512 kernels, 4e-7 with AVX2 ones; some weight gradients
    # reach ~100, so a fixed absolute tolerance would depend on the CPU's kernels).
    for u, v in zip(a + list(ga), b + list(gb)):
        assert u.shape == v.shape and _worst(u, v) <= 1e-5
    for (name, u), v in zip(sep.named_buffers(), joined.buffers()):
        torch.testing.assert_close(u, v, atol=1e-6, rtol=1e-6, msg=name)
    # One batch statistic over both (a plain call on the stacked images) is not what was checked.
    pooled = copy.deepcopy(sep)(torch.cat([real, fake]))
    assert (pooled[:3] - a[0]).abs().max() > 1e-3
    with pytest.raises(ShapeError, match="do not split into 2 batches"):
        joined(torch.cat([real, fake[:2]]), batches=2)


def _plain_up_block(up, x):
    """UpBlock's function written out: nearest x2 -> conv3x3 (+bias) -> BN -> GLU."""
    F = torch.nn.functional
    y = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), up.conv.weight, up.conv.bias,
                 padding=1)
    stats = (None, None) if up.training else (up.bn.running_mean, up.bn.running_var)
    return F.glu(F.batch_norm(y, *stats, up.bn.weight, up.bn.bias, training=up.training), dim=1)


def _output_and_grads(forward, x, params, g):
    x = x.detach().requires_grad_()
    y = forward(x)
    return y, torch.autograd.grad(y, [x] + params, g)


def _worst(a, b):
    """Largest difference relative to b's largest magnitude."""
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@pytest.mark.parametrize("channels_last", [False, True])
def test_up_block_transposed_convolution_equals_the_plain_path_with_gradients(channels_last):
    from attngan.networks import attngan

    F = torch.nn.functional
    torch.manual_seed(0)
    up = attngan.UpBlock(6, 5).train()
    _random_bn_statistics(up)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 6, 16, 20).contiguous(memory_format=fmt)  # not square
    assert 16 * 20 >= attngan.FOLDED_UPSAMPLE_PIXELS  # the folded path runs
    g = torch.randn(3, 5, 32, 40)
    params = [up.conv.weight, up.bn.weight, up.bn.bias]
    ref, ref_grads = _output_and_grads(lambda v: _plain_up_block(up, v), x, params, g)
    y, grads = _output_and_grads(up, x, params, g)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=fmt)
    assert grads[0].is_contiguous(memory_format=fmt)  # x's gradient in x's layout
    assert _worst(y, ref) < 1e-5
    for a, b in zip(grads, ref_grads):  # x, the 3x3 weight, BN's weight and bias
        assert a.shape == b.shape and _worst(a, b) < 1e-5
    # Eval mode (running statistics) takes the same path.
    up.eval()
    with torch.no_grad():
        assert _worst(up(x), _plain_up_block(up, x)) < 1e-5
    # The fold carries a convolution bias too (generator convolutions have none; in an UpBlock
    # the train-mode BN would cancel its gradient, so it is checked on the convolution alone).
    conv = torch.nn.Conv2d(6, 10, 3, 1, 1, bias=True)
    params, g = [conv.weight, conv.bias], torch.randn(3, 10, 32, 40)
    ref, ref_grads = _output_and_grads(lambda v: conv(F.interpolate(v, scale_factor=2)), x, params,
                                       g)
    y, grads = _output_and_grads(lambda v: attngan.upsample_conv3x3(v, conv), x, params, g)
    assert _worst(y, ref) < 1e-5
    for a, b in zip(grads, ref_grads):  # x, the 3x3 weight, the bias
        assert a.shape == b.shape and _worst(a, b) < 1e-5


def test_up_block_check_catches_a_wrong_phase(monkeypatch):
    """Each phase's taps matter: a phase given another's kernel is wrong exactly on its pixels."""
    from attngan.networks import attngan

    torch.manual_seed(1)
    up = attngan.UpBlock(4, 3).eval()
    _random_bn_statistics(up)
    x = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        ref = _plain_up_block(up, x)
        good = attngan.upsampled_kernel
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            def swapped(w, dy=dy, dx=dx):
                k = good(w).clone()
                k[:, :, dy::2, dx::2] = good(w)[:, :, 1 - dy::2, 1 - dx::2]
                return k
            monkeypatch.setattr(attngan, "upsampled_kernel", swapped)
            err = (up(x) - ref).abs()
            monkeypatch.setattr(attngan, "upsampled_kernel", good)
            mask = torch.zeros_like(err, dtype=torch.bool)
            mask[:, :, dy::2, dx::2] = True
            assert float(err[mask].max() / ref.abs().max()) > 1e-2   # this phase is caught...
            assert float(err[~mask].max() / ref.abs().max()) < 1e-5  # ...and only this one
        assert _worst(up(x), ref) < 1e-5


def test_up_block_folds_from_the_map_size_where_it_wins_and_follows_autocast(monkeypatch):
    from attngan.networks import attngan

    calls = []
    fold = attngan.upsample_conv3x3
    monkeypatch.setattr(attngan, "upsample_conv3x3",
                        lambda x, conv: calls.append(tuple(x.shape[2:])) or fold(x, conv))
    torch.manual_seed(2)
    up = attngan.UpBlock(8, 4).train()
    small = torch.randn(2, 8, 8, 8)
    assert 8 * 8 < attngan.FOLDED_UPSAMPLE_PIXELS
    up(small)
    assert calls == []  # small maps: the plain path, faster there
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    ref = _plain_up_block(up, x)
    ref.square().sum().backward()
    ref_wgrad, up.conv.weight.grad = up.conv.weight.grad, None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = up(x)
    assert calls == [(16, 16)] and y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert up.conv.weight.grad.dtype == torch.float32
    assert _worst(y.float(), ref) < 3e-2  # bf16 rounding
    assert _worst(up.conv.weight.grad, ref_wgrad) < 5e-2


def test_small_map_product_gradients_accumulate_and_follow_autocast():
    from attngan.networks import attngan

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(32, 64, 4, 2, 1, bias=True)
    x1, x2 = torch.randn(2, 32, 8, 8), torch.randn(2, 32, 8, 8)
    # D(real) then D(fake) into the same weight: the weight's gradient has the weight's own shape
    # and layout, the second adds into the first, and the sum is the two convolutions' gradients.
    attngan.small_map_conv(conv, x1).sum().backward()
    first = conv.weight.grad
    storage = first.untyped_storage().data_ptr()
    assert first.shape == conv.weight.shape and first.is_contiguous()
    attngan.small_map_conv(conv, x2).square().sum().backward()
    assert conv.weight.grad.untyped_storage().data_ptr() == storage
    ref = torch.autograd.grad(conv(x1).sum() + conv(x2).square().sum(), conv.weight)[0]
    torch.testing.assert_close(conv.weight.grad, ref, atol=1e-4, rtol=1e-4)
    # Under bf16 autocast (emulated where the CPU has no bf16): bf16 product, float32 gradient.
    conv.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attngan.small_map_conv(conv, x1)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert conv.weight.grad.dtype == torch.float32
    torch.testing.assert_close(conv.weight.grad, torch.autograd.grad(conv(x1).sum(), conv.weight)[0],
                               atol=0.05, rtol=0.02)


def test_small_map_weights_are_cast_once_per_phase_under_autocast():
    from torch.utils._python_dispatch import TorchDispatchMode

    from attngan.networks import attngan

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(32, 64, 4, 2, 1, bias=False)
    x1, x2 = torch.randn(2, 32, 8, 8), torch.randn(2, 32, 8, 8)

    class WeightCasts(TorchDispatchMode):  # counts bf16 copies of a weight-sized tensor
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default) and \
                    isinstance(out, torch.Tensor) and out.numel() == conv.weight.numel() and \
                    out.dtype == torch.bfloat16:
                self.n += 1
            return out

    def phase(casts):
        with casts, torch.autocast("cpu", dtype=torch.bfloat16):
            y = attngan.small_map_conv(conv, x1).float().sum() + attngan.small_map_conv(conv, x2).float().sum()
        return y

    # D(real) and D(fake) in one phase: one cast, and the backward pass reuses it.
    with WeightCasts() as forward:
        y = phase(attngan.weight_casts())
    assert forward.n == 1
    with WeightCasts() as backward:
        y.backward()
    assert backward.n == 0
    assert attngan._CASTS is None  # nothing outlives the phase
    # Without the context each call casts for itself (still never again in its backward).
    with WeightCasts() as plain:
        phase(contextlib.nullcontext())
    assert plain.n == 2
    # A weight changed between phases is cast afresh: the next phase computes with the new one.
    grad = conv.weight.grad.clone()
    with torch.no_grad():
        conv.weight.mul_(-1)
    conv.weight.grad = None
    phase(attngan.weight_casts()).backward()
    torch.testing.assert_close(conv.weight.grad, grad, atol=0.05, rtol=0.02)  # linear: same gradient
    with attngan.weight_casts(), torch.autocast("cpu", dtype=torch.bfloat16):
        y_new = attngan.small_map_conv(conv, x1).float()
    torch.testing.assert_close(y_new, conv(x1).detach(), atol=0.1, rtol=0.02)


def test_frozen_discriminators_give_the_same_step_without_their_gradients(amp):
    from attngan.losses import GANLoss
    from attngan.training.gan_loop import gan_step

    results = {}
    for freeze in (False, True):
        cfg = preset("tiny")
        cfg.train.amp = amp
        cfg.train.freeze_d_in_g_step = freeze
        m = _tiny_models(cfg)
        torch.manual_seed(0)
        image_encoder = build_image_encoder(cfg).eval().requires_grad_(False)
        seen = []
        for D in m.Ds:  # D weight gradients computed in the G step (the D step zeroes them after)
            for p in D.parameters():
                p.register_hook(lambda g, s=seen: s.append(1) or g)
        gan_step(m, GANLoss(cfg, image_encoder), cfg, **_tiny_batch(cfg))
        results[freeze] = (copy.deepcopy(m.G.state_dict()), copy.deepcopy(m.Ds.state_dict()), len(seen))
        assert all(p.requires_grad for D in m.Ds for p in D.parameters())  # restored afterwards
    (g0, d0, n0), (g1, d1, n1) = results[False], results[True]
    n_params = sum(1 for _ in build_discriminators(preset("tiny")).parameters())
    assert n0 == 2 * n1 and n1 == n_params  # frozen: D weight grads only in the D step
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-7, rtol=0)
    for k in d0:
        torch.testing.assert_close(d1[k], d0[k], atol=0, rtol=0)


def test_frozen_restores_requires_grad_even_on_error():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    net[1].weight.requires_grad_(False)
    with pytest.raises(RuntimeError):
        with perf.frozen([net]):
            assert not any(p.requires_grad for p in net.parameters())
            raise RuntimeError("boom")
    assert [p.requires_grad for p in net.parameters()] == [True, True, False, True]


def test_amp_and_backend_switches_on_the_cpu():
    assert perf.amp_dtype("off", "cuda") is None
    assert perf.amp_dtype("bf16", "cuda") is torch.bfloat16
    assert perf.amp_dtype("fp16", "cuda") is torch.float16
    assert perf.amp_dtype("bf16", "cpu") is torch.bfloat16  # forced: bf16 even where emulated
    assert perf.amp_dtype("fp16", "cpu") is None
    with pytest.raises(AttnGANError, match="train.amp"):
        perf.amp_dtype("fp8", "cpu")
    with perf.autocast("off", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with perf.autocast("bf16", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert not perf.grad_scaler("bf16", "cpu").is_enabled()
    before = torch.get_float32_matmul_precision()
    perf.configure_backends("cpu")
    assert torch.get_float32_matmul_precision() == before
    assert not perf.grad_scaler("fp16", "cpu").is_enabled()


@pytest.mark.parametrize("native", [False, True])
def test_amp_auto_is_bf16_only_where_native(monkeypatch, native):
    # The CPU feature probes native_bf16 reads (AVX512-BF16, AMX), as on an AVX2-only CPU or a
    # Xeon with AMX.
    monkeypatch.delenv(perf.NATIVE_BF16_ENV, raising=False)  # the probes, not the override
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert perf.native_bf16("cpu") is native
    # The override wins over the probes either way, for the CPU only.
    monkeypatch.setenv(perf.NATIVE_BF16_ENV, "0" if native else "1")
    assert perf.native_bf16("cpu") is (not native)
    monkeypatch.setenv(perf.NATIVE_BF16_ENV, "1" if native else "0")
    expected = torch.bfloat16 if native else None
    assert perf.amp_dtype("auto", "cpu") is expected
    with perf.autocast("auto", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (expected or torch.float32)
    assert perf.describe_amp("auto", "cpu").startswith("bf16" if native else "float32")
    # A float32 run is pointed at bf16 only where bf16 is native, and never when amp is set.
    assert ("train.amp=auto" in (perf.amp_hint("off", "cpu") or "")) is native
    assert perf.amp_hint("auto", "cpu") is None and perf.amp_hint("bf16", "cpu") is None
    assert not perf.grad_scaler("auto", "cpu").is_enabled()  # bf16 keeps float32's exponent range
    # The same rule for GPUs: bf16 only where native, never emulated.
    monkeypatch.setattr(perf, "native_bf16", lambda device: native)
    assert perf.amp_dtype("auto", "cuda") is expected
    assert perf.amp_dtype("off", "cpu") is None and perf.amp_dtype("bf16", "cpu") is torch.bfloat16


def test_cpu_presets_default_to_amp_auto_and_the_paper_presets_to_off():
    assert preset("tiny").train.amp == "auto"
    assert preset("synthbirds-128").train.amp == "auto"
    for name in ("bird", "bird-attn1", "bird-dcgan", "coco"):
        assert preset(name).train.amp == "off"
    assert not preset("synthbirds-128").train.channels_last


def test_bf16_training_step_keeps_losses_and_softmaxes_in_float32():
    from attngan.networks.attngan import WordAttention
    from attngan.losses import GANLoss
    from attngan.training.gan_loop import gan_step

    out, dtypes = {}, {}
    for mode in ("off", "bf16"):
        cfg = preset("tiny")
        cfg.train.amp = mode  # forced: bf16 on this CPU whether or not it is native
        m = _tiny_models(cfg)
        torch.manual_seed(0)
        image_encoder = build_image_encoder(cfg).eval().requires_grad_(False)
        seen: dict[str, set] = {}

        def record(name):
            def hook(module, args, output):
                outs = output if isinstance(output, tuple) else (output,)
                seen.setdefault(name, set()).update(o.dtype for o in outs[:2])
            return hook

        for name, net in (("G", m.G), ("D", m.Ds), ("encoder", image_encoder)):
            for module in net.modules():
                if isinstance(module, torch.nn.Conv2d):
                    module.register_forward_hook(record(f"{name} conv"))
        for module in m.G.modules():
            if isinstance(module, WordAttention):
                module.register_forward_hook(lambda mod, a, o: seen.setdefault("attention", set()).add(o[1].dtype))
        before = copy.deepcopy(m.G.state_dict())
        terms, finite = gan_step(m, GANLoss(cfg, image_encoder), cfg, **_tiny_batch(cfg))
        assert finite
        assert all(v.dtype == torch.float32 and bool(torch.isfinite(v)) for v in terms.values())
        assert all(p.dtype == torch.float32 for p in [*m.G.parameters(), *m.Ds.parameters()])
        assert any(not torch.equal(v, m.G.state_dict()[k]) for k, v in before.items())  # G stepped
        out[mode], dtypes[mode] = terms, seen
    low = {torch.bfloat16}
    assert dtypes["bf16"]["G conv"] == low and dtypes["bf16"]["D conv"] == low
    assert dtypes["bf16"]["encoder conv"] == low
    assert dtypes["bf16"]["attention"] == {torch.float32}  # G's word-attention softmax
    assert all(d == {torch.float32} for d in dtypes["off"].values())
    # Same weights and batch: the first step's losses agree to bf16's precision.
    for k in out["off"]:
        torch.testing.assert_close(out["bf16"][k], out["off"][k], atol=0.05, rtol=0.05)


def test_unknown_train_amp_fails_in_one_line_before_anything_is_written(tmp_path, capsys):
    from attngan import cli
    from attngan.training.gan_loop import train_gan

    cfg = preset("tiny")
    cfg.train.amp = "fp32"
    with pytest.raises(AttnGANError, match="train.amp must be off, auto, bf16 or fp16") as e:
        train_gan(cfg, tmp_path / "data", tmp_path / "damsm", tmp_path / "out", device="cpu", progress=False)
    assert "\n" not in str(e.value)
    code = cli.main(["train", "--config", "tiny", "--set", "train.amp=fp8", "--data", str(tmp_path / "data"),
                     "--damsm", str(tmp_path / "damsm"), "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "train.amp" in err
    assert list(tmp_path.iterdir()) == []  # no run folder, no config written


def test_flop_counter_counts_a_matmul(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from _measure import count_flops

    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_step_on_cuda_is_finite_and_close_to_float32(amp):
    from attngan.losses import GANLoss
    from attngan.training.gan_loop import gan_step

    out = {}
    for mode in ("off", amp):
        cfg = preset("tiny")
        cfg.train.amp = mode
        m = _tiny_models(cfg, "cuda")
        torch.manual_seed(0)
        image_encoder = build_image_encoder(cfg).cuda().eval().requires_grad_(False)
        batch = {k: ([x.cuda() for x in v] if k == "reals" else v.cuda()) for k, v in _tiny_batch(cfg).items()}
        terms, finite = gan_step(m, GANLoss(cfg, image_encoder), cfg, **batch)
        assert finite and all(v.dtype == torch.float32 for v in terms.values())
        out[mode] = terms
    for k in out["off"]:
        torch.testing.assert_close(out[amp][k], out["off"][k], atol=0.1, rtol=0.1)


def test_encoder_autocast_for_damsm_pretraining():
    assert isinstance(perf.native_bf16("cpu"), bool)
    with perf.encoder_autocast("off", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with perf.encoder_autocast("bf16", "cpu"):  # unlike train.amp, bf16 on the CPU too
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with perf.encoder_autocast("auto", "cpu"):
        expected = torch.bfloat16 if perf.native_bf16("cpu") else torch.float32
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == expected
    with pytest.raises(AttnGANError, match="damsm.amp"):
        perf.encoder_autocast("fp16", "cpu")
