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
    from helpers import save_random_tiny_model

    from attngan.text import Vocabulary

    vocab = Vocabulary(["<end>"] + sorted(set(BIRD_WORDS)))
    return save_random_tiny_model(tmp_path_factory.mktemp("models") / "tiny", vocab=vocab, bn_stats=True)
