"""Records and data sources: one image with its captions, class, split and box whatever layout it
came from, and the one list of readers that turn a `--data` folder into Records.

A data source is an object with
    name                                  a short name, for messages
    detect(root) -> bool                  whether `root` is in its layout (looks at file names only)
    records(root, split) -> [Record]      the split's images, checked (one-line AttnGANError)
and, inherited from `DataSource` unless the layout has its own:
    caption_lines(root, split)            every caption of the split, as written (vocabularies)
    vocabulary(root, min_count)           the data's own words, or None: the release's files,
                                          else built from caption_lines
    folder(root, split)                   the local folder whose files the records name
    train_stream(root, cfg, vocab, sizes) a streamed training set, or None (indexed records)
    varying_captions                      images carry any number of captions (padded by
                                          repeating their own), not a fixed count per image
    ground_truth(root)                    the exact ground truth the folder carries beside its
                                          images: "synth_birds", "synth_scenes" or None
    evaluation_defaults(root)             what `attngan eval` uses on this data unless the user
                                          names another: {"judge", "captioner", "eval_damsm":
                                          a folder or bundled name}

`register_source(source)` adds a source; `detect_source(root)` is the only place that decides
which source reads a folder, and `ground_truth(root)` the only place that says which ground truth
it has (the evaluation, the captioner and train-oracle ask it). Readers of paths named by the data
itself (keys, metadata rows) go through `inside()`, so data never reaches a file outside its folder.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from attngan.errors import AttnGANError

if TYPE_CHECKING:
    from attngan.text import Vocabulary

SPLITS = ("train", "test")
# The ground truths a folder may carry (DataSource.ground_truth): a generated data set's manifest
# beside its images, which metrics, the captioner and the instruments' training read.
GROUND_TRUTHS = ("synth_birds", "synth_scenes")
# Longer names are refused: file systems allow 255 bytes per name and a few thousand per path.
MAX_KEY_CHARS = 255


@dataclass
class Record:
    """One image of a data set, in whatever layout it came from (folder, shards, CUB, COCO)."""

    key: str                                  # the image's name in its layout (posix)
    path: Path | None                         # the image file (None when it lives in a shard)
    captions: list[str]
    class_id: int
    split: str
    bbox: tuple[int, int, int, int] | None = None
    row: int = 0                              # line of the metadata file (0: not from one)
    # Word ids in the data's own vocabulary, for data that has no caption text (the original
    # release's captions.pickle without its text/ folder); `captions` is then empty.
    caption_ids: list[list[int]] | None = None


class DataSource:
    """The defaults of a data source; subclasses give `name`, `detect` and `records`."""

    name = ""
    varying_captions = False

    def detect(self, root: Path) -> bool:
        raise NotImplementedError

    def records(self, root: Path, split: str) -> list[Record]:
        raise NotImplementedError

    def caption_lines(self, root: Path, split: str) -> list[list[str]]:
        return [r.captions for r in self.records(root, split)]

    def folder(self, root: Path, split: str) -> Path:
        return Path(root)

    def train_stream(self, root: Path, cfg: Any, vocab: "Vocabulary",
                     image_sizes: list[int] | None) -> Any:
        """A streamed training set (an IterableDataset) for data read in order, or None: the
        training split is then indexed like every other."""
        return None

    def vocabulary(self, root: Path, min_count: int | None = None) -> "Vocabulary | None":
        """The source's own vocabulary, or None for the default (attngan.data.vocab.load_vocab):
        the release's captions.pickle or vocab.json, else one built from `caption_lines`."""
        return None

    def ground_truth(self, root: Path) -> str | None:
        """The exact ground truth the data in `root` carries, one of GROUND_TRUTHS: "synth_birds"
        (synth_birds.json and its part masks, data.synth_birds.load_manifest reads it) or
        "synth_scenes" (synth_scenes.json and its object masks, data.synth_scenes.load_manifest);
        None for data without one. Decided from file names, as `detect` is."""
        return None

    def evaluation_defaults(self, root: Path) -> dict[str, Any]:
        """What `attngan eval` uses on the data in `root` where the user names none: "judge",
        "captioner", "eval_damsm" (a folder or bundled name each; one not installed is passed
        over). Empty: the evaluation's own defaults. Which metrics the data's ground truth
        allows is `ground_truth`'s answer, not a default."""
        return {}


