"""Speed and memory against the original AttnGAN code: both run on this machine, in the same run.

The original release's code is not part of this project: pass a checkout of the authors'
repository (taoxugit/AttnGAN; the folder that holds `code/model.py`, or `code/` itself) as
--original. Its networks and losses are imported from there unchanged, apart from the few text
replacements in ORIGINAL_PATCHES that today's Python and torch need (each must match exactly as
often as listed, so a different checkout fails loudly instead of running half-patched), and
stand-ins for two packages it imports: easydict (its config's attribute dict, rewritten here) and
scikit-image (imported by its picture-drawing helpers, never called). No weights are read: both sides start from random weights, which leaves their
speed unchanged; the frozen image encoder's BatchNorm statistics are taken from the real batch
on both sides so that its activations stay finite.

Measurements (bird settings: the original's cfg/bird_attn2.yml and our `bird` preset; 256 px,
three stages, a 5,450-word vocabulary, captions of 18 words down to 3, the same on both sides):

  infer_b1   text encoder + generator, eval mode, no gradients, batch 1
  infer_b16  the same at batch 16
  train_b4   one GAN training iteration at batch 4: text encoder, G forward, one Adam step per
             discriminator (64, 128, 256 px), the generator loss (three Ds, DAMSM word and
             sentence losses, KL), G's backward and Adam step, the weight average.
             The original's iteration is trainer.py's loop body; ours is `gan_loop.gan_step`
             after the text encoder, as `attngan train` runs it.
  damsm_b8   one DAMSM pretraining iteration at batch 8, 299 px images: image encoder
             (Inception-v3 trunk, frozen, in training mode as both run it) and bi-LSTM forward,
             word and sentence losses, backward, the LSTM's gradient clipped, Adam (the
             original's cfg/DAMSM/bird.yml; ours `damsm_loop.damsm_step`, as `attngan
             train-damsm` runs it).

Each side runs in its own long-lived process (benchmarks/_paired.py): both are built, warmed up,
then take turns, one timed step each, the order flipping every round, so noise from other jobs
hits both. The original runs under glibc's default allocator, as its own scripts do; ours under
the allocator setting the CLI applies (ATTNGAN_ALLOCATOR=default opts out). Printed per
measurement: both medians, the ratio of medians and the median of the per-round ratios (above 1:
ours is faster), peak resident memory after the build (VmHWM, reset once the networks exist), CPU
seconds (user, system) and minor page faults per step.

    python benchmarks/against_original.py --original path/to/AttnGAN
        [--only infer_b1,infer_b16,train_b4,damsm_b8] [--threads 2] [--quick]
        [--set train.amp=auto] [--infer-amp auto] [--json out.json]

--set changes our training config as `attngan train --set` does (train.amp=auto: bf16 autocast
where the CPU has it natively); --infer-amp is AttnGANPipeline's amp (off, the default, is
float32). The original always runs float32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import _measure
from _paired import ALLOCATOR_ENV, child_argv, load_average, run_paired, serve

N_WORDS = 5450        # the bird vocabulary of the original release
WORDS_NUM = 18        # its caption width (TEXT.WORDS_NUM)
SHORTEST = 3
# name: (kind, batch, warm-up steps, timed rounds, rounds with --quick)
MEASUREMENTS = {
    "infer_b1": ("infer", 1, 3, 30, 5),
    "infer_b16": ("infer", 16, 3, 5, 2),
    "train_b4": ("train", 4, 2, 7, 2),
    "damsm_b8": ("damsm", 8, 2, 10, 2),
}
DEFAULT = ("infer_b1", "infer_b16", "train_b4")

# (file under code/, text, replacement, how often it must occur, why)
ORIGINAL_PATCHES = [
    ("miscc/config.py", "a.iteritems()", "a.items()", 1, "Python 3 has no dict.iteritems"),
    ("miscc/config.py", "not b.has_key(k)", "k not in b", 1, "Python 3 has no dict.has_key"),
    ("miscc/config.py", "yaml.load(f)", "yaml.safe_load(f)", 1, "PyYAML 6 needs a loader"),
    ("miscc/losses.py", "torch.ByteTensor(masks)", "torch.BoolTensor(masks)", 2,
     "masked_fill_ takes boolean masks only"),
    ("miscc/losses.py", ".data[0]", ".item()", 6, "a loss is a 0-dim tensor since torch 0.4"),
    ("model.py", "model.load_state_dict(model_zoo.load_url(url))", "pass", 1,
     "no download: the Inception trunk keeps its random weights"),
]


# --- Inputs, the same on both sides -------------------------------------------------------------


def caption_lengths(batch: int) -> list[int]:
    """WORDS_NUM words down to SHORTEST, longest first (the original's RNN needs them sorted)."""
    if batch == 1:
        return [WORDS_NUM]
    step = (WORDS_NUM - SHORTEST) / (batch - 1)
    return [round(WORDS_NUM - i * step) for i in range(batch)]


def make_inputs(kind: str, batch: int, seed: int = 0) -> dict:
    import torch

    gen = torch.Generator().manual_seed(seed)
    lens = caption_lengths(batch)
    captions = torch.randint(1, N_WORDS, (batch, WORDS_NUM), generator=gen)
    for i, n in enumerate(lens):
        captions[i, n:] = 0
    out = {"captions": captions, "cap_lens": torch.tensor(lens), "class_ids": list(range(1, batch + 1))}
    if kind == "train":
        out["reals"] = [torch.rand(batch, 3, s, s, generator=gen) * 2 - 1 for s in (64, 128, 256)]
    if kind == "damsm":
        out["images"] = torch.rand(batch, 3, 299, 299, generator=gen) * 2 - 1
    return out


def calibrate_batchnorm(module, images) -> None:
    """Set every BatchNorm's running statistics to those of one pass over `images` (a random
    network's defaults, mean 0 and variance 1, let a deep trunk's activations overflow)."""
    import torch

    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass gives exactly that pass's statistics
    module.train()
    with torch.no_grad():
        module(images)
    module.eval()


# --- The original side --------------------------------------------------------------------------


def code_dir(original: str | Path) -> Path:
    root = Path(original)
    for d in (root / "code", root):
        if (d / "model.py").is_file() and (d / "miscc" / "losses.py").is_file():
            return d
    sys.exit(f"--original {original}: no code/model.py and code/miscc/losses.py there "
             "(expected a checkout of the original AttnGAN repository)")


def patched_source(path: Path, rel: str, patches=ORIGINAL_PATCHES) -> str:
    text = path.read_text(encoding="utf-8")
    for file, old, new, count, why in patches:
        if file != rel:
            continue
        found = text.count(old)
        if found != count:
            sys.exit(f"{rel}: {old!r} occurs {found} times, expected {count} ({why}); "
                     "this checkout differs from the one the patches were written for")
        text = text.replace(old, new)
    return text


def import_patched(name: str, path: Path, rel: str, patches=ORIGINAL_PATCHES) -> types.ModuleType:
    """Import `path` as module `name` with `patches` applied to its text (the file is not changed)."""
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(patched_source(path, rel, patches), str(path), "exec"), module.__dict__)
    return module


