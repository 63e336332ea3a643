"""`EvalContext`'s disk caches follow the data: R-precision's caption pool is encoded again when a
caption of the data folder changes in place, and read back while nothing changed."""

from __future__ import annotations

import numpy as np
import torch


def _pool_of(birds, cache, damsm):
    """A fresh context's caption pool (nothing kept in memory between calls)."""
    from attngan.config import DataConfig
    from attngan.data.vocab import load_vocab
    from attngan.metrics.context import EvalContext
    from attngan.metrics.evaluation import EvalOptions

    ctx = EvalContext(options=EvalOptions(cache_dir=str(cache), batch=8, progress=False), device=torch.device("cpu"),
                      data_root=birds, data_cfg=DataConfig(short_captions="pad"), vocab=load_vocab(birds),
                      image_size=64, streams={"damsm": damsm})
    return ctx.caption_pool()


def test_caption_pool_is_encoded_again_after_a_caption_changes_in_place(tmp_path):
    from attngan.config import DataConfig, preset
    from attngan.data.dataset import TextImageDataset
    from attngan.data.synth_birds import generate_synth_birds
    from attngan.data.vocab import load_vocab
    from attngan.metrics.extractors import DamsmStream
    from attngan.networks import build_image_encoder, build_text_encoder

    birds = generate_synth_birds(tmp_path / "birds", images=24, classes=4, size=64, seed=0, progress=False)
    vocab = load_vocab(birds)
    cfg = preset("tiny")
    torch.manual_seed(0)
    damsm = DamsmStream(build_text_encoder(cfg, len(vocab)), build_image_encoder(cfg), vocab, cfg.data.words_num,
                        torch.device("cpu"), "random-damsm", own=True)
    cache = tmp_path / "cache"
    emb, cls = _pool_of(birds, cache, damsm)
    (pool_file,) = cache.glob("caption-pool-test-*.npz")
    mtime = pool_file.stat().st_mtime_ns

    # Unchanged data: the same file, read back rather than encoded again.
    again, _ = _pool_of(birds, cache, damsm)
    assert list(cache.glob("caption-pool-test-*.npz")) == [pool_file]
    assert pool_file.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again, emb)

    # Caption 0 of the first test image becomes the first words of its caption 1.
    test = TextImageDataset(birds, "test", DataConfig(short_captions="pad"), vocab, image_sizes=[64], train=False)
    text = birds / "text" / f"{test.keys[0]}.txt"
    lines = text.read_text(encoding="utf-8").splitlines()
    edited = " ".join(lines[1].split()[:5])
    assert edited != lines[0]
    text.write_text("\n".join([edited, *lines[1:]]) + "\n", encoding="utf-8")

    changed, changed_cls = _pool_of(birds, cache, damsm)
    files = sorted(cache.glob("caption-pool-test-*.npz"))
    assert len(files) == 2 and pool_file in files
    np.testing.assert_array_equal(changed_cls, cls)
    assert not np.allclose(changed[0], emb[0])  # pool row of (image 0, caption 0)
    np.testing.assert_array_equal(changed[1:], emb[1:])
