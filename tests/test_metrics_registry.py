"""The metric registry builds what `attngan eval` runs: every stream a metric names has a builder
in `registry.STREAMS`, a metric registered with a stream of its own runs end to end, and a metric
defined in this file alone (stream, maths, real-image pass, report lines, declaration) appears in
`attngan eval`'s JSON and Markdown with its own lines."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attngan.metrics.registry import REGISTRY, STREAMS, MetricSpec, register, register_stream


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    from attngan.data.synth_birds import generate_synth_birds

    return generate_synth_birds(tmp_path_factory.mktemp("registry") / "birds", images=24, classes=4, size=64,
                                seed=0, progress=False)


@pytest.fixture
def folder(tmp_path):
    """Four 64 px images of random pixels, no captions."""
    out = tmp_path / "images"
    out.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(out / f"{i}.png")
    return out


@pytest.fixture
def restored_registry():
    """Whatever a test registers is gone after it."""
    metrics, streams = dict(REGISTRY), dict(STREAMS)
    yield
    REGISTRY.clear()
    REGISTRY.update(metrics)
    STREAMS.clear()
    STREAMS.update(streams)


def test_every_stream_a_metric_names_has_a_builder():
    for spec in REGISTRY.values():
        assert set(spec.streams) <= set(STREAMS), f"{spec.name} reads a stream with no builder"
        assert set(spec.uses) <= set(STREAMS), f"{spec.name} uses a stream with no builder"
    assert REGISTRY["localisation"].uses == ("damsm",)  # it reads the DAMSM on real images only
    assert all(name == spec.name for name, spec in STREAMS.items())


class MeanStream:
    """Each image's mean pixel value."""

    name = "toy_mean"
    digest = "toy-mean-1"
    needs_captions = False

    def __call__(self, images, captions):
        return {"mean": images.double().mean(dim=(1, 2, 3)).numpy()}


def _register_toys():
    @register_stream("toy_mean")
    def build(ctx, pipe):
        return MeanStream(), "mean pixel value"

    @register(name="toy", title="Toy", protocol="generated minus real mean pixel", reference="this test",
              streams=("toy_mean",), real=True, unit="", higher_is_better=False)
    def toy(ctx):
        real = ctx.real_features("toy_mean")["mean"]
        return {"value": ctx.generated["toy_mean"]["mean"].mean() - real.mean(), "std": None,
                "n_real": len(real)}

    @register(name="toy_real", title="Toy (real only)", protocol="real mean pixel", reference="this test",
              streams=(), uses=("toy_mean",), real=True, unit="", higher_is_better=False)
    def toy_real(ctx):
        assert "toy_mean" in ctx.streams
        return {"value": ctx.real_features("toy_mean")["mean"].mean(), "std": None}


def test_a_registered_metric_and_stream_run_end_to_end(birds, folder, tmp_path, restored_registry):
    from attngan.metrics import evaluate
    from attngan.metrics.evaluation import EvalOptions
    from attngan.metrics.report import format_markdown, report_rows

    _register_toys()
    options = EvalOptions(metrics=["toy"], splits=2, progress=False, device="cpu", cache_dir=str(tmp_path / "cache"))
    report = evaluate(birds, options, images_dir=folder)
    assert report["streams"] == {"toy_mean": "mean pixel value"}
    pixels = np.stack([np.asarray(Image.open(f), dtype=np.float64) for f in sorted(folder.glob("*.png"))])
    (real_file,) = (tmp_path / "cache").glob("real-toy_mean-test-64px-*.npz")
    with np.load(real_file) as z:
        real = z["mean"]
    r = report["results"]["toy"]
    assert r["value"] == pytest.approx((pixels / 127.5 - 1).mean() - real.mean())
    assert r["n"] == 4 and r["n_real"] == len(real) > 0
    assert "| Toy (`toy`, lower is better) |" in format_markdown(report)
    assert [row["name"] for row in report_rows(report)] == ["toy"]

    # The same run with keyword options; a metric that only uses the stream reads no image.
    same = evaluate(birds, images_dir=folder, metrics=["toy", "toy_real"], splits=2, progress=False,
                    device="cpu", cache_dir=tmp_path / "cache")
    assert same["results"]["toy"]["value"] == r["value"]
    assert same["results"]["toy_real"]["value"] == pytest.approx(real.mean())
    alone = evaluate(birds, options, images_dir=folder, metrics=["toy_real"])
    assert alone["num_images"] == 0 and alone["streams"] == {"toy_mean": "mean pixel value"}


