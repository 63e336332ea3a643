"""`run_demo`: both parts of the demo (the shipped model, then one trained from scratch) and the
report that shows them side by side."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from attngan import AttnGANError, io
from attngan.apps.demo.pieces import (Clock, bundled_eval_dirs, damsm_snapshot, data_command, data_words,
                                      evaluate_model, prepare_data, shipped_eval, train_your_own)
from attngan.apps.demo.prompts import captioner_folder, prompt_results, stage_sizes, training_plots
from attngan.apps.demo.settings import DAMSM_EPOCHS, KIMG, classes_for
from attngan.commandline import quoted
from attngan.model_card import card_settings, export_bundle
from attngan.report import Report, Section, comparison_rows, write_report


def run_demo(out: str | Path = "runs/demo", *, damsm_epochs: int = DAMSM_EPOCHS, kimg: float = KIMG,
             device: str = "auto", seed: int = 0, model_dir: str | Path | None = None,
             eval_damsm_dir: str | Path | None = None, oracle_dir: str | Path | None = None,
             images: int | None = None, classes: int | None = None, size: int | None = None,
             num_eval: int | None = None, progress: bool = True, bundle: str | Path | None = None,
             bundle_name: str = "synthbirds-tiny", captioner_dir: str | Path | None = None) -> Path:
    """Both parts and the report; returns the path of report.html.

    `model_dir` is the shipped model (default: the default bundled one); `images`, `classes`,
    `size` override the data set its card names, `num_eval` its number of evaluation images.
    """
    if damsm_epochs < 1:
        raise AttnGANError("--damsm-epochs must be at least 1")
    if not kimg > 0:
        raise AttnGANError("--kimg must be positive")
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = io.resolve(model_dir, "generator")  # a folder, a bundled model's name, or None: the default
    if eval_damsm_dir is None or oracle_dir is None:
        shipped_damsm, shipped_oracle = bundled_eval_dirs()
        eval_damsm_dir = eval_damsm_dir or shipped_damsm
        oracle_dir = oracle_dir or shipped_oracle
    eval_damsm_dir, oracle_dir = Path(eval_damsm_dir), Path(oracle_dir)
    captioner_dir = captioner_folder(captioner_dir)
    # Checked before the data is rendered, which takes minutes.
    if not (damsm_snapshot(eval_damsm_dir) / io.CONFIG_FILE).is_file():
        raise AttnGANError(f"{eval_damsm_dir} is not a DAMSM folder (no {io.CONFIG_FILE} in it or in best/)")
    if not (oracle_dir / io.CONFIG_FILE).is_file():
        raise AttnGANError(f"{oracle_dir} is not an oracle folder (no {io.CONFIG_FILE})")
    name, data_spec, ev = card_settings(model_dir)
    if images is not None:
        data_spec["images"] = images
        data_spec["classes"] = classes if classes is not None else classes_for(images)
    elif classes is not None:
        data_spec["classes"] = classes
    if size is not None:
        data_spec["size"] = size
    if num_eval is not None:
        ev["num_images"] = num_eval
    if captioner_dir is not None and "roundtrip" not in ev["metrics"]:
        ev["metrics"].append("roundtrip")

    # Part 1: the shipped model on the data it was trained on.
    shipped_cmds: list[str] = []
    timings: dict[str, float] = {}
    clock = Clock()
    data_dir = prepare_data(out / "data", data_spec, shipped_cmds, progress)
    timings["data"] = clock.lap("data")
    metrics = evaluate_model(model_dir, data_dir, eval_damsm_dir, oracle_dir, ev, device,
                             out / "shipped", shipped_cmds, captioner_dir=captioner_dir)
    timings["evaluation"] = clock.lap("shipped model evaluation")
    prompts = prompt_results(model_dir, data_dir, eval_damsm_dir, device, seed, captioner_dir)
    timings["prompts"] = clock.lap("shipped model prompts")
    stages = stage_sizes(model_dir)
    where = ("bundled with the package" if model_dir == _default_model() else "in") + f" {model_dir}"
    pieces = ("the evaluation DAMSM and SynthBirds oracle shipped with the package"
              if (eval_damsm_dir, oracle_dir) == shipped_eval() else
              f"the evaluation DAMSM in {eval_damsm_dir} and the SynthBirds oracle in {oracle_dir}")
    shipped = Section(
        "shipped", f"The shipped model: {name}",
        f"The model {where}: {len(stages)} stages ({' → '.join(f'{s} px' for s in stages)}), evaluated on "
        f"the SynthBirds set it was trained on ({data_words(data_spec)}) with {ev['num_images']} images "
        f"from test captions of species it never saw, scored with {pieces}.",
        prompts, metrics, shipped_cmds, dict(timings), {})

    # Part 2: the tiny preset from scratch on the same data, for a fixed amount of work.
    own = train_your_own(out / "own", data_dir, eval_damsm_dir, oracle_dir, damsm_epochs=damsm_epochs,
                         kimg=kimg, seed=seed, ev=ev, device=device, progress=progress,
                         captioner_dir=captioner_dir)
    clock.mark()
    own_prompts = prompt_results(own["model_dir"], data_dir, eval_damsm_dir, device, seed, captioner_dir)
    own["timings"]["prompts"] = clock.lap("own model prompts")
    own_stages = stage_sizes(own["model_dir"])
    own_section = Section(
        "own", "Train your own",
        f"The tiny preset ({' → '.join(f'{s} px' for s in own_stages)}) trained from scratch on this "
        f"machine on the same data: the DAMSM for {damsm_epochs} epoch{'s' if damsm_epochs != 1 else ''}, "
        f"then the AttnGAN for {kimg:g} "
        f"kimg (thousand training images), seed {seed}. The budget is work, not time: a busy machine "
        f"takes longer and gets the same numbers. Evaluated exactly as the shipped model.",
        own_prompts, own["metrics"], own["commands"], dict(own["timings"]),
        training_plots(own["damsm_dir"], own["gan_dir"]))

    total = round(time.time() - t0, 1)
    report = Report(
        title="AttnGAN demo on SynthBirds",
        summary=("AttnGAN (text → image, refined stage by stage, each stage attending over the words) on "
                 "SynthBirds, the embedded procedurally rendered bird set. First the model that ships "
                 "with the package, then one you trained just now. Metrics use captions of test species "
                 "never seen in training."),
        sections=[shipped, own_section], timings={"shipped model": round(sum(timings.values()), 1),
                                                  "your own": round(sum(own["timings"].values()), 1),
                                                  "total": total})
    path = write_report(report, out)
    if bundle is not None:
        folder = export_bundle(own["model_dir"], bundle, own["metrics"],
                               [data_command(data_dir, data_spec)] + own["commands"], seed, own["timings"],
                               name=bundle_name, data=data_spec, eval_settings=ev)
        print(f"[demo] bundled model written to {folder}")
    _print_summary(report, path, time.time() - t0)
    return path


def _default_model() -> Path | None:
    try:
        return io.bundled_dir("generator")
    except AttnGANError:
        return None


def _print_summary(report: Report, path: Path, seconds: float) -> None:
    print()
    titles = [s.title for s in report.sections]
    heads = {"shipped": "shipped model", "own": "your own"}
    print(f"{'metric':<34} " + " ".join(f"{heads.get(s.key, s.key):>18}" for s in report.sections))
    for row in comparison_rows(report.sections):  # the report's table, binding's per-part rows included
        print(f"{row['metric']:<34} " + " ".join(f"{row[t]:>18}" for t in titles))
    print(f"\nreport: {path.resolve()}  ({seconds / 60:.1f} min)")
    print(f"reproduce: {quoted(sys.argv)}")
