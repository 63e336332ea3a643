"""`attngan demo`: the shipped model, then one trained from scratch, ending in report.html.

Part 1 renders the SynthBirds set the default bundled model was trained on and evaluates that
model with the evaluation DAMSM and oracle shipped beside it; part 2 trains the `tiny` preset from
scratch on the same data for a fixed amount of work (DAMSM epochs, AttnGAN kimg) and evaluates it
the same way. No step looks at the clock, so a busy machine takes longer but reports the same
numbers. The data set, every trained piece and every evaluation are cached in the output folder;
a later run with the same settings reuses them and says so (delete the folder for a fresh run).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from attngan.config import Config, preset
from attngan.data.synth_birds import MOTIVATING_PROMPTS
from attngan.errors import AttnGANError
from attngan.metrics.registry import default_metrics

PROMPTS = list(MOTIVATING_PROMPTS)  # the three motivating prompts
MORE_PROMPTS = [
    "a small bird with a red crown and a short pointed bill",
    "this bird has wings that are green and a yellow belly",
    "a bird with a white belly, grey wings and a black crown",
]

# Work for "train your own", sized so that `make demo` takes about 14 minutes after the install on
# 2 AVX2 cores (docs/experiments.md): the tiny DAMSM's 4 epochs over the ~8,800 training images take
# 170-220 s (image cache included), and the tiny AttnGAN trains 43-60 images/s (float32).
DAMSM_EPOCHS = 4
KIMG = 15.0

# The SynthBirds set and the evaluation protocol of a model card that does not name its own: the
# registry's default metrics that the shipped evaluation DAMSM and oracle can run (no Inception
# weights ship; `roundtrip` is added below when a captioner is given).
DEFAULT_DATA = {"images": 11788, "classes": 884, "size": 256, "seed": 0}
DEFAULT_EVAL = {"num_images": 400, "seed": 0, "splits": 10,
                "metrics": list(default_metrics(given=("is_classifier", "damsm", "captions", "oracle", "generated",
                                                       "synth")))}

STAGE_DISPLAY_PX = 256  # every stage is shown this wide (nearest-neighbour), so stages line up
ATTENTION_TILE_PX = 128  # each word's heat map: large enough to see which part lit
ATTENTION_COLUMNS = 7   # tiles per row of an attention figure, so it fits the report's column
EVAL_ASSETS = Path(__file__).parent / "assets" / "synthbirds-eval"


def demo_config(seed: int = 0) -> Config:
    cfg = preset("tiny")
    cfg.seed = seed
    cfg.data.workers = 0  # two cores: workers would compete with the training process
    cfg.data.cache = True  # decode each JPEG once, not once per epoch (same pixels, tested)
    # float32 on every CPU: `auto` would train in bf16 where the CPU has it natively (faster), and
    # the demo's numbers would then depend on which CPU ran it.
    cfg.train.amp = cfg.damsm.amp = "off"
    return cfg


def classes_for(n_images: int) -> int:
    # The generator's default (about 13 images per species), and at least 12 species so that a
    # tiny set still has a class-disjoint split with several test species.
    from attngan.data.synth_birds import default_classes

    return max(12, default_classes(n_images))


def bundled_eval_dirs() -> tuple[Path, Path]:
    """The evaluation DAMSM and the SynthBirds oracle shipped with the package."""
    damsm, oracle = EVAL_ASSETS / "damsm_eval", EVAL_ASSETS / "oracle"
    missing = []
    if not (_damsm_snapshot(damsm) / "config.json").is_file():
        missing.append(f"an evaluation DAMSM in {damsm}")
    if not (oracle / "config.json").is_file():
        missing.append(f"a SynthBirds oracle in {oracle}")
    if missing:
        raise AttnGANError("this installation lacks the shipped evaluation pieces: expected "
                           + " and ".join(missing) + " (pass --eval-damsm DIR and --oracle DIR to use others)")
    return damsm, oracle


def card_settings(model_dir: str | Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(name, data, eval) from a model folder's card; what the card does not say takes the defaults."""
    model_dir = Path(model_dir)
    try:
        meta = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise AttnGANError(f"{model_dir}: no readable config.json ({e})") from None
    card = meta.get("model_card") or {}
    data = {k: (card.get("data") or {}).get(k, v) for k, v in DEFAULT_DATA.items()}
    ev = {k: (card.get("eval") or {}).get(k, v) for k, v in DEFAULT_EVAL.items()}
    ev["metrics"] = list(ev["metrics"])
    return str(card.get("name") or model_dir.name), data, ev


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
    from attngan.pipeline import resolve_model
    from attngan.report import Report, write_report

    if damsm_epochs < 1:
        raise AttnGANError("--damsm-epochs must be at least 1")
    if not kimg > 0:
        raise AttnGANError("--kimg must be positive")
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model(model_dir)  # a folder, a bundled model's name, or None: the default
    if eval_damsm_dir is None or oracle_dir is None:
        shipped_damsm, shipped_oracle = bundled_eval_dirs()
        eval_damsm_dir = eval_damsm_dir or shipped_damsm
        oracle_dir = oracle_dir or shipped_oracle
    eval_damsm_dir, oracle_dir = Path(eval_damsm_dir), Path(oracle_dir)
    captioner_dir = _captioner(captioner_dir)
    # Checked before the data is rendered, which takes minutes.
    if not (_damsm_snapshot(eval_damsm_dir) / "config.json").is_file():
        raise AttnGANError(f"{eval_damsm_dir} is not a DAMSM folder (no config.json in it or in best/)")
    if not (oracle_dir / "config.json").is_file():
        raise AttnGANError(f"{oracle_dir} is not an oracle folder (no config.json)")
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
    clock = _Clock()
    data_dir = prepare_data(out / "data", data_spec, shipped_cmds, progress)
    data_command = _data_command(data_dir, data_spec)
    timings["data"] = clock.lap("data")
    metrics = evaluate_model(model_dir, data_dir, eval_damsm_dir, oracle_dir, ev, device,
                             out / "shipped", shipped_cmds, captioner_dir=captioner_dir)
    timings["evaluation"] = clock.lap("shipped model evaluation")
    prompts = prompt_results(model_dir, data_dir, eval_damsm_dir, device, seed, captioner_dir)
    timings["prompts"] = clock.lap("shipped model prompts")
    stages = _stage_sizes(model_dir)
    where = ("bundled with the package" if model_dir == _default_model() else "in") + f" {model_dir}"
    pieces = ("the evaluation DAMSM and SynthBirds oracle shipped with the package"
              if (eval_damsm_dir, oracle_dir) == _shipped_eval() else
              f"the evaluation DAMSM in {eval_damsm_dir} and the SynthBirds oracle in {oracle_dir}")
    shipped = _section(
        "shipped", f"The shipped model: {name}",
        f"The model {where}: {len(stages)} stages ({' → '.join(f'{s} px' for s in stages)}), evaluated on "
        f"the SynthBirds set it was trained on ({_data_words(data_spec)}) with {ev['num_images']} images "
        f"from test captions of species it never saw, scored with {pieces}.",
        prompts, metrics, shipped_cmds, timings, {})

    # Part 2: the tiny preset from scratch on the same data, for a fixed amount of work.
    own = train_your_own(out / "own", data_dir, eval_damsm_dir, oracle_dir, damsm_epochs=damsm_epochs,
                         kimg=kimg, seed=seed, ev=ev, device=device, progress=progress,
                         captioner_dir=captioner_dir)
    clock.mark()
    own_prompts = prompt_results(own["model_dir"], data_dir, eval_damsm_dir, device, seed, captioner_dir)
    own["timings"]["prompts"] = clock.lap("own model prompts")
    own_stages = _stage_sizes(own["model_dir"])
    own_section = _section(
        "own", "Train your own",
        f"The tiny preset ({' → '.join(f'{s} px' for s in own_stages)}) trained from scratch on this "
        f"machine on the same data: the DAMSM for {damsm_epochs} epoch{'s' if damsm_epochs != 1 else ''}, "
        f"then the AttnGAN for {kimg:g} "
        f"kimg (thousand training images), seed {seed}. The budget is work, not time: a busy machine "
        f"takes longer and gets the same numbers. Evaluated exactly as the shipped model.",
        own_prompts, own["metrics"], own["commands"], own["timings"], _plots(own["damsm_dir"], own["gan_dir"]))

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
        export_bundle(own["model_dir"], bundle, own["metrics"], [data_command] + own["commands"], seed,
                      own["timings"], name=bundle_name, data=data_spec, eval_settings=ev)
    _print_summary(report, path, time.time() - t0)
    return path


