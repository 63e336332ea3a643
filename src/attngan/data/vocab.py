"""The vocabulary of a data source: the original's captions.pickle, our vocab.json, or one built
from the training captions of new data (image folders, shards) with a report of the words left out."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from attngan.data.layout import release_caption_lines
from attngan.data.records import find_source
from attngan.errors import AttnGANError
from attngan.fileio import atomic_write_bytes
from attngan.text import (VOCAB_REPORT, Vocabulary, _stamped_vocab, build_vocab_from_lines,
                          load_captions_pickle, save_vocab_and_report, summarize_dropped, tokenize)


def load_vocab(root: str | os.PathLike, min_count: int | None = None) -> Vocabulary:
    """The vocabulary of a dataset folder (or of WebDataset shards), as its data source keeps it.

    The release's layouts: `captions.pickle` (the original; its word ids are kept) wins over our
    `vocab.json`; without either, one is built from the train and test captions and saved as
    `vocab.json` (kept in memory only when the folder is read-only).

    New data (an image folder with metadata.jsonl/.csv, or shards) gets a vocabulary of its
    training captions only, of the words seen at least `min_count` times (default 1, every word),
    saved as vocab.json with vocab_report.json (the words left out, with counts); it is rebuilt
    when the metadata or `min_count` changes.
    """
    root = Path(root)
    source = find_source(root)
    if source is not None:
        own = source.vocabulary(root, min_count)
        if own is not None:
            return own
        return release_vocabulary(root, lambda split: source.caption_lines(root, split))
    if not root.is_dir():
        raise AttnGANError(f"dataset folder not found: {root}")
    # The release's vocabulary and caption files alone are enough, without its images.
    return release_vocabulary(root, lambda split: release_caption_lines(root, split))


def release_vocabulary(root: Path, caption_lines: Callable[[str], list[list[str]]]) -> Vocabulary:
    """captions.pickle, else vocab.json, else one built from `caption_lines(split)` of both
    splits and saved as vocab.json."""
    if (root / "captions.pickle").is_file():
        return load_captions_pickle(root / "captions.pickle").vocab
    if (root / "vocab.json").is_file():
        return Vocabulary.load(root / "vocab.json")
    token_lists = []
    for split in ("train", "test"):
        for lines in caption_lines(split):
            token_lists.extend(tokenize(line) for line in lines)
    vocab = Vocabulary.build(token_lists)
    try:
        vocab.save(root / "vocab.json")
    except OSError as e:
        warnings.warn(f"cannot save {root / 'vocab.json'} ({e.strerror}); "
                      "the vocabulary is kept in memory only", stacklevel=3)
    return vocab


def new_data_vocabulary(root: Path, lines: list[str], min_count: int, stamp: str, source: str
                        ) -> Vocabulary:
    """The words of new data's training captions seen at least `min_count` times, saved with its
    report beside the data and reused while `stamp` (the data's version) is unchanged."""
    saved = _stamped_vocab(root / "vocab.json", min_count, stamp)
    if saved is not None:
        return saved
    vocab, report = build_vocab_from_lines(lines, min_count, source=source)
    if report["dropped"]:
        warnings.warn(f"vocabulary of {root}: {summarize_dropped(report)}", stacklevel=4)
    try:
        save_vocab_and_report(root, vocab, report, stamp)
    except OSError as e:
        warnings.warn(f"cannot save {root / 'vocab.json'} ({e.strerror}); "
                      "the vocabulary is kept in memory only", stacklevel=4)
    return vocab


def copy_vocab_report(data: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Keep the data's vocab_report.json (words left out of the vocabulary) with a training run."""
    from attngan.data.shards import shard_folder  # here: shards bring torch, a vocabulary needs none

    folder = shard_folder(data)  # a folder itself, or the folder of a shard pattern
    report = folder / VOCAB_REPORT
    if report.is_file():
        try:
            atomic_write_bytes(Path(out_dir) / VOCAB_REPORT, report.read_bytes())
        except OSError:
            pass  # a report is a convenience; the run does not depend on it