def test_a_metric_whose_stream_has_no_builder_fails_before_scoring(birds, folder, tmp_path, restored_registry):
    from attngan.metrics import evaluate

    @register(name="toy_orphan", title="Orphan", protocol="-", reference="this test", streams=("no_such_stream",),
              real=False, unit="", higher_is_better=True)
    def orphan(ctx):
        raise AssertionError("never called")

    with pytest.raises(KeyError, match="no_such_stream"):
        evaluate(birds, images_dir=folder, metrics=["toy_orphan"], splits=2, progress=False, device="cpu",
                 cache_dir=tmp_path / "cache")


# A new metric in one file: its stream, its maths, its pass over real images, its report lines and
# its declaration all live here, and `attngan eval` runs it with nothing else changed.

class RedStream:
    """Each image's mean red value in [-1, 1]."""

    name = "toy_red"
    digest = "toy-red-1"
    needs_captions = False

    def __call__(self, images, captions):
        return {"red": images[:, 0].double().mean(dim=(1, 2)).numpy()}


def _red_excess(ctx):
    """Generated minus real mean red, and the real side's own pass over the test images."""
    real = ctx.real_features("toy_red")["red"]
    gen = ctx.generated["toy_red"]["red"]
    return {"value": float(gen.mean() - real.mean()), "std": float(gen.std()),
            "per_image": {"min": float(gen.min()), "max": float(gen.max())}, "n_real": len(real)}


def _red_details(name, r):
    return [f"- `{name}`: the reddest image {r['per_image']['max']:.3f}, the least red {r['per_image']['min']:.3f}"]


def _register_red():
    register_stream("toy_red")(lambda ctx, pipe: (RedStream(), "mean red channel"))
    return register(MetricSpec(
        name="toy_red_excess", title="Toy red excess", protocol="generated minus real mean red",
        reference="this test", streams=("toy_red",), real=True, unit="", higher_is_better=False,
        fn=_red_excess, default=False, details=_red_details))


@pytest.fixture(scope="module")
def tiny_model(birds, tmp_path_factory):
    """A random `tiny` model whose vocabulary is the data's."""
    import torch

    from attngan.config import preset
    from attngan.data.vocab import load_vocab
    from attngan.io import save_model_folder
    from attngan.networks import build_generator, build_image_encoder, build_text_encoder

    torch.manual_seed(0)
    cfg = preset("tiny")
    vocab = load_vocab(birds)
    out = tmp_path_factory.mktemp("model") / "tiny"
    save_model_folder(out, cfg, vocab, build_generator(cfg, cfg.text.embedding_dim),
                      build_text_encoder(cfg, len(vocab)), build_image_encoder(cfg))
    return out


