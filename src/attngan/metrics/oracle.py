"""SynthBirds oracle: a small CNN that reads part colours and species off a 64 px bird image.

SynthBirds renders every bird from known attributes (data/synth_birds.py writes them to
synth_birds.json), so a classifier trained on real renders can check whether a generated image
shows the colours its caption asked for (`binding.py`). The oracle is an evaluator, not part of
the model: it may see every class, train and test alike; a per-class held-out fraction of the
images measures its own accuracy, and below `MIN_ACCURACY` on any attribute the binding metric it
serves is reported void. Its training is training/oracle_loop.py's.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from attngan.io import load, state_dict_for_save, write_folder
from attngan.metrics.inception_fid import weights_digest
from attngan.networks.oracle import AttributeOracle, OracleConfig  # noqa: F401 - part of this API

ORACLE_PARTS = ("wing", "belly", "crown", "bill")   # the attributes binding checks
MIN_ACCURACY = 0.97                                 # per attribute, on held-out real images
WEIGHTS_FILE = "oracle.safetensors"


# Saving and loading.

def save_oracle(oracle: AttributeOracle, out_dir: str | Path) -> Path:
    """An oracle folder (attngan.io's format: config.json with the OracleConfig fields, and
    oracle.safetensors), written to a temp folder and renamed."""
    return write_folder(out_dir, "oracle", asdict(oracle.cfg), {WEIGHTS_FILE: state_dict_for_save(oracle)})


def load_oracle(path: str | Path, device: torch.device | str = "cpu") -> AttributeOracle:
    """An oracle folder (made by `attngan train-oracle`) or a bundled one by name, in eval mode."""
    loaded = load(path, "oracle", device)
    oracle = loaded.modules["oracle"]
    oracle.digest = weights_digest(loaded.folder / WEIGHTS_FILE)
    return oracle