class _Clock:
    """Seconds per step, printed as each one ends."""

    def __init__(self):
        self.last = time.time()

    def lap(self, what: str) -> float:
        now = time.time()
        took = round(now - self.last, 1)
        self.last = now
        print(f"[demo] {what} done in {took:.0f} s", flush=True)
        return took

    def mark(self) -> None:
        self.last = time.time()


def train_your_own(out_dir: str | Path, data_dir: str | Path, eval_damsm_dir: str | Path,
                   oracle_dir: str | Path, *, damsm_epochs: int = DAMSM_EPOCHS, kimg: float = KIMG,
                   seed: int = 0, ev: dict[str, Any] | None = None, device: str = "auto",
                   progress: bool = True, captioner_dir: str | Path | None = None) -> dict[str, Any]:
    """The `tiny` preset from scratch: DAMSM for `damsm_epochs` epochs, AttnGAN for `kimg` kimg,
    then evaluated. Returns metrics, commands, timings and the folders (damsm_dir, gan_dir, model_dir).

    Every stopping point is counted in work, so the result depends on the seed and the settings,
    never on how fast the machine happens to be.
    """
    from attngan.training.damsm_loop import train_damsm
    from attngan.training.gan_loop import train_gan

    out_dir, data_dir = Path(out_dir), Path(data_dir)
    ev = dict(DEFAULT_EVAL, **(ev or {}))
    data_key = _data_key(data_dir)
    commands: list[str] = []
    timings: dict[str, float] = {}
    clock = _Clock()
    sets = "--set data.workers=0 --set data.cache=true --set train.amp=off --set damsm.amp=off"

    damsm_dir = out_dir / "damsm"
    cfg = demo_config(seed)
    damsm_settings = {"piece": "damsm", "preset": "tiny", "epochs": damsm_epochs, "seed": seed, "data": data_key}
    _piece(damsm_dir, damsm_settings,
           f"attngan train-damsm --config tiny --data {_q(data_dir)} --out {_q(damsm_dir)} "
           f"--epochs {damsm_epochs} --minutes 0 --seed {seed} {sets}",
           lambda: train_damsm(cfg, data_dir, damsm_dir, device=device, minutes=0, max_epochs=damsm_epochs,
                               progress=progress), commands)
    timings["damsm"] = clock.lap("DAMSM")

    gan_dir = out_dir / "attngan"
    cfg = demo_config(seed)
    cfg.train.minutes = 0  # the kimg count alone ends the run
    cfg.train.total_kimg = kimg
    gan_settings = {"piece": "attngan", "preset": "tiny", "kimg": kimg, "seed": seed, "data": data_key,
                    "damsm": damsm_settings}
    _piece(gan_dir, gan_settings,
           f"attngan train --config tiny --data {_q(data_dir)} --damsm {_q(damsm_dir)} --out {_q(gan_dir)} "
           f"--kimg {kimg:g} --minutes 0 --seed {seed} {sets}",
           lambda: train_gan(cfg, data_dir, damsm_dir, gan_dir, device=device, progress=progress), commands)
    timings["attngan"] = clock.lap("AttnGAN")

    model_dir = gan_dir / "model"
    metrics = evaluate_model(model_dir, data_dir, eval_damsm_dir, oracle_dir, ev, device, out_dir, commands,
                             captioner_dir=captioner_dir)
    timings["evaluation"] = clock.lap("own model evaluation")
    return {"metrics": metrics, "commands": commands, "timings": timings, "damsm_dir": damsm_dir,
            "gan_dir": gan_dir, "model_dir": model_dir}