def _attribute_dict():
    class AttributeDict(dict):
        """easydict.EasyDict's behaviour as the original's config uses it: nested dicts become
        attribute dicts, keys read and written as attributes."""

        def __init__(self, d=None, **kw):
            super().__init__()
            for k, v in {**(d or {}), **kw}.items():
                self[k] = v

        def __setitem__(self, k, v):
            if isinstance(v, dict) and not isinstance(v, AttributeDict):
                v = AttributeDict(v)
            super().__setitem__(k, v)

        def __getattr__(self, k):
            try:
                return self[k]
            except KeyError:
                raise AttributeError(k) from None

        def __setattr__(self, k, v):
            self[k] = v

    return AttributeDict


def load_original(original: str | Path, config: str = "cfg/bird_attn2.yml") -> types.SimpleNamespace:
    """The original's modules (config, model, losses, utils), its config file merged in, on the CPU."""
    code = code_dir(original)
    sys.path.insert(0, str(code))
    sys.modules.setdefault("easydict", types.ModuleType("easydict")).EasyDict = _attribute_dict()
    skimage = sys.modules.setdefault("skimage", types.ModuleType("skimage"))
    skimage.transform = sys.modules.setdefault("skimage.transform", types.ModuleType("skimage.transform"))
    import miscc  # the checkout's package (its __init__ only has __future__ imports)

    miscc.config = import_patched("miscc.config", code / "miscc" / "config.py", "miscc/config.py")
    miscc.config.cfg_from_file(str(code / config))
    miscc.config.cfg.CUDA = False  # main.py's --gpu -1
    miscc.losses = import_patched("miscc.losses", code / "miscc" / "losses.py", "miscc/losses.py")
    import miscc.utils

    model = import_patched("model", code / "model.py", "model.py")
    return types.SimpleNamespace(cfg=miscc.config.cfg, model=model, losses=miscc.losses,
                                 utils=miscc.utils, code=str(code))


