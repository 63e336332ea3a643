"""AttnGAN training (paper Sec. 3.1-3.3): L = L_GAN + lambda L_DAMSM + KL, frozen DAMSM encoders.

Per iteration, as the original trainer.py (the original code, trainer.py): the text encoder encodes the
batch; G generates every stage in train mode; each D_i takes one Adam step on real, fake and
mismatched pairs; then G takes one step against the updated Ds with the DAMSM word and sentence
losses on the last stage; then the EMA of G's parameters is updated. Progress counts images.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from attngan import perf, viz
from attngan.config import Config
from attngan.data.dataset import collate_sorted, make_train_loader, open_split
from attngan.errors import AttnGANError
from attngan.losses import GANLoss, Judge
from attngan.networks import build_discriminators, build_generator
from attngan.networks.attngan import weight_casts
from attngan.training import distributed as dist
from attngan.io import (load_damsm, load_safetensors, load_state, resolve_model, save_model_folder,
                        with_damsm_sections)
from attngan.perf import resolve_device
from attngan.training.checkpoint import rng_state, set_rng_state
from attngan.training.runstate import RunState


@torch.no_grad()
def update_ema(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    # Parameters are averaged; BN buffers are copied live (the original's saved netG does the same).
    for pe, p in zip(ema.parameters(), live.parameters()):
        pe.lerp_(p.detach(), 1.0 - decay)
    for be, b in zip(ema.buffers(), live.buffers()):
        be.copy_(b)


@dataclass
class Critic:
    """One stage's discriminator D_i, held in one place. `D` owns the weights; `d_step` runs its
    own update (DDP under torchrun, so gradients are all-reduced; compiled when asked); `g_step`
    judges G's fakes (the plain module: its weights do not change there, so nothing to all-reduce)."""

    D: torch.nn.Module
    d_step: torch.nn.Module
    g_step: torch.nn.Module
    opt: torch.optim.Optimizer


@dataclass
class GANModels:
    """What one iteration updates. `G` owns the generator's weights and `G_train` runs its forward
    passes (DDP under torchrun, compiled when asked); `G_ema` is the exponential moving average
    that inference uses."""

    G: torch.nn.Module
    G_train: torch.nn.Module
    G_ema: torch.nn.Module
    opt_G: torch.optim.Optimizer
    critics: list[Critic]
    scaler: Any = None
    amp: Any = nullcontext

    @classmethod
    def create(cls, cfg: Config, G: torch.nn.Module, Ds: torch.nn.ModuleList, device: torch.device,
               world: int = 1) -> "GANModels":
        """Wire built networks for training: SyncBN and channels-last when asked, the EMA copy, one
        Adam per network, DDP when world > 1, torch.compile when asked, the precision policy."""
        t = cfg.train
        if t.sync_bn and world > 1 and device.type != "cuda":
            raise AttnGANError("train.sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU "
                               "implementation); drop --set train.sync_bn=true for CPU processes")
        if t.sync_bn and world > 1:
            G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(G)
            Ds = torch.nn.SyncBatchNorm.convert_sync_batchnorm(Ds)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        if t.channels_last:
            G, Ds = G.to(memory_format=torch.channels_last), Ds.to(memory_format=torch.channels_last)
        # Fused Adam: one pass over each tensor instead of a chain of elementwise ops with
        # temporaries the size of the weights (D_256's largest is 134 MB); same update to float
        # rounding. CPU and CUDA have the kernel.
        fused = device.type in ("cpu", "cuda")
        opt_G = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=t.betas, fused=fused)
        opt_Ds = [torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=t.betas, fused=fused) for D in Ds]

        def wrap(m: torch.nn.Module) -> torch.nn.Module:
            ddp = torch.nn.parallel.DistributedDataParallel(m) if world > 1 else m
            return perf.maybe_compile(ddp, t.compile)

        critics = [Critic(D, wrap(D), perf.maybe_compile(D, t.compile), opt) for D, opt in zip(Ds, opt_Ds)]
        return cls(G, wrap(G), G_ema, opt_G, critics, perf.grad_scaler(t.amp, device),
                   lambda: perf.autocast(t.amp, device))

    @property
    def Ds(self) -> torch.nn.ModuleList:
        return torch.nn.ModuleList([c.D for c in self.critics])

    def state_dict(self) -> dict[str, Any]:
        return {"G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "Ds": self.Ds.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_Ds": [c.opt.state_dict() for c in self.critics]}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.G.load_state_dict(st["G"])
        self.G_ema.load_state_dict(st["G_ema"])
        self.Ds.load_state_dict(st["Ds"])
        self.opt_G.load_state_dict(st["opt_G"])
        for c, s in zip(self.critics, st["opt_Ds"]):
            c.opt.load_state_dict(s)