def export_bundle(model_dir: Path, bundle: str | Path, metrics, commands, seed: int, timings, *,
                  name: str = "synthbirds-tiny", data: dict[str, Any] | None = None,
                  eval_settings: dict[str, Any] | None = None) -> Path:
    """Write the model folder in half precision (BN statistics stay fp32) with its model card:
    name, measurements, the commands that made it, and the data set and evaluation protocol
    (`data`, `eval`) that `attngan demo` reads back from a shipped model."""
    from attngan.pipeline import AttnGANPipeline
    from attngan.io import save_model_folder

    pipe = AttnGANPipeline.from_pretrained(model_dir, device="cpu", fuse=False)  # its weights are saved as they are
    ev = dict(DEFAULT_EVAL, **(eval_settings or {}))
    card = {"name": name, "seed": seed, "commands": commands, "timings_s": timings,
            "data": {k: (data or {}).get(k, v) for k, v in DEFAULT_DATA.items()},
            "eval": {k: ev[k] for k in ("num_images", "seed", "metrics")},
            "metrics": [{k: m.get(k) for k in ("name", "metric", "value", "std", "protocol", "n",
                                               "per_attribute", "swap_rate", "per_stage")} for m in metrics]}
    path = save_model_folder(bundle, pipe.config, pipe.vocab, pipe.generator, pipe.text_encoder,
                             pipe.image_encoder, half=True, extra={"model_card": card})
    print(f"[demo] bundled model written to {path}")
    return path


