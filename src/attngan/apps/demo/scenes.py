"""The demo's scenes part: the shipped SynthScenes model (nothing is trained) on the paper's MS-COCO
sentences, each with its stages, the attention of its object and place words, what the scenes
captioner reads in its image and what the SynthScenes judge finds there; then the scene metrics
for seen and novel compositions, on a test set rendered here and scored by the shipped judge, with
the round trip through the scenes captioner.

The work is fixed (the prompts, the test prompts of each kind, the seeds), so a busy machine
takes longer and reports the same numbers. The test set and the evaluation are cached in the
output folder, as the birds part's are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attngan import AttnGANError, AttnGANPipeline, Captioner, __version__, io
from attngan.apps.demo.pieces import Clock, damsm_snapshot, digest
from attngan.apps.demo.prompts import attention_figures, stage_figures, stage_sizes
from attngan.apps.demo.settings import (SCENE_METRICS, SCENE_PROMPTS, SCENES_CAPTIONER, SCENES_EVAL, SCENES_MODEL,
                                        SCENES_PER_SPLIT, SCENES_SPLITS)
from attngan.commandline import command_line
from attngan.data.scene_captions import GROUND_NOUNS, NOUNS, parse_scene_caption
from attngan.data.synth_scenes import (COLOURS, GENERATOR_VERSION, TEST_SHARE, generate_synth_scenes, is_held_out,
                                       load_manifest, split_counts)
from attngan.fileio import atomic_write_json, read_json_object
from attngan.metrics.evaluation import evaluate
from attngan.metrics.extractors import quantize
from attngan.metrics.report import report_rows
from attngan.metrics.scenes import bundled_judge_dir, prompt_requests
from attngan.model_card import card_settings
from attngan.networks.scene_judge import JudgeConfig, load_judge
from attngan.report import PromptResult, SceneNote, SceneSection, Section

KEY = "scenes"
EVAL_CACHE = "demo_scenes_eval.json"  # in the part's folder: the evaluation's key and report rows

# The words whose attention the report shows: the objects' and the places' (a colour word of a
# place phrase, the "green" of "a green field", is no place word).
OBJECT_WORDS = {w for pair in NOUNS.values() for noun in pair for w in noun.split()}
PLACE_WORDS = ({w for phrase in GROUND_NOUNS for w in phrase.split()} | {"sky"}) - set(COLOURS)


@dataclass
class ScenePieces:
    """What the scenes part shows and scores with; a piece this installation lacks is None, and
    `remarks` say what is missing and what the report leaves out for it. Without an evaluation
    DAMSM, R-precision reads the model's own encoders (and says so)."""
    model_dir: Path | None
    judge_dir: Path | None
    captioner_dir: Path | None
    per_split: int
    remarks: list[str] = field(default_factory=list)
    eval_damsm_dir: Path | None = None      # R-precision's encoders (None: the model's own)

    @property
    def runs(self) -> bool:
        return self.model_dir is not None and self.judge_dir is not None


def bundled_folder(name: str, kind: str) -> Path | None:
    """The bundled folder `name`, or None where this installation lacks it. A folder in the
    package's assets that io does not list by name is found by its name there."""
    if name in io.bundled_names(kind):
        return io.bundled_dir(kind, name)
    folder = io.ASSETS / name
    return folder if (folder / io.CONFIG_FILE).is_file() else None


def given_folder(given: str | Path, kind: str) -> Path:
    """A folder given by path, run folder or bundled name (`bundled_folder`'s names included)."""
    if not Path(given).exists():
        found = bundled_folder(str(given), kind)
        if found is not None:
            return found
    return io.resolve(given, kind)


def _given_or_bundled(given: str | Path | None, bundled: str, kind: str, what: str) -> Path | None:
    """The folder the user gave (checked now, before any work), else the bundled one (None when
    this installation lacks it)."""
    if given is None:
        return bundled_folder(bundled, kind)
    folder = given_folder(given, kind)
    if not (folder / io.CONFIG_FILE).is_file():
        raise AttnGANError(f"{given} is not a {what} folder (no {io.CONFIG_FILE})")
    return folder


