"""A training run's state in its run folder, one helper for every loop (GAN, DAMSM, captioner, oracle, judge).

A loop makes one RunState for its folder and goes through it for everything that is not its own
maths: `claim` (one writer; the temporaries of killed writers removed), `resume` (the last
`state.pt` of this kind, the config it may continue under, a note when the data folder changed),
`begin` (the log cut back to the snapshot, `resolved_config.json`), `log` (one JSON row per line),
`snapshot` (the resumable state, written atomically) and `images_seen` (progress counted in images
in every loop, so runs of different kinds read alike). What a loop saves and restores (networks,
optimisers, counters, RNG states) stays the loop's: the helper adds only the state's kind, the
images seen and the data folder it trained on. A loop that scores each epoch on held-out data and
ships its best epoch (the oracle's, the judge's) keeps that epoch through `keep_best` and
`restore_best`; how it scores is its own.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from attngan.errors import AttnGANError
from attngan.fileio import atomic_write_json
from attngan.io import atomic_torch_save
from attngan.rundir import claim_run_dir, resume_changes, truncate_jsonl
from attngan.training.checkpoint import load_training_state

if TYPE_CHECKING:
    import torch

STATE_FILE = "state.pt"
CONFIG_FILE = "resolved_config.json"


def data_identity(data_dir: str | os.PathLike | None) -> str | None:
    """How a state names the data it trained on: the resolved path (shard patterns as given)."""
    if data_dir is None:
        return None
    path = Path(data_dir)
    return str(path.resolve()) if path.exists() else str(data_dir)


class RunState:
    """The run folder `out_dir` of a loop of `kind` ("attngan", "damsm", "captioner", "oracle",
    "judge"), logging to `log_name`. `main` is False on the other processes of a distributed run:
    they read the state but write nothing. `out_dir=None` keeps the log in memory only (`rows`)."""

    def __init__(self, out_dir: str | os.PathLike | None, kind: str, log_name: str = "metrics.jsonl", *,
                 main: bool = True, data_dir: str | os.PathLike | None = None):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.kind, self.log_name, self.main = kind, log_name, main
        self.data = data_identity(data_dir)
        self.images_seen = 0
        self.rows: list[dict[str, Any]] = []
        # The epoch keep_best holds: its score, its held-out result, its number and its weights.
        self.best_score: Any = None
        self.best_result: Any = None
        self.best_epoch = 0
        self._best_weights: dict[str, Any] | None = None

    @staticmethod
    @contextmanager
    def claim(out_dir: str | os.PathLike, main: bool = True) -> Iterator[list[Path]]:
        """Hold `out_dir` for the body (attngan.rundir.claim_run_dir); only the main process does."""
        with claim_run_dir(out_dir, enabled=main) as removed:
            yield removed

    @property
    def state_path(self) -> Path:
        if self.out_dir is None:
            raise AttnGANError(f"this {self.kind} run has no folder to keep a state in")
        return self.out_dir / STATE_FILE

    @property
    def log_path(self) -> Path | None:
        return self.out_dir / self.log_name if self.out_dir is not None else None

    def resume(self, cfg: dict[str, Any], fixed: tuple[str, ...]) -> dict[str, Any] | None:
        """The saved state when the folder has one (else None): of this kind, its config changed
        only outside the `fixed` keys (a change there is a one-line error; the others are printed),
        and a note when it trained on another data folder. Sets `images_seen` from it."""
        if self.out_dir is None or not self.state_path.is_file():
            return None
        st = load_training_state(self.state_path, self.kind)
        changes = resume_changes(self.out_dir, cfg, fixed)
        if changes and self.main:
            print("resuming with changed settings: " + "; ".join(changes))
        before = st.get("data")
        if self.main and self.data is not None and isinstance(before, str) and before != self.data:
            print(f"note: this run trained on {before} and resumes on {self.data}; the saved state "
                  "continues with the new data")
        self.images_seen = int(st.get("images_seen", 0))
        return st

    def begin(self, cfg: dict[str, Any], keep: Callable[[dict[str, Any]], bool]) -> None:
        """Before the first step: cut the log back to the rows `keep` accepts (those up to the
        snapshot this run starts from; rows after it are written again by this run) and record
        the config this run trains under."""
        if not self.main or self.out_dir is None:
            return
        truncate_jsonl(self.log_path, keep)
        atomic_write_json(self.out_dir / CONFIG_FILE, cfg)

    def add_images(self, n: int) -> None:
        self.images_seen += int(n)

    @property
    def kimg(self) -> float:
        return self.images_seen / 1000

    def log(self, row: dict[str, Any]) -> None:
        """Append one row to the log (the main process only); without a folder, to `rows`."""
        if not self.main:
            return
        if self.out_dir is None:
            self.rows.append(row)
            return
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def snapshot(self, state: dict[str, Any]) -> None:
        """Write the resumable state (atomically; the main process only): the loop's `state` plus
        the kind, the images seen and the data folder."""
        if not self.main or self.out_dir is None:
            return

        atomic_torch_save({"kind": self.kind, **state, "images_seen": self.images_seen,
                           **({"data": self.data} if self.data is not None else {})}, self.state_path)

    def keep_best(self, model: torch.nn.Module, epoch: int, result: Any, score: Any) -> bool:
        """After `model` was scored on held-out data at `epoch`: keep a copy of its weights, with
        `result` and `epoch`, when `score` beats every score kept before (a tie keeps the earlier
        epoch). Scores are compared with `>` (numbers or tuples of them). True when kept."""
        if self._best_weights is not None and not score > self.best_score:
            return False
        self.best_score, self.best_result, self.best_epoch = score, result, epoch
        self._best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def restore_best(self, model: torch.nn.Module) -> None:
        """Load the weights keep_best holds into `model`."""
        if self._best_weights is None:
            raise AttnGANError(f"this {self.kind} run scored no epoch, so it has none to keep")
        model.load_state_dict(self._best_weights)
