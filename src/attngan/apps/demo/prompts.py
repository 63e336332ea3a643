"""The report's pictures: every stage and word attention of each prompt, what the captioner reads
in the top image and what the evaluation DAMSM retrieves for it, and the training curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from attngan import AttnGANError, AttnGANPipeline, Captioner, io
from attngan.apps.demo.settings import (ATTENTION_COLUMNS, ATTENTION_TILE_PX, MORE_PROMPTS, PROMPTS,
                                        STAGE_DISPLAY_PX)
from attngan.data.dataset import TextImageDataset
from attngan.data.synth_birds import caption_attributes
from attngan.metrics.extractors import quantize
from attngan.pipeline import PipelineOutput
from attngan.report import Figure, PromptResult, line_plot
from attngan.viz import png_bytes, to_pil, word_attention_figure


def prompt_results(model_dir, data_dir, eval_damsm_dir, device, seed, captioner_dir=None) -> list[PromptResult]:
    """Every stage and every attentional stage's word attention for the prompts, what the
    captioner (when given) reads in each top-stage image, and what the evaluation DAMSM retrieves
    for it (when a data folder and an evaluation DAMSM are given)."""
    pipe = AttnGANPipeline.from_pretrained(model_dir, device=device)
    prompts = PROMPTS + MORE_PROMPTS
    out = pipe(prompts, seed=seed)
    retr = ([[] for _ in prompts] if data_dir is None or eval_damsm_dir is None
            else _retrieve(out.images[-1], data_dir, eval_damsm_dir, pipe.device))
    captioned = _caption(out.images[-1], captioner_dir, pipe.device)
    results = []
    for i, caption in enumerate(prompts):
        found = _colours_found(caption, [c for c, _ in retr[i]]) if retr[i] else None
        results.append(PromptResult(caption, stage_figures(out, i), attention_figures(out, i), out.tokens[i],
                                    out.dropped[i], retr[i], found, captioned=captioned[i],
                                    attributes_back=_attributes_back(caption, captioned[i])))
    return results


def stage_figures(out: PipelineOutput, i: int) -> list[Figure]:
    """Every stage's image of caption `i`, at its true pixels, shown at one common width."""
    display = max(STAGE_DISPLAY_PX, out.images[-1].shape[-1])
    figures = []
    for s, img in enumerate(out.images):
        h, w = img.shape[-2:]
        # The true pixels; the page enlarges them without smoothing (image-rendering: pixelated).
        figures.append(Figure(png_bytes(to_pil(img[i])), f"stage {s + 1} · {w}×{h} px",
                              cls="stage-top" if s == len(out.images) - 1 else "stage", width=display))
    return figures


def attention_figures(out: PipelineOutput, i: int, words: list[int] | None = None, which: str = "") -> list[Figure]:
    """Caption `i`'s word attention at every attentional stage: every word's map, or those of the
    token positions `words` (described in the label by `which`)."""
    keep = list(range(len(out.tokens[i]))) if words is None else words
    tokens = [out.tokens[i][j] for j in keep]
    n_stages, n_att = len(out.images), len(out.attention)
    figures = []
    for k, att in enumerate(out.attention):
        s = n_stages - n_att + k  # the stage whose refinement attended with these maps
        h, w = out.images[s].shape[-2:]
        ah, aw = att.shape[-2:]
        fig = word_attention_figure(out.images[s][i], att[i][keep], tokens, size=ATTENTION_TILE_PX,
                                    ncol=ATTENTION_COLUMNS, highlight=True)
        figures.append(Figure(png_bytes(fig), f"word attention at stage {s + 1} ({w}×{h} px image, "
                                              f"{aw}×{ah} attention regions){which}", cls="attention"))
    return figures


def stage_sizes(model_dir) -> list[int]:
    cfg = io.read(model_dir, "generator").config
    return [cfg.data.base_size * 2 ** i for i in range(cfg.data.branch_num)]