# Cached pieces.

def prepare_data(data_dir: str | Path, spec: dict[str, Any], commands: list[str], progress: bool = True) -> Path:
    """The SynthBirds set `spec` describes (images, classes, size, seed), rendered unless already there."""
    from attngan.data.synth_birds import generate_synth_birds

    data_dir = Path(data_dir)
    command = _data_command(data_dir, spec)
    if _existing_data(data_dir, spec) is not None:
        commands.append(f"# {data_dir}: already rendered with these settings, reused; made by: {command}")
        print(f"[demo] SynthBirds: reusing {data_dir}", flush=True)
        return data_dir
    print(f"[demo] SynthBirds: rendering {_data_words(spec)} -> {data_dir}", flush=True)
    generate_synth_birds(data_dir, images=spec["images"], classes=spec["classes"], size=spec["size"],
                         seed=spec["seed"], workers=2, overwrite=True, progress=progress)
    commands.append(command)
    return data_dir


def _data_command(data_dir: Path, spec: dict[str, Any]) -> str:
    return (f"attngan synth-birds --out {_q(data_dir)} --images {spec['images']} --classes {spec['classes']} "
            f"--size {spec['size']} --seed {spec['seed']}")


def _existing_data(data_dir: Path, spec: dict[str, Any]) -> dict | None:
    """The manifest of a SynthBirds set already at data_dir with exactly these settings, else None."""
    manifest = Path(data_dir) / "synth_birds.json"
    if not manifest.is_file():
        return None
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    counts = meta.get("counts", {})
    same = (meta.get("seed") == spec["seed"] and meta.get("size") == spec["size"]
            and counts.get("images") == spec["images"] and counts.get("classes") == spec["classes"])
    return meta if same else None


def _data_key(data_dir: Path) -> dict[str, Any]:
    """What identifies a rendered set: a trained piece is only reused on the same one."""
    meta = json.loads((Path(data_dir) / "synth_birds.json").read_text(encoding="utf-8"))
    return {"images": meta["counts"]["images"], "classes": meta["counts"]["classes"], "size": meta["size"],
            "seed": meta["seed"], "generator_version": meta.get("generator_version")}


def _piece(folder: Path, settings: dict[str, Any], command: str, train, commands: list[str]) -> bool:
    """Train one piece into `folder` unless a finished one with the same settings is there.

    A marker file records the settings before training starts, so an interrupted piece resumes
    (the training loops continue from their saved state) and one trained with other settings is
    replaced; a folder without the marker was not made by the demo and is left alone.
    """
    from attngan.fileio import atomic_write_json

    marker = folder / "demo_piece.json"
    state = None
    if marker.is_file():
        try:
            state = json.loads(marker.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            state = None
    if state and state.get("settings") == settings and state.get("done"):
        commands.append(f"# {folder}: already trained with these settings, reused; made by: {command}")
        print(f"[demo] reusing {folder}", flush=True)
        return False
    if folder.is_dir() and any(folder.iterdir()):
        if state is None:
            raise AttnGANError(f"{folder} holds files the demo did not write; delete it or choose another --out")
        if state.get("settings") != settings:
            print(f"[demo] {folder} was trained with other settings: training it again", flush=True)
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"settings": settings, "done": False})
    commands.append(command)
    train()
    atomic_write_json(marker, {"settings": settings, "done": True})
    return True


