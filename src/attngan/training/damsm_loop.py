"""DAMSM pretraining (paper Sec. 3.3): text and image encoders trained with the word and sentence
matching losses, then frozen for the generator.

Schedule as the original pretrain_DAMSM.py: Adam lr 2e-3 (0.5, 0.999),
re-created every epoch, lr x0.98 per epoch while above 2e-4, RNN gradient norm clipped at 0.25.
`damsm.reset_optimizer=False` keeps one Adam for the whole run instead (its state saved for resume).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from attngan import perf
from attngan.config import Config
from attngan.data.dataset import make_loader, make_train_loader, open_split
from attngan.data.vocab import copy_vocab_report, load_vocab
from attngan.errors import AttnGANError
from attngan.io import save_damsm_folder
from attngan.losses import sent_loss, words_loss
from attngan.metrics.r_precision import r_precision
from attngan.networks import build_image_encoder, build_text_encoder
from attngan.perf import resolve_device
from attngan.text import Vocabulary
from attngan.training import distributed as dist
from attngan.training.checkpoint import rng_state, set_rng_state
from attngan.training.runstate import RunState
from attngan.viz import attention_grid, save_png

# How best/, the run's one snapshot, is chosen, recorded in its config.json metrics: never by the
# test split.
DAMSM_SELECTION = "last epoch (the test split is not used to select)"

# Evaluation on real images.

@torch.no_grad()
def encode_split(text_encoder, image_encoder, loader, device, max_items: int | None = None):
    """Global image codes, sentence codes and class ids of a split (one caption per image)."""
    text_encoder.eval()
    image_encoder.eval()
    imgs, sents, classes = [], [], []
    n = 0
    for batch in loader:
        captions, cap_lens = batch["captions"].to(device), batch["cap_lens"].to(device)
        _, sent = text_encoder(captions, cap_lens)
        _, code = image_encoder(batch["images"][-1].to(device))
        imgs.append(code.float().cpu())
        sents.append(sent.float().cpu())
        classes.append(batch["class_ids"].cpu())
        n += captions.shape[0]
        if max_items and n >= max_items:
            break
    return torch.cat(imgs), torch.cat(sents), torch.cat(classes)


def retrieval_metrics(img: torch.Tensor, sent: torch.Tensor, class_ids: torch.Tensor,
                      seed: int = 0) -> dict[str, float]:
    """Image-to-text R-precision (1 true vs 99 other-class captions) and text-to-image recall@1/5."""
    # A small test split (new data of a few dozen images) is scored in fewer chunks.
    mean, std = r_precision(img, sent, class_ids, n_neg=99, splits=max(1, min(10, len(img))), seed=seed)
    sim = torch.nn.functional.normalize(sent, dim=1) @ torch.nn.functional.normalize(img, dim=1).T
    # A text retrieves its own image; other images of the same class count as misses (strict).
    ranks = (sim > sim.diagonal()[:, None]).sum(1)
    return {"r_precision": float(mean), "r_precision_std": float(std),
            "t2i_recall@1": float((ranks < 1).float().mean()),
            "t2i_recall@5": float((ranks < 5).float().mean())}


# Training.

def _damsm_losses(cfg: Config, text_encoder, image_encoder, batch, device, amp=contextlib.nullcontext,
                  context: str = "auto"):
    """The four DAMSM terms of a batch. `amp` (a context factory) wraps the image encoder, whose
    outputs come back float32, and the word loss's region-word matmul; the softmaxes, cosines and
    matching losses stay float32. `context` is words_loss's (the benchmark compares the two)."""
    captions, cap_lens = batch["captions"].to(device), batch["cap_lens"].to(device)
    class_ids = batch["class_ids"].to(device)
    words, sent = text_encoder(captions, cap_lens)
    images = batch["images"][-1].to(device)
    if cfg.damsm.channels_last:
        images = perf.to_channels_last(images)
    with amp():
        regions, code = image_encoder(images)
    regions, code = regions.float(), code.float()
    d = cfg.damsm
    with amp():  # words_loss lets only its region-word matmul follow autocast
        w0, w1, attn = words_loss(regions, words, cap_lens, class_ids, d.gamma1, d.gamma2, d.gamma3,
                                  context=context)
    s0, s1 = sent_loss(code, sent, class_ids, d.gamma3)
    return {"w_loss0": w0, "w_loss1": w1, "s_loss0": s0, "s_loss1": s1}, attn, code, sent