def scene_pieces(model_dir: str | Path | None = None, captioner_dir: str | Path | None = None,
                 judge_dir: str | Path | None = None, per_split: int = SCENES_PER_SPLIT) -> ScenePieces:
    """The scenes part's model, judge and captioner: those given (checked here, before any work),
    else the bundled ones."""
    if per_split < 1:
        raise AttnGANError(f"--scenes-per-split must be at least 1 (got {per_split})")
    remarks = []
    model = _given_or_bundled(model_dir, SCENES_MODEL, "generator", "model")
    if model is None:
        remarks.append(f"This installation has no SynthScenes model (the bundled {SCENES_MODEL} is missing; "
                       "pass --scenes-model DIR): the scenes part is left out.")
    judge = Path(judge_dir) if judge_dir is not None else bundled_judge_dir()
    if not (judge / io.CONFIG_FILE).is_file():
        if judge_dir is not None:
            raise AttnGANError(f"{judge_dir} is not a SynthScenes judge folder (no {io.CONFIG_FILE})")
        remarks.append("This installation has no SynthScenes judge (synthscenes-eval/judge): the scenes part, "
                       "which it scores, is left out.")
        judge = None
    captioner = _given_or_bundled(captioner_dir, SCENES_CAPTIONER, "captioner", "captioner")
    if captioner is None and model is not None and judge is not None:
        remarks.append(f"No scenes captioner in this installation (the bundled {SCENES_CAPTIONER} is "
                       "missing; pass --scenes-captioner DIR): the prompts have no “I think it's” line.")
    # A DAMSM the generator never trained against, where one is installed; else R-precision uses the
    # model's own encoders, and its row says so.
    eval_damsm = bundled_folder(SCENES_EVAL, "damsm")
    return ScenePieces(model, judge, captioner, per_split, remarks, eval_damsm)


def scenes_part(out_dir: str | Path, pieces: ScenePieces, *, seed: int = 0, device: str = "auto",
                progress: bool = True) -> SceneSection:
    """The scenes part of the report: the prompts, their verdicts and the seen/novel metrics."""
    out_dir = Path(out_dir)
    if not pieces.runs:
        return SceneSection(Section(KEY, "Scenes", "The shipped SynthScenes model on the paper's MS-COCO "
                                    "sentences and its metrics for seen and novel compositions.",
                                    [], [], [], {}), [], list(pieces.remarks))
    name, data_spec, ev = card_settings(pieces.model_dir)
    commands: list[str] = []
    timings: dict[str, float] = {}
    clock = Clock()
    # Not the training set's seed: the first images of that set are training images.
    data_dir = prepare_scene_data(out_dir / "data", pieces.per_split, data_spec["size"], data_spec["seed"] + 1,
                                  commands, progress)
    timings["data"] = clock.lap("SynthScenes test set")
    metrics = evaluate_scenes(pieces.model_dir, data_dir, pieces.judge_dir, 2 * pieces.per_split, ev["seed"],
                              device, out_dir, commands, progress, pieces.eval_damsm_dir, pieces.captioner_dir)
    timings["evaluation"] = clock.lap("scenes model evaluation")
    prompts, notes = scene_prompts(pieces.model_dir, pieces.judge_dir, pieces.captioner_dir, device, seed)
    timings["prompts"] = clock.lap("scenes model prompts")
    stages = stage_sizes(pieces.model_dir)
    sizes = " → ".join(f"{s} px" for s in stages)
    where = "shipped with the package" if pieces.model_dir == bundled_folder(SCENES_MODEL, "generator") else "given"
    summary = (f"The SynthScenes model {name}, {where} ({len(stages)} stages: {sizes}; not trained here), "
               "on the paper's MS-COCO sentences written in SynthScenes' words, each read by the SynthScenes "
               "judge (objects and their number, colour and place in the sky or on the ground, and the "
               "background; it reads no relations such as “next to”). Then its scene metrics on "
               f"{pieces.per_split} test prompts whose every pair occurs in training (seen) and "
               f"{pieces.per_split} holding a pair never together in training (novel), from a SynthScenes "
               "test set rendered here."
               + (" The round trip reads each image back through the scenes captioner." if pieces.captioner_dir
                  else "") + _encoders(metrics))
    return SceneSection(Section(KEY, f"Scenes: {name}", summary, prompts, metrics, commands, timings), notes,
                        list(pieces.remarks))


# The test set and its evaluation, cached.

def scene_images(per_split: int) -> int:
    """The SynthScenes set size whose test split is exactly `per_split` seen and `per_split` novel images."""
    images = round(2 * per_split / TEST_SHARE)
    counts = split_counts(images)
    if (counts["seen"], counts["novel"]) != (per_split, per_split):
        raise AttnGANError(f"no SynthScenes set has exactly {per_split} seen and {per_split} novel test images")
    return images