def setup_original(spec: dict):
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    kind, B = spec["kind"], spec["batch"]
    orig = load_original(spec["original"], "cfg/DAMSM/bird.yml" if kind == "damsm" else "cfg/bird_attn2.yml")
    cfg, model, losses = orig.cfg, orig.model, orig.losses
    inp = make_inputs(kind, B)
    captions, cap_lens = inp["captions"], inp["cap_lens"]
    class_ids = np.array(inp["class_ids"])  # the original's data loader hands the losses numpy ids
    labels = torch.arange(B)
    torch.manual_seed(0)
    if kind == "damsm":
        return _original_damsm_step(cfg, model, losses, inp, class_ids, labels)
    text_encoder = model.RNN_ENCODER(N_WORDS, nhidden=cfg.TEXT.EMBEDDING_DIM).eval().requires_grad_(False)
    netG = model.G_NET()
    netG.apply(orig.utils.weights_init)
    noise = torch.empty(B, cfg.GAN.Z_DIM)

    def encode():
        words, sent = text_encoder(captions, cap_lens, text_encoder.init_hidden(B))
        mask = (captions == 0)[:, :words.size(2)]
        return words.detach(), sent.detach(), mask

    if kind == "infer":
        netG.eval()

        def step():
            with torch.no_grad():
                words, sent, mask = encode()
                noise.normal_(0, 1)
                netG(noise, sent, words, mask)

        return step, {"how": "RNN_ENCODER + G_NET, eval, no_grad"}

    image_encoder = model.CNN_ENCODER(cfg.TEXT.EMBEDDING_DIM)
    calibrate_batchnorm(image_encoder, inp["reals"][-1])
    image_encoder.requires_grad_(False)
    netsD = [model.D_NET64(), model.D_NET128(), model.D_NET256()]
    for D in netsD:
        D.apply(orig.utils.weights_init)
    lr_d, lr_g = cfg.TRAIN.DISCRIMINATOR_LR, cfg.TRAIN.GENERATOR_LR
    opts_d = [torch.optim.Adam(D.parameters(), lr=lr_d, betas=(0.5, 0.999)) for D in netsD]
    opt_g = torch.optim.Adam(netG.parameters(), lr=lr_g, betas=(0.5, 0.999))
    average = [p.detach().clone() for p in netG.parameters()]
    real_labels, fake_labels = torch.ones(B), torch.zeros(B)
    reals = inp["reals"]

    def step():
        # trainer.py's loop body, data loading and logging aside
        words, sent, mask = encode()
        noise.normal_(0, 1)
        fakes, _, mu, logvar = netG(noise, sent, words, mask)
        for D, opt, real, fake in zip(netsD, opts_d, reals, fakes):
            D.zero_grad()
            err = losses.discriminator_loss(D, real, fake, sent, real_labels, fake_labels)
            err.backward()
            opt.step()
        netG.zero_grad()
        err_g, _ = losses.generator_loss(netsD, image_encoder, fakes, real_labels, words, sent,
                                         labels, cap_lens, class_ids)
        err_g = err_g + losses.KL_loss(mu, logvar)
        err_g.backward()
        opt_g.step()
        with torch.no_grad():
            for p, avg in zip(netG.parameters(), average):
                avg.mul_(0.999).add_(p, alpha=0.001)

    return step, {"how": "trainer.py's iteration: G_NET, D_NET64/128/256, CNN_ENCODER, miscc.losses"}


