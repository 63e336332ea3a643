"""Captioner training (Show, Attend and Tell, networks/captioner.py): teacher forcing on real
images and their captions.

The loss is the cross-entropy per word plus the doubly stochastic attention penalty
lambda * sum_i (1 - sum_t alpha_ti)^2 (SAT Eq. 14); Adam, lr x `lr_decay` per epoch.

Reads any data layout TextImageDataset reads (CUB, COCO, SynthBirds, SynthScenes); the captions are
the caption files' lines as written (commas kept as tokens). After each epoch it decodes
`eval_images` test images greedily and scores BLEU-4 / CIDEr-D against all their captions and, on
SynthBirds, the attribute recall of the captions' grammar (on SynthScenes, the objects, colours and
background read back); those scores are reported, never used to choose: the
run's snapshot, `best/`, is the last epoch (CAPTIONER_SELECTION). `state.pt` to resume: running
the same command again continues.
"""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from attngan.captioner import (RepeatBlock, caption_tokens, captioner_vocabulary, detokenize,
                               greedy_decode, save_captioner_folder)
from attngan.config import CaptionerConfig
from attngan.data.dataset import TextImageDataset, make_loader
from attngan.data.layout import read_split_captions
from attngan.data.records import ground_truth
from attngan.data.sampler import EpochSampler
from attngan.data.scene_captions import VOCABULARY as SCENE_VOCABULARY
from attngan.data.vocab import load_vocab
from attngan.errors import AttnGANError
from attngan.io import load_damsm
from attngan.metrics.captioning import attribute_recall, caption_scores
from attngan.metrics.roundtrip import SCENE_READINGS, scene_readback
from attngan.networks.captioner import build_captioner
from attngan.perf import resolve_device
from attngan.text import Vocabulary, tokenize
from attngan.training.checkpoint import rng_state, set_rng_state
from attngan.training.runstate import RunState

# How best/, the run's one snapshot, is chosen, recorded in its config.json metrics. Choosing it by
# the test split's recall would make that recall, and the round trip's ceiling that the captioner
# sets, optimistic.
CAPTIONER_SELECTION = "last epoch (the test split is not used to select)"


# Data.

class CaptionedImages(torch.utils.data.Dataset):
    """Images of a split (TextImageDataset: crops, flips, the image cache) with every caption of
    each image as captioner token ids; an item carries one caption, drawn at random when training."""

    def __init__(self, root: Path, split: str, cfg: CaptionerConfig, vocab: Vocabulary, train: bool):
        self.train = train
        data_cfg = replace(cfg.data, words_num=1024)  # the image side does not look at captions
        self.images = TextImageDataset(root, split, data_cfg, load_vocab(root), image_sizes=[cfg.image_size],
                                       train=train)
        self.texts = caption_lines(self.images)
        self.ids = []
        for lines in self.texts:
            caps = []
            for line in lines:
                ids, _ = vocab.encode_tokens(caption_tokens(line))
                if ids:
                    caps.append(ids[: cfg.max_len])
            self.ids.append(caps or [[]])
        self.keys = self.images.keys

    def __len__(self) -> int:
        return len(self.images)

    # The loader's hooks (seeding, unreadable images) go to the image dataset.
    def reseed(self, seed: int) -> None:
        self.images.reseed(seed)

    def note_bad(self, keys) -> None:
        self.images.note_bad(keys)

    @property
    def bad_keys(self) -> set[str]:
        return self.images.bad_keys

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.images[i]
        caps = self.ids[i]
        k = int(torch.randint(0, len(caps), (), generator=self.images._generator())) if self.train else 0
        return {"image": item["images"][0], "ids": caps[k], "index": i, "skipped": item["skipped"]}


def caption_lines(ds) -> list[list[str]]:
    """Each item's caption lines as written; from the word ids (no commas) where the layout has
    no caption text (captions.pickle only)."""
    n = ds.cfg.captions_per_image
    try:
        source = read_split_captions(ds.root, ds.split, ds.keys, ds.dataset, n)
    except AttnGANError:  # a layout without caption files of its own (image folder, shards)
        source = None
    if source is None or source.lines is None:
        return [[ds.caption_text(i, k) for k in range(n)] for i in range(len(ds))]
    out = []
    for lines in source.lines:
        kept = [ln.strip() for ln in lines if ds.vocab.encode_tokens(tokenize(ln))[0]]
        out.append(kept[:n])
    return out