def prepare_scene_data(data_dir: Path, per_split: int, size: int, seed: int, commands: list[str],
                       progress: bool = True) -> Path:
    """The SynthScenes set whose test split the metrics score, rendered unless already there."""
    images = scene_images(per_split)
    command = command_line("synth-scenes", {"out": data_dir, "images": images, "size": size, "seed": seed})
    if scene_data_key(data_dir) == {"images": images, "size": size, "seed": seed,
                                    "generator_version": GENERATOR_VERSION}:
        commands.append(f"# {data_dir}: already rendered with these settings, reused; made by: {command}")
        print(f"[demo] SynthScenes: reusing {data_dir}", flush=True)
        return data_dir
    print(f"[demo] SynthScenes: rendering {images:,} images at {size} px, seed {seed} -> {data_dir}", flush=True)
    generate_synth_scenes(data_dir, images=images, size=size, seed=seed, workers=2, overwrite=True,
                          progress=progress)
    commands.append(command)
    return data_dir


def scene_data_key(data_dir: Path) -> dict[str, Any] | None:
    """What identifies a rendered SynthScenes set (None where there is none, or it is unreadable)."""
    try:
        meta = load_manifest(data_dir)
    except AttnGANError:
        return None
    return {"images": meta.get("counts", {}).get("images"), "size": meta.get("size"), "seed": meta.get("seed"),
            "generator_version": meta.get("generator_version")}


def _encoders(metrics: list[dict[str, Any]]) -> str:
    """Which encoders R-precision used, as its result says."""
    rp = next((m for m in metrics if m.get("name") == "r_precision" and m.get("encoders")), None)
    return "" if rp is None else f" R-precision's encoders: {rp['encoders']}."


