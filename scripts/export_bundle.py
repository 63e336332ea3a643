"""Write a trained model folder as a bundled model: half-precision weights (BatchNorm statistics stay
float32) and a model card holding its `attngan eval` report, the commands that made it, its data set
and its evaluation protocol (what `attngan demo` reads back from a shipped model).

    python scripts/export_bundle.py --model runs/b128/attngan/model --report runs/b128/eval.json \
        --commands runs/b128/commands.txt --name synthbirds-128 \
        --data '{"images": 11788, "classes": 884, "size": 256, "seed": 0}' \
        --out src/attngan/assets/synthbirds-128

`--commands` is a text file with one command per line (lines starting with # are kept as notes).
The evaluation settings (number of images, seed, metrics) are read from the report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the trained model folder (a run's model/)")
    p.add_argument("--report", required=True, help="its `attngan eval --out` JSON report")
    p.add_argument("--commands", required=True, help="text file: the commands that made the model")
    p.add_argument("--name", required=True, help="the bundled model's name")
    p.add_argument("--data", default="{}", help="JSON: images, classes, size, seed of the data set")
    p.add_argument("--seed", type=int, default=0, help="the training seed")
    p.add_argument("--out", required=True, help="the bundle folder to write")
    args = p.parse_args()

    from attngan.metrics.report import report_rows
    from attngan.model_card import export_bundle

    report = json.loads(Path(args.report).read_text(encoding="utf-8"))
    # The card lists the metrics that ran, as its eval settings below do.
    rows = [row for row in report_rows(report) if row["name"] in report["results"]]
    commands = [line for line in Path(args.commands).read_text(encoding="utf-8").splitlines() if line.strip()]
    folder = export_bundle(Path(args.model), args.out, rows, commands, args.seed, {"note": "see MODEL.md"},
                  name=args.name, data=json.loads(args.data),
                  eval_settings={"num_images": report["num_images"], "seed": report["seed"],
                                 "metrics": list(report["results"])})
    print(f"bundled model written to {folder}")


if __name__ == "__main__":
    main()