def damsm_step(cfg: Config, text_encoder, image_encoder, batch, device, opt,
               amp=contextlib.nullcontext) -> tuple[dict[str, torch.Tensor], bool]:
    """One DAMSM pretraining step: the four losses, then one Adam step with the LSTM's gradient
    clipped, when every rank's loss is finite (all ranks skip together under DDP). Returns the
    loss terms and whether they were finite (nothing was updated otherwise)."""
    terms, *_ = _damsm_losses(cfg, text_encoder, image_encoder, batch, device, amp)
    loss = sum(terms.values())
    if not dist.all_true(bool(torch.isfinite(loss))):
        return terms, False
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(text_encoder.parameters(), cfg.damsm.rnn_grad_clip)
    opt.step()
    return terms, True


def _datasets(cfg: Config, data_dir: Path):
    vocab = load_vocab(data_dir, min_count=cfg.data.vocab_min_count)
    data_cfg = replace(cfg.data, words_num=cfg.damsm.words_num)
    sizes = [cfg.damsm.image_size]
    train_ds = open_split(data_dir, "train", data_cfg, vocab, image_sizes=sizes, train=True)
    test_ds = open_split(data_dir, "test", data_cfg, vocab, image_sizes=sizes, train=False)
    return vocab, train_ds, test_ds


# What a resumed run cannot change: the encoders' shapes, the batch and the data order.
RESUME_FIXED = ("seed", "data.dataset", "data.captions_per_image", "text", "damsm.backbone",
                "damsm.image_size", "damsm.small_width", "damsm.small_pool", "damsm.words_num",
                "damsm.batch_size", "damsm.reset_optimizer")


def train_damsm(cfg: Config, data_dir: str | Path, out_dir: str | Path, *, device: str = "auto",
                minutes: float = 0.0, max_epochs: int | None = None, progress: bool = True,
                eval_items: int = 1000) -> dict[str, Any]:
    """Pretrain the DAMSM encoders. Re-running with the same out_dir resumes from the last epoch.
    Builds what the loop takes (vocabulary, data, encoders) and holds out_dir's lock throughout
    (one writer; temporaries of killed runs removed)."""
    dist.init()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    with RunState.claim(out_dir, main=dist.is_main()):
        dev = resolve_device(device)
        perf.configure_backends(dev)  # TF32 matmuls on CUDA
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        vocab, train_ds, test_ds = _datasets(cfg, data_dir)
        if len(train_ds) < 2 * dist.get_world_size():
            raise AttnGANError(f"{data_dir}: the train split needs at least 2 images per process for DAMSM")
        text_encoder = build_text_encoder(cfg, len(vocab)).to(dev)
        image_encoder = build_image_encoder(cfg).to(dev)
        if cfg.damsm.channels_last:
            image_encoder = image_encoder.to(memory_format=torch.channels_last)
        perf.encoder_autocast(cfg.damsm.amp, dev)  # a bad damsm.amp fails here, before anything is written
        if cfg.damsm.backbone == "inception":
            if not cfg.damsm.inception_weights:
                raise AttnGANError("the inception backbone needs ImageNet weights: set damsm.inception_weights "
                                   "to a local inception_v3_google-*.pth (README, Training)")
            image_encoder.load_inception_weights(cfg.damsm.inception_weights)
        if dist.is_main():
            copy_vocab_report(data_dir, out_dir)
        return training_loop(cfg, text_encoder, image_encoder, vocab, train_ds, test_ds, out_dir, dev,
                             minutes=minutes, epochs=max_epochs if max_epochs is not None else cfg.damsm.epochs,
                             progress=progress, eval_items=eval_items, data_dir=data_dir)


