"""The `sharpness` metric: the top-octave statistic on constructed images, and `evaluate` end to end
on tiny random 1-, 2- and 3-stage (and DCGAN) models over a tiny SynthBirds set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from attngan.metrics.extractors import quantize
from attngan.metrics.sharpness import (SharpnessStream, high_band_share, matched_noise, stage_table,
                                       structured_share, upsample)


def _smooth(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random images with only low frequencies: white noise blurred three times by a 5-tap binomial."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    k2 = (k[:, None] * k[None]).expand(3, 1, 5, 5).contiguous()
    for _ in range(3):
        x = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k2, groups=3)
    return (x / x.std() * 0.4).clamp(-1, 1)


# The statistic.

@pytest.mark.parametrize("size", [32, 64, 128])
def test_smooth_image_upsampled_from_half_size_has_almost_no_top_octave(size):
    half = _smooth(8, size // 2)
    up = upsample(half, size)
    assert high_band_share(up).max() < 1e-3
    # Still ~0 once written as an 8-bit file (quantisation noise is white but tiny).
    assert high_band_share(quantize(up)).max() < 1e-3
    # The same content drawn at full size with fine detail added is far from 0.
    detailed = up + 0.1 * torch.randn(up.shape, generator=torch.Generator().manual_seed(1))
    assert high_band_share(detailed).mean() > 0.02


@pytest.mark.parametrize("size", [16, 32, 64])
def test_white_noise_share_is_the_band_area(size):
    # The top octave is every DCT coefficient outside the lower-left (S/2)^2 square: 3/4 of them.
    noise = torch.randn(64, 3, size, size, generator=torch.Generator().manual_seed(size))
    share = high_band_share(noise)
    assert share.mean().item() == pytest.approx(0.75, abs=0.01)
    assert share.min().item() > 0.6


def test_share_ignores_brightness_contrast_and_flat_images():
    x = _smooth(4, 32) + 0.05 * torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    a = high_band_share(x)
    torch.testing.assert_close(high_band_share(0.5 * x + 0.2), a)
    assert high_band_share(torch.full((2, 3, 16, 16), 0.3)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        high_band_share(torch.zeros(1, 3, 15, 15))


def test_stream_reads_every_stage_and_the_upsampled_baseline():
    stages = [_smooth(4, 16), _smooth(4, 32, seed=1), _smooth(4, 64, seed=2)]
    out = SharpnessStream(torch.device("cpu"))(stages)
    assert set(out) == {f"{k}{s}_{i}" for i in range(3) for s in ("hf", "st") for k in ("", "up_", "mn_")
                        if i or not k}
    assert all(v.shape == (4,) for v in out.values())
    # One tensor (a folder of images): one stage, no baseline.
    assert set(SharpnessStream(torch.device("cpu"))(stages[-1])) == {"hf_0", "st_0"}


def test_matched_noise_takes_the_asked_top_octave_share():
    up = upsample(_smooth(6, 32), 64)
    want = torch.tensor([0.01, 0.05, 0.1, 0.2, 0.3, 0.0], dtype=torch.float64)
    got = high_band_share(matched_noise(up, want))
    assert got[:5].numpy() == pytest.approx(want[:5].numpy(), rel=0.1)
    assert got[5] < 1e-3  # asking for less than the image holds adds nothing


def test_noise_adds_top_octave_energy_but_no_structure():
    # Edges: a smooth image thresholded (sharp boundaries), drawn at full size.
    sharp = torch.where(_smooth(8, 64, seed=3) > 0, 0.6, -0.6)
    up = upsample(F.avg_pool2d(sharp, 2), 64)
    noisy = up + 0.35 * torch.randn(up.shape, generator=torch.Generator().manual_seed(4))
    assert high_band_share(noisy).mean() > high_band_share(sharp).mean()  # the energy test is fooled
    assert structured_share(noisy).mean() < 0.2 * structured_share(sharp).mean()
    assert structured_share(up).mean() < 0.2 * structured_share(sharp).mean()
    noise = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    assert abs(structured_share(noise).mean()) < 0.02 * high_band_share(noise).mean()


@pytest.fixture(scope="module")
def birds_160(tmp_path_factory) -> Path:
    # Stored above the loader's load size for 128 px (152), so the real 128 px crops are real.
    from attngan.data.synth_birds import generate_synth_birds

    return generate_synth_birds(tmp_path_factory.mktemp("sharp") / "birds", images=96, classes=8, size=160,
                                seed=3, progress=False)


def test_real_renders_score_near_one_and_upsampled_plus_noise_below_a_fifth(birds_160):
    from attngan.config import DataConfig
    from attngan.data.dataset import TextImageDataset
    from attngan.data.vocab import load_vocab

    def stages(split):
        ds = TextImageDataset(birds_160, split, DataConfig(base_size=32, branch_num=3, short_captions="pad"),
                              load_vocab(birds_160), image_sizes=[32, 64, 128], train=False)
        items = [ds[i]["images"] for i in range(min(40, len(ds)))]
        return [torch.stack([it[k] for it in items]) for k in range(3)]

    stream = SharpnessStream(torch.device("cpu"))
    real = stream(stages("test"))
    other = stages("train")
    up = upsample(other[1], 128)
    noise = torch.randn(up.shape, generator=torch.Generator().manual_seed(0)) * 7 / 127.5  # 7 grey levels

    def score(top):
        return stage_table(stream([other[0], other[1], top]), real, [0, 1, 2], [32, 64, 128], 2)

    new_images = score(other[2])
    assert new_images["value"] > 0.8
    upsampled_noisy = score(up + noise)
    assert upsampled_noisy["per_stage"][-1]["ratio"] > 1.0  # as much fine energy as real images...
    assert upsampled_noisy["value"] < 0.2                   # ...and none of it detail
    assert score(up)["value"] < 0.2
    # The stream's own baselines say the same for the real 128 px images.
    row = new_images["per_stage"][-1]
    assert row["upsampled_prev_detail"] < 0.2 and row["matched_noise_detail"] < 0.2


def test_real_images_against_themselves_give_detail_one():
    sharp = torch.where(_smooth(6, 32, seed=1) > 0, 0.6, -0.6)
    stages = [F.avg_pool2d(sharp, 2), sharp]
    real = SharpnessStream(torch.device("cpu"))(stages)
    r = stage_table(real, real, [0, 1], [16, 32], splits=2)
    assert [row["ratio"] for row in r["per_stage"]] == pytest.approx([1.0, 1.0])
    assert r["per_stage"][1]["detail"] == pytest.approx(1.0)
    assert r["value"] == pytest.approx(1.0)
    assert r["per_stage"][0]["upsampled_prev_detail"] is None
    assert r["per_stage"][1]["upsampled_prev_detail"] < 0.5
    assert r["n_real"] == 6


# `evaluate` end to end.

@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from attngan.data.synth_birds import generate_synth_birds

    root = tmp_path_factory.mktemp("synth") / "birds"
    return generate_synth_birds(root, images=40, classes=8, size=96, seed=0, progress=False)


def _model(synth: Path, out: Path, branch_num: int, dcgan: bool = False) -> Path:
    """A random tiny model at 16 -> 32 -> 64 px (the data is stored at 96 px: no upsampled reals)."""
    from attngan.config import preset
    from attngan.networks import build_generator, build_image_encoder, build_text_encoder
    from attngan.data.vocab import load_vocab
    from attngan.io import save_model_folder

    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.data.base_size, cfg.data.branch_num = 16, branch_num
    if dcgan:
        cfg.gan.dcgan, cfg.gan.r_num = True, 0
    vocab = load_vocab(synth)
    save_model_folder(out, cfg, vocab, build_generator(cfg, cfg.text.embedding_dim),
                      build_text_encoder(cfg, len(vocab)), build_image_encoder(cfg))
    return out


def _options(tmp_path: Path, **kw):
    from attngan.metrics.evaluation import EvalOptions

    kw = {"metrics": ["sharpness"], "num_images": 8, "splits": 2, "batch": 4, "progress": False,
          "device": "cpu", "cache_dir": str(tmp_path / "cache"), **kw}
    return EvalOptions(**kw)


@pytest.mark.parametrize("branch_num,dcgan,stages,sizes", [
    (1, False, [0], [16]),
    (2, False, [0, 1], [16, 32]),
    (3, False, [0, 1, 2], [16, 32, 64]),
    (3, True, [2], [64]),
])
def test_evaluate_reports_one_row_per_stage(synth, tmp_path, branch_num, dcgan, stages, sizes):
    from attngan.metrics.evaluation import evaluate
    from attngan.metrics.report import format_markdown

    model = _model(synth, tmp_path / "model", branch_num, dcgan)
    report = evaluate(synth, _options(tmp_path), model_dir=model)
    r = report["results"]["sharpness"]
    assert [row["stage"] for row in r["per_stage"]] == stages
    assert [row["size"] for row in r["per_stage"]] == sizes
    assert report["stage_sizes"] == sizes and report["image_size"] == sizes[-1]
    for j, row in enumerate(r["per_stage"]):
        assert 0 < row["hf_share"] < 1 and 0 < row["real_hf_share"] < 1
        assert row["ratio"] == pytest.approx(row["hf_share"] / row["real_hf_share"])
        assert row["detail"] == pytest.approx(row["structured_share"] / row["real_structured_share"])
        assert (row["upsampled_prev_detail"] is None) == (j == 0) == (row["matched_noise_detail"] is None)
    assert r["value"] == r["per_stage"][-1]["detail"] and r["std"] is not None and r["n"] == 8
    assert ("note" in r) == dcgan
    md = format_markdown(report)
    assert "| Stage | Size | Detail | Energy ratio |" in md
    assert md.count("\n| top |") == 0 and md.count(f"\n| {stages[-1]} | {sizes[-1]} |") == 1

    # The real statistics are cached per stage-size set; a second run reads them back.
    again = evaluate(synth, _options(tmp_path), model_dir=model)
    assert not any(k.startswith("real_") for k in again["timings"])
    assert again["results"]["sharpness"]["per_stage"] == r["per_stage"]


def test_other_streams_read_the_top_stage(synth, tmp_path):
    from attngan.config import DataConfig
    from attngan.data.dataset import TextImageDataset
    from attngan.metrics.sources import GeneratedImages
    from attngan.pipeline import AttnGANPipeline

    pipe = AttnGANPipeline.from_pretrained(_model(synth, tmp_path / "model", 3), device="cpu")
    ds = TextImageDataset(synth, "test", DataConfig(base_size=16, branch_num=3, short_captions="pad"),
                          pipe.vocab, image_sizes=[64], train=False)
    batch = next(iter(GeneratedImages(pipe, ds, num_images=4, batch=4, seed=0)))
    assert [x.shape[-1] for x in batch.stages] == [16, 32, 64]
    assert torch.equal(batch.images, quantize(batch.stages[-1]))


def test_real_images_scored_as_a_folder_give_detail_one(synth, tmp_path):
    from attngan.config import DataConfig
    from attngan.data.dataset import TextImageDataset
    from attngan.metrics.evaluation import evaluate
    from attngan.data.vocab import load_vocab

    # The test split exactly as the real statistics see it: the loader's centre crops at 64 px.
    ds = TextImageDataset(synth, "test", DataConfig(base_size=64, branch_num=1, short_captions="pad"),
                          load_vocab(synth), image_sizes=[64], train=False)
    folder = tmp_path / "real"
    folder.mkdir()
    for i in range(len(ds)):
        arr = ((ds[i]["images"][0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:04d}.png")
    report = evaluate(synth, _options(tmp_path, num_images=len(ds)), images_dir=folder)
    r = report["results"]["sharpness"]
    assert [(row["stage"], row["size"]) for row in r["per_stage"]] == [(None, 64)]
    assert r["value"] == pytest.approx(1.0, abs=1e-9) and r["n_real"] == len(ds)


def test_eval_cli_prints_and_saves_the_stage_table(synth, tmp_path, capsys):
    from attngan.cli import main

    model = _model(synth, tmp_path / "model", 3)
    out = tmp_path / "report.json"
    assert main(["eval", "--model", str(model), "--data", str(synth), "--metrics", "sharpness",
                 "--num-images", "4", "--splits", "2", "--batch", "4", "--cache", str(tmp_path / "cache"),
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "High-frequency detail (`sharpness`, 1 is best)" in printed
    assert "| Stage | Size | Detail | Energy ratio |" in printed
    rows = json.loads(out.read_text())["results"]["sharpness"]["per_stage"]
    assert [row["size"] for row in rows] == [16, 32, 64]
    assert set(rows[0]) == {"stage", "size", "real_hf_share", "real_structured_share"} | {
        f"{p}{k}" for p in ("", "upsampled_prev_", "matched_noise_")
        for k in ("hf_share", "ratio", "structured_share", "detail")}
