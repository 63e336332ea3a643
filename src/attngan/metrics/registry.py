"""The metric registry: every metric `attngan eval` knows, by name (as stylegan2-ada's
metric_main.py), and the feature streams they read, name -> the function that builds one.

Each metric lives in one module with its maths, its pass over real images where it has one and its
report's detail lines, and is declared there with `register` (metrics/spec.py). This module imports
those modules, puts the metrics in the report's order (`BUILTIN_METRICS`) and builds the streams
that several metrics share. `default_metrics()` is what runs when no metric is named.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attngan.metrics import (  # noqa: F401 - they register
    binding, fid, inception_score, r_precision, roundtrip, scenes, sharpness,
)
from attngan.metrics.binding import ColourAttentionStream
from attngan.metrics.roundtrip import CaptionerStream
from attngan.metrics.scenes import JudgeSceneProbs, JudgeStream
from attngan.metrics.sharpness import SharpnessStream
from attngan.metrics.spec import (  # noqa: F401 - the registry's API
    REGISTRY,
    REQUIREMENTS,
    STREAMS,
    MetricSpec,
    StreamSpec,
    missing_input,
    register,
    register_stream,
)

if TYPE_CHECKING:
    from attngan.metrics.context import EvalContext
    from attngan.pipeline import AttnGANPipeline

# The built-in metrics in the report's order (and that of `attngan eval --help`); metrics
# registered elsewhere follow them, in the order they were registered.
BUILTIN_METRICS = ("is", "fid", "fid_legacy", "kid", "r_precision", "binding", "localisation",
                   "attention_colour", "fid_oracle", "sharpness", "roundtrip", "scene_objects", "scene_place",
                   "scene_colour", "scene_count", "composition", "fid_judge")


def _in_report_order() -> None:
    missing = [name for name in BUILTIN_METRICS if name not in REGISTRY]
    if missing:
        raise KeyError(f"the built-in metric '{missing[0]}' is not registered by its module")
    specs = dict(REGISTRY)
    REGISTRY.clear()
    REGISTRY.update({name: specs.pop(name) for name in BUILTIN_METRICS})
    REGISTRY.update(specs)


_in_report_order()


def default_metrics(given: Iterable[str] | None = None) -> tuple[str, ...]:
    """The metrics that run when none are named (`MetricSpec.default`), in the report's order; with
    `given` (keys of `REQUIREMENTS`: what the caller can supply), only those that need nothing else."""
    unknown = sorted(set(given or ()) - set(REQUIREMENTS))
    if unknown:
        raise KeyError(f"'{unknown[0]}' is not one of REQUIREMENTS: {', '.join(REQUIREMENTS)}")
    return tuple(name for name, spec in REGISTRY.items()
                 if spec.default and (given is None or set(spec.requires) <= set(given)))


# Feature streams. Each builder loads its network from the options; the imports stay inside so
# that reading the registry (`attngan eval --help`) does not import torch.

@register_stream("sharpness")
def _sharpness(ctx: "EvalContext", pipe: AttnGANPipeline | None) -> tuple[Any, str]:
    return SharpnessStream(ctx.device), ("luminance DCT-II top-octave energy share and its part that follows "
                                         "the octave below, every stage")


@register_stream("fid_inception")
def _fid_inception(ctx: "EvalContext", pipe: AttnGANPipeline | None) -> tuple[Any, str]:
    from attngan.metrics.extractors import fid_stream

    o = ctx.options
    return (fid_stream(o.fid_inception, ctx.device, resize=o.fid_resize),
            f"FID Inception {Path(o.fid_inception).name}, {o.fid_resize} resize")


@register_stream("tv_inception_dmgan")
def _tv_inception_dmgan(ctx: "EvalContext", pipe: AttnGANPipeline | None) -> tuple[Any, str]:
    from attngan.metrics.extractors import legacy_fid_stream

    path = ctx.options.inception
    return (legacy_fid_stream(path, ctx.device), f"torchvision Inception-v3 {Path(path).name}, DM-GAN "
                                                 "eval/FID input (PIL bilinear 299, [0, 1], transform_input)")


@register_stream("is_probs")
def _is_probs(ctx: "EvalContext", pipe: AttnGANPipeline | None) -> tuple[Any, str]:
    from attngan.metrics.extractors import classifier_stream

    o = ctx.options
    if not (o.is_classifier or o.oracle) and o.judge:
        return (JudgeSceneProbs(_scene_judge(ctx), ctx.device),
                f"SynthScenes judge {Path(o.judge).name}: p(background) x the categories' shares of the object area")
    path = o.is_classifier or o.oracle or o.fid_inception
    stream, what = classifier_stream(path, ctx.device)
    return stream, f"{what}: {Path(path).name}"


@register_stream("oracle")
def _oracle(ctx: "EvalContext", pipe: AttnGANPipeline | None) -> tuple[Any, str]:
    from attngan.metrics.extractors import OracleStream
    from attngan.metrics.oracle import load_oracle

    path = ctx.options.oracle
    oracle = load_oracle(path, ctx.device)
    return OracleStream(oracle, ctx.device), f"SynthBirds oracle {Path(path).name} (valid={oracle.cfg.valid})"


def _scene_judge(ctx: "EvalContext"):
    """The --judge folder's judge, loaded once for the streams that read it (IS and the scene metrics)."""
    if "judge" not in ctx.memo:
        from attngan.networks.scene_judge import load_judge

        ctx.memo["judge"] = load_judge(ctx.options.judge, ctx.device)
    return ctx.memo["judge"]


@register_stream("judge")
def _judge(ctx: "EvalContext", pipe: AttnGANPipeline | None) -> tuple[Any, str]:
    judge = _scene_judge(ctx)
    return (JudgeStream(judge, ctx.device),
            f"SynthScenes judge {Path(ctx.options.judge).name} (valid={judge.cfg.valid})")


@register_stream("colour_attention")
def _colour_attention(ctx: "EvalContext", pipe: AttnGANPipeline | None) -> tuple[Any, str]:
    return ColourAttentionStream(), "the generator's word attention maps, SynthBirds palette colours"


@register_stream("captioner")
def _captioner(ctx: "EvalContext", pipe: AttnGANPipeline | None) -> tuple[Any, str]:
    from attngan.captioner import Captioner

    name = ctx.options.captioner
    captioner = Captioner.from_pretrained(name, device=str(ctx.device))
    c = captioner.config
    return CaptionerStream(captioner), (f"captioner {name} ({c.name}, beam {c.beam_size}"
                                        + (f", must mention {c.mention}" if c.mention else "")
                                        + "), trained on real images only")


@register_stream("damsm")
def _damsm(ctx: "EvalContext", pipe: AttnGANPipeline | None) -> tuple[Any, str]:
    from attngan.metrics.extractors import DamsmStream

    o = ctx.options
    if o.eval_damsm:
        from attngan.io import load_damsm

        cfg, vocab, text_enc, img_enc = load_damsm(o.eval_damsm, ctx.device)
        what, digest = f"evaluation DAMSM {o.eval_damsm}", f"damsm:{Path(o.eval_damsm).resolve()}"
    else:
        cfg, vocab, text_enc, img_enc = pipe.config, pipe.vocab, pipe.text_encoder, pipe.image_encoder
        what, digest = "the model's own DAMSM (the encoders G was trained against: optimistic)", "model"
    stream = DamsmStream(text_enc, img_enc, vocab, cfg.damsm.words_num, ctx.device, digest,
                         protocol=o.rp_protocol, own=not o.eval_damsm, gamma1=cfg.damsm.gamma1)
    return stream, what