# The built-in sources, in detection order (an image folder's metadata file wins over another
# layout's files beside it). Named, not imported: each source module imports this one.
BUILTIN_SOURCES = ("attngan.data.shards", "attngan.data.imagefolder", "attngan.data.cub",
                   "attngan.data.coco")
_SOURCES: list[DataSource] = []
_BUILTIN_LOADED = False


def register_source(source: DataSource, first: bool = False) -> DataSource:
    """Add a data source (ahead of the others when `first`, for a layout that another source's
    detection would also claim). Registering it again replaces it."""
    sources()
    if not source.name or not callable(getattr(source, "detect", None)):
        raise TypeError("a data source needs a name, detect(root) and records(root, split)")
    _SOURCES[:] = [s for s in _SOURCES if s.name != source.name]
    if first:
        _SOURCES.insert(0, source)
    else:
        _SOURCES.append(source)
    return source


def unregister_source(name: str) -> None:
    _SOURCES[:] = [s for s in sources() if s.name != name]


def sources() -> list[DataSource]:
    """The registered sources, in detection order; the built-in ones are imported on first use."""
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        _SOURCES[:0] = [importlib.import_module(name).SOURCE for name in BUILTIN_SOURCES]
    return list(_SOURCES)


def find_source(root: str | os.PathLike) -> DataSource | None:
    """The first source whose layout `root` is in, or None."""
    root = Path(root)
    for source in sources():
        try:
            if source.detect(root):
                return source
        except (OSError, ValueError):
            continue
    return None


def detect_source(root: str | os.PathLike) -> DataSource:
    """The source that reads `root`; a one-line error when no source knows the folder."""
    source = find_source(root)
    if source is not None:
        return source
    if not Path(root).is_dir():
        raise AttnGANError(f"dataset folder not found: {root}")
    names = ", ".join(s.name for s in sources())
    raise AttnGANError(f"{root} is in no known data layout ({names}): see docs/custom-data.md")


def ground_truth(root: str | os.PathLike, source: DataSource | None = None) -> str | None:
    """The ground truth of the data in `root` (one of GROUND_TRUTHS), as its source (`source`
    when the caller has detected it) answers; None for data without one and for a folder no
    source reads (whoever reads it next says why)."""
    source = source or find_source(root)
    if source is None:
        return None
    truth = source.ground_truth(Path(root))
    if truth is not None and truth not in GROUND_TRUTHS:
        raise TypeError(f"the data source '{source.name}' gave the ground truth {truth!r}; it may "
                        f"give {', '.join(GROUND_TRUTHS)} or None")
    return truth


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise AttnGANError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    return split


def split_records(root: str | os.PathLike, split: str) -> list[Record]:
    """The records of one split of any data the sources read."""
    check_split(split)
    return detect_source(root).records(Path(root), split)


def local_folder(root: str | os.PathLike, split: str) -> Path:
    """The local folder that holds a split's files (shards: their split extracted once)."""
    return detect_source(root).folder(Path(root), split)


# Paths named by the data.

def check_key(key: Any, where: str) -> str:
    """A key that can name a file: text, no NUL or other control character, not too long."""
    if not isinstance(key, str) or not key.strip():
        raise AttnGANError(f"{where}: an image key must be non-empty text, got {str(key)[:60]!r}")
    if any(ord(c) < 32 for c in key):
        raise AttnGANError(f"{where}: the image key {key[:60]!r} holds a control character")
    if len(key) > MAX_KEY_CHARS:
        raise AttnGANError(f"{where}: the image key {key[:40]!r}... is {len(key)} characters long "
                           f"(at most {MAX_KEY_CHARS})")
    return key


def inside(root: str | os.PathLike, relative: str, where: str) -> Path:
    """`root/relative`, refused unless it stays inside `root`: no absolute path, no '..', and no
    link (of the file or of a folder on the way) whose target leaves the folder."""
    check_key(relative, where)
    rel = PurePosixPath(relative.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or str(rel) in ("", "."):
        raise AttnGANError(f"{where}: {relative!r} must be a path inside the data folder")
    path = Path(root) / rel
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
        raise AttnGANError(f"{where}: {relative!r} is a link to a file outside the data folder "
                           f"(copy the file in, or link the whole data folder instead)")
    return path
