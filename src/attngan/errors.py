"""User-facing errors: the CLI prints these as one line, never as a traceback."""

from __future__ import annotations

import operator
from typing import Any

# torch.Generator.manual_seed takes any 64-bit value and numpy's SeedSequence any non-negative
# int; a seed that is non-negative and fits in a signed 64-bit integer means the same thing to
# every consumer (the CLI, the Python API, the JSON API's MAX_SEED), and larger ones overflow.
SEED_LIMIT = 2**63


class AttnGANError(Exception):
    """Bad input, a missing file, an incompatible model: something the user can fix."""


def check_seed(seed: Any, what: str = "seed") -> int:
    """`seed` as an int when it is integral with 0 <= seed < 2**63, else an AttnGANError naming
    `what`. numpy and 0-d torch integers are accepted (they convert exactly); bools and floats not."""
    value = None
    if not isinstance(seed, bool):
        try:
            value = operator.index(seed)
        except TypeError:
            pass
    if value is None or not 0 <= value < SEED_LIMIT:
        shown = repr(seed)
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        raise AttnGANError(f"{what} must be an integer from 0 to 2**63 - 1, got {shown}")
    return value
