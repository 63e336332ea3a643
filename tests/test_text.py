import os
import pickle
import struct

import pytest

from attngan.errors import AttnGANError
from attngan.text import Vocabulary, load_captions_pickle, load_plain_pickle, tokenize
from attngan.data.vocab import load_vocab


def py2_dumps(obj) -> bytes:
    """Pickle as Python 2.7's cPickle.dump(obj, f, 2) would: `bytes` stand for py2 `str`
    (SHORT_BINSTRING / BINSTRING), `str` for py2 `unicode` (BINUNICODE)."""
    out = bytearray(b"\x80\x02")

    def w(o):
        if isinstance(o, bytes):
            out.extend(b"U" + bytes([len(o)]) + o if len(o) < 256 else b"T" + struct.pack("<i", len(o)) + o)
        elif isinstance(o, str):
            b = o.encode("utf-8")
            out.extend(b"X" + struct.pack("<I", len(b)) + b)
        elif isinstance(o, int):
            out.extend(b"K" + bytes([o]) if 0 <= o < 256 else b"J" + struct.pack("<i", o))
        elif isinstance(o, list):
            out.extend(b"]")
            if o:
                out.extend(b"(")
                for x in o:
                    w(x)
                out.extend(b"e")
        elif isinstance(o, dict):
            out.extend(b"}")
            if o:
                out.extend(b"(")
                for k, v in o.items():
                    w(k)
                    w(v)
                out.extend(b"u")
        else:
            raise TypeError(type(o))

    w(obj)
    out.extend(b".")
    return bytes(out)


# Tokenizer.

def test_tokenize_matches_the_original_rules():
    assert tokenize("A small bird, with a RED crown!") == ["a", "small", "bird", "with", "a", "red", "crown"]
    assert tokenize("this\ufffd\ufffdbird has snake_case 42") == ["this", "bird", "has", "snake_case", "42"]
    # Non-ASCII characters are removed from a token; a token left empty is dropped.
    assert tokenize("caf\u00e9 na\u00efve \u00e9\u00e8 bird") == ["caf", "nave", "bird"]
    assert tokenize("  ...  ") == []


# Vocabulary.

def test_vocabulary_build_is_sorted_with_end_as_padding():
    v = Vocabulary.build([["the", "bird", "is", "red"], ["a", "bird"]])
    assert v.id_to_word == ["<end>", "a", "bird", "is", "red", "the"]
    assert v.word_to_id["<end>"] == 0 and len(v) == 6
    ids, dropped = v.encode("The bird is RED.")
    assert ids == [5, 2, 3, 4] and dropped == []
    assert v.decode(ids + [0, 0]) == "the bird is red"


