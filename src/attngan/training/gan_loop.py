"""AttnGAN training (paper Sec. 3.1-3.3): L = L_GAN + lambda L_DAMSM + KL, frozen DAMSM encoders.

Per iteration, as the original trainer.py (facts file, sections 6-7): the text encoder encodes the
batch; G generates every stage in train mode; each D_i takes one Adam step on real, fake and
mismatched pairs; then G takes one step against the updated Ds with the DAMSM word and sentence
losses on the last stage; then the EMA of G's parameters is updated. Progress counts images.
"""

from __future__ import annotations

import copy
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from attngan.config import Config
from attngan.errors import AttnGANError
from attngan.training import distributed as dist
from attngan.training.checkpoint import (atomic_torch_save, atomic_write_json, load_training_state,
                                         rng_state, save_model_folder, set_rng_state)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    # Parameters are averaged; BN buffers are copied live (the original's saved netG does the same).
    for pe, p in zip(ema.parameters(), live.parameters()):
        pe.lerp_(p.detach(), 1.0 - decay)
    for be, b in zip(ema.buffers(), live.buffers()):
        be.copy_(b)


def _unwrap(m: torch.nn.Module) -> torch.nn.Module:
    m = getattr(m, "_orig_mod", m)
    return m.module if isinstance(m, torch.nn.parallel.DistributedDataParallel) else m


class GANLoss:
    """The D and G phases of the AttnGAN objective; returns named terms, the loop steps."""

    def __init__(self, cfg: Config, image_encoder: torch.nn.Module):
        self.cfg = cfg
        self.image_encoder = image_encoder

    def d_phase(self, D, real, fake, sent) -> dict[str, torch.Tensor]:
        from attngan.losses import discriminator_loss

        return discriminator_loss(D, real, fake, sent, reuse_real_code=self.cfg.train.reuse_real_features)

    def g_phase(self, Ds, fakes, words, sent, cap_lens, class_ids, mu, logvar) -> dict[str, torch.Tensor]:
        from attngan.losses import generator_adv_loss, kl_loss, sent_loss, words_loss

        d = self.cfg.damsm
        terms: dict[str, torch.Tensor] = {}
        stages = fakes[-len(Ds):]  # DCGAN: one D on the last image
        for i, (D, fake) in enumerate(zip(Ds, stages)):
            terms[f"g_adv{i}"] = generator_adv_loss(D, fake, sent)["loss"]
        regions, code = self.image_encoder(fakes[-1].float())
        w0, w1, _ = words_loss(regions, words, cap_lens, class_ids, d.gamma1, d.gamma2, d.gamma3)
        s0, s1 = sent_loss(code, sent, class_ids, d.gamma3)
        lam = self.cfg.train.damsm_lambda
        terms["damsm_words"] = lam * (w0 + w1)
        terms["damsm_sent"] = lam * (s0 + s1)
        terms["kl"] = self.cfg.train.kl_weight * kl_loss(mu.float(), logvar.float())
        return terms