def evaluate_model(model_dir: Path, data_dir: Path, eval_damsm_dir: Path, oracle_dir: Path,
                   ev: dict[str, Any], device: str, out_dir: Path, commands: list[str],
                   captioner_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """`attngan.metrics.evaluate` with the given protocol, as report rows (a metric whose inputs
    are missing is a row with a note); the rows are cached in out_dir and reused while the model,
    the evaluation pieces, the data and the protocol stay the same. `captioner_dir` serves the
    `roundtrip` metric when the protocol names it."""
    from attngan import __version__
    from attngan.fileio import atomic_write_json
    from attngan.metrics import evaluate
    from attngan.metrics.report import report_rows

    out_dir = Path(out_dir)
    cache = out_dir / "demo_eval.json"
    # Localisation measures a DAMSM on real images, not the generator: it is not a row of the
    # generators' table (`attngan eval-damsm` reports it), even if a card's protocol names it.
    shared = [m for m in ev["metrics"] if m != "localisation"]
    command = (f"attngan eval --model {_q(model_dir)} --data {_q(data_dir)} --metrics {','.join(shared)} "
               f"--eval-damsm {_q(eval_damsm_dir)} --oracle {_q(oracle_dir)} --num-images {ev['num_images']} "
               f"--splits {ev['splits']} --seed {ev['seed']} --out {_q(out_dir / 'eval' / 'report.json')}")
    key = {"model": _digest(model_dir), "eval_damsm": _digest(_damsm_snapshot(eval_damsm_dir)),
           "oracle": _digest(oracle_dir), "data": _data_key(data_dir), "device": device,
           "eval": {k: ev[k] for k in ("num_images", "seed", "splits", "metrics")}, "version": __version__}
    extra = {}
    if captioner_dir is not None and "roundtrip" in ev["metrics"]:
        command = command.replace(" --oracle ", f" --captioner {_q(captioner_dir)} --oracle ", 1)
        key["captioner"] = _digest(Path(captioner_dir))
        extra["captioner"] = str(captioner_dir)
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            saved = {}
        if saved.get("key") == key:
            commands.append(f"# {cache}: evaluated before with these settings, reused; made by: {command}")
            return saved["metrics"]
    commands.append(command)
    metrics = []
    if shared:  # (an empty list would mean every default metric)
        metrics = report_rows(evaluate(data_dir, model_dir=model_dir, metrics=shared, num_images=ev["num_images"],
                                       splits=ev["splits"], eval_damsm=eval_damsm_dir, oracle=oracle_dir,
                                       device=device, seed=ev["seed"], strict=False, **extra))
    atomic_write_json(cache, {"key": key, "metrics": metrics})
    return metrics


def _damsm_snapshot(path: Path) -> Path:
    from attngan.io import resolve

    return resolve(path, "damsm")  # the folder a DAMSM run folder's encoders are loaded from


def _digest(folder: Path) -> str:
    """SHA-256 over the names and contents of the files directly in `folder`."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        if f.name == "demo_piece.json":
            continue
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# Report content.

def prompt_results(model_dir, data_dir, eval_damsm_dir, device, seed, captioner_dir=None) -> list:
    """Every stage and every attentional stage's word attention for the prompts, what the
    captioner (when given) reads in each top-stage image, and what the evaluation DAMSM retrieves
    for it (when a data folder and an evaluation DAMSM are given)."""
    from attngan.pipeline import AttnGANPipeline
    from attngan.report import Figure, PromptResult
    from attngan.viz import png_bytes, to_pil, word_attention_figure

    pipe = AttnGANPipeline.from_pretrained(model_dir, device=device)
    prompts = PROMPTS + MORE_PROMPTS
    out = pipe(prompts, seed=seed)
    retr = ([[] for _ in prompts] if data_dir is None or eval_damsm_dir is None
            else _retrieve(out.images[-1], data_dir, eval_damsm_dir, pipe.device))
    captioned = _caption(out.images[-1], captioner_dir, pipe.device)
    n_stages, n_att = len(out.images), len(out.attention)
    display = max(STAGE_DISPLAY_PX, out.images[-1].shape[-1])
    results = []
    for i, caption in enumerate(prompts):
        stages = []
        for s, img in enumerate(out.images):
            h, w = img.shape[-2:]
            # The true pixels; the page enlarges them without smoothing (image-rendering: pixelated).
            stages.append(Figure(png_bytes(to_pil(img[i])), f"stage {s + 1} · {w}×{h} px",
                                 cls="stage-top" if s == n_stages - 1 else "stage", width=display))
        attention = []
        for k, att in enumerate(out.attention):
            s = n_stages - n_att + k  # the stage whose refinement attended with these maps
            h, w = out.images[s].shape[-2:]
            ah, aw = att.shape[-2:]
            fig = word_attention_figure(out.images[s][i], att[i], out.tokens[i], size=ATTENTION_TILE_PX,
                                        ncol=ATTENTION_COLUMNS, highlight=True)
            attention.append(Figure(png_bytes(fig), f"word attention at stage {s + 1} ({w}×{h} px image, "
                                                    f"{aw}×{ah} attention regions)", cls="attention"))
        found = _colours_found(caption, [c for c, _ in retr[i]]) if retr[i] else None
        results.append(PromptResult(caption, stages, attention, out.tokens[i], out.dropped[i], retr[i], found,
                                    captioned=captioned[i], attributes_back=_attributes_back(caption, captioned[i])))
    return results


def _stage_sizes(model_dir) -> list[int]:
    from attngan.io import read_model_config

    cfg, _ = read_model_config(model_dir)
    return [cfg.data.base_size * 2 ** i for i in range(cfg.data.branch_num)]


def _default_model() -> Path | None:
    from attngan.pipeline import bundled_model_dir

    try:
        return bundled_model_dir()
    except AttnGANError:
        return None


def _shipped_eval() -> tuple[Path, Path] | None:
    try:
        return bundled_eval_dirs()
    except AttnGANError:
        return None


def _section(key, title, summary, prompts, metrics, commands, timings, plots):
    from attngan.report import Section

    return Section(key=key, title=title, summary=summary, prompts=prompts, metrics=metrics,
                   commands=commands, timings=dict(timings), plots=plots)


def _data_words(spec: dict[str, Any]) -> str:
    return (f"{spec['images']:,} images of {spec['classes']:,} species at {spec['size']} px, "
            f"seed {spec['seed']}")


def _q(path) -> str:
    return shlex.quote(str(path))


def _retrieve(images, data_dir, eval_damsm_dir, device, top: int = 3):
    """For each image, the top test captions by the evaluation DAMSM's sentence similarity."""
    import torch
    import torch.nn.functional as F

    from attngan.data.dataset import TextImageDataset
    from attngan.io import load_damsm

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
        _, code = ie(images.to(device))  # the encoder resizes to its own input size
        sim = F.normalize(code.cpu(), dim=1) @ sent.T
    out = []
    for row in sim:
        v, idx = row.topk(min(top, len(texts)))
        out.append([(texts[j], float(s)) for s, j in zip(v, idx)])
    return out


def _captioner(captioner_dir: str | Path | None) -> Path | None:
    """The captioner folder to use: the one given, else the bundled one, else None (no captions)."""
    from attngan.captioner import bundled_captioner_names, resolve_captioner

    if captioner_dir is None and not bundled_captioner_names():
        return None
    folder = resolve_captioner(captioner_dir)
    if not (folder / "config.json").is_file():
        raise AttnGANError(f"{folder} is not a captioner folder (no config.json)")
    return folder


def _caption(images, captioner_dir: Path | None, device) -> list[str | None]:
    """The captioner's sentence for each image, read as a saved PNG would be (8 bits)."""
    if captioner_dir is None:
        return [None] * images.shape[0]
    from attngan.captioner import Captioner
    from attngan.metrics.extractors import quantize

    return Captioner.from_pretrained(captioner_dir, device=str(device))(quantize(images))


def _attributes_back(prompt: str, caption: str | None) -> dict[str, bool]:
    """For each attribute the prompt states (SynthBirds grammar): does the caption state it too?"""
    from attngan.data.synth_captions import caption_attributes

    if caption is None:
        return {}
    got = caption_attributes(caption)
    return {k: got.get(k) == v for k, v in caption_attributes(prompt).items()}


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


def _print_summary(report, path: Path, seconds: float) -> None:
    from attngan.report import comparison_rows

    print()
    titles = [s.title for s in report.sections]
    heads = {"shipped": "shipped model", "own": "your own"}
    print(f"{'metric':<34} " + " ".join(f"{heads.get(s.key, s.key):>18}" for s in report.sections))
    for row in comparison_rows(report.sections):  # the report's table, binding's per-part rows included
        print(f"{row['metric']:<34} " + " ".join(f"{row[t]:>18}" for t in titles))
    print(f"\nreport: {path.resolve()}  ({seconds / 60:.1f} min)")
    print(f"reproduce: {' '.join(shlex.quote(a) for a in sys.argv)}")
