"""The paper's claims on SynthBirds: does the DAMSM loss (lambda) and the attentional stage help?

Trains matched `tiny` AttnGAN runs, same data, same DAMSM, same wall-clock budget and seeds:
  full      lambda = 5, two stages (32 px sentence stage + 64 px word-attention stage)
  lambda0   lambda = 0 (no DAMSM loss), two stages
  no-attn   lambda = 5, the 32 px sentence stage only (no attentional stage)
and scores each with R-precision (an independently trained evaluation DAMSM) and the SynthBirds
oracle's colour binding, writing a Markdown + JSON table. Finished pieces are cached in --out, so
an interrupted run continues where it stopped.

    python benchmarks/ablation_synth.py --out runs/ablation --gan-minutes 6 --seeds 0 1
    python benchmarks/ablation_synth.py --quick     # a smoke run in a few minutes
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

VARIANTS = {
    "full": {"train": {"damsm_lambda": 5.0}},
    "lambda0": {"train": {"damsm_lambda": 0.0}},
    "no-attn": {"train": {"damsm_lambda": 5.0}, "data": {"branch_num": 1}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--damsm-minutes", type=float, default=6.0)
    ap.add_argument("--gan-minutes", type=float, default=6.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--num-images", type=int, default=500, help="generated images scored per run")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="tiny budgets: checks the script, not the claims")
    args = ap.parse_args()
    if args.quick:
        args.images, args.damsm_minutes, args.gan_minutes, args.num_images = 300, 0.5, 0.3, 64

    import torch

    from attngan.config import apply_overrides
    from attngan.data.synth_birds import generate_synth_birds
    from attngan.apps.demo.settings import demo_config
    from attngan.metrics import evaluate
    from attngan.training.oracle_loop import train_oracle
    from attngan.metrics.report import report_rows
    from attngan.training.damsm_loop import train_damsm
    from attngan.training.gan_loop import train_gan

    torch.set_num_threads(2)
    out = Path(args.out)
    data = out / "data"
    t0 = time.time()
    if not (data / "synth_birds.json").is_file():
        generate_synth_birds(data, images=args.images, size=128, seed=0, workers=2,
                             overwrite=True)
    damsm, eval_damsm, oracle = out / "damsm", out / "damsm_eval", out / "oracle"
    if not (damsm / "best").is_dir():
        train_damsm(demo_config(0), data, damsm, minutes=args.damsm_minutes)
    if not (eval_damsm / "best").is_dir():
        train_damsm(demo_config(1), data, eval_damsm, minutes=args.damsm_minutes)
    if not (oracle / "config.json").is_file():
        train_oracle(data, oracle, minutes=max(1.0, args.damsm_minutes / 2), seed=0)

    rows = []
    for variant in args.variants:
        for seed in args.seeds:
            run = out / f"{variant}_seed{seed}"
            result_file = run / "result.json"
            if not result_file.is_file():
                cfg = apply_overrides(demo_config(seed), VARIANTS[variant])
                cfg.train.minutes = args.gan_minutes
                cfg.train.total_kimg = 10_000
                train_gan(cfg, data, damsm, run)
                metrics = report_rows(evaluate(data, model_dir=run / "model", metrics=["r_precision", "binding"],
                                               num_images=args.num_images, splits=10, eval_damsm=eval_damsm,
                                               oracle=oracle, seed=seed, strict=False))
                result_file.write_text(json.dumps(metrics, indent=2))
            metrics = json.loads(result_file.read_text())
            rows.append({"variant": variant, "seed": seed, **_pick(metrics)})
            print(rows[-1], flush=True)

    table = _table(rows)
    (out / "ablation.md").write_text(table)
    (out / "ablation.json").write_text(json.dumps(rows, indent=2))
    print(table)
    print(f"({(time.time() - t0) / 60:.1f} min; tables in {out}/ablation.md and ablation.json)")


def _pick(metrics: list[dict]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for m in metrics:
        if m.get("name") == "r_precision":
            out["r_precision"] = m.get("value")
        if m.get("name") == "binding":
            out["binding_all"] = m.get("value")
            for part in ("wing", "belly"):
                out[f"{part}_acc"] = (m.get("per_attribute") or {}).get(part)
            out["swap_rate"] = m.get("swap_rate")
    return out  # percentages


def _table(rows: list[dict]) -> str:
    keys = [k for k in ("r_precision", "binding_all", "wing_acc", "belly_acc", "swap_rate")
            if any(k in r for r in rows)]
    lines = ["| variant | seeds | " + " | ".join(f"{k} (%)" for k in keys) + " |", "|---|---|" + "---|" * len(keys)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == variant]
        cells = []
        for k in keys:
            vals = [r[k] for r in rs if r.get(k) is not None]
            if not vals:
                cells.append("n/a")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.1f}")
            else:
                cells.append(f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}")
        lines.append(f"| {variant} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