def _original_damsm_step(cfg, model, losses, inp, class_ids, labels):
    import torch

    B = len(labels)
    captions, cap_lens, images = inp["captions"], inp["cap_lens"], inp["images"]
    text_encoder = model.RNN_ENCODER(N_WORDS, nhidden=cfg.TEXT.EMBEDDING_DIM).train()
    image_encoder = model.CNN_ENCODER(cfg.TEXT.EMBEDDING_DIM).train()  # its trunk frozen by itself
    params = list(text_encoder.parameters()) + [p for p in image_encoder.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.TRAIN.ENCODER_LR, betas=(0.5, 0.999))

    def step():
        # pretrain_DAMSM.py's train() loop body, data loading and logging aside
        text_encoder.zero_grad()
        image_encoder.zero_grad()
        regions, code = image_encoder(images)
        words, sent = text_encoder(captions, cap_lens, text_encoder.init_hidden(B))
        w0, w1, _ = losses.words_loss(regions, words, labels, cap_lens, class_ids, B)
        s0, s1 = losses.sent_loss(code, sent, labels, class_ids, B)
        (w0 + w1 + s0 + s1).backward()
        torch.nn.utils.clip_grad_norm_(text_encoder.parameters(), cfg.TRAIN.RNN_GRAD_CLIP)
        opt.step()

    return step, {"how": "pretrain_DAMSM.py's iteration: CNN_ENCODER + RNN_ENCODER, miscc.losses"}


# --- Our side -----------------------------------------------------------------------------------


def setup_ours(spec: dict):
    from attngan.perf import configure_allocator_env

    configure_allocator_env()  # as the CLI does before torch loads (generate, train, train-damsm)
    import torch

    from attngan.commands._common import parse_overrides
    from attngan.config import load_config
    from attngan.config_io import validate
    from attngan.networks import build_discriminators, build_generator, build_image_encoder, build_text_encoder

    torch.set_num_threads(spec["threads"])
    cfg = validate(load_config("bird", parse_overrides(spec["set"])))
    kind, B = spec["kind"], spec["batch"]
    inp = make_inputs(kind, B)
    captions, cap_lens = inp["captions"], inp["cap_lens"]
    torch.manual_seed(0)
    if kind == "damsm":
        return _our_damsm_step(cfg, inp)
    text_encoder = build_text_encoder(cfg, N_WORDS).eval().requires_grad_(False)
    G = build_generator(cfg, cfg.text.embedding_dim)

    if kind == "infer":
        from attngan.pipeline import AttnGANPipeline
        from attngan.text import Vocabulary

        vocab = Vocabulary(["<end>"] + [f"w{i}" for i in range(1, N_WORDS)])
        pipe = AttnGANPipeline(cfg, vocab, text_encoder, G, amp=spec["infer_amp"])

        def step():
            pipe.generate_from_ids(captions, cap_lens)

        return step, {"how": f"AttnGANPipeline.generate_from_ids (amp={pipe.amp})"}

    from attngan.losses import GANLoss
    from attngan.training.gan_loop import GANModels, gan_step

    cfg.train.batch_size = B
    image_encoder = build_image_encoder(cfg)
    calibrate_batchnorm(image_encoder, inp["reals"][-1])
    image_encoder.requires_grad_(False)
    models = GANModels.create(cfg, G, build_discriminators(cfg), torch.device("cpu"))
    loss = GANLoss(cfg, image_encoder)
    reals, class_ids = inp["reals"], torch.tensor(inp["class_ids"])

    def step():
        with torch.no_grad():
            words, sent = text_encoder(captions, cap_lens)
        z = torch.randn(B, cfg.gan.z_dim)
        _, finite = gan_step(models, loss, cfg, reals, words, sent, captions == 0, cap_lens, class_ids, z)
        if not finite:  # gan_step then skips G's update: a shorter step, not a comparable one
            raise RuntimeError("non-finite losses on our side")

    return step, {"how": f"gan_loop.gan_step (train.amp={cfg.train.amp})"}


def _our_damsm_step(cfg, inp):
    import torch

    from attngan import perf
    from attngan.networks import build_image_encoder, build_text_encoder
    from attngan.training.damsm_loop import damsm_step

    dev = torch.device("cpu")
    text_encoder = build_text_encoder(cfg, N_WORDS).train()
    image_encoder = build_image_encoder(cfg).train()
    if cfg.damsm.channels_last:  # as train_damsm stores it
        image_encoder = image_encoder.to(memory_format=torch.channels_last)
    params = list(text_encoder.parameters()) + list(image_encoder.projection_parameters())
    opt = torch.optim.Adam(params, lr=cfg.damsm.lr, betas=cfg.damsm.betas)
    batch = {"captions": inp["captions"], "cap_lens": inp["cap_lens"], "images": [inp["images"]],
             "class_ids": torch.tensor(inp["class_ids"])}

    def step():
        _, finite = damsm_step(cfg, text_encoder, image_encoder, batch, dev, opt,
                               lambda: perf.encoder_autocast(cfg.damsm.amp, dev))
        if not finite:  # the loop would skip the update: not a comparable step
            raise RuntimeError("non-finite DAMSM loss on our side")

    layout = "channels-last" if cfg.damsm.channels_last else "NCHW"
    return step, {"how": f"damsm_loop.damsm_step (damsm.amp={cfg.damsm.amp}, image encoder {layout})"}


