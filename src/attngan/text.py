"""Captions as word ids: the original tokenizer, a vocabulary, and safe loading of its pickles.

The original release ships `captions.pickle` (Python 2, protocol 2) whose word ids are in Python-2
hash order, so the published encoders only work with that exact mapping
(the original code, datasets.py). We read it with an unpickler that admits
plain data only: no pickle can run code here.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import re
import struct
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from attngan.errors import AttnGANError
from attngan.fileio import atomic_write_bytes, check_format, shown

END_TOKEN = "<end>"  # id 0: padding only; the original never appends it to a caption
VOCAB_FORMAT = "attngan-vocab"
VOCAB_VERSION = 1

_WORD = re.compile(r"\w+")
_WORD_OR_COMMA = re.compile(r"\w+|,")


def tokenize(text: str, keep_commas: bool = False) -> list[str]:
    """The original tokenizer: lower-case, `\\w+` tokens, ASCII characters only, no empty tokens.
    `keep_commas` also keeps each comma as a token (the captioner writes and reads them)."""
    # CUB's caption files contain U+FFFD pairs where a non-ASCII character was mangled.
    text = text.replace("\ufffd\ufffd", " ").lower()
    tokens = []
    for token in (_WORD_OR_COMMA if keep_commas else _WORD).findall(text):
        token = token.encode("ascii", "ignore").decode("ascii")
        if token:
            tokens.append(token)
    return tokens




# The largest shipped vocabulary is a few kilobytes; COCO's 27,000 words fit in well under 1 MiB.
MAX_VOCAB_CHARS = 64 * 2**20


class Vocabulary:
    """Word <-> id mapping; id 0 is `<end>`, used only to pad captions."""

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if not words or words[0] != END_TOKEN:
            raise AttnGANError(f"a vocabulary must start with '{END_TOKEN}' (id 0)")
        word_to_id: dict[str, int] = {}
        for i, w in enumerate(words):
            if not isinstance(w, str) or not w:
                raise AttnGANError(f"vocabulary entry {i} is not a word: {shown(w)}")
            if w in word_to_id:
                raise AttnGANError(f"vocabulary lists '{w}' twice (ids {word_to_id[w]} and {i})")
            word_to_id[w] = i
        self.id_to_word: list[str] = words
        self.word_to_id: dict[str, int] = word_to_id

    @classmethod
    def build(cls, captions: Iterable[Sequence[str]], min_count: int = 1) -> "Vocabulary":
        """Every word of the token lists seen at least `min_count` times, sorted.

        The original keeps every word (min_count=1). It numbers words in Python-2 dict order,
        which cannot be reproduced; sorted order makes our vocabularies deterministic instead.
        """
        return cls.build_with_report(captions, min_count)[0]

    @classmethod
    def build_with_report(cls, captions: Iterable[Sequence[str]], min_count: int = 1
                          ) -> tuple["Vocabulary", dict[str, int]]:
        """The vocabulary, and the words left out (seen fewer than `min_count` times) with counts."""
        if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
            raise AttnGANError(f"the vocabulary's minimum word count must be an integer >= 1, "
                               f"got {min_count!r}")
        counts: Counter[str] = Counter()
        for tokens in captions:
            counts.update(tokens)
        counts.pop(END_TOKEN, None)
        kept = sorted(w for w, c in counts.items() if c >= min_count)
        dropped = {w: c for w, c in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))
                   if c < min_count}
        if not kept:
            raise AttnGANError(f"no word of the training captions occurs {min_count} times or more; "
                               "lower the minimum word count")
        return cls([END_TOKEN, *kept]), dropped

    def __len__(self) -> int:
        return len(self.id_to_word)

    def __contains__(self, word: str) -> bool:
        return word in self.word_to_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.id_to_word == other.id_to_word

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"

    def encode_tokens(self, tokens: Sequence[str]) -> tuple[list[int], list[str]]:
        """Ids of the known tokens, and the unknown tokens that were dropped."""
        ids, dropped = [], []
        for t in tokens:
            i = self.word_to_id.get(t)
            if i is None or i == 0:
                dropped.append(t)
            else:
                ids.append(i)
        return ids, dropped

    def encode(self, text: str, warn: bool = True) -> tuple[list[int], list[str]]:
        """Tokenize and map to ids; unknown words are dropped (with a warning when `warn`)."""
        tokens = tokenize(text)
        ids, dropped = self.encode_tokens(tokens)
        if not ids:
            if not tokens:
                raise AttnGANError(f"caption {text!r} has no words")
            raise AttnGANError(
                f"caption {text!r} has no word in the vocabulary ({len(self)} words); "
                f"unknown: {', '.join(dropped)}"
            )
        if dropped and warn:
            warnings.warn(f"words not in the vocabulary were dropped: {', '.join(dropped)}",
                          stacklevel=2)
        return ids, dropped

    def decode(self, ids: Iterable[int]) -> str:
        """Words joined by spaces; padding (0) is skipped."""
        words = []
        for i in ids:
            i = int(i)
            if i == 0:
                continue
            if not 0 < i < len(self.id_to_word):
                raise AttnGANError(f"word id {i} is outside the vocabulary (0..{len(self) - 1})")
            words.append(self.id_to_word[i])
        return " ".join(words)

    def to_json(self) -> str:
        return json.dumps({"format": VOCAB_FORMAT, "version": VOCAB_VERSION,
                           "words": self.id_to_word}, ensure_ascii=True)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_bytes(path, self.to_json().encode("utf-8"))

    @classmethod
    def from_json(cls, text: str, source: str = "vocabulary") -> "Vocabulary":
        if len(text) > MAX_VOCAB_CHARS:
            raise AttnGANError(f"{source} is larger than {MAX_VOCAB_CHARS // 2**20} MiB; it cannot be a vocabulary")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise AttnGANError(f"{source} is not valid JSON: {e}") from None
        except ValueError as e:  # an integer beyond Python's digit limit
            raise AttnGANError(f"{source} is not valid JSON ({str(e)[:80]})") from None
        except RecursionError:
            raise AttnGANError(f"{source} is nested too deeply to be a vocabulary") from None
        if not isinstance(raw, dict):
            raise AttnGANError(f"{source} is not an attngan vocabulary (it holds no JSON object)")
        check_format(raw, VOCAB_FORMAT, VOCAB_VERSION, source, "an attngan vocabulary")
        words = raw.get("words")
        if not isinstance(words, list):
            raise AttnGANError(f"{source} has no word list")
        return cls(words)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        path = Path(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_VOCAB_CHARS + 1)  # from_json refuses more
        except FileNotFoundError:
            raise AttnGANError(f"vocabulary file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise AttnGANError(f"cannot read vocabulary {path}: {e}") from None
        return cls.from_json(text, source=str(path))


# Restricted unpickling.

def _codecs_encode(text: Any, encoding: Any = "latin1", errors: Any = "strict") -> bytes:
    # Python 3 writes bytes at protocol 2 as _codecs.encode(str, 'latin1'); nothing else is allowed.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is only accepted for latin1 byte strings")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    # Python 3 writes b"" at protocol 2 as bytes(); an argument could allocate a huge buffer.
    if args:
        raise pickle.UnpicklingError("bytes() is only accepted without arguments")
    return b""


_SAFE_GLOBALS = {
    ("_codecs", "encode"): _codecs_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}
_PLAIN_TYPES = (list, tuple, dict, str, bytes, int, float, bool, type(None))


class _RefusedGlobal(Exception):
    pass


class _PlainDataUnpickler(pickle.Unpickler):
    """Admits lists, dicts, tuples, strings, bytes and numbers; every other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        fn = _SAFE_GLOBALS.get((module, name))
        if fn is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return fn

    def persistent_load(self, pid: Any) -> Any:
        raise _RefusedGlobal("a persistent id")


