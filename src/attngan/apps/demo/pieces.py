"""The demo's cached steps: the SynthBirds set, the DAMSM and AttnGAN trained from scratch, and
each model's evaluation, each reused when a later run asks for the same one (by settings and by
the SHA-256 of the folders it depends on)."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from attngan import AttnGANError, __version__, io
from attngan.apps.demo.settings import DAMSM_EPOCHS, DEMO_SETS, KIMG, SHIPPED_EVAL, demo_config
from attngan.commandline import command_line
from attngan.data.synth_birds import generate_synth_birds, load_manifest
from attngan.fileio import atomic_write_json, read_json_object
from attngan.metrics.evaluation import evaluate
from attngan.metrics.report import report_rows
from attngan.model_card import DEFAULT_EVAL
from attngan.training.damsm_loop import train_damsm
from attngan.training.gan_loop import train_gan

MARKER = "demo_piece.json"  # in a trained piece's folder: the settings it was trained with
EVAL_CACHE = "demo_eval.json"  # in an evaluation's folder: its key and report rows


class Clock:
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


def bundled_eval_dirs() -> tuple[Path, Path]:
    """The evaluation DAMSM and the SynthBirds oracle shipped with the package."""
    missing = []
    if SHIPPED_EVAL not in io.bundled_names("damsm"):
        missing.append(f"an evaluation DAMSM in {io.ASSETS / SHIPPED_EVAL / 'damsm_eval'}")
    if SHIPPED_EVAL not in io.bundled_names("oracle"):
        missing.append(f"a SynthBirds oracle in {io.ASSETS / SHIPPED_EVAL / 'oracle'}")
    if missing:
        raise AttnGANError("this installation lacks the shipped evaluation pieces: expected "
                           + " and ".join(missing) + " (pass --eval-damsm DIR and --oracle DIR to use others)")
    return io.bundled_dir("damsm", SHIPPED_EVAL), io.bundled_dir("oracle", SHIPPED_EVAL)


def shipped_eval() -> tuple[Path, Path] | None:
    try:
        return bundled_eval_dirs()
    except AttnGANError:
        return None


def damsm_snapshot(path: str | Path) -> Path:
    return io.resolve(path, "damsm")  # the folder a DAMSM run folder's encoders are loaded from


def data_words(spec: dict[str, Any]) -> str:
    return (f"{spec['images']:,} images of {spec['classes']:,} species at {spec['size']} px, "
            f"seed {spec['seed']}")


def prepare_data(data_dir: str | Path, spec: dict[str, Any], commands: list[str], progress: bool = True) -> Path:
    """The SynthBirds set `spec` describes (images, classes, size, seed), rendered unless already there."""
    data_dir = Path(data_dir)
    command = data_command(data_dir, spec)
    if _existing_data(data_dir, spec) is not None:
        commands.append(f"# {data_dir}: already rendered with these settings, reused; made by: {command}")
        print(f"[demo] SynthBirds: reusing {data_dir}", flush=True)
        return data_dir
    print(f"[demo] SynthBirds: rendering {data_words(spec)} -> {data_dir}", flush=True)
    generate_synth_birds(data_dir, images=spec["images"], classes=spec["classes"], size=spec["size"],
                         seed=spec["seed"], workers=2, overwrite=True, progress=progress)
    commands.append(command)
    return data_dir


def data_command(data_dir: Path, spec: dict[str, Any]) -> str:
    return command_line("synth-birds", {"out": data_dir, "images": spec["images"], "classes": spec["classes"],
                                        "size": spec["size"], "seed": spec["seed"]})


def _existing_data(data_dir: Path, spec: dict[str, Any]) -> dict | None:
    """The manifest of a SynthBirds set already at data_dir with exactly these settings, else None."""
    try:
        meta = load_manifest(data_dir)
    except AttnGANError:  # none there, or unreadable: rendered again
        return None
    counts = meta.get("counts", {})
    same = (meta.get("seed") == spec["seed"] and meta.get("size") == spec["size"]
            and counts.get("images") == spec["images"] and counts.get("classes") == spec["classes"])
    return meta if same else None


def data_key(data_dir: Path) -> dict[str, Any]:
    """What identifies a rendered set: a trained piece is only reused on the same one."""
    meta = load_manifest(data_dir)
    return {"images": meta["counts"]["images"], "classes": meta["counts"]["classes"], "size": meta["size"],
            "seed": meta["seed"], "generator_version": meta.get("generator_version")}


def train_your_own(out_dir: str | Path, data_dir: str | Path, eval_damsm_dir: str | Path,
                   oracle_dir: str | Path, *, damsm_epochs: int = DAMSM_EPOCHS, kimg: float = KIMG,
                   seed: int = 0, ev: dict[str, Any] | None = None, device: str = "auto",
                   progress: bool = True, captioner_dir: str | Path | None = None) -> dict[str, Any]:
    """The `tiny` preset from scratch: DAMSM for `damsm_epochs` epochs, AttnGAN for `kimg` kimg,
    then evaluated. Returns metrics, commands, timings and the folders (damsm_dir, gan_dir, model_dir).

    Every stopping point is counted in work, so the result depends on the seed and the settings,
    never on how fast the machine happens to be.
    """
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    ev = dict(DEFAULT_EVAL, **(ev or {}))
    key = data_key(data_dir)
    commands: list[str] = []
    timings: dict[str, float] = {}
    clock = Clock()

    damsm_dir = out_dir / "damsm"
    cfg = demo_config(seed)
    damsm_settings = {"piece": "damsm", "preset": "tiny", "epochs": damsm_epochs, "seed": seed, "data": key}
    _piece(damsm_dir, damsm_settings,
           damsm_command(data_dir, damsm_dir, damsm_epochs, seed),
           lambda: train_damsm(cfg, data_dir, damsm_dir, device=device, minutes=0, max_epochs=damsm_epochs,
                               progress=progress), commands)
    timings["damsm"] = clock.lap("DAMSM")

    gan_dir = out_dir / "attngan"
    cfg = demo_config(seed)
    cfg.train.minutes = 0  # the kimg count alone ends the run
    cfg.train.total_kimg = kimg
    gan_settings = {"piece": "attngan", "preset": "tiny", "kimg": kimg, "seed": seed, "data": key,
                    "damsm": damsm_settings}
    _piece(gan_dir, gan_settings,
           gan_command(data_dir, damsm_dir, gan_dir, kimg, seed),
           lambda: train_gan(cfg, data_dir, damsm_dir, gan_dir, device=device, progress=progress), commands)
    timings["attngan"] = clock.lap("AttnGAN")

    model_dir = gan_dir / "model"
    metrics = evaluate_model(model_dir, data_dir, eval_damsm_dir, oracle_dir, ev, device, out_dir, commands,
                             captioner_dir=captioner_dir)
    timings["evaluation"] = clock.lap("own model evaluation")
    return {"metrics": metrics, "commands": commands, "timings": timings, "damsm_dir": damsm_dir,
            "gan_dir": gan_dir, "model_dir": model_dir}


# The commands that redo each step by hand (the `--set`s give the CLI demo_config's settings).

def damsm_command(data_dir: Path, damsm_dir: Path, epochs: int, seed: int) -> str:
    return command_line("train-damsm", {"config": "tiny", "data": data_dir, "out": damsm_dir, "epochs": epochs,
                                        "minutes": 0, "seed": seed, "set": DEMO_SETS})


def gan_command(data_dir: Path, damsm_dir: Path, gan_dir: Path, kimg: float, seed: int) -> str:
    return command_line("train", {"config": "tiny", "data": data_dir, "damsm": damsm_dir, "out": gan_dir,
                                  "kimg": kimg, "minutes": 0, "seed": seed, "set": DEMO_SETS})


def eval_command(model_dir: Path, data_dir: Path, metrics: list[str], eval_damsm_dir: Path,
                 captioner_dir: str | Path | None, oracle_dir: Path, ev: dict[str, Any], out: Path) -> str:
    return command_line("eval", {
        "model": model_dir, "data": data_dir, "metrics": ",".join(metrics), "eval_damsm": eval_damsm_dir,
        "captioner": captioner_dir, "oracle": oracle_dir, "num_images": ev["num_images"],
        "splits": ev["splits"], "seed": ev["seed"], "out": out})


def _piece(folder: Path, settings: dict[str, Any], command: str, train: Callable[[], Any],
           commands: list[str]) -> bool:
    """Train one piece into `folder` unless a finished one with the same settings is there.

    A marker file records the settings before training starts, so an interrupted piece resumes
    (the training loops continue from their saved state) and one trained with other settings is
    replaced; a folder without the marker was not made by the demo and is left alone.
    """
    marker = folder / MARKER
    state = _read_json(marker)
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


def _read_json(path: Path) -> dict[str, Any] | None:
    """The demo's own bookkeeping file at `path`, or None where there is none or it is unreadable
    (the step it records is then done again)."""
    if not path.is_file():
        return None
    try:
        return read_json_object(path, "demo record")
    except AttnGANError:
        return None


def evaluate_model(model_dir: Path, data_dir: Path, eval_damsm_dir: Path, oracle_dir: Path,
                   ev: dict[str, Any], device: str, out_dir: Path, commands: list[str],
                   captioner_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """`attngan.metrics.evaluate` with the given protocol, as report rows (a metric whose inputs
    are missing is a row with a note); the rows are cached in out_dir and reused while the model,
    the evaluation pieces, the data and the protocol stay the same. `captioner_dir` serves the
    `roundtrip` metric when the protocol names it."""
    out_dir = Path(out_dir)
    cache = out_dir / EVAL_CACHE
    # Localisation measures a DAMSM on real images, not the generator: it is not a row of the
    # generators' table (`attngan eval-damsm` reports it), even if a card's protocol names it.
    shared = [m for m in ev["metrics"] if m != "localisation"]
    roundtrip = captioner_dir is not None and "roundtrip" in ev["metrics"]
    command = eval_command(model_dir, data_dir, shared, eval_damsm_dir, captioner_dir if roundtrip else None,
                           oracle_dir, ev, out_dir / "eval" / "report.json")
    key = {"model": digest(model_dir), "eval_damsm": digest(damsm_snapshot(eval_damsm_dir)),
           "oracle": digest(oracle_dir), "data": data_key(data_dir), "device": device,
           "eval": {k: ev[k] for k in ("num_images", "seed", "splits", "metrics")}, "version": __version__}
    extra = {}
    if roundtrip:
        key["captioner"] = digest(Path(captioner_dir))
        extra["captioner"] = str(captioner_dir)
    saved = _read_json(cache) or {}
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


def digest(folder: str | Path) -> str:
    """SHA-256 over the names and contents of the files directly in `folder`."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        if f.name == MARKER:
            continue
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