def test_vocabulary_round_trip_and_atomic_save(tmp_path):
    v = Vocabulary.build([["a", "bird", "with", "wings"]])
    v.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == v
    assert sorted(os.listdir(tmp_path)) == ["vocab.json"]  # no temp file left behind
    (tmp_path / "bad.json").write_text('{"words": ["a"]}')
    with pytest.raises(AttnGANError, match="not an attngan vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('["<end>", "a"]')
    with pytest.raises(AttnGANError, match="not an attngan vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('{"format": "attngan-vocab", "version": 2, "words": ["<end>"]}')
    with pytest.raises(AttnGANError, match="bad.json has format version 2; this attngan reads version 1"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(AttnGANError, match="must start with '<end>'"):
        Vocabulary(["a", "b"])


def test_out_of_vocabulary_words_are_dropped_with_a_warning():
    v = Vocabulary.build([["a", "red", "bird"]])
    with pytest.warns(UserWarning, match="zebra, striped"):
        ids, dropped = v.encode("a zebra striped bird")
    assert ids == [v.word_to_id["a"], v.word_to_id["bird"]] and dropped == ["zebra", "striped"]
    with pytest.raises(AttnGANError, match="no word in the vocabulary"):
        v.encode("zebra giraffe", warn=False)
    with pytest.raises(AttnGANError, match="has no words"):
        v.encode("!!!")


# Pickles.

def test_py2_captions_pickle_loads_with_its_own_word_ids(tmp_path):
    # The original numbers words in Python-2 hash order: keep those ids, do not re-sort.
    ixtoword = {0: b"<end>", 1: "wings", 2: "bird", 3: "caf\u00e9".encode("utf-8")}
    wordtoix = {b"<end>": 0, "wings": 1, "bird": 2, "caf\u00e9".encode("utf-8"): 3}
    (tmp_path / "captions.pickle").write_bytes(py2_dumps([[[2, 1], [3]], [[1, 2, 3]], ixtoword, wordtoix]))
    caps = load_captions_pickle(tmp_path / "captions.pickle")
    assert caps.train == [[2, 1], [3]] and caps.test == [[1, 2, 3]]
    assert caps.vocab.id_to_word == ["<end>", "wings", "bird", "caf\u00e9"]
    assert load_vocab(tmp_path) == caps.vocab


def test_python3_protocol2_bytes_pickle_loads(tmp_path):
    # Python 3 writes bytes at protocol 2 through _codecs.encode(..., 'latin1'): admitted.
    keys = [b"001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111", b""]
    (tmp_path / "f.pickle").write_bytes(pickle.dumps(keys, protocol=2))
    assert load_plain_pickle(tmp_path / "f.pickle") == [keys[0].decode(), ""]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilCodecs:
    def __reduce__(self):
        import _codecs

        return (_codecs.encode, ("x" * 10, "rot13"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "captions.pickle"
    path.write_bytes(pickle.dumps([[], [], _Evil(marker), {}], protocol=2))
    with pytest.raises(AttnGANError, match=r"refusing to load .*(posix|os)\.system"):
        load_captions_pickle(path)
    with pytest.raises(AttnGANError, match="refusing"):
        load_vocab(tmp_path)
    assert not marker.exists()
    # A whitelisted callable with other arguments is refused too.
    path.write_bytes(pickle.dumps(_EvilCodecs(), protocol=2))
    with pytest.raises(AttnGANError, match="cannot read"):
        load_plain_pickle(path)
    path.write_bytes(b"\x80\x02]q\x00(K\x01")  # truncated
    with pytest.raises(AttnGANError, match="cannot read"):
        load_plain_pickle(path)


def test_inconsistent_captions_pickle_is_an_error(tmp_path):
    path = tmp_path / "captions.pickle"
    path.write_bytes(py2_dumps([[[1]], [], {0: b"<end>", 1: "a"}, {b"<end>": 0, "a": 2}]))
    with pytest.raises(AttnGANError, match="disagree"):
        load_captions_pickle(path)
    path.write_bytes(py2_dumps([[[7]], [], {0: b"<end>", 1: "a"}, {b"<end>": 0, "a": 1}]))
    with pytest.raises(AttnGANError, match="not a list of word ids"):
        load_captions_pickle(path)


# load_vocab from a dataset folder.

def _text_layout(root, train, test):
    for split, caps in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True)
        (root / split / "filenames.pickle").write_bytes(pickle.dumps(list(caps), protocol=2))
        for key, text in caps.items():
            (root / "text" / key).parent.mkdir(parents=True, exist_ok=True)
            (root / "text" / f"{key}.txt").write_text(text)


def test_load_vocab_builds_from_train_and_test_and_saves(tmp_path):
    _text_layout(tmp_path, {"001.A/a_1": "a red bird\n\nwith wings\n"}, {"002.B/b_1": "a Zebra finch\n"})
    v = load_vocab(tmp_path)
    assert v.id_to_word == ["<end>", "a", "bird", "finch", "red", "wings", "with", "zebra"]
    assert Vocabulary.load(tmp_path / "vocab.json") == v
    # vocab.json now wins over the text files.
    Vocabulary.build([["other"]]).save(tmp_path / "vocab.json")
    assert load_vocab(tmp_path).id_to_word == ["<end>", "other"]


def test_load_vocab_on_a_read_only_folder_keeps_it_in_memory(tmp_path, monkeypatch):
    import attngan.text

    _text_layout(tmp_path, {"k1": "a red bird\n"}, {"k2": "a blue bird\n"})

    def read_only(path, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(attngan.text, "atomic_write_bytes", read_only)
    with pytest.warns(UserWarning, match="kept in memory"):
        v = load_vocab(tmp_path)
    assert "blue" in v and not (tmp_path / "vocab.json").exists()


def test_load_vocab_names_what_is_missing(tmp_path):
    with pytest.raises(AttnGANError, match="filenames.pickle"):
        load_vocab(tmp_path)
    with pytest.raises(AttnGANError, match="not found"):
        load_vocab(tmp_path / "nope")


# Pickles whose references expand without bound ("billion laughs").

def _laughs(levels):
    x = [1]
    for _ in range(levels):
        x = [x, x]  # pickled once, referenced twice: the file grows by a few bytes per level
    return x


def _timed_peak(fn):
    import time
    import tracemalloc

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(AttnGANError) as info:
            fn()
        return time.perf_counter() - t0, tracemalloc.get_traced_memory()[1], str(info.value)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("levels, message", [(45, "expands to more than"), (48, "expands to more than"),
                                             (200, "nested too deeply")])
def test_billion_laughs_pickle_is_refused_quickly_and_small(levels, message, tmp_path):
    path = tmp_path / "captions.pickle"
    path.write_bytes(pickle.dumps([_laughs(levels), [], {0: "<end>"}, {"<end>": 0}], protocol=2))
    assert path.stat().st_size < 4000
    for load in (load_captions_pickle, load_plain_pickle, lambda p: load_vocab(p.parent)):
        seconds, peak, text = _timed_peak(lambda: load(path))
        assert seconds < 1.0 and peak < 50 * 2**20, (seconds, peak)
        assert message in text and "\n" not in text and str(path) in text


def test_wide_shared_references_and_long_strings_are_capped(tmp_path):
    import attngan.text

    path = tmp_path / "f.pickle"
    row = list(range(1, 10_001))
    path.write_bytes(pickle.dumps([row] * 10_000, protocol=2))  # 100 million ids when expanded
    seconds, peak, text = _timed_peak(lambda: load_plain_pickle(path))
    assert "items" in text and seconds < 1.0
    word = "w" * 1_000_000
    path.write_bytes(pickle.dumps([word] * 1000, protocol=2))  # a billion characters expanded
    seconds, peak, text = _timed_peak(lambda: load_plain_pickle(path))
    assert "characters" in text and seconds < 1.0
    assert attngan.text.MAX_PICKLE_ITEMS >= 10_000_000  # COCO's file expands to about 8 million


def test_reference_cycle_is_refused(tmp_path):
    x = []
    x.append(x)
    x.append(x)
    path = tmp_path / "f.pickle"
    path.write_bytes(pickle.dumps(x, protocol=2))
    seconds, peak, text = _timed_peak(lambda: load_plain_pickle(path))
    assert "reference cycle" in text and seconds < 1.0


def test_shared_captions_stay_shared_and_load(tmp_path):
    # A caption referenced many times is checked and copied once (work follows the file size).
    cap = [1, 2, 1]
    path = tmp_path / "captions.pickle"
    path.write_bytes(pickle.dumps([[cap] * 100_000, [cap], {0: "<end>", 1: "a", 2: "bird"},
                                   {"<end>": 0, "a": 1, "bird": 2}], protocol=2))
    caps = load_captions_pickle(path)
    assert len(caps.train) == 100_000 and caps.train[0] == [1, 2, 1] and caps.train[0] is caps.train[-1]
    assert caps.test == [[1, 2, 1]]


@pytest.mark.parametrize("ixtoword, wordtoix", [
    ({0: "<end>", "x": "a"}, {"<end>": 0, "a": 1}),       # a string id: not comparable with ints
    ({0: "<end>", 1: ["a"]}, {"<end>": 0}),               # a list as a word: unhashable
    ({0: "<end>", True: "a"}, {"<end>": 0, "a": 1}),      # a bool is not an id
])
def test_malformed_vocabulary_in_captions_pickle_is_one_error(ixtoword, wordtoix, tmp_path):
    path = tmp_path / "captions.pickle"
    path.write_bytes(pickle.dumps([[], [], ixtoword, wordtoix], protocol=2))
    with pytest.raises(AttnGANError, match="ixtoword"):
        load_captions_pickle(path)