def _to_text(b: bytes) -> str:
    # Python 2 `str` objects arrive as bytes; the original wrote UTF-8 (or plain ASCII).
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


# Pickle's memo lets one object be referenced many times, so a file of a few hundred bytes can
# describe a structure of 2**40 elements (nested lists, each holding the previous one twice). The
# conversion below keeps shared objects shared (each is converted once), so its time and memory
# follow the file's size; and it measures the structure as a reader walking it would see it
# (every reference counted), refusing one beyond what any real metadata file holds: the largest
# original file, COCO's captions.pickle, expands to about 8 million items.
MAX_PICKLE_ITEMS = 50_000_000        # list/tuple/dict entries, references counted each time
MAX_PICKLE_CHARS = 200_000_000       # characters of text and bytes, likewise
MAX_PICKLE_DEPTH = 50


class _PlainConverter:
    """Plain-data check and Python-2 byte-string decoding, memoised by object identity."""

    def __init__(self, path: str):
        self.path = path
        # id -> (converted, expanded items, expanded chars). The loaded object keeps every
        # original alive until conversion ends, so ids are not reused meanwhile.
        self.memo: dict[int, tuple[Any, int, int]] = {}
        self.active: set[int] = set()  # containers being converted: a reference cycle's members

    def convert(self, obj: Any) -> Any:
        value, items, chars = self._convert(obj, 0)
        return value

    def _limit(self, items: int, chars: int) -> None:
        if items > MAX_PICKLE_ITEMS:
            raise AttnGANError(f"{self.path} expands to more than {MAX_PICKLE_ITEMS:,} items "
                               "(shared references counted each time); not AttnGAN metadata")
        if chars > MAX_PICKLE_CHARS:
            raise AttnGANError(f"{self.path} expands to more than {MAX_PICKLE_CHARS:,} characters "
                               "of text (shared references counted each time); not AttnGAN metadata")

    def _convert(self, obj: Any, depth: int) -> tuple[Any, int, int]:
        if isinstance(obj, (int, float, type(None))):  # bool is an int
            return obj, 1, 0
        if isinstance(obj, str):
            return obj, 1, len(obj)
        key = id(obj)
        done = self.memo.get(key)
        if done is not None:
            return done
        if isinstance(obj, bytes):
            result = (_to_text(obj), 1, len(obj))
        elif isinstance(obj, (list, tuple, dict)):
            if depth >= MAX_PICKLE_DEPTH:
                raise AttnGANError(f"{self.path} is nested too deeply to be AttnGAN metadata")
            if key in self.active:
                raise AttnGANError(f"{self.path} holds a reference cycle; not AttnGAN metadata")
            self.active.add(key)
            items, chars = 1, 0
            if isinstance(obj, dict):
                out: dict[Any, Any] = {}
                for k, v in obj.items():
                    ck, ik, nk = self._convert(k, depth + 1)
                    cv, iv, nv = self._convert(v, depth + 1)
                    out[ck] = cv
                    items, chars = items + ik + iv, chars + nk + nv
                    self._limit(items, chars)
                converted: Any = out
            else:
                parts = []
                for x in obj:
                    cx, ix, nx = self._convert(x, depth + 1)
                    parts.append(cx)
                    items, chars = items + ix, chars + nx
                    self._limit(items, chars)
                converted = parts if isinstance(obj, list) else tuple(parts)
            self.active.discard(key)
            result = (converted, items, chars)
        else:
            raise AttnGANError(f"{self.path} holds a {type(obj).__name__}; only plain data is accepted")
        self.memo[key] = result
        return result


