"""Shared fixtures: tiny random models built in the test session (nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

BIRD_WORDS = ("a bird with wings that are black and white belly blue red yellow this has small "
              "crown short pointed bill green grey brown").split()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised `tiny` model folder (config, vocab, safetensors weights)."""
    from attngan.config import preset
    from attngan.networks import build_generator, build_image_encoder, build_text_encoder
    from attngan.text import Vocabulary
    from attngan.training.checkpoint import save_model_folder

    torch.manual_seed(0)
    cfg = preset("tiny")
    vocab = Vocabulary(["<end>"] + sorted(set(BIRD_WORDS)))
    te = build_text_encoder(cfg, len(vocab))
    G = build_generator(cfg, cfg.text.embedding_dim)
    ie = build_image_encoder(cfg)
    # Non-trivial BN statistics so eval-mode paths are exercised.
    for m in G.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    out = tmp_path_factory.mktemp("models") / "tiny"
    save_model_folder(out, cfg, vocab, G, te, ie)
    return out
