"""`attngan demo`: SynthBirds -> DAMSM -> AttnGAN -> images, attention, metrics, report.html.

The whole system on the embedded default within a wall-clock budget on 2 CPU cores. Each step
gets a share of the budget; the data set and every trained piece are cached in the output folder,
so running the demo again reuses them (delete the folder for a fresh run).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from attngan.config import Config, preset
from attngan.errors import AttnGANError

PROMPTS = [
    "a bird with wings that are black and a white belly",
    "a bird with wings that are blue and a red belly",
    "a bird with wings that are red and a yellow belly",
]
MORE_PROMPTS = [
    "a small bird with a red crown and a short pointed bill",
    "this bird has wings that are green and a yellow belly",
    "a bird with a white belly, grey wings and a black crown",
]

# Shares of the budget (the rest goes to evaluation and the report).
SHARES = {"data": 0.07, "damsm": 0.18, "eval_damsm": 0.08, "gan": 0.43, "oracle": 0.15}
EVAL_RESERVE_S = 30  # evaluation and the report take seconds at the demo's sizes


def demo_config(seed: int = 0) -> Config:
    cfg = preset("tiny")
    cfg.seed = seed
    cfg.data.workers = 0  # two cores: workers would compete with the training process
    cfg.data.cache = True  # decode each JPEG once, not once per epoch (same pixels, tested)
    return cfg


def data_size_for(minutes: float) -> int:
    # 6,000 images (450 species) for 10 minutes: rendering takes ~30 s on two cores at 128 px, and
    # more species generalise better to the unseen test species; fewer for short budgets (tests).
    return int(max(200, min(6000, 600 * minutes)))


def classes_for(n_images: int) -> int:
    # The generator's default (about 13 images per species), and at least 12 species so that a
    # tiny test budget still has a class-disjoint split with several test species.
    from attngan.data.synth_birds import default_classes

    return max(12, default_classes(n_images))


def run_demo(out: str | Path = "runs/demo", minutes: float = 10.0, device: str = "auto",
             seed: int = 0, images: int | None = None, progress: bool = True,
             bundle: str | Path | None = None) -> Path:
    from attngan.data.synth_birds import generate_synth_birds
    from attngan.training.damsm_loop import train_damsm
    from attngan.training.gan_loop import train_gan

    if minutes <= 0:
        raise AttnGANError("--minutes must be positive")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings: dict[str, float] = {}
    budget = minutes * 60
    cfg = demo_config(seed)
    n_images = images or data_size_for(minutes)
    data_dir = out / "data"
    commands: list[str] = []

    def run_step(command: str, folder: Path, trained: bool, train, settings: str = "resolved_config.json"):
        # A piece trained before this run is recorded as reused, not with the demo's budget.
        if trained:
            commands.append(f"# {folder}: already trained, reused (its settings: {folder / settings})")
        else:
            commands.append(command)
            train()

    def step(name: str):
        timings[name] = max(0.0, round(time.time() - t0 - sum(timings.values()), 1))
        print(f"[demo] {name} done in {timings[name]:.0f} s (total {time.time() - t0:.0f} s of {budget:.0f} s)",
              flush=True)

    # Data.
    print(f"[demo] SynthBirds: {n_images} images -> {data_dir}", flush=True)
    meta = _existing_data(data_dir, n_images, seed)
    if meta is None:
        generate_synth_birds(data_dir, images=n_images, classes=classes_for(n_images), size=128, seed=seed,
                             workers=2, overwrite=True, progress=progress)
    # What is on disk, which an earlier run may have rendered with other settings.
    classes, size = (meta["counts"]["classes"], meta["size"]) if meta else (classes_for(n_images), 128)
    commands.append(f"attngan synth-birds --out {data_dir} --images {n_images} --classes {classes} "
                    f"--size {size} --seed {seed}")
    step("data")

    # DAMSM (the generator's) and an independent evaluation DAMSM (other seed).
    damsm_dir, eval_damsm_dir = out / "damsm", out / "damsm_eval"
    damsm_min = budget * SHARES["damsm"] / 60
    run_step(f"attngan train-damsm --config tiny --data {data_dir} --out {damsm_dir} "
             f"--minutes {damsm_min:.2f} --seed {seed}", damsm_dir, (damsm_dir / "best").is_dir(),
             lambda: train_damsm(cfg, data_dir, damsm_dir, device=device, minutes=damsm_min, progress=progress))
    step("damsm")
    eval_cfg = demo_config(seed + 1)
    eval_min = budget * SHARES["eval_damsm"] / 60
    run_step(f"attngan train-damsm --config tiny --data {data_dir} --out {eval_damsm_dir} "
             f"--minutes {eval_min:.2f} --seed {seed + 1}", eval_damsm_dir, (eval_damsm_dir / "best").is_dir(),
             lambda: train_damsm(eval_cfg, data_dir, eval_damsm_dir, device=device, minutes=eval_min,
                                 progress=progress))
    step("eval_damsm")

    # AttnGAN.
    gan_dir = out / "attngan"
    # The GAN gets whatever the earlier steps left, less the oracle's share and the evaluation.
    left_s = budget - (time.time() - t0) - budget * SHARES["oracle"] - EVAL_RESERVE_S
    gan_min = max(budget * SHARES["gan"], left_s) / 60
    cfg.train.minutes = gan_min
    cfg.train.total_kimg = 10_000  # the time budget decides

    def train_gan_once():
        train_gan(cfg, data_dir, damsm_dir, gan_dir, device=device, progress=progress)
        (gan_dir / "done").write_text("finished\n")

    run_step(f"attngan train --config tiny --data {data_dir} --damsm {damsm_dir} --out {gan_dir} "
             f"--minutes {gan_min:.2f} --kimg 10000 --seed {seed}", gan_dir,
             (gan_dir / "model" / "config.json").is_file() and (gan_dir / "done").is_file(), train_gan_once)
    step("attngan")

    # Oracle for binding / IS / FID on SynthBirds.
    oracle_dir = out / "oracle"
    oracle_min = budget * SHARES["oracle"] / 60
    run_step(f"attngan train-oracle --data {data_dir} --out {oracle_dir} --minutes {oracle_min:.2f}",
             oracle_dir, (oracle_dir / "config.json").is_file(),
             lambda: _train_oracle(data_dir, oracle_dir, oracle_min, seed), settings="config.json")
    step("oracle")

    # Evaluation and report.
    model_dir = gan_dir / "model"
    n_eval = 400 if minutes >= 5 else 64
    commands.append(f"attngan eval --model {model_dir} --data {data_dir} --metrics r_precision,binding,localisation,is,fid_oracle "
                    f"--eval-damsm {eval_damsm_dir} --oracle {oracle_dir} --num-images {n_eval} "
                    f"--out {out / 'eval.json'}")
    metrics = _evaluate(model_dir, data_dir, eval_damsm_dir, oracle_dir, n_eval, device, seed)
    report = build_report(model_dir, data_dir, eval_damsm_dir, damsm_dir, gan_dir, metrics, timings,
                          commands, device, seed)
    step("evaluation")
    report.timings = dict(timings, total=round(time.time() - t0, 1))
    from attngan.report import write_report

    path = write_report(report, out)
    if bundle is not None:
        export_bundle(model_dir, bundle, metrics, commands, seed, report.timings)
    _print_summary(metrics, path, time.time() - t0)
    return path


def export_bundle(model_dir: Path, bundle: str | Path, metrics, commands, seed: int, timings) -> Path:
    """Write the model folder in half precision (BN statistics stay fp32) with its measurements."""
    from attngan.pipeline import AttnGANPipeline
    from attngan.training.checkpoint import save_model_folder

    pipe = AttnGANPipeline.from_pretrained(model_dir, device="cpu")
    card = {"name": "synthbirds-tiny", "seed": seed, "commands": commands, "timings_s": timings,
            "metrics": [{k: m.get(k) for k in ("name", "metric", "value", "std", "protocol", "n",
                                               "per_attribute", "swap_rate")} for m in metrics]}
    path = save_model_folder(bundle, pipe.config, pipe.vocab, pipe.generator, pipe.text_encoder,
                             pipe.image_encoder, half=True, extra={"model_card": card})
    print(f"[demo] bundled model written to {path}")
    return path


def _existing_data(data_dir: Path, n_images: int, seed: int) -> dict | None:
    """The manifest of a SynthBirds set already at data_dir with this seed and size, else None."""
    manifest = data_dir / "synth_birds.json"
    if not manifest.is_file():
        return None
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return meta if meta.get("seed") == seed and meta.get("counts", {}).get("images") == n_images else None


def _train_oracle(data_dir: Path, oracle_dir: Path, minutes: float, seed: int) -> None:
    from attngan.metrics.oracle import train_oracle

    train_oracle(data_dir, oracle_dir, minutes=minutes, seed=seed)


def _evaluate(model_dir, data_dir, eval_damsm_dir, oracle_dir, n_eval, device, seed) -> list[dict[str, Any]]:
    from attngan.metrics import evaluate

    return evaluate(model_dir=model_dir, data_dir=data_dir,
                    metrics=["r_precision", "binding", "localisation", "is", "fid_oracle"], num_images=n_eval,
                    splits=10,
                    eval_damsm=eval_damsm_dir, oracle=oracle_dir, device=device, seed=seed)


def build_report(model_dir, data_dir, eval_damsm_dir, damsm_dir, gan_dir, metrics, timings, commands,
                 device, seed):
    """Images and attention for the prompts, what an independent DAMSM retrieves for each."""
    from attngan.pipeline import AttnGANPipeline
    from attngan.report import PromptResult, Report
    from attngan.viz import png_bytes, to_pil, word_attention_figure

    pipe = AttnGANPipeline.from_pretrained(model_dir, device=device)
    prompts = PROMPTS + MORE_PROMPTS
    out = pipe(prompts, seed=seed)
    retr = _retrieve(out.images[-1], data_dir, eval_damsm_dir, pipe.device)
    results = []
    for i, caption in enumerate(prompts):
        size = 128
        stages = [png_bytes(to_pil(img[i]).resize((size, size))) for img in out.images]
        att = None
        if out.attention:
            att = png_bytes(word_attention_figure(out.images[-1][i], out.attention[-1][i], out.tokens[i],
                                                  size=96))
        found = _colours_found(caption, [c for c, _ in retr[i]])
        results.append(PromptResult(caption, stages, att, out.tokens[i], out.dropped[i], retr[i], found))
    plots = _plots(damsm_dir, gan_dir)
    summary = ("SynthBirds -> DAMSM -> AttnGAN (tiny preset, 32 -> 64 px) trained on this machine's CPU. "
               "Metrics use test-split captions of species never seen in training; retrieval uses a "
               "separately trained evaluation DAMSM.")
    return Report(title="AttnGAN demo on SynthBirds", summary=summary, prompts=results, metrics=metrics,
                  plots=plots, timings=timings, commands=commands)


def _retrieve(images, data_dir, eval_damsm_dir, device, top: int = 3):
    """For each image, the top test captions by the evaluation DAMSM's sentence similarity."""
    import torch
    import torch.nn.functional as F

    from attngan.data.dataset import TextImageDataset
    from attngan.training.damsm_loop import load_damsm

    cfg, vocab, te, ie = load_damsm(eval_damsm_dir, device)
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
        _, code = ie(images.to(device))
        sim = F.normalize(code.cpu(), dim=1) @ sent.T
    out = []
    for row in sim:
        v, idx = row.topk(top)
        out.append([(texts[j], float(s)) for s, j in zip(v, idx)])
    return out


def _colours_found(prompt: str, retrieved: list[str]) -> bool | None:
    from attngan.data.synth_birds import caption_attributes

    want = {k: v for k, v in caption_attributes(prompt).items() if k in ("wing", "belly")}
    if not want:
        return None
    for text in retrieved:
        got = caption_attributes(text)
        if all(got.get(k) == v for k, v in want.items()):
            return True
    return False


def _plots(damsm_dir: Path, gan_dir: Path) -> dict[str, bytes]:
    from attngan.report import line_plot

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


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _print_summary(metrics: list[dict[str, Any]], path: Path, seconds: float) -> None:
    from attngan.report import metric_rows

    print()
    print(f"{'metric':<34} {'value':>16}  protocol")
    for row in metric_rows(metrics):  # the report's table, binding's per-part rows included
        print(f"{row['metric']:<34} {row['value']:>16}  {row['protocol']}")
    print(f"\nreport: {path.resolve()}  ({seconds / 60:.1f} min)")
    print(f"reproduce: {' '.join(shlex.quote(a) for a in sys.argv)}")