# The C unpickler sizes its memo from the largest index the file names (a 9-byte file asking for
# index 2**27 costs gigabytes before any error), and sizes a byte string's buffer from its declared
# length. A first pass over the opcodes refuses both before it runs: an index larger than the
# number of opcodes before it (picklers number memo entries 0, 1, 2, ...), or a length longer
# than the rest of the file. The pass reads the opcodes only, so its memory is constant.
_ARG_SIZE: list[tuple[int, bool] | None] = [None] * 256   # opcode -> (argument size code, two lines)
for _op in pickletools.opcodes:
    _ARG_SIZE[ord(_op.code)] = ((_op.arg.n, _op.arg.name == "stringnl_noescape_pair")
                                if _op.arg is not None else (0, False))
_MEMO_OPS = frozenset(b"qrphjg")    # BINPUT, LONG_BINPUT, PUT, BINGET, LONG_BINGET, GET
_STOP = ord(".")


def check_pickle_bounds(data: bytes) -> None:
    """Raise ValueError for a pickle whose memo index or declared length exceeds the file."""
    end, pos, ops = len(data), 0, 0
    unpack_from = struct.unpack_from
    while pos < end:
        code = data[pos]
        entry = _ARG_SIZE[code]
        if entry is None:
            raise ValueError(f"unknown opcode {code:#04x} at byte {pos}")
        n, two_lines = entry
        pos += 1
        ops += 1
        if n >= 0:  # a fixed-size argument
            if code in _MEMO_OPS and pos + n <= end:
                idx = data[pos] if n == 1 else unpack_from("<I", data, pos)[0]
                if idx > ops:
                    raise ValueError(f"memo index {idx} at byte {pos - 1} in a pickle of {ops} opcodes so far")
            pos += n
        elif n == -1:  # text up to a newline (two lines for a global)
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            if code in _MEMO_OPS and int(data[pos:nl]) > ops:
                raise ValueError(f"memo index {data[pos:nl][:20]!r} at byte {pos - 1}")
            pos = nl + 1
            if two_lines:
                nl = data.find(b"\n", pos)
                pos = end if nl < 0 else nl + 1
        else:  # a counted string: 1-byte, signed 4-byte, 4-byte or 8-byte length first
            width, fmt = {-2: (1, "<B"), -3: (4, "<i"), -4: (4, "<I"), -5: (8, "<Q")}[n]
            if pos + width > end:
                break
            size = unpack_from(fmt, data, pos)[0]
            pos += width
            if size < 0 or size > end - pos:
                raise ValueError(f"a length of {size} bytes at byte {pos - width - 1}, with "
                                 f"{end - pos} bytes left in the file")
            pos += size
        if code == _STOP:
            return
    raise ValueError("the pickle ends before its STOP opcode")