def _retrieve(images, data_dir, eval_damsm_dir, device, top: int = 3):
    """For each image, the top test captions by the evaluation DAMSM's sentence similarity."""
    cfg, vocab, te, ie = io.load_damsm(eval_damsm_dir, device)
    te.eval()
    ie.eval()
    ds = TextImageDataset(data_dir, "test", cfg.data, vocab, image_sizes=[cfg.damsm.image_size], train=False)
    texts, ids = [], []
    for i in range(len(ds)):
        for k in range(min(2, cfg.data.captions_per_image)):
            text, cap = ds.caption_text(i, k), ds.caption(i, k)
            texts.append(text)
            ids.append(cap)
    uniq = dict(zip(texts, ids))
    texts, ids = list(uniq), list(uniq.values())
    with torch.no_grad():
        sents = []
        for s in range(0, len(ids), 256):
            chunk = ids[s:s + 256]
            lens = torch.tensor([len(c) for c in chunk])
            pad = torch.zeros(len(chunk), int(lens.max()), dtype=torch.long)
            for j, c in enumerate(chunk):
                pad[j, : len(c)] = torch.as_tensor(c)
            sents.append(te(pad.to(device), lens.to(device))[1].cpu())
        sent = F.normalize(torch.cat(sents), dim=1)
        _, code = ie(images.to(device))  # the encoder resizes to its own input size
        sim = F.normalize(code.cpu(), dim=1) @ sent.T
    out = []
    for row in sim:
        v, idx = row.topk(min(top, len(texts)))
        out.append([(texts[j], float(s)) for s, j in zip(v, idx)])
    return out


def captioner_folder(captioner_dir: str | Path | None) -> Path | None:
    """The captioner folder to use: the one given, else the bundled one, else None (no captions)."""
    if captioner_dir is None and not io.bundled_names("captioner"):
        return None
    folder = io.resolve(captioner_dir, "captioner")
    if not (folder / io.CONFIG_FILE).is_file():
        raise AttnGANError(f"{folder} is not a captioner folder (no {io.CONFIG_FILE})")
    return folder


def _caption(images, captioner_dir: Path | None, device) -> list[str | None]:
    """The captioner's sentence for each image, read as a saved PNG would be (8 bits)."""
    if captioner_dir is None:
        return [None] * images.shape[0]
    return Captioner.from_pretrained(captioner_dir, device=str(device))(quantize(images))


def _attributes_back(prompt: str, caption: str | None) -> dict[str, bool]:
    """For each attribute the prompt states (SynthBirds grammar): does the caption state it too?"""
    if caption is None:
        return {}
    got = caption_attributes(caption)
    return {k: got.get(k) == v for k, v in caption_attributes(prompt).items()}


def _colours_found(prompt: str, retrieved: list[str]) -> bool | None:
    want = {k: v for k, v in caption_attributes(prompt).items() if k in ("wing", "belly")}
    if not want:
        return None
    for text in retrieved:
        got = caption_attributes(text)
        if all(got.get(k) == v for k, v in want.items()):
            return True
    return False


def training_plots(damsm_dir: Path, gan_dir: Path) -> dict[str, bytes]:
    plots = {}
    rows = _jsonl(damsm_dir / "metrics.jsonl")
    if rows:
        x = [r["epoch"] for r in rows]
        plots["DAMSM losses"] = line_plot(
            {k: (x, [r[k] for r in rows]) for k in ("train_w_loss0", "train_s_loss0", "val_w_loss0", "val_s_loss0")
             if k in rows[0]}, "DAMSM losses", "epoch")
        plots["DAMSM retrieval"] = line_plot(
            {k: (x, [r[k] for r in rows]) for k in ("r_precision", "t2i_recall@1") if k in rows[0]},
            "DAMSM retrieval on the test split", "epoch")
    rows = _jsonl(gan_dir / "log.jsonl")
    if rows:
        x = [r["kimg"] for r in rows]
        keys = [k for k in rows[0] if k.startswith(("d_loss", "g_adv", "damsm_", "kl"))]
        plots["AttnGAN losses"] = line_plot({k: (x, [r.get(k, float("nan")) for r in rows]) for k in keys},
                                            "AttnGAN losses", "kimg")
    return plots


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