# --- Child and parent ---------------------------------------------------------------------------


def setup(spec: dict):
    t0 = time.perf_counter()
    step, info = (setup_original if spec["side"] == "original" else setup_ours)(spec)
    import torch

    info.update(build_s=round(time.perf_counter() - t0, 1), torch=torch.__version__,
                threads=torch.get_num_threads(), peak_reset=_measure.reset_peak_rss())

    def finish():
        return {"peak_mb": _measure.peak_rss_mb()}

    return {spec["name"]: step}, info, finish


def measure(name: str, args) -> dict:
    kind, batch, warmup, rounds, quick_rounds = MEASUREMENTS[name]
    rounds = quick_rounds if args.quick else rounds
    warmup = 1 if args.quick else warmup
    spec = {"name": name, "kind": kind, "batch": batch, "threads": args.threads,
            "original": str(Path(args.original).resolve()), "set": args.set, "infer_amp": args.infer_amp}
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    os.environ.update(env)
    runs = run_paired({side: child_argv(__file__, {**spec, "side": side}) for side in ("original", "ours")},
                      {name: (warmup, rounds)})
    out = {side: {"info": r["info"], "final": r["final"], **r["steps"][name]} for side, r in runs.items()}
    o, u = out["original"], out["ours"]
    out["ratio_median"] = statistics.median(o["seconds"]) / statistics.median(u["seconds"])
    out["ratio_paired"] = statistics.median(a / b for a, b in zip(o["seconds"], u["seconds"]))
    return out


def report(name: str, r: dict) -> None:
    print(f"\n{name}  ratio {r['ratio_median']:.2f}x (paired {r['ratio_paired']:.2f}x; above 1: ours faster)")
    for side in ("original", "ours"):
        s, f = r[side], r[side]["final"]
        print(f"  {side:<9} median {statistics.median(s['seconds']):7.3f} s  "
              f"[{min(s['seconds']):.3f} .. {max(s['seconds']):.3f}]  peak {f['peak_mb']:7.0f} MB  "
              f"cpu {statistics.median(s['user_s']):.2f} user + {statistics.median(s['sys_s']):.2f} sys s  "
              f"faults {statistics.median(s['faults']):,.0f}/step  ({s['info']['how']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", help="a checkout of the original AttnGAN repository")
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help=f"comma-separated, from {', '.join(MEASUREMENTS)} (default: {', '.join(DEFAULT)})")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per side")
    parser.add_argument("--quick", action="store_true", help="one warm-up step and a few rounds each")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="our training config, as `attngan train --set` (repeatable)")
    parser.add_argument("--infer-amp", default="off", choices=("off", "auto", "bf16"),
                        help="AttnGANPipeline's amp on our side (default off: float32)")
    parser.add_argument("--json", default=None, help="also write every time and setting here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve(lambda: setup(json.loads(args.child)))
        return
    if not args.original:
        parser.error("--original is required: a checkout of the original AttnGAN repository")
    code_dir(args.original)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurement(s) {', '.join(unknown)}: use {', '.join(MEASUREMENTS)}")
    for var in ALLOCATOR_ENV:
        os.environ.pop(var, None)
    import torch

    from attngan.perf import native_bf16

    # torch's kernel level: below the CPU's own when limited (ATEN_CPU_CAPABILITY and the like)
    print(f"cpu: {_measure.cpu_description()['name']}, {os.cpu_count()} logical cores, torch kernels "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16('cpu')}; "
          f"{args.threads} threads per side; load average {load_average()}")
    print(f"ours: --set {' '.join(args.set) or '(none)'}, inference amp {args.infer_amp}")
    results = {}
    for name in names:
        results[name] = measure(name, args)
        report(name, results[name])
    if args.json:
        from attngan.fileio import atomic_write_json

        atomic_write_json(args.json, {"cpu": _measure.cpu_description(), "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
