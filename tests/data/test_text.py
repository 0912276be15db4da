"""Character-level text: vocabulary, corpus files, batching with carried state, sampling,
generation through a step function, perplexity."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnlab import data
from rnnlab.data.text import (
    TextCorpus,
    Vocabulary,
    bits_per_char,
    generate,
    generate_text,
    perplexity,
    random_batches,
    read_text,
    sample_from_logits,
    sequential_batches,
    toy_text,
    windows,
)


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(toy_text(300, np.random.default_rng(0)) + "naïve café ✓\n", encoding="utf-8")
    return p


def test_vocabulary_round_trip() -> None:
    text = "hello, wörld ✓\n"
    v = Vocabulary.from_text(text)
    assert list(v.itos) == sorted(set(text)) and len(v) == len(set(text))
    ids = v.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert v.decode(ids) == text and v.decode(ids.tolist()) == text
    assert "ö" in v and "z" not in v


def test_vocabulary_errors() -> None:
    v = Vocabulary("abc")
    with pytest.raises(ValueError, match=r"2 character\(s\) not in the vocabulary: 'x', 'z'"):
        v.encode("abzx")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 3\)"):
        v.decode([0, 3])
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary("aba")
    with pytest.raises(ValueError, match="single characters"):
        Vocabulary(["ab"])
    with pytest.raises(ValueError, match="empty"):
        Vocabulary.from_text("")


def test_read_text_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.txt is empty"):
        read_text(empty)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not valid UTF-8 \(byte 3.*iconv"):
        read_text(latin)
    with pytest.raises(FileNotFoundError, match="missing.txt.*does not exist"):
        read_text(tmp_path / "missing.txt")
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfabc")
    assert read_text(bom) == "abc"


def test_sequential_batches_continue_each_row() -> None:
    ids = np.arange(103)
    chunks = list(sequential_batches(ids, batch_size=4, steps=5))
    length = (103 - 1) // 4  # 25 per row -> 5 chunks
    assert len(chunks) == 5
    for x, y in chunks:
        assert x.shape == y.shape == (4, 5) and x.dtype == y.dtype == np.int64
        np.testing.assert_array_equal(y, x + 1)  # the next id
    rows = np.concatenate([x for x, _ in chunks], axis=1)
    for b in range(4):  # concatenating the chunks restores each row's contiguous stream
        np.testing.assert_array_equal(rows[b], ids[b * length : (b + 1) * length])
    for (_, y0), (x1, _) in zip(chunks, chunks[1:], strict=False):
        np.testing.assert_array_equal(y0[:, -1], x1[:, 0])  # carried state sees unbroken text
    ragged = list(sequential_batches(ids, 4, 7, drop_last=False))
    assert [x.shape[1] for x, _ in ragged] == [7, 7, 7, 4]
    assert len(list(sequential_batches(ids, 4, 7))) == 3
    with pytest.raises(ValueError, match="too short"):
        list(sequential_batches(np.arange(10), 4, 5))


def test_random_batches() -> None:
    ids = np.arange(1000) * 3
    a = list(random_batches(ids, 8, 12, np.random.default_rng(1), num_batches=20))
    b = list(random_batches(ids, 8, 12, np.random.default_rng(1), num_batches=20))
    assert len(a) == 20
    for (x, y), (x2, y2) in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
        assert x.shape == (8, 12)
        np.testing.assert_array_equal(np.diff(x, axis=1), 3)  # contiguous windows
        np.testing.assert_array_equal(y, x + 3)  # shifted by one position
    starts = np.concatenate([x[:, 0] for x, _ in a]) // 3
    assert starts.min() >= 0 and starts.max() <= 1000 - 13
    assert len(np.unique(starts)) > 100


def test_sample_from_logits() -> None:
    logits = np.log(np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]))
    np.testing.assert_array_equal(sample_from_logits(logits, 0.0, np.random.default_rng()), [2, 0])
    rng = np.random.default_rng(0)
    draws = np.stack([sample_from_logits(logits, 1.0, rng) for _ in range(20_000)])
    np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=3) / 20_000, [0.1, 0.2, 0.7],
                               atol=0.015)
    np.testing.assert_allclose(np.bincount(draws[:, 1], minlength=3) / 20_000,
                               [0.5, 0.25, 0.25], atol=0.015)
    cold = np.stack([sample_from_logits(logits, 0.05, rng) for _ in range(500)])
    assert np.all(cold[:, 0] == 2)
    hot = np.stack([sample_from_logits(logits[:1], 100.0, rng) for _ in range(6000)])
    np.testing.assert_allclose(np.bincount(hot[:, 0], minlength=3) / 6000, 1 / 3, atol=0.03)
    # temperature 0.5 squares the probabilities (renormalised)
    half = np.stack([sample_from_logits(logits[:1], 0.5, rng)[0] for _ in range(20_000)])
    p = np.array([0.1, 0.2, 0.7]) ** 2
    np.testing.assert_allclose(np.bincount(half, minlength=3) / 20_000, p / p.sum(), atol=0.015)
    single = sample_from_logits(np.array([0.0, 5.0]), 0.0, rng)
    assert single.shape == () and int(single) == 1
    with pytest.raises(ValueError, match="temperature"):
        sample_from_logits(logits, -1.0, rng)
    with pytest.raises(ValueError, match="NaN"):
        sample_from_logits(np.array([np.nan, 0.0]), 1.0, rng)


def make_step_fn(vocab_size: int, calls: list[np.ndarray]) -> Any:
    """A deterministic 'model': strongly predicts (id + 1) % V; state counts steps."""

    def step_fn(ids: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        calls.append(ids.copy())
        logits = np.zeros((len(ids), vocab_size))
        logits[np.arange(len(ids)), (ids + 1) % vocab_size] = 50.0
        return logits, (0 if state is None else state) + 1

    return step_fn


def test_generate_with_deterministic_step_fn() -> None:
    calls: list[np.ndarray] = []
    out = generate(make_step_fn(5, calls), [3, 1], 6, 1.0, np.random.default_rng(0))
    assert out.dtype == np.int64 and out.tolist() == [2, 3, 4, 0, 1, 2]
    # the prime is fed step by step, then each sample is fed back (the last needs no call)
    assert [c.tolist() for c in calls] == [[3], [1], [2], [3], [4], [0], [1]]
    calls.clear()
    batch = generate(make_step_fn(5, calls), np.array([[0], [4]]), 3, 0.0, np.random.default_rng())
    assert batch.tolist() == [[1, 2, 3], [0, 1, 2]]
    states: list[Any] = []

    def recording(ids: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        states.append(state)
        return np.zeros((len(ids), 3)), state + 1

    generate(recording, [0], 3, 1.0, np.random.default_rng(0), state=10)
    assert states == [10, 11, 12]  # state carried through every call
    assert generate(recording, [0], 0, 1.0, np.random.default_rng(0), state=0).shape == (0,)
    with pytest.raises(ValueError, match="P >= 1"):
        generate(recording, [], 3, 1.0, np.random.default_rng(0))


def test_generate_text() -> None:
    v = Vocabulary("abcde")
    text = generate_text(make_step_fn(5, []), v, "ca", 4, 0.0, np.random.default_rng())
    assert text == "bcde"
    with pytest.raises(ValueError, match="non-empty"):
        generate_text(make_step_fn(5, []), v, "", 4, 0.0, np.random.default_rng())
    with pytest.raises(ValueError, match="not in the vocabulary"):
        generate_text(make_step_fn(5, []), v, "z", 4, 0.0, np.random.default_rng())


def test_perplexity() -> None:
    assert perplexity(math.log(7)) == pytest.approx(7.0)
    assert perplexity(np.full(10, math.log(3))) == pytest.approx(3.0)
    assert bits_per_char(math.log(2)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="finite number >= 0"):
        perplexity(float("nan"))


def test_text_dataset(corpus_file: Path) -> None:
    ds = data.load("text", path=corpus_file, steps=16)
    corpus = ds.meta["corpus"]
    assert isinstance(corpus, TextCorpus) and ds.input_kind == "index"
    v = len(corpus.vocab)
    assert ds.input_size == ds.output_size == v and ds.task == "step_classification"
    streams = ds.meta["streams"]
    np.testing.assert_array_equal(np.concatenate(list(streams.values())), corpus.ids)
    assert corpus.decode(ds.train.X[0]) == corpus.text[:16]
    np.testing.assert_array_equal(ds.train.y[:, :-1], ds.train.X[:, 1:])
    x, y = windows(streams["test"], 16)
    np.testing.assert_array_equal(ds.test.X, x)
    np.testing.assert_array_equal(ds.test.y, y)
    assert ds.baselines["ce_uniform"] == pytest.approx(math.log(v))
    assert ds.baselines["ce_unigram"] < ds.baselines["ce_uniform"]
    assert "✓" in corpus.vocab


def test_text_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs path="):
        data.load("text")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        data.load("text", path=tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"ok\xff\xfe")
    with pytest.raises(ValueError, match=r"not valid UTF-8 \(byte 2"):
        data.load("text", path=tmp_path / "bin.txt")
    (tmp_path / "short.txt").write_text("a short text that is not long enough")
    with pytest.raises(ValueError, match="too few for steps=50"):
        data.load("text", path=tmp_path / "short.txt")


def test_toy_text_is_deterministic() -> None:
    a = toy_text(20, np.random.default_rng(4))
    assert a == toy_text(20, np.random.default_rng(4))
    assert a.count("\n") == 20 and a[0].isupper()