def collate_captions(items: list[dict[str, Any]], start_id: int) -> dict[str, Any]:
    """Images, decoder inputs (<start> + words) and targets (words + <end>, -100 as padding)."""
    T = max(len(it["ids"]) for it in items) + 1
    inputs = torch.zeros(len(items), T, dtype=torch.long)
    targets = torch.full((len(items), T), -100, dtype=torch.long)
    for b, it in enumerate(items):
        ids = torch.as_tensor(it["ids"], dtype=torch.long)
        inputs[b, 0] = start_id
        inputs[b, 1:len(ids) + 1] = ids
        targets[b, :len(ids)] = ids
        targets[b, len(ids)] = 0  # <end>
    return {"images": torch.stack([it["image"] for it in items]), "inputs": inputs, "targets": targets,
            "index": [it["index"] for it in items], "skipped": [k for it in items for k in it["skipped"]]}


def build_vocabulary(root: Path):
    """The data set's words (its vocabulary, as the DAMSM's) plus the comma; on SynthScenes also
    every word the scene caption parser reads (scene_captions.VOCABULARY), after the data set's:
    a word the rendered captions happen not to use ("under", "which") is still one the parser
    reads, and a captioner that cannot write it could never be read back saying it."""
    words = list(load_vocab(root).id_to_word)
    if ground_truth(root) == "synth_scenes":
        words += [w for w in SCENE_VOCABULARY if w not in set(words)]
    return captioner_vocabulary(words)


def init_region_encoder(encoder, damsm_dir: str) -> None:
    """Start the region encoder from a DAMSM's `small` image trunk (the same four blocks).

    A DAMSM trained on real images and their captions has already learned regions that tell the
    part words apart (its word-region attention); starting there, the captioner only has to learn
    to read them in order, which on one CPU thread is the difference between a captioner in 25
    minutes and one that does not yet name colours (see MODEL.md).
    """
    cfg, _, _, image_encoder = load_damsm(damsm_dir)
    if cfg.damsm.backbone != "small" or 4 * cfg.damsm.small_width != encoder.channels:
        raise AttnGANError(f"init_encoder {damsm_dir}: needs a DAMSM with the small backbone of width "
                           f"{encoder.channels // 4} (it has {cfg.damsm.backbone}, width {cfg.damsm.small_width})")
    trunk = image_encoder.trunk.state_dict()
    own = encoder.state_dict()
    load = {k: v for k, v in trunk.items() if k in own}
    if len(load) != len(own) - 1:  # everything but the position embedding
        raise AttnGANError(f"init_encoder {damsm_dir}: its trunk does not match the region encoder")
    encoder.load_state_dict(load, strict=False)


# Loss.

def caption_loss(model, batch: dict[str, Any], attention_reg: float, device) -> dict[str, torch.Tensor]:
    """Cross-entropy per word (mean over the batch's words) and the attention penalty."""
    logits, alpha = model(batch["images"].to(device), batch["inputs"].to(device))
    targets = batch["targets"].to(device)
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    # Doubly stochastic attention: over the words of a caption, every region should get about one
    # unit of attention in all (SAT Sec. 4.2.1), so the captioner looks at the whole bird.
    steps = (targets != -100).float()                                  # B x T
    cover = (alpha * steps[..., None]).sum(1)                          # B x L
    reg = ((1.0 - cover) ** 2).sum(1).mean()
    return {"ce": ce, "att": attention_reg * reg}


# Evaluation.

