"""Does bf16 training still learn? The same short AttnGAN run in float32 and in bf16, side by side.

Both runs start from scratch with the same preset, seed, initial weights, data order, noise and
number of images (--kimg). One trains with train.amp=off (float32), the other with train.amp=bf16
forced: G, the Ds and the frozen DAMSM image encoder under bf16 autocast even on a CPU that only
emulates bf16 (there it is slower than float32; `train.amp=auto` would not pick it), while the
losses, softmaxes, KL and DAMSM similarities stay float32. Printed for each run: the loss terms
averaged over the first and the last tenth of the logged intervals, NaN/inf steps and minutes, and
with --eval-damsm and/or --oracle the EMA generator's R-precision and SynthBirds attribute binding
(attngan.metrics.evaluate on the test split).

    python benchmarks/amp_learns.py --data DATA --damsm DAMSM_RUN [--preset synthbirds-128]
        [--kimg 10] [--seed 0] [--eval-damsm DIR] [--oracle DIR] [--num-images 2000]
        [--out runs/amp_learns] [--reuse] [--set KEY=VALUE ...]

Without --data and --damsm the script first renders a tiny SynthBirds set and trains a one-epoch
DAMSM under --out: a check that the script runs, far too small to say anything about learning.
The two runs go one after the other in this process; their minutes are comparable only on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

MODES = (("float32", "off"), ("bf16", "bf16"))
# Logged terms shown, as (label, how to get it from one log record).
TERMS = (
    ("D loss (sum of stages)", lambda r: _sum(r, "d_loss")),
    ("G adversarial (sum)", lambda r: _sum(r, "g_adv")),
    ("DAMSM words (x lambda)", lambda r: r.get("damsm_words")),
    ("DAMSM sentence (x lambda)", lambda r: r.get("damsm_sent")),
    ("KL", lambda r: r.get("kl")),
    ("D(real) last stage", lambda r: _last_stage(r, "d_prob_real")),
    ("D(fake) last stage", lambda r: _last_stage(r, "d_prob_fake")),
)


def _sum(record: dict, prefix: str) -> float | None:
    values = [v for k, v in record.items() if k.startswith(prefix)]
    return sum(values) if values else None


def _last_stage(record: dict, prefix: str) -> float | None:
    keys = sorted((k for k in record if k.startswith(prefix)), key=lambda k: int(k[len(prefix):] or 0))
    return record[keys[-1]] if keys else None


def _mean(values: list) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else math.nan


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="data folder (SynthBirds / CUB layout)")
    p.add_argument("--damsm", default=None, help="DAMSM run folder the GAN trains against")
    p.add_argument("--preset", default="synthbirds-128", choices=("tiny", "synthbirds-128"))
    p.add_argument("--kimg", type=float, default=10.0, help="thousand training images per run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=None, help="train.batch_size (default: the preset's)")
    p.add_argument("--workers", type=int, default=None, help="data.workers (default: the preset's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config override, applied to both runs")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/amp_learns", help="folder for the two runs (float32/, bf16/)")
    p.add_argument("--reuse", action="store_true",
                   help="continue (or just re-evaluate) runs already in --out instead of refusing")
    p.add_argument("--eval-damsm", default=None, help="DAMSM run folder for R-precision")
    p.add_argument("--oracle", default=None, help="SynthBirds oracle folder for attribute binding")
    p.add_argument("--num-images", type=int, default=2000, help="generated images per evaluation")
    p.add_argument("--progress", action="store_true", help="show the training progress bars")
    args = p.parse_args(argv)
    if (args.data is None) != (args.damsm is None):
        p.error("give both --data and --damsm, or neither (a tiny smoke-test set is then built)")
    if not (math.isfinite(args.kimg) and args.kimg > 0):
        p.error(f"--kimg must be greater than 0, got {args.kimg}")
    return args


def smoke_inputs(out: Path, device: str) -> tuple[Path, Path]:
    """A 48-image SynthBirds set and a DAMSM trained on it for one epoch (reused when present)."""
    from attngan.config import preset as load_preset
    from attngan.data.synth_birds import generate_synth_birds
    from attngan.training.damsm_loop import train_damsm

    data, damsm = out / "smoke-synthbirds", out / "smoke-damsm"
    if not (data / "synth_birds.json").is_file():
        print(f"rendering a tiny SynthBirds set into {data} (smoke test only)")
        generate_synth_birds(data, images=48, classes=8, size=128, seed=0, progress=False, overwrite=True)
    if not (damsm / "best" / "config.json").is_file():
        print(f"training a one-epoch DAMSM into {damsm} (smoke test only)")
        cfg = load_preset("tiny")  # both presets train against the tiny DAMSM
        cfg.data.workers, cfg.damsm.batch_size, cfg.damsm.snapshot_epochs = 0, 8, 1
        train_damsm(cfg, data, damsm, device=device, max_epochs=1, progress=False, eval_items=64)
    return data, damsm


def run_config(args, amp: str):
    from attngan.commands._common import parse_overrides
    from attngan.config import load_config, validate

    cfg = load_config(args.preset, parse_overrides(args.overrides))
    cfg.seed = args.seed
    if args.batch is not None:
        cfg.train.batch_size = args.batch
    if args.workers is not None:
        cfg.data.workers = args.workers
    t = cfg.train
    t.amp = amp
    t.total_kimg, t.minutes = args.kimg, 0.0
    # About 40 log records per run (at least one per step), one sample grid and one snapshot.
    t.log_kimg = max(args.kimg / 40, t.batch_size / 1000)
    t.sample_kimg = t.snapshot_kimg = args.kimg
    return validate(cfg)


def train_both(args, data: Path, damsm: Path, out: Path) -> dict[str, dict]:
    from attngan.training.gan_loop import train_gan

    results = {}
    for name, amp in MODES:
        run_dir = out / name
        if run_dir.exists() and any(run_dir.iterdir()) and not args.reuse:
            sys.exit(f"{run_dir} already exists: pass --reuse to continue it, or choose another --out")
        cfg = run_config(args, amp)
        print(f"\n== {name}: train.amp={amp}, {args.preset}, {args.kimg:g} kimg, batch "
              f"{cfg.train.batch_size}, seed {cfg.seed} -> {run_dir}")
        results[name] = train_gan(cfg, data, damsm, run_dir, device=args.device, progress=args.progress)
    return results


def read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarise(records: list[dict]) -> dict[str, tuple[float, float]]:
    """Each term's mean over the first and over the last tenth of the log (at least one record)."""
    k = max(1, len(records) // 10)
    head, tail = records[:k], records[-k:]
    return {label: (_mean([get(r) for r in head]), _mean([get(r) for r in tail])) for label, get in TERMS}


def evaluate_runs(args, data: Path, out: Path) -> dict[str, dict[str, str]]:
    from attngan.metrics import evaluate
    from attngan.metrics.report import report_rows

    metrics = (["r_precision"] if args.eval_damsm else []) + (["binding"] if args.oracle else [])
    scores: dict[str, dict[str, str]] = {}
    for name, _ in MODES:
        print(f"evaluating {name} ({', '.join(metrics)}, {args.num_images} images)")
        rows = report_rows(evaluate(data, model_dir=out / name / "model", metrics=metrics,
                                    num_images=args.num_images, eval_damsm=args.eval_damsm, oracle=args.oracle,
                                    device=args.device, seed=0, progress=False, strict=False))
        for row in rows:
            value, std = row.get("value"), row.get("std")
            if value is None:
                text = f"n/a ({row.get('note') or row.get('protocol', '')})"[:60]
            else:
                text = f"{value:.1f}" + (f" ± {std:.1f}" if std is not None else "")
            scores.setdefault(f"{row['metric']} (%)", {})[name] = text
            if row.get("name") == "binding" and row.get("swap_rate") is not None:
                scores.setdefault("binding swap rate (%)", {})[name] = f"{row['swap_rate']:.1f}"
    return scores


def report(args, results: dict[str, dict], logs: dict[str, list[dict]], scores: dict) -> None:
    names = [n for n, _ in MODES]
    summaries = {n: summarise(logs[n]) for n in names}
    w = 26
    print(f"\n{args.preset}, {args.kimg:g} kimg from scratch, seed {args.seed}: float32 (train.amp=off) "
          f"vs bf16 (train.amp=bf16, forced)")
    print(f"{'':<27}" + "".join(f"{n + ' first -> last':>{w}}" for n in names))
    for label, _ in TERMS:
        cells = []
        for n in names:
            first, last = summaries[n][label]
            cells.append(f"{first:.4g} -> {last:.4g}" if not math.isnan(first) else "n/a")
        print(f"{label:<27}" + "".join(f"{c:>{w}}" for c in cells))
    print(f"{'log records':<27}" + "".join(f"{len(logs[n]):>{w}}" for n in names))
    print(f"{'NaN/inf steps':<27}" + "".join(f"{results[n]['bad_steps']:>{w}}" for n in names))
    print(f"{'images seen':<27}" + "".join(f"{results[n]['images_seen']:>{w}}" for n in names))
    log_kimg = run_config(args, "off").train.log_kimg
    minutes = {n: sum(r.get("sec_per_kimg", 0.0) for r in logs[n]) * log_kimg / 60 for n in names}
    print(f"{'training minutes (log)':<27}" + "".join(f"{minutes[n]:>{w}.2f}" for n in names))
    for label, per_run in scores.items():
        print(f"{label:<27}" + "".join(f"{per_run.get(n, 'n/a'):>{w}}" for n in names))
    print("first/last: mean over the first and the last tenth of the logged intervals; bf16 on a CPU "
          "without native bf16 is emulated, so its minutes are not its speed where bf16 is native.")


def main(argv=None) -> int:
    args = parse_args(argv)
    from attngan.perf import configure_allocator_env

    configure_allocator_env()  # as `attngan train` does, before torch is imported
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.data is None:
        data, damsm = smoke_inputs(out, args.device)
    else:
        data, damsm = Path(args.data), Path(args.damsm)
    results = train_both(args, data, damsm, out)
    logs = {n: read_log(out / n) for n, _ in MODES}
    scores = evaluate_runs(args, data, out) if (args.eval_damsm or args.oracle) else {}
    report(args, results, logs, scores)
    summary = {"preset": args.preset, "kimg": args.kimg, "seed": args.seed,
               "runs": {n: {"amp": amp, **results[n], "terms": summarise(logs[n])} for n, amp in MODES},
               "scores": scores}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