def _plain(obj: Any, path: str) -> Any:
    """Check the loaded object holds plain data only, turning Python-2 byte strings into str.

    An object referenced several times in the file is converted once and stays shared.
    """
    return _PlainConverter(path).convert(obj)


def load_plain_pickle(path: str | os.PathLike) -> Any:
    """Load a pickle that holds plain data (lists, dicts, tuples, strings, ints), never objects.

    Any other global (a class, os.system, ...) is refused before it is called, so no code runs.
    Python-2 byte strings are decoded as UTF-8 (latin-1 if that fails).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AttnGANError(f"file not found: {path}") from None
    except OSError as e:
        raise AttnGANError(f"cannot read {path}: {e}") from None
    try:
        check_pickle_bounds(data)
        obj = _PlainDataUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _RefusedGlobal as e:
        raise AttnGANError(
            f"refusing to load {path}: it references {e}, and only plain data "
            "(lists, dicts, strings, ints) is accepted; nothing was executed"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError, OverflowError, MemoryError) as e:
        raise AttnGANError(f"cannot read {path} as a pickle: {type(e).__name__}: {e}") from None
    return _plain(obj, str(path))


class CaptionsPickle(NamedTuple):
    train: list[list[int]]
    test: list[list[int]]
    vocab: Vocabulary


def load_captions_pickle(path: str | os.PathLike) -> CaptionsPickle:
    """The original `captions.pickle`: [train captions, test captions, ixtoword, wordtoix]."""
    obj = load_plain_pickle(path)
    if not isinstance(obj, (list, tuple)) or len(obj) != 4:
        raise AttnGANError(f"{path} is not an AttnGAN captions.pickle "
                           "(expected [train_captions, test_captions, ixtoword, wordtoix])")
    train, test, ixtoword, wordtoix = obj
    if not isinstance(ixtoword, dict) or not isinstance(wordtoix, dict):
        raise AttnGANError(f"{path}: ixtoword and wordtoix must be dicts")
    n = len(ixtoword)
    # Keys of other types would make sorted() fail on the comparison: check them first.
    if (not all(type(i) is int for i in ixtoword)  # noqa: E721 - bool keys are not ids
            or sorted(ixtoword) != list(range(n))):
        raise AttnGANError(f"{path}: ixtoword ids are not 0..{n - 1}")
    words = [ixtoword[i] for i in range(n)]
    if not all(isinstance(w, str) for w in words):
        raise AttnGANError(f"{path}: ixtoword must map ids to words (strings)")
    if any(wordtoix.get(w) != i for i, w in enumerate(words)) or len(wordtoix) != n:
        raise AttnGANError(f"{path}: ixtoword and wordtoix disagree")
    vocab = Vocabulary(words)
    out = []
    for name, caps in (("train", train), ("test", test)):
        if not isinstance(caps, (list, tuple)):
            raise AttnGANError(f"{path}: {name} captions must be a list")
        # A caption the file references several times is checked and copied once, and stays
        # shared: the work follows the file's size, not its expanded size.
        seen: dict[int, list[int]] = {}
        checked = []
        for c in caps:
            copy = seen.get(id(c))
            if copy is None:
                if not isinstance(c, (list, tuple)) or not all(
                        type(i) is int and 0 < i < n for i in c):  # noqa: E721
                    raise AttnGANError(f"{path}: a {name} caption is not a list of word ids 1..{n - 1}")
                copy = seen[id(c)] = list(c)
            checked.append(copy)
        out.append(checked)
    return CaptionsPickle(out[0], out[1], vocab)


VOCAB_REPORT = "vocab_report.json"


def vocab_report(vocab: Vocabulary, dropped: dict[str, int], min_count: int, captions: int,
                 source: str) -> dict[str, Any]:
    """What a vocabulary built from captions kept and left out (out-of-vocabulary words, counts)."""
    return {"format": "attngan-vocab-report", "source": source, "min_count": min_count,
            "captions": captions, "words": len(vocab) - 1, "dropped_words": len(dropped),
            "dropped_occurrences": sum(dropped.values()), "dropped": dropped}


def build_vocab_from_lines(lines: Iterable[str], min_count: int, source: str
                           ) -> tuple[Vocabulary, dict[str, Any]]:
    """A vocabulary of caption lines (the training captions of new data) and its report."""
    token_lists = [tokenize(line) for line in lines]
    vocab, dropped = Vocabulary.build_with_report(token_lists, min_count)
    return vocab, vocab_report(vocab, dropped, min_count, len(token_lists), source)


def save_vocab_and_report(folder: str | os.PathLike, vocab: Vocabulary, report: dict[str, Any],
                          stamp: str = "") -> None:
    """vocab.json (with the minimum count and a stamp of its source, to notice when it is stale)
    and vocab_report.json, each written atomically."""
    folder = Path(folder)
    raw = json.loads(vocab.to_json())
    raw.update({"min_count": report["min_count"], "source_stamp": stamp})
    atomic_write_bytes(folder / "vocab.json", json.dumps(raw, ensure_ascii=True).encode("utf-8"))
    atomic_write_bytes(folder / VOCAB_REPORT,
                       (json.dumps(report, indent=1, ensure_ascii=True) + "\n").encode("utf-8"))


def _stamped_vocab(path: Path, min_count: int, stamp: str) -> Vocabulary | None:
    """The saved vocabulary if it was built with this minimum count from this source, else None."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(raw, dict) or raw.get("min_count") != min_count or raw.get("source_stamp") != stamp:
        return None
    return Vocabulary.from_json(json.dumps(raw), source=str(path))


def summarize_dropped(report: dict[str, Any], n: int = 8) -> str:
    dropped = report.get("dropped") or {}
    if not dropped:
        return f"{report['words']} words from {report['captions']} captions, none left out"
    shown = ", ".join(f"{w} ({c})" for w, c in list(dropped.items())[:n])
    more = f" and {len(dropped) - n} more" if len(dropped) > n else ""
    return (f"{report['words']} words from {report['captions']} captions; {len(dropped)} words seen "
            f"fewer than {report['min_count']} times are out of vocabulary: {shown}{more}")