def gan_step(m: GANModels, loss: GANLoss, cfg: Config, reals: list[torch.Tensor], words: torch.Tensor,
             sent: torch.Tensor, mask: torch.Tensor, cap_lens: torch.Tensor, class_ids: torch.Tensor,
             z: torch.Tensor, ca_noise: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], bool]:
    """One AttnGAN iteration: G forward, one Adam step per D_i, one G step, EMA update.

    Returns the detached loss terms and whether they were all finite (G is not stepped otherwise).
    """
    scaler = m.scaler if m.scaler is not None else perf.grad_scaler("off", "cpu")
    m.G.train()
    with m.amp():
        fakes, _, mu, logvar = m.G_train(z, sent, words, mask, ca_noise)
    n = len(m.critics)

    # D phase: one step per stage, fakes detached.
    d_terms: dict[str, torch.Tensor] = {}
    for i, c in enumerate(m.critics):
        real = reals[i - n] if cfg.gan.dcgan else reals[i]
        # One autocast around D(real), D(fake) and their heads: D's weights are cast to bf16 once
        # for both (autocast caches the cast within its outermost context; weight_casts does the
        # same for the small-map layers' weights), so the backward pass also converts and sums one
        # weight gradient per layer instead of two.
        with m.amp(), weight_casts():
            terms = loss.d_phase(Judge(c.d_step, c.D, m.amp), real, fakes[i - n].detach(), sent)
        errD = terms["loss"].float()
        d_terms[f"d_loss{i}"] = errD.detach()
        d_terms[f"d_prob_real{i}"] = terms["prob_real"]
        d_terms[f"d_prob_fake{i}"] = terms["prob_fake"]
        c.opt.zero_grad(set_to_none=True)
        scaler.scale(errD).backward()
        scaler.step(c.opt)
        # Stepped: the D's gradients (98M numbers for the bird preset) are not read again, and
        # freed now they are not held through the G phase, where the step's memory peaks.
        c.opt.zero_grad(set_to_none=True)

    # G phase: the updated Ds judge the same fakes. With freeze_d_in_g_step they run without
    # weight gradients: the backward pass then skips the ~98M D weight gradients of the bird preset.
    judges = [Judge(c.g_step, c.D, m.amp) for c in m.critics]
    with perf.frozen([c.D for c in m.critics]) if cfg.train.freeze_d_in_g_step else nullcontext():
        with weight_casts():  # the stepped Ds' weights, cast once for this phase
            g_terms = loss.g_phase(judges, fakes, words, sent, cap_lens, class_ids, mu, logvar, amp=m.amp)
        errG = sum(v.float() for v in g_terms.values())
        finite = bool(torch.isfinite(errG)) and all(bool(torch.isfinite(v)) for v in d_terms.values())
        finite = dist.all_true(finite)  # every rank skips together, or DDP's all-reduce would hang
        m.opt_G.zero_grad(set_to_none=True)
        if finite:
            scaler.scale(errG).backward()
            scaler.step(m.opt_G)
    scaler.update()
    update_ema(m.G_ema, m.G, cfg.train.ema_decay)
    return {**d_terms, **{k: v.detach() for k, v in g_terms.items()}}, finite


class FrozenDAMSM(NamedTuple):
    """The pretrained DAMSM encoders G trains against (eval mode, no gradients) and their vocabulary."""

    vocab: Any
    text_encoder: torch.nn.Module
    image_encoder: torch.nn.Module


# What a resumed run cannot change: the networks' shapes, the batch and the data order.
RESUME_FIXED = ("seed", "data.dataset", "data.base_size", "data.branch_num", "data.words_num",
                "data.captions_per_image", "text", "damsm", "gan", "train.batch_size")