def training_loop(cfg: Config, text_encoder: torch.nn.Module, image_encoder: torch.nn.Module, vocab: Vocabulary,
                  train_ds, test_ds, out_dir: Path, dev: torch.device, *, minutes: float = 0.0,
                  epochs: int, progress: bool = True, eval_items: int = 1000,
                  data_dir: str | Path | None = None) -> dict[str, Any]:
    """Train the encoders on `train_ds` for `epochs` (or `minutes`), validating on `test_ds` and
    snapshotting best/ and the state after every epoch; resumes from out_dir/state.pt when it is
    there. Progress is counted in images too (`kimg` in each record). Returns the last epoch's
    record."""
    world = dist.get_world_size()
    batch_size = min(cfg.damsm.batch_size, len(train_ds) // world)  # per process
    # Mixed precision in training steps only; validation and R-precision run in float32.
    amp = lambda: perf.encoder_autocast(cfg.damsm.amp, dev)  # noqa: E731
    params = list(text_encoder.parameters()) + list(image_encoder.projection_parameters())

    # Resume.
    run = RunState(out_dir, "damsm", "metrics.jsonl", main=dist.is_main(), data_dir=data_dir)
    start_epoch, lr, history, best, bad_steps = 0, cfg.damsm.lr, [], -1.0, 0
    opt = torch.optim.Adam(params, lr=lr, betas=cfg.damsm.betas)
    st = run.resume(cfg.to_dict(), RESUME_FIXED)
    if st is not None:
        text_encoder.load_state_dict(st["text_encoder"])
        image_encoder.load_state_dict(st["image_encoder"])
        start_epoch, lr, history, best = st["epoch"], st["lr"], st["history"], st["best"]
        bad_steps = st.get("bad_steps", 0)
        if st.get("optimizer") is not None:
            opt.load_state_dict(st["optimizer"])
        set_rng_state(st["rng"])
        if dist.is_main():
            print(f"resuming DAMSM from {run.state_path} at epoch {start_epoch} ({run.kimg:.1f} kimg)")
    # Epochs logged after the snapshot this run starts from (all, without one) are written again.
    run.begin(cfg.to_dict(), lambda r: isinstance(r.get("epoch"), int) and r["epoch"] <= start_epoch)
    # A seeded permutation per epoch (sharded under torchrun), so a resumed run sees the same order.
    train_loader, sampler = make_train_loader(train_ds, batch_size, seed=cfg.seed, loader_seed=cfg.seed,
                                              rank=dist.get_rank(), world=world, workers=cfg.data.workers)
    test_loader = make_loader(test_ds, min(batch_size, len(test_ds)), shuffle=False,
                              workers=cfg.data.workers, drop_last=False, seed=cfg.seed)
    trainable = [text_encoder, image_encoder]
    if world > 1:
        trainable = [torch.nn.parallel.DistributedDataParallel(m) for m in trainable]
    te, ie = trainable
    fixed_batch = next(iter(test_loader))
    t_start = time.time()

    # Epochs.
    epoch = start_epoch
    for epoch in range(start_epoch, epochs):
        sampler.set_position(epoch, 0)
        # The original re-creates Adam each epoch, which resets its moments; kept for fidelity.
        # (The first epoch of a run or a resume already has a fresh one, built above.)
        if cfg.damsm.reset_optimizer and epoch > start_epoch:
            opt = torch.optim.Adam(params, lr=lr, betas=cfg.damsm.betas)
        for group in opt.param_groups:
            group["lr"] = lr
        text_encoder.train()
        image_encoder.train()
        sums: dict[str, float] = {}
        n_steps = 0
        bar = tqdm(train_loader, desc=f"DAMSM epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not (progress and dist.is_main()))
        for batch in bar:
            run.add_images(batch["captions"].shape[0] * world)
            terms, finite = damsm_step(cfg, te, ie, batch, dev, opt, amp)
            if not finite:
                bad_steps += 1
                if bad_steps > cfg.damsm.max_bad_steps:
                    raise AttnGANError(f"DAMSM loss was NaN/inf in {bad_steps} steps; aborting "
                                       f"(lower damsm.lr or check the data)")
                continue
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n_steps += 1
            bar.set_postfix(w=f"{(terms['w_loss0'] + terms['w_loss1']).item():.2f}",
                            s=f"{(terms['s_loss0'] + terms['s_loss1']).item():.2f}")
            if minutes and not dist.all_true(time.time() - t_start <= minutes * 60):
                break
        if lr > cfg.damsm.min_lr:
            lr *= cfg.damsm.lr_decay

        # Validation.
        val = validate(cfg, text_encoder, image_encoder, test_loader, dev, eval_items)
        record = {"epoch": epoch + 1, "kimg": run.kimg, "lr": lr, "seconds": round(time.time() - t_start, 1),
                  "bad_steps": bad_steps, **{f"train_{k}": v / max(n_steps, 1) for k, v in sums.items()},
                  **val}
        history.append(record)
        if dist.is_main():
            tqdm.write(f"DAMSM epoch {epoch + 1}: " + "  ".join(
                f"{k}={v:.3f}" for k, v in record.items() if isinstance(v, float) and k not in ("lr", "kimg")))
            run.log(record)
            # The snapshot, best/: the folder other commands load (io.damsm_folder). Choosing it
            # by the test split's R-precision would select on the data the evaluation scores on,
            # so it is the last epoch (the original ships a fixed epoch: 200 birds, 100 COCO) and
            # says so; the test R-precision is only reported.
            best = max(best, record["r_precision"])
            save_damsm_folder(out_dir / "best", cfg, vocab, text_encoder, image_encoder,
                              {**record, "selection": DAMSM_SELECTION})
            # A resumed run folder that also has a last/ snapshot (written beside best/ by earlier
            # releases) would keep it at the epoch this run started from, out of step with best/.
            shutil.rmtree(out_dir / "last", ignore_errors=True)
            run.snapshot({"text_encoder": text_encoder.state_dict(),
                          "image_encoder": image_encoder.state_dict(), "epoch": epoch + 1,
                          "lr": lr, "history": history, "best": best, "bad_steps": bad_steps,
                          "optimizer": None if cfg.damsm.reset_optimizer else opt.state_dict(),
                          "rng": rng_state()})
            if (epoch + 1) % cfg.damsm.snapshot_epochs == 0 or epoch + 1 == epochs:
                save_attention_preview(cfg, text_encoder, image_encoder, fixed_batch, vocab, dev,
                                       out_dir / "attention" / f"epoch_{epoch + 1:04d}.png")
        dist.barrier()
        if minutes and not dist.all_true(time.time() - t_start <= minutes * 60):
            break
    if dist.is_main() and history and not (out_dir / "attention").is_dir():
        save_attention_preview(cfg, text_encoder, image_encoder, fixed_batch, vocab, dev,
                               out_dir / "attention" / f"epoch_{epoch + 1:04d}.png")
    return history[-1] if history else {}


@torch.no_grad()
def validate(cfg: Config, text_encoder, image_encoder, loader, device, max_items: int) -> dict[str, float]:
    """Test-split losses and retrieval metrics, in one pass over at most max_items images."""
    text_encoder.eval()
    image_encoder.eval()
    sums: dict[str, float] = {}
    imgs, sents, classes = [], [], []
    n_batches = n_items = 0
    for batch in loader:
        terms, _, code, sent = _damsm_losses(cfg, text_encoder, image_encoder, batch, device)
        if batch["captions"].shape[0] > 1:  # a lone caption has no negatives: no loss to report
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n_batches += 1
        imgs.append(code.float().cpu())
        sents.append(sent.float().cpu())
        classes.append(batch["class_ids"].cpu())
        n_items += code.shape[0]
        if n_items >= max_items:
            break
    out = {f"val_{k}": v / max(n_batches, 1) for k, v in sums.items()}
    out.update(retrieval_metrics(torch.cat(imgs), torch.cat(sents), torch.cat(classes), seed=cfg.seed))
    return out


@torch.no_grad()
def save_attention_preview(cfg: Config, text_encoder, image_encoder, batch, vocab: Vocabulary, device, path: Path) -> None:
    """Word-region attention maps of a fixed test batch, one overlay per word (paper Fig. 5 style)."""
    text_encoder.eval()
    image_encoder.eval()
    _, attn, _, _ = _damsm_losses(cfg, text_encoder, image_encoder, batch, device)
    tokens = [[vocab.id_to_word[int(i)] for i in row[: int(n)]]
              for row, n in zip(batch["captions"], batch["cap_lens"])]
    save_png(attention_grid(batch["images"][-1], [a[0].cpu() for a in attn], tokens, rows=6), path)
