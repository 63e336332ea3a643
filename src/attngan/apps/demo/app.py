"""`run_demo`: the demo's parts (the shipped model, then one trained from scratch, side by side;
then the shipped scenes model) and the report that shows them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from attngan import AttnGANError, io
from attngan.apps.demo.pieces import (Clock, bundled_eval_dirs, damsm_snapshot, data_command, data_words,
                                      evaluate_model, prepare_data, shipped_eval, train_your_own)
from attngan.apps.demo.prompts import captioner_folder, prompt_results, stage_sizes, training_plots
from attngan.apps.demo.scenes import scene_pieces, scenes_part
from attngan.apps.demo.settings import DAMSM_EPOCHS, KIMG, SCENES_PER_SPLIT, classes_for
from attngan.commandline import quoted
from attngan.model_card import card_settings, export_bundle
from attngan.report import Report, Section, comparison_rows, seen_novel_rows, write_report


def run_demo(out: str | Path = "runs/demo", *, damsm_epochs: int = DAMSM_EPOCHS, kimg: float = KIMG,
             device: str = "auto", seed: int = 0, model_dir: str | Path | None = None,
             eval_damsm_dir: str | Path | None = None, oracle_dir: str | Path | None = None,
             images: int | None = None, classes: int | None = None, size: int | None = None,
             num_eval: int | None = None, progress: bool = True, bundle: str | Path | None = None,
             bundle_name: str = "synthbirds-tiny", captioner_dir: str | Path | None = None,
             scenes: bool = True, scenes_model_dir: str | Path | None = None,
             scenes_captioner_dir: str | Path | None = None, scenes_judge_dir: str | Path | None = None,
             scenes_per_split: int = SCENES_PER_SPLIT) -> Path:
    """Every part and the report; returns the path of report.html.

    `model_dir` is the shipped model (default: the default bundled one); `images`, `classes`,
    `size` override the data set its card names, `num_eval` its number of evaluation images.
    `scenes` adds the scenes part (apps/demo/scenes.py): `scenes_model_dir`, `scenes_captioner_dir`
    and `scenes_judge_dir` default to the bundled ones, `scenes_per_split` is its number of test
    prompts of each kind (seen, novel).
    """
    if damsm_epochs < 1:
        raise AttnGANError("--damsm-epochs must be at least 1")
    if not kimg > 0:
        raise AttnGANError("--kimg must be positive")
    # Checked before anything is written or rendered.
    scene_setup = (scene_pieces(scenes_model_dir, scenes_captioner_dir, scenes_judge_dir, scenes_per_split)
                   if scenes else None)
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

    # Part 3: the shipped scenes model on the paper's MS-COCO sentences; nothing is trained.
    scene_section = None
    if scene_setup is not None:
        scene_section = scenes_part(out / "scenes", scene_setup, seed=seed, device=device, progress=progress)
        for remark in scene_section.remarks:
            print(f"[demo] {remark}", flush=True)
    part_times = {"shipped model": round(sum(timings.values()), 1),
                  "your own": round(sum(own["timings"].values()), 1)}
    if scene_section is not None:
        part_times["scenes"] = round(sum(scene_section.section.timings.values()), 1)
    scenes_shown = scene_section is not None and bool(scene_section.section.prompts)

    total = round(time.time() - t0, 1)
    report = Report(
        title="AttnGAN demo on SynthBirds" + (" and SynthScenes" if scenes_shown else ""),
        summary=("AttnGAN (text → image, refined stage by stage, each stage attending over the words) on "
                 "SynthBirds, the embedded procedurally rendered bird set. First the model that ships "
                 "with the package, then one you trained just now. Metrics use captions of test species "
                 "never seen in training."
                 + (" Then the shipped SynthScenes model on the paper's MS-COCO sentences, and its "
                    "metrics for compositions seen in training and novel ones." if scenes_shown else "")),
        sections=[shipped, own_section], timings={**part_times, "total": total}, scenes=scene_section)
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
    if report.scenes is not None and report.scenes.section.metrics:
        print(f"\n{report.scenes.section.title}")
        print(f"{'metric':<44} {'all':>14} {'seen':>9} {'novel':>9}")
        for row in seen_novel_rows(report.scenes.section.metrics):
            print(f"{row['metric'][:44]:<44} {row['all']:>14} {row['seen']:>9} {row['novel']:>9}")
    print(f"\nreport: {path.resolve()}  ({seconds / 60:.1f} min)")
    print(f"reproduce: {quoted(sys.argv)}")