def train_gan(cfg: Config, data_dir: str | Path, damsm: str | Path, out_dir: str | Path, *,
              device: str = "auto", progress: bool = True, max_steps: int | None = None,
              init_generator: str | Path | None = None) -> dict[str, Any]:
    """Train AttnGAN; re-running with the same out_dir resumes from its last training state.
    Builds what the loop takes (encoders, data, networks) and holds out_dir's lock throughout
    (one writer; temporaries of killed runs removed)."""
    dist.init()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    with RunState.claim(out_dir, main=dist.is_main()):
        dev = resolve_device(device)
        rank, world = dist.get_rank(), dist.get_world_size()
        perf.configure_backends(dev)
        perf.amp_dtype(cfg.train.amp, dev)  # a bad train.amp fails here, before anything is written
        if cfg.train.amp != "off" and dist.is_main():
            print(f"precision: {perf.describe_amp(cfg.train.amp, dev)}")  # what auto resolved to here
        torch.manual_seed(cfg.seed)  # same initial weights on every rank (G_ema is not broadcast)
        np.random.seed(cfg.seed + rank)
        dcfg, vocab, text_encoder, image_encoder = load_damsm(damsm, dev)
        # The encoders decide the text features' layout (`attngan train` resolved this before printing).
        cfg = with_damsm_sections(cfg, dcfg)
        encoders = FrozenDAMSM(vocab, text_encoder.eval().requires_grad_(False),
                               image_encoder.eval().requires_grad_(False))
        train_ds = open_split(data_dir, "train", cfg.data, vocab, train=True)
        test_ds = open_split(data_dir, "test", cfg.data, vocab, train=False)
        if len(train_ds) < cfg.train.batch_size * world:
            raise AttnGANError(f"{data_dir}: {len(train_ds)} training images, fewer than one batch "
                               f"({cfg.train.batch_size} x {world} processes)")
        G = build_generator(cfg, cfg.text.embedding_dim).to(dev)
        Ds = build_discriminators(cfg).to(dev)
        # A run that resumes takes every weight from its state: the init was its starting point.
        if init_generator is not None and not (out_dir / "state.pt").is_file():
            load_init(G, Ds, init_generator)
        models = GANModels.create(cfg, G, Ds, dev, world)
        torch.manual_seed(cfg.seed + rank)  # from here on (noise, dropout) each rank draws its own
        return training_loop(cfg, models, encoders, train_ds, test_ds, out_dir, dev,
                             progress=progress, max_steps=max_steps, data_dir=data_dir)


def load_init(G: torch.nn.Module, Ds: torch.nn.ModuleList, init_generator: str | Path) -> None:
    """Start from a trained generator (a model folder or a bundled model's name), grown to G's
    stages when it has fewer; its discriminators too when the folder has them (import-original
    --netD) and G was not grown."""
    folder = resolve_model(init_generator)
    sd = load_safetensors(folder / "generator.safetensors")
    grown = grow_state(G, sd)
    if grown and dist.is_main():
        print(f"growing {folder}: new {', '.join(grown)} start as copies of the last trained "
              f"stage; their discriminators start fresh")
    load_state(G, sd, "generator")
    d_file = folder / "discriminators.safetensors"
    if d_file.is_file() and not grown:
        load_state(Ds, load_safetensors(d_file), "discriminators")