def evaluate_scenes(model_dir: Path, data_dir: Path, judge_dir: Path, num_images: int, seed: int, device: str,
                    out_dir: Path, commands: list[str], progress: bool = True,
                    eval_damsm_dir: Path | None = None, captioner_dir: Path | None = None) -> list[dict[str, Any]]:
    """`attngan eval` of the scene metrics on every test image of `data_dir` (one caption each), as
    report rows; cached in out_dir while the model, the judge, the evaluation DAMSM (None: the
    model's own), the round trip's captioner (None: the round trip is skipped), the data and the
    protocol stay."""
    splits = max(1, min(SCENES_SPLITS, num_images // 2))  # R-precision needs two images a split
    command = command_line("eval", {"model": model_dir, "data": data_dir, "metrics": ",".join(SCENE_METRICS),
                                    "judge": judge_dir, "eval_damsm": eval_damsm_dir, "captioner": captioner_dir,
                                    "num_images": num_images,
                                    "splits": splits, "seed": seed, "out": out_dir / "eval" / "report.json"})
    key = {"model": digest(model_dir), "judge": digest(judge_dir), "data": scene_data_key(data_dir),
           "eval_damsm": None if eval_damsm_dir is None else digest(damsm_snapshot(eval_damsm_dir)),
           "captioner": None if captioner_dir is None else digest(captioner_dir),
           "device": device, "eval": {"num_images": num_images, "splits": splits, "seed": seed,
                                      "metrics": SCENE_METRICS}, "version": __version__}
    cache = out_dir / EVAL_CACHE
    try:
        saved = read_json_object(cache, "demo record") if cache.is_file() else {}
    except AttnGANError:  # unreadable: evaluated again
        saved = {}
    if saved.get("key") == key:
        commands.append(f"# {cache}: evaluated before with these settings, reused; made by: {command}")
        return saved["metrics"]
    commands.append(command)
    metrics = report_rows(evaluate(data_dir, model_dir=model_dir, metrics=SCENE_METRICS, num_images=num_images,
                                   splits=splits, judge=judge_dir, eval_damsm=eval_damsm_dir,
                                   captioner=captioner_dir, device=device,
                                   seed=seed, strict=False, progress=progress))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache, {"key": key, "metrics": metrics})
    return metrics


# The prompts: pictures, caption and verdict.

def scene_prompts(model_dir: Path, judge_dir: Path, captioner_dir: Path | None, device: str,
                  seed: int) -> tuple[list[PromptResult], list[SceneNote]]:
    """Every stage of each prompt, the attention of its object and place words, the captioner's
    reading of the top-stage image (when there is a captioner) and the judge's verdict on it."""
    pipe = AttnGANPipeline.from_pretrained(model_dir, device=device)
    texts = [asked for _, asked, _ in SCENE_PROMPTS]
    out = pipe(texts, seed=seed)
    top = quantize(out.images[-1])  # read as a saved PNG would be (8 bits)
    judge = load_judge(judge_dir, pipe.device)
    reading = {k: v.cpu() for k, v in judge.read(top.to(pipe.device)).items()}
    said = ([None] * len(texts) if captioner_dir is None
            else Captioner.from_pretrained(captioner_dir, device=str(pipe.device))(top))
    results, notes = [], []
    for i, ((paper, asked, changes), request) in enumerate(zip(SCENE_PROMPTS, prompt_requests(texts))):
        words = [j for j, t in enumerate(out.tokens[i]) if t in OBJECT_WORDS | PLACE_WORDS]
        attention = attention_figures(out, i, words or None, " · object and place words" if words else "")
        results.append(PromptResult(asked, stage_figures(out, i), attention, out.tokens[i], out.dropped[i],
                                    captioned=said[i], attributes_back=statements_back(request, said[i])))
        found, checks = judge_verdict(request, {k: v[i] for k, v in reading.items()}, judge.cfg)
        notes.append(SceneNote(paper, list(changes), request["composition"], held_out_words(request), found, checks))
    return results, notes


def _noun(category: str, n: int | None) -> str:
    return NOUNS[category][0 if n == 1 else 1]


def _where(place: str) -> str:
    return "in the sky" if place == "sky" else f"on the {place}"


def judge_verdict(request: dict[str, Any], reading: dict[str, torch.Tensor],
                  cfg: JudgeConfig) -> tuple[list[str], list[tuple[str, bool]]]:
    """What the judge finds in one image (its background, then each category it finds: number,
    colour, sky or ground), and each statement of the prompt (`metrics.scenes.prompt_requests`)
    right or wrong by it: every object there, in its colour, exact number and place, on its
    background."""
    count, colour, sky = reading["count"], reading["colour"], reading["sky"]
    background = cfg.backgrounds[int(reading["background"])]
    found = [f"background: {background}"]
    for c, cat in enumerate(cfg.categories):
        n = int(count[c])
        if n > 0:
            found.append(f"{n} {cfg.colours[int(colour[c])]} {_noun(cat, n)} "
                         f"{'in the sky' if float(sky[c]) > 0.5 else 'on the ground'}")
    checks = []
    for o in request["objects"]:
        if o["category"] not in cfg.categories:
            continue
        c = cfg.categories.index(o["category"])
        n, name = int(count[c]), NOUNS[o["category"]][0]
        checks.append((f"{name}: there", n > 0))
        if o["colour"] is not None:
            checks.append((f"{name}: {o['colour']}", n > 0 and cfg.colours[int(colour[c])] == o["colour"]))
        if o["count"] is not None:  # a vague number ("some", "a herd of") is not checked, as in scene_count
            checks.append((f"{name}: exactly {o['count']}", n == o["count"]))
        if o["place"] is not None:
            in_sky = o["place"] == "sky"
            checks.append((f"{name}: {'in the sky' if in_sky else 'on the ground'}",
                           n > 0 and (float(sky[c]) > 0.5) == in_sky))
    if request["background"] is not None:
        checks.append((f"background: {request['background']}", background == request["background"]))
    return found, checks


def held_out_words(request: dict[str, Any]) -> list[str]:
    """The prompt's pairs that never occur together in training, in words."""
    out = []
    for o in request["objects"]:
        held = is_held_out(o["category"], o["colour"] or "", o["place"] or "")
        if held is None:
            continue
        kind, (a, b) = held
        out.append(f"a {NOUNS[a][0]} {_where(b)}" if kind == "place" else f"a {a} {NOUNS[b][0]}")
    return out


def statements_back(request: dict[str, Any], caption: str | None) -> dict[str, bool]:
    """For each statement of the prompt (object, its colour, its place; the background): does the
    caption make it too? Read with the SynthScenes caption parser."""
    if caption is None:
        return {}
    got = parse_scene_caption(caption)
    objects = {o["category"]: o for o in got["objects"]}
    out = {}
    for o in request["objects"]:
        name, there = NOUNS[o["category"]][0], objects.get(o["category"])
        out[name] = there is not None
        if o["colour"] is not None:
            out[f"{o['colour']} {name}"] = there is not None and there["colour"] == o["colour"]
        if o["place"] is not None:
            out[f"{name} {_where(o['place'])}"] = there is not None and there["place"] == o["place"]
    if request["background"] is not None:
        out[f"background: {request['background']}"] = got["background"] == request["background"]
    return out
