"""Shared fixtures: tiny random models built in the test session (nothing is downloaded)."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)

# `amp=auto` resolves by the CPU (bf16 where native, float32 elsewhere); pinned here so that every
# test means the same on every machine, and inherited by the commands tests start. The bf16 path
# is run explicitly instead, through the `amp` fixture (emulated on CPUs without native bf16).
os.environ["ATTNGAN_NATIVE_BF16"] = "0"

AMP_MODES = ("off", "bf16")


@pytest.fixture(params=AMP_MODES)
def amp(request) -> str:
    """The precision a training-step test runs in: float32 and bf16 autocast, on every CPU."""
    return request.param

BIRD_WORDS = ("a bird with wings that are black and white belly blue red yellow this has small "
              "crown short pointed bill green grey brown").split()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised `tiny` model folder (config, vocab, safetensors weights)."""
    from helpers import save_random_tiny_model

    from attngan.text import Vocabulary

    vocab = Vocabulary(["<end>"] + sorted(set(BIRD_WORDS)))
    return save_random_tiny_model(tmp_path_factory.mktemp("models") / "tiny", vocab=vocab, bn_stats=True)