def training_loop(cfg: Config, models: GANModels, damsm: FrozenDAMSM, train_ds, test_ds, out_dir: Path,
                  dev: torch.device, *, progress: bool = True, max_steps: int | None = None,
                  data_dir: str | Path | None = None) -> dict[str, Any]:
    """Train `models` on `train_ds` until cfg.train.total_kimg, the minutes budget or max_steps;
    resumes from out_dir/state.pt when it is there, and snapshots the EMA model folder and the
    state every snapshot_kimg. Previews draw test_ds's captions. `data_dir` (where train_ds comes
    from) is recorded in the state, so that a resume on other data is noted."""
    rank, world = dist.get_rank(), dist.get_world_size()
    vocab, text_encoder, image_encoder = damsm

    # Resume.
    run = RunState(out_dir, "attngan", "log.jsonl", main=dist.is_main(), data_dir=data_dir)
    step, epoch, batch_in_epoch, bad_steps = 0, 0, 0, 0
    st = run.resume(cfg.to_dict(), RESUME_FIXED)
    if st is not None:
        models.load_state_dict(st)
        step, epoch, batch_in_epoch = st["step"], st["epoch"], st["batch_in_epoch"]
        bad_steps = st.get("bad_steps", 0)
        set_rng_state(st["rng"][rank] if isinstance(st["rng"], list) else st["rng"])
        if dist.is_main():
            print(f"resuming from {run.state_path} at {run.kimg:.1f} kimg (step {step})")
    # Rows logged after the snapshot this run starts from (all of them, when a run was killed
    # before its first snapshot) are written again by this run.
    run.begin(cfg.to_dict(), lambda r: _number(r.get("kimg")) * 1000 <= run.images_seen + 0.5)
    dist.barrier()

    loss = GANLoss(cfg, image_encoder)  # it stores the encoder channels-last where that is faster
    B = cfg.train.batch_size
    loader, sampler = make_train_loader(train_ds, B, seed=cfg.seed, loader_seed=cfg.seed + rank,
                                        rank=rank, world=world, workers=cfg.data.workers)
    fixed = _fixed_batch(test_ds, cfg, dev)
    total = int(cfg.train.total_kimg * 1000)
    next_sample = _next_tick(run.images_seen, cfg.train.sample_kimg)
    next_snap = _next_tick(run.images_seen, cfg.train.snapshot_kimg)
    t_start = time.time()
    # A minutes budget usually ends the run long before total_kimg: the bar then counts images
    # without a (meaningless) ETA, and the postfix shows the time left instead.
    budget_s = cfg.train.minutes * 60 if cfg.train.minutes else None
    bar = tqdm(total=None if budget_s else total, initial=min(run.images_seen, total), unit="img", desc="AttnGAN",
               disable=not (progress and dist.is_main()), smoothing=0.1)
    deadline = t_start + budget_s if budget_s else None
    log = TrainingLog(run, cfg.train.log_kimg, bar, deadline)

    def snapshot() -> None:
        # Inference folder from the EMA weights, plus the full state for --resume.
        if dist.is_main():
            save_model_folder(out_dir / "model", cfg, vocab, models.G_ema, text_encoder, image_encoder,
                              extra={"images_seen": run.images_seen, "step": step})
        rngs = _gather_rng()
        run.snapshot({**models.state_dict(), "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                      "bad_steps": bad_steps, "rng": rngs})
        dist.barrier()

    # Training.
    done = run.images_seen >= total or (max_steps is not None and step >= max_steps)
    while not done:
        sampler.set_position(epoch, batch_in_epoch)
        for batch in loader:
            captions, cap_lens = batch["captions"].to(dev), batch["cap_lens"].to(dev)
            reals = [x.to(dev) for x in batch["images"]]
            if cfg.train.channels_last:
                reals = [x.contiguous(memory_format=torch.channels_last) for x in reals]
            captions = captions[:, :int(cap_lens.max())]
            with torch.no_grad():
                words, sent = text_encoder(captions, cap_lens)
            z = torch.randn(captions.shape[0], cfg.gan.z_dim, device=dev)
            terms, finite = gan_step(models, loss, cfg, reals, words, sent, captions == 0, cap_lens,
                                     batch["class_ids"].to(dev), z)
            if not finite:
                bad_steps += 1
                if bad_steps > cfg.train.max_bad_steps:
                    raise AttnGANError(f"losses were NaN/inf in {bad_steps} steps; aborting")

            # Bookkeeping.
            step += 1
            batch_in_epoch += 1
            run.add_images(captions.shape[0] * world)
            bar.update(captions.shape[0] * world)
            log.add(terms, step, bad_steps)
            if run.images_seen >= next_sample and dist.is_main():
                next_sample = _next_tick(run.images_seen, cfg.train.sample_kimg)
                viz.save_samples(models.G_ema, text_encoder, fixed, vocab,
                                 out_dir / "samples" / f"{run.images_seen // 1000:06d}kimg.png")
            out_of_time = deadline is not None and time.time() > deadline
            done = run.images_seen >= total or out_of_time or (max_steps is not None and step >= max_steps)
            done = bool(dist.broadcast_object(done))
            if run.images_seen >= next_snap or done:
                next_snap = _next_tick(run.images_seen, cfg.train.snapshot_kimg)
                snapshot()
            if done:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    bar.close()
    log.close()
    if dist.is_main():
        viz.save_samples(models.G_ema, text_encoder, fixed, vocab, out_dir / "samples" / "final.png")
    return {"images_seen": run.images_seen, "step": step, "bad_steps": bad_steps,
            "seconds": time.time() - t_start}


class TrainingLog:
    """Loss terms averaged over each log_kimg of images: a row of the run's log.jsonl, TensorBoard
    scalars (when tensorboard is installed) and the progress bar's postfix, on the main process."""

    def __init__(self, run: RunState, every_kimg: float, bar, deadline: float | None):
        self.run, self.every_kimg, self.bar, self.deadline = run, every_kimg, bar, deadline
        self.out_dir = run.out_dir
        self.next = _next_tick(run.images_seen, every_kimg)
        self.sums: dict[str, float] = {}
        self.n = 0
        self.t_tick = time.time()
        self.tb = None  # created at the first row

    def add(self, terms: dict[str, torch.Tensor], step: int, bad_steps: int) -> None:
        images_seen = self.run.images_seen
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1
        if images_seen < self.next:
            return
        self.next = _next_tick(images_seen, self.every_kimg)
        record = {"kimg": images_seen / 1000, "step": step,
                  "sec_per_kimg": (time.time() - self.t_tick) / max(self.every_kimg, 1e-9),
                  "bad_steps": bad_steps, **{k: v / self.n for k, v in self.sums.items()}}
        self.t_tick, self.sums, self.n = time.time(), {}, 0
        if not dist.is_main():
            return
        self.run.log(record)
        if self.tb is None:
            self.tb = _tensorboard(self.out_dir)
        if self.tb:
            for k, v in record.items():
                self.tb.add_scalar(k, v, images_seen)
        left = {}
        if self.deadline is not None:
            left["left"] = f"{max(0.0, self.deadline - time.time()) / 60:.1f}min"
        self.bar.set_postfix(D=f"{sum(v for k, v in record.items() if k.startswith('d_loss')):.2f}",
                             G=f"{sum(v for k, v in record.items() if k.startswith('g_')):.2f}",
                             damsm=f"{record.get('damsm_words', 0) + record.get('damsm_sent', 0):.2f}", **left)

    def close(self) -> None:
        if self.tb:
            self.tb.close()


def _number(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else float("inf")


def grow_state(G: torch.nn.Module, sd: dict[str, torch.Tensor]) -> list[str]:
    """Fill `sd` (a generator with fewer stages) up to G's stages; returns the new modules' names.

    A refinement stage F_i and its image head G_i have the same shapes at every scale, so each new
    stage starts as a copy of the last trained one: the new top image then starts as the trained
    refinement applied once more (a sharpened, upsampled version of the previous top image), not as
    noise that the DAMSM loss on the top stage would push back into the trained lower stages.
    An `sd` with every key of G is returned unchanged (plain fine-tuning).
    """
    own = G.state_dict()
    have = {k.split(".")[0] for k in sd}
    need = [m for m in dict.fromkeys(k.split(".")[0] for k in own) if m not in have]
    if not need:
        return []
    def index(m: str) -> int | None:  # stage2 -> 2, head2 -> 2, anything else -> None
        kind = m.rstrip("0123456789")
        return int(m[len(kind):]) if kind in ("stage", "head") and m != kind else None

    trained = [i for i in map(index, have) if i is not None]
    last = max(trained, default=None)
    if last is None or not all(index(m) is not None and index(m) > last for m in need):
        return []  # not a smaller model of the same kind: load_state reports what does not fit
    for k in own:
        module, rest = k.split(".", 1)
        if module in need:
            src = f"{module.rstrip('0123456789')}{last}.{rest}"
            fits = src in sd and sd[src].shape == own[k].shape
            sd[k] = (sd[src] if fits else own[k]).clone()  # no trained twin (stage 1 of a 1-stage G): fresh
    return need


def _tensorboard(out_dir: Path):
    """A SummaryWriter when tensorboard is installed (pip install 'attngan[log]'), else False."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return False
    return SummaryWriter(str(out_dir / "tensorboard"))


def _next_tick(images_seen: int, every_kimg: float) -> int:
    every = max(int(every_kimg * 1000), 1)
    return (images_seen // every + 1) * every


def _gather_rng():
    state = rng_state()
    if dist.get_world_size() == 1:
        return state
    out = [None] * dist.get_world_size()
    torch.distributed.all_gather_object(out, state)
    return out


def _fixed_batch(ds, cfg: Config, dev, n: int = 8) -> dict[str, Any]:
    """Test-split captions (unseen classes) and noise reused for every preview grid."""
    n = min(n, len(ds))
    rng = np.random.get_state()
    np.random.seed(1234)  # the dataset picks a caption at random: keep the previews fixed
    items = [ds[i * max(len(ds) // n, 1)] for i in range(n)]
    np.random.set_state(rng)
    batch = collate_sorted(items)
    g = torch.Generator().manual_seed(1234)
    batch["z"] = torch.randn(n, cfg.gan.z_dim, generator=g)
    batch["eps"] = torch.randn(n, cfg.gan.condition_dim, generator=g)
    return batch