def test_a_metric_added_in_one_file_runs_in_eval_with_its_report_lines(birds, tiny_model, tmp_path, capsys,
                                                                       restored_registry):
    import json

    from attngan.cli import main
    from attngan.metrics.registry import default_metrics

    _register_toys()  # registered with the decorator, without report lines
    spec = _register_red()
    assert REGISTRY["toy_red_excess"] is spec and list(REGISTRY)[-1] == "toy_red_excess"
    with pytest.raises(TypeError):
        register(spec, name="twice")
    assert "toy_red_excess" not in default_metrics()  # default=False: it runs when named
    out = tmp_path / "report.json"
    argv = ["eval", "--model", str(tiny_model), "--data", str(birds), "--metrics", "toy_red_excess,toy",
            "--num-images", "6", "--splits", "2",
            "--batch", "3", "--cache", str(tmp_path / "cache"), "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    r = report["results"]["toy_red_excess"]
    assert list(report["results"]) == ["toy_red_excess", "toy"]
    assert report["streams"]["toy_red"] == "mean red channel"
    (real_file,) = (tmp_path / "cache").glob("real-toy_red-test-64px-*.npz")
    with np.load(real_file) as z:
        real = z["red"]
    assert r["n"] == 6 and r["n_real"] == len(real) > 0
    assert r["per_image"]["min"] <= r["value"] + real.mean() <= r["per_image"]["max"]
    line = f"- `toy_red_excess`: the reddest image {r['per_image']['max']:.3f}, the least red {r['per_image']['min']:.3f}"
    md = out.with_suffix(".md").read_text()
    assert line in md and line in capsys.readouterr().out
    assert "| Toy red excess (`toy_red_excess`, lower is better) |" in md
    # A metric without report lines adds none.
    assert REGISTRY["toy"].details is None
    assert not any(ln.startswith("- `toy`") for ln in md.splitlines())


def test_reading_the_registry_imports_no_torch():
    # `attngan --help` builds every command's arguments, `eval`'s from the registry.
    import subprocess
    import sys

    code = "import sys, attngan.metrics.registry as r; assert r.REGISTRY; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_default_metrics_follow_the_report_order_and_what_is_given():
    from attngan.metrics.registry import BUILTIN_METRICS, REQUIREMENTS, default_metrics

    assert list(REGISTRY)[:len(BUILTIN_METRICS)] == list(BUILTIN_METRICS)
    assert default_metrics() == tuple(n for n in BUILTIN_METRICS if REGISTRY[n].default)
    assert default_metrics(given=REQUIREMENTS) == default_metrics()
    # What the shipped evaluation DAMSM and oracle can run: no Inception weights, no captioner.
    assert default_metrics(given=("is_classifier", "damsm", "captions", "oracle", "generated", "synth")) == (
        "is", "r_precision", "binding", "attention_colour", "fid_oracle")
    assert default_metrics(given=()) == ()
    from attngan.metrics.evaluation import PROMPT_METRICS

    assert PROMPT_METRICS == ("is", "binding", "attention_colour", "roundtrip")  # MetricSpec.prompts
    with pytest.raises(KeyError, match="weights"):
        default_metrics(given=("weights",))


def test_the_report_asks_each_metric_for_its_lines():
    from attngan.metrics.report import format_markdown

    def lines(name, r):
        return [f"- `{name}`: {r['extra']}"]

    register(MetricSpec(name="toy_lines", title="Lines", protocol="-", reference="-", streams=(), real=False,
                        unit="", higher_is_better=True, fn=lambda ctx: {}, details=lines))
    try:
        report = {"model": "m", "source": "s", "data": "d", "split": "test", "seed": 0, "splits": 1, "streams": {},
                  "skipped": {}, "results": {"toy_lines": {"value": 1.0, "std": None, "n": 1, "protocol": "-",
                                                           "higher_is_better": True, "extra": "per_part-like"}}}
        assert "\n- `toy_lines`: per_part-like\n" in format_markdown(report)
    finally:
        del REGISTRY["toy_lines"]


def test_the_demo_and_card_protocol_runs_the_registry_defaults():
    # A model card's evaluation protocol (and the demo's, which reads it) is the registry's default
    # metrics for what a SynthBirds evaluation has: a metric made default shows up there too.
    from attngan.metrics.registry import default_metrics
    from attngan.model_card import DEFAULT_EVAL

    given = ("is_classifier", "damsm", "captions", "oracle", "generated", "synth")
    assert set(DEFAULT_EVAL["metrics"]) == set(default_metrics(given=given))