@torch.no_grad()
def evaluate_captioner(model, ds: CaptionedImages, vocab: Vocabulary, cfg: CaptionerConfig, device,
                       max_images: int, truth: str | None, batch_size: int = 64) -> dict[str, Any]:
    """Greedy captions (repeats blocked, as the captioner decodes) of the first `max_images` test
    images: BLEU-4 and CIDEr-D against all their captions; on SynthBirds, attribute recall with
    each image's captions as the prompts; on SynthScenes, the objects, colours and background
    its caption states of each image's first caption (scene_readback). `truth` is the data's
    ground truth (data.records.ground_truth). Reported only."""
    model.eval()
    n = min(max_images, len(ds))
    captions = []
    for s in range(0, n, batch_size):
        images = torch.stack([ds.images[i]["images"][0] for i in range(s, min(s + batch_size, n))])
        for ids in greedy_decode(model, images.to(device), cfg.max_len, RepeatBlock(vocab)):
            captions.append(detokenize([vocab.id_to_word[i] for i in ids]))
    refs = [ds.texts[i] for i in range(n)]
    out: dict[str, Any] = {"val_" + k: v for k, v in caption_scores(captions, refs).items()}
    if truth == "synth_birds":
        prompts = [r for rs in refs for r in rs]
        r = attribute_recall(prompts, [c for c, rs in zip(captions, refs) for _ in rs])
        out["recall_all"] = r["all"]
        out.update({f"recall_{k}": v for k, v in r["per_attribute"].items()})
    if truth == "synth_scenes":
        r = scene_readback([rs[0] for rs in refs], captions)
        out["recall_all"] = r["recall"]["all"]
        out.update({f"recall_{k}": r[k]["all"] for k in SCENE_READINGS})
        out["all_back"], out["objects_precision"] = r["all_back"]["all"], r["objects_precision"]["all"]
    out["examples"] = [{"key": ds.keys[i], "caption": captions[i], "reference": refs[i][0]} for i in range(min(4, n))]
    return out


# Training.

# What a resumed run cannot change: the network's shapes, the batch and the data order.
RESUME_FIXED = ("seed", "data.dataset", "data.captions_per_image", "image_size", "width", "embed_dim",
                "hidden_dim", "attention_dim", "max_len", "batch_size")


