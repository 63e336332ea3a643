"""The metric registry builds what `attngan eval` runs: every stream a metric names has a builder
in `registry.STREAMS`, and a metric registered with a stream of its own runs end to end."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attngan.metrics.registry import REGISTRY, STREAMS, register, register_stream


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