def _set_requires_grad(modules, flag: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def train_gan(cfg: Config, data_dir: str | Path, damsm: str | Path, out_dir: str | Path, *,
              device: str = "auto", progress: bool = True, max_steps: int | None = None,
              init_generator: str | Path | None = None) -> dict[str, Any]:
    """Train AttnGAN; re-running with the same out_dir resumes from its last training state."""
    from attngan.data.dataset import TextImageDataset, make_loader
    from attngan.networks import build_discriminators, build_generator
    from attngan.training.damsm_loop import load_damsm
    from attngan.viz import save_png

    # Setup.
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    dist.init()
    dev = dist.resolve_device(device)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    dcfg, vocab, text_encoder, image_encoder = load_damsm(damsm, dev)
    # The encoders decide the text features' layout: take their sections over the GAN preset's.
    cfg.text, cfg.damsm = dcfg.text, dcfg.damsm
    for m in (text_encoder, image_encoder):
        m.eval()
        m.requires_grad_(False)
    nef = cfg.text.embedding_dim
    train_ds = TextImageDataset(data_dir, "train", cfg.data, vocab, train=True)
    test_ds = TextImageDataset(data_dir, "test", cfg.data, vocab, train=False)
    B = cfg.train.batch_size
    if len(train_ds) < B * world:
        raise AttnGANError(f"{data_dir}: {len(train_ds)} training images, fewer than one batch "
                           f"({B} x {world} processes)")

    G = build_generator(cfg, nef).to(dev)
    Ds = build_discriminators(cfg).to(dev)
    if init_generator is not None:
        from attngan.training.checkpoint import load_safetensors, load_state

        load_state(G, load_safetensors(Path(init_generator) / "generator.safetensors"), "generator")
    if cfg.train.sync_bn and world > 1:
        G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(G)
        Ds = torch.nn.SyncBatchNorm.convert_sync_batchnorm(Ds)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    if cfg.train.channels_last:
        G, Ds = G.to(memory_format=torch.channels_last), Ds.to(memory_format=torch.channels_last)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.train.lr_g, betas=cfg.train.betas)
    opt_Ds = [torch.optim.Adam(D.parameters(), lr=cfg.train.lr_d, betas=cfg.train.betas) for D in Ds]

    # Resume.
    state_path = out_dir / "state.pt"
    images_seen, step, epoch, batch_in_epoch, bad_steps = 0, 0, 0, 0, 0
    if state_path.is_file():
        st = load_training_state(state_path)
        G.load_state_dict(st["G"])
        G_ema.load_state_dict(st["G_ema"])
        Ds.load_state_dict(st["Ds"])
        opt_G.load_state_dict(st["opt_G"])
        for o, s in zip(opt_Ds, st["opt_Ds"]):
            o.load_state_dict(s)
        images_seen, step, epoch, batch_in_epoch = st["images_seen"], st["step"], st["epoch"], st["batch_in_epoch"]
        bad_steps = st.get("bad_steps", 0)
        set_rng_state(st["rng"][rank] if isinstance(st["rng"], list) else st["rng"])
        if dist.is_main():
            print(f"resuming from {state_path} at {images_seen / 1000:.1f} kimg (step {step})")
    elif dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "resolved_config.json", cfg.to_dict())
    dist.barrier()

    G_train = G
    Ds_train = list(Ds)
    if world > 1:
        G_train = torch.nn.parallel.DistributedDataParallel(G)
        Ds_train = [torch.nn.parallel.DistributedDataParallel(D) for D in Ds]
    if cfg.train.compile:
        G_train = torch.compile(G_train)
        Ds_train = [torch.compile(D) for D in Ds_train]
    loss = GANLoss(cfg, image_encoder)
    amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.train.amp]
    use_amp = amp_dtype is not None and dev.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if use_amp else nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    sampler = dist.EpochSampler(len(train_ds), B, cfg.seed, rank, world,
                           dataset=train_ds if cfg.data.workers == 0 else None)
    loader = make_loader(train_ds, B, shuffle=False, workers=cfg.data.workers, drop_last=True,
                         seed=cfg.seed + rank, sampler=sampler)
    fixed = _fixed_batch(test_ds, cfg, dev)
    total = int(cfg.train.total_kimg * 1000)
    next_log = _next_tick(images_seen, cfg.train.log_kimg)
    next_sample = _next_tick(images_seen, cfg.train.sample_kimg)
    next_snap = _next_tick(images_seen, cfg.train.snapshot_kimg)
    sums: dict[str, float] = {}
    n_sum = 0
    t_start = t_tick = time.time()
    bar = tqdm(total=total, initial=min(images_seen, total), unit="img", desc="AttnGAN",
               disable=not (progress and dist.is_main()), smoothing=0.1)

    def snapshot() -> None:
        # Inference folder from the EMA weights, plus the full state for --resume.
        if dist.is_main():
            save_model_folder(out_dir / "model", cfg, vocab, G_ema, text_encoder, image_encoder,
                              extra={"images_seen": images_seen, "step": step})
        rngs = _gather_rng()
        if dist.is_main():
            atomic_torch_save({"G": _unwrap(G).state_dict(), "G_ema": G_ema.state_dict(),
                               "Ds": Ds.state_dict(), "opt_G": opt_G.state_dict(),
                               "opt_Ds": [o.state_dict() for o in opt_Ds], "images_seen": images_seen,
                               "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                               "bad_steps": bad_steps, "rng": rngs}, state_path)
        dist.barrier()

    # Training.
    done = images_seen >= total or (max_steps is not None and step >= max_steps)
    while not done:
        sampler.set_position(epoch, batch_in_epoch)
        for batch in loader:
            captions, cap_lens = batch["captions"].to(dev), batch["cap_lens"].to(dev)
            class_ids = batch["class_ids"].to(dev)
            reals = [x.to(dev) for x in batch["images"]]
            if cfg.train.channels_last:
                reals = [x.contiguous(memory_format=torch.channels_last) for x in reals]
            T = int(cap_lens.max())
            captions = captions[:, :T]
            with torch.no_grad():
                words, sent = text_encoder(captions, cap_lens)
            mask = captions == 0
            z = torch.randn(captions.shape[0], cfg.gan.z_dim, device=dev)
            G.train()
            with autocast():
                fakes, _, mu, logvar = G_train(z, sent, words, mask)

            # D phase: one step per stage, fakes detached.
            d_terms: dict[str, torch.Tensor] = {}
            for i, (D, opt) in enumerate(zip(Ds_train, opt_Ds)):
                real = reals[i - len(Ds_train)] if cfg.gan.dcgan else reals[i]
                with autocast():
                    terms = loss.d_phase(D, real, fakes[i - len(Ds_train)].detach(), sent)
                errD = terms["loss"].float()
                d_terms[f"d_loss{i}"] = errD.detach()
                d_terms[f"d_prob_real{i}"] = terms["prob_real"]
                d_terms[f"d_prob_fake{i}"] = terms["prob_fake"]
                opt.zero_grad(set_to_none=True)
                scaler.scale(errD).backward()
                scaler.step(opt)

            # G phase: the updated Ds judge the same fakes; D weights get no gradients.
            Ds_eval = [_unwrap(D) for D in Ds_train]  # no DDP sync needed for D in this phase
            if cfg.train.freeze_d_in_g_step:
                _set_requires_grad(Ds_eval, False)
            with autocast():
                g_terms = loss.g_phase(Ds_eval, fakes, words, sent, cap_lens, class_ids, mu, logvar)
            errG = sum(v.float() for v in g_terms.values())
            if not torch.isfinite(errG) or not all(torch.isfinite(v) for v in d_terms.values()):
                bad_steps += 1
                opt_G.zero_grad(set_to_none=True)
                if bad_steps > cfg.train.max_bad_steps:
                    raise AttnGANError(f"losses were NaN/inf in {bad_steps} steps; aborting")
            else:
                opt_G.zero_grad(set_to_none=True)
                scaler.scale(errG).backward()
                scaler.step(opt_G)
            scaler.update()
            if cfg.train.freeze_d_in_g_step:
                _set_requires_grad(Ds_eval, True)
            update_ema(G_ema, _unwrap(G), cfg.train.ema_decay)

            # Bookkeeping.
            step += 1
            batch_in_epoch += 1
            images_seen += captions.shape[0] * world
            bar.update(captions.shape[0] * world)
            for k, v in {**d_terms, **g_terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n_sum += 1
            if images_seen >= next_log:
                next_log = _next_tick(images_seen, cfg.train.log_kimg)
                record = {"kimg": images_seen / 1000, "step": step, "sec_per_kimg":
                          (time.time() - t_tick) / max(cfg.train.log_kimg, 1e-9),
                          "bad_steps": bad_steps, **{k: v / n_sum for k, v in sums.items()}}
                t_tick, sums, n_sum = time.time(), {}, 0
                if dist.is_main():
                    with open(out_dir / "log.jsonl", "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                    bar.set_postfix(D=f"{sum(v for k, v in record.items() if k.startswith('d_loss')):.2f}",
                                    G=f"{sum(v for k, v in record.items() if k.startswith('g_')):.2f}",
                                    damsm=f"{record.get('damsm_words', 0) + record.get('damsm_sent', 0):.2f}")
            if images_seen >= next_sample and dist.is_main():
                next_sample = _next_tick(images_seen, cfg.train.sample_kimg)
                save_samples(G_ema, text_encoder, fixed, vocab, out_dir / "samples" / f"{images_seen // 1000:06d}kimg.png")
            out_of_time = bool(cfg.train.minutes) and time.time() - t_start > cfg.train.minutes * 60
            done = (images_seen >= total or out_of_time
                    or (max_steps is not None and step >= max_steps))
            done = bool(dist.broadcast_object(done))
            if images_seen >= next_snap or done:
                next_snap = _next_tick(images_seen, cfg.train.snapshot_kimg)
                snapshot()
            if done:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    bar.close()
    if dist.is_main():
        save_samples(G_ema, text_encoder, fixed, vocab, out_dir / "samples" / "final.png")
    return {"images_seen": images_seen, "step": step, "bad_steps": bad_steps,
            "seconds": time.time() - t_start}


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
    from attngan.data.dataset import collate_sorted

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


@torch.no_grad()
def save_samples(G_ema, text_encoder, fixed, vocab, path: Path) -> None:
    """One row per caption: every stage, then the last stage's per-word attention."""
    from PIL import Image

    from attngan.viz import caption_strip, save_png, to_pil, word_attention_figure

    dev = next(G_ema.parameters()).device
    captions, cap_lens = fixed["captions"], fixed["cap_lens"]
    T = int(cap_lens.max())
    captions = captions[:, :T]
    words, sent = text_encoder(captions.to(dev), cap_lens.to(dev))
    images, attention, _, _ = G_ema(fixed["z"].to(dev), sent, words, (captions == 0).to(dev),
                                    ca_noise=fixed["eps"].to(dev))
    rows = []
    size = images[-1].shape[-1]
    for b in range(captions.shape[0]):
        tokens = [vocab.id_to_word[int(i)] for i in captions[b, : int(cap_lens[b])]]
        stage_tiles = [to_pil(img[b].cpu()).resize((size, size), Image.NEAREST) for img in images]
        att = attention[-1][b].cpu() if attention else None
        row = Image.new("RGB", (1, 1))
        if att is not None:
            row = word_attention_figure(images[-1][b].cpu(), att, tokens, top_k=5, size=size)
        strip = caption_strip(" ".join(tokens), size * len(stage_tiles) + row.width)
        canvas = Image.new("RGB", (strip.width, strip.height + size), (255, 255, 255))
        canvas.paste(strip, (0, 0))
        for i, t in enumerate(stage_tiles):
            canvas.paste(t, (i * size, strip.height))
        canvas.paste(row, (size * len(stage_tiles), strip.height + size - row.height))
        rows.append(canvas)
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    save_png(out, path)