def train_captioner(cfg: CaptionerConfig, data_dir: str | Path, out_dir: str | Path, *, device: str = "auto",
                    max_epochs: int | None = None, minutes: float = 0.0, progress: bool = True,
                    max_steps: int | None = None) -> dict[str, Any]:
    """Train a captioner into out_dir (best/, state.pt, metrics.jsonl); resumes from state.pt.
    `max_steps` caps the optimiser steps per epoch (speed measurements and tests). Builds what the
    loop takes (vocabulary, data, the model) and holds out_dir's lock throughout (one writer;
    temporaries of killed runs removed)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    with RunState.claim(out_dir):
        dev = resolve_device(device)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        vocab = build_vocabulary(data_dir)
        train_ds = CaptionedImages(data_dir, "train", cfg, vocab, train=True)
        test_ds = CaptionedImages(data_dir, "test", cfg, vocab, train=False)
        if len(train_ds) < 2:
            raise AttnGANError(f"{data_dir}: the train split needs at least 2 images to train a captioner")
        model = build_captioner(cfg, len(vocab)).to(dev)
        # A run that resumes takes every weight from its state: the init was its starting point.
        if cfg.init_encoder and not (out_dir / "state.pt").is_file():
            init_region_encoder(model.encoder, cfg.init_encoder)
        return training_loop(cfg, model, vocab, train_ds, test_ds, out_dir, dev, progress=progress,
                             max_epochs=max_epochs, minutes=minutes, max_steps=max_steps, data_dir=data_dir)


def training_loop(cfg: CaptionerConfig, model: torch.nn.Module, vocab: Vocabulary, train_ds: CaptionedImages,
                  test_ds: CaptionedImages, out_dir: Path, dev: torch.device, *, progress: bool = True,
                  max_epochs: int | None = None, minutes: float = 0.0,
                  max_steps: int | None = None, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Train `model` on `train_ds` for cfg.epochs (or `max_epochs`) or until the minutes budget,
    at most `max_steps` optimiser steps an epoch; resumes from out_dir/state.pt when it is there.
    After each epoch it scores greedy captions of test_ds (reported only) and snapshots best/ (the
    last epoch) and the state. Progress is counted in images too (`kimg` in each record). Returns
    the last epoch's record."""
    batch_size = min(cfg.batch_size, len(train_ds))
    epochs = cfg.epochs if max_epochs is None else max_epochs
    # SynthBirds captions come from a grammar that names the attributes: score their recall too
    # (SynthScenes: the objects, colours and background read back).
    truth = ground_truth(test_ds.images.root, test_ds.images.source)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)

    # Resume.
    run = RunState(out_dir, "captioner", "metrics.jsonl", data_dir=data_dir)
    start_epoch, history, best = 0, [], -1.0
    st = run.resume(cfg.to_dict(), RESUME_FIXED)
    if st is not None:
        if st.get("n_words") != len(vocab):
            raise AttnGANError(f"{run.state_path} was trained with {st.get('n_words')} words; "
                               f"{train_ds.images.root} has {len(vocab)}: use another --out")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        start_epoch, history, best = st["epoch"], st["history"], st["best"]
        set_rng_state(st["rng"])
        print(f"resuming the captioner from {run.state_path} at epoch {start_epoch} ({run.kimg:.1f} kimg)")
    # Epochs logged after the snapshot this run starts from (all, without one) are written again.
    run.begin(cfg.to_dict(), lambda r: isinstance(r.get("epoch"), int) and r["epoch"] <= start_epoch)
    sampler = EpochSampler(len(train_ds), batch_size, cfg.seed, 0, 1,
                           dataset=train_ds.images if cfg.data.workers == 0 else None)
    loader = make_loader(train_ds, batch_size, shuffle=False, workers=cfg.data.workers, drop_last=True,
                         seed=cfg.seed, sampler=sampler)
    loader.collate_fn = functools.partial(collate_captions, start_id=model.decoder.start_id)
    t_start = time.time()

    # Epochs.
    for epoch in range(start_epoch, epochs):
        sampler.set_position(epoch, 0)
        lr = cfg.lr * cfg.lr_decay ** epoch
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        sums, n_steps, t_epoch = {"ce": 0.0, "att": 0.0}, 0, time.time()
        bar = tqdm(loader, desc=f"captioner epoch {epoch + 1}/{epochs}", leave=False, disable=not progress)
        for batch in bar:
            terms = caption_loss(model, batch, cfg.attention_reg, dev)
            loss = terms["ce"] + terms["att"]
            if not torch.isfinite(loss):
                raise AttnGANError("captioner loss is NaN/inf; lower lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            for k, v in terms.items():
                sums[k] += float(v.detach())
            n_steps += 1
            run.add_images(len(batch["index"]))
            bar.set_postfix(ce=f"{float(terms['ce'].detach()):.3f}")
            if (max_steps and n_steps >= max_steps) or (minutes and time.time() - t_start > minutes * 60):
                break
        train_s = time.time() - t_epoch

        # Validation and snapshots.
        val = evaluate_captioner(model, test_ds, vocab, cfg, dev, cfg.eval_images, truth)
        examples = val.pop("examples")
        record = {"epoch": epoch + 1, "kimg": run.kimg, "lr": lr, "steps": n_steps, "images": n_steps * batch_size,
                  "train_s": round(train_s, 1), "seconds": round(time.time() - t_start, 1),
                  **{f"train_{k}": v / max(n_steps, 1) for k, v in sums.items()}, **val}
        history.append(record)
        tqdm.write(f"captioner epoch {epoch + 1}: " + "  ".join(
            f"{k}={v:.3f}" for k, v in record.items() if isinstance(v, float) and k in (
                "train_ce", "val_bleu4", "val_cider_d", "recall_all", "recall_wing", "recall_belly",
                "recall_objects", "recall_colours", "recall_place")))
        tqdm.write(f"  e.g. {examples[0]['caption']!r}  (a reference: {examples[0]['reference']!r})")
        run.log({**record, "examples": examples})
        best = max(best, record.get("recall_all", record["val_cider_d"]))  # the best seen, reported
        save_captioner_folder(out_dir / "best", cfg, vocab, model, {**record, "selection": CAPTIONER_SELECTION})
        run.snapshot({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                      "history": history, "best": best, "n_words": len(vocab), "rng": rng_state()})
        if minutes and time.time() - t_start > minutes * 60:
            break
    return history[-1] if history else {}
