"""What a metric is: `MetricSpec` (its function, protocol, reference implementation, the feature
streams it reads, what it needs, its report's detail lines) and `StreamSpec`, the tables they are
registered in, `register` and `register_stream`.

A metric function takes an `EvalContext` (metrics/context.py) whose streams already hold the
features of the scored images, and returns {"value", "std", ...extras}. `streams` names what it
reads from the generated images, `uses` streams it only calls itself (on real images); both are
keys of `STREAMS`. `real` says it also compares against real test images. A metric module imports
this module, never the registry (metrics/registry.py), which imports the metric modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from attngan.metrics.context import EvalContext


@dataclass(frozen=True)
class MetricSpec:
    name: str
    title: str                     # row label of the Markdown table
    protocol: str                  # what exactly is measured
    reference: str                 # the implementation the numbers follow
    streams: tuple[str, ...]       # feature streams read on the scored images
    real: bool                     # also needs features of real test images
    unit: str                      # "" or "%"
    higher_is_better: bool
    fn: Callable[["EvalContext"], dict[str, Any]]
    requires: tuple[str, ...] = ()  # inputs it cannot run without: keys of REQUIREMENTS
    default: bool = True           # runs when --metrics is not given (and its inputs are there)
    uses: tuple[str, ...] = ()     # streams it needs built but that read no scored image
    # Scores an image against its own prompt, so it also runs on `--prompts` (the others compare
    # with the test split's captions or images).
    prompts: bool = False
    # (name, its result) -> the lines the Markdown report adds below the table (None: none)
    details: Callable[[str, dict[str, Any]], list[str]] | None = None


@dataclass(frozen=True)
class StreamSpec:
    name: str
    # (context, the model's pipeline or None) -> (the stream, its line in the report's "streams")
    build: Callable[["EvalContext", Any], tuple[Any, str]]


# What a metric may need, each as (is it there?, the note a skipped metric gets). `inputs` holds the
# options and what evaluate() found: has_damsm, has_captions, generated (bools) and ground_truth (the
# data's, DataSource.ground_truth: "synth_birds", "synth_scenes" or None).
REQUIREMENTS: dict[str, tuple[Callable[[Any, dict[str, Any]], bool], str]] = {
    "is_classifier": (lambda o, i: bool(o.is_classifier or o.fid_inception or o.oracle or o.judge),
                      "needs --is-classifier FILE|ORACLE_DIR, --fid-inception FILE (pt_inception-2015-12-05, "
                      "improved-gan's network), --oracle DIR (SynthBirds) or --judge DIR (SynthScenes)"),
    "fid_inception": (lambda o, i: bool(o.fid_inception),
                      "needs --fid-inception FILE (pytorch-fid's pt_inception-2015-12-05-6726825d.pth)"),
    "inception": (lambda o, i: bool(o.inception),
                  "needs --inception FILE (torchvision's inception_v3_google-*.pth)"),
    "damsm": (lambda o, i: i["has_damsm"], "needs a DAMSM: --model MODEL_DIR or --eval-damsm DIR"),
    "captions": (lambda o, i: i["has_captions"],
                 "needs the images' captions: a captions.json {file name: caption} in the --images folder"),
    "oracle": (lambda o, i: bool(o.oracle), "needs --oracle DIR (train one with `attngan train-oracle`)"),
    "captioner": (lambda o, i: bool(o.captioner),
                  "needs --captioner DIR|NAME (attngan train-captioner; bundled: synthbirds-captioner, and "
                  "synthscenes-captioner, used by default on SynthScenes data when installed)"),
    "generated": (lambda o, i: i["generated"],
                  "needs generated images (--model): it reads the generator's attention maps"),
    "synth": (lambda o, i: i["ground_truth"] == "synth_birds",
              "needs SynthBirds data (synth_birds.json in --data, with its part masks and caption grammar)"),
    "grammar": (lambda o, i: i["ground_truth"] in ("synth_birds", "synth_scenes"),
                "needs SynthBirds or SynthScenes data (synth_birds.json or synth_scenes.json in --data: the "
                "caption grammar that reads a caption back)"),
    "judge": (lambda o, i: bool(o.judge),
              "needs a SynthScenes judge: --judge DIR (`attngan train-oracle` on SynthScenes data; the "
              "bundled one is used when --data holds synth_scenes.json)"),
}


def missing_input(spec: MetricSpec, options: Any, **inputs: Any) -> str | None:
    """Why `spec` cannot run with these options and inputs (the first missing one), or None."""
    for need in spec.requires:
        present, why = REQUIREMENTS[need]
        if not present(options, inputs):
            return why
    return None


REGISTRY: dict[str, MetricSpec] = {}
# Registration order is the order of the report's "streams" (the Markdown's "Extractors" line).
STREAMS: dict[str, StreamSpec] = {}


def register(spec: MetricSpec | None = None, /, **kwargs) -> Any:
    """`register(MetricSpec(...))` adds a spec (and returns it); `@register(name=..., ...)` above a
    function adds the spec made of these fields and the function (and returns the function)."""
    if spec is not None:
        if kwargs:
            raise TypeError("register() takes a MetricSpec or its fields, not both")
        REGISTRY[spec.name] = spec
        return spec

    def wrap(fn: Callable) -> Callable:
        REGISTRY[kwargs["name"]] = MetricSpec(fn=fn, **kwargs)
        return fn

    return wrap


def register_stream(name: str) -> Callable:
    def wrap(build: Callable) -> Callable:
        STREAMS[name] = StreamSpec(name, build)
        return build

    return wrap


def pct(x: float | None) -> float:
    """A share as a percentage (NaN stays NaN, None becomes NaN)."""
    return float("nan") if x is None or (isinstance(x, float) and math.isnan(x)) else 100.0 * float(x)


def seen_novel_details(name: str, r: dict[str, Any]) -> list[str]:
    """SynthScenes prompts: a result's values for the seen and the novel compositions (with chance
    and the judge's side readings), as one report line; none for other data."""
    if "seen" not in r and "novel" not in r:
        return []
    unit = r.get("unit", "")

    def v(x: Any) -> str:
        return "n/a" if x is None else f"{x:.2f}{unit}"

    line = (f"- `{name}`: seen {v(r.get('seen'))} ({r.get('n_seen')}), novel {v(r.get('novel'))} "
            f"({r.get('n_novel')})")
    if r.get("chance"):
        c = r["chance"]
        line += f"; chance seen {v(c.get('seen'))}, novel {v(c.get('novel'))}"
    for extra in ("objects_precision", "object_place"):
        if extra in r:
            e = r[extra]
            line += f"; {extra.replace('_', ' ')} {v(e.get('all'))} (seen {v(e.get('seen'))}, novel {v(e.get('novel'))})"
    if r.get("novel_seen_ratio") is not None:
        line += f"; novel/seen ratio {r['novel_seen_ratio']:.3f}"
    return [line + (" — **void**: judge below its bars" if r.get("void") else "")]
