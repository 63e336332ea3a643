"""The resumable training state (`state.pt`): live networks, optimisers, EMA, RNG states,
counters. What inference loads (model and DAMSM folders) and the atomic writes are attngan.io's."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attngan.errors import AttnGANError


# RNG states (for exact resume).

def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": _py_random_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# What each loop's state.pt holds, by a key only that kind has (states written before the "kind"
# entry existed are recognised by it too).
STATE_KINDS = {"attngan": "G", "damsm": "text_encoder", "captioner": "model"}
STATE_TITLES = {"attngan": "an AttnGAN (attngan train)", "damsm": "a DAMSM (attngan train-damsm)",
                "captioner": "a captioner (attngan train-captioner)"}


def load_training_state(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """A state.pt; with `kind` ("attngan" or "damsm"), a state of another kind is a one-line
    error that names both, rather than a KeyError deep in the resume."""
    path = Path(path)
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AttnGANError(f"cannot read training state {path}: {e}".splitlines()[0]) from None
    if kind is None:
        return st
    found = st.get("kind") if isinstance(st, dict) else None
    if found is None and isinstance(st, dict):
        found = next((k for k, key in STATE_KINDS.items() if key in st), None)
    if found != kind:
        what = STATE_TITLES.get(found, "not an attngan") if isinstance(found, str) else "not an attngan"
        raise AttnGANError(f"{path} is {what} training state, not {STATE_TITLES[kind]} one; "
                           "use another --out")
    return st
