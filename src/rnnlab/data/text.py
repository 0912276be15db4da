"""Character-level text (seed 001's many-to-many): corpus, vocabulary, batching, sampling.

Inputs are integer ids ``(B, T)`` meant for an index lookup into ``W_xh`` (``input_kind="index"``),
never a dense one-hot product.  Two batchings:

* :func:`sequential_batches` -- the stream cut into ``B`` contiguous rows; successive chunks
  continue each row, so a hidden state carried from one chunk to the next (truncated BPTT, like
  min-char-rnn's ``hprev``) sees an unbroken text;
* :func:`random_batches` -- windows at random offsets drawn from an explicit Generator.

Generation (one-to-many) goes through a model-side callable
``step_fn(ids (B,), state) -> (logits (B, V), state)``; :func:`generate` feeds a prime, then its
own samples drawn with :func:`sample_from_logits` at a temperature.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import Dataset, Split, check_fraction, check_positive_int, three


class Vocabulary:
    """A character <-> id mapping.

    Parameters
    ----------
    chars : iterable of str
        Distinct single characters; their order defines the ids.
    """

    def __init__(self, chars: Iterable[str]) -> None:
        self.itos: tuple[str, ...] = tuple(chars)
        if not self.itos:
            raise ValueError("a vocabulary needs at least one character")
        for ch in self.itos:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"vocabulary entries must be single characters; got {ch!r}")
        if len(set(self.itos)) != len(self.itos):
            raise ValueError("vocabulary characters must be distinct")
        self.stoi: dict[str, int] = {ch: i for i, ch in enumerate(self.itos)}

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        """The sorted distinct characters of ``text``."""
        if not text:
            raise ValueError("cannot build a vocabulary from an empty text")
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, ch: object) -> bool:
        return ch in self.stoi

    def __repr__(self) -> str:
        return f"Vocabulary({''.join(self.itos)!r})"

    def encode(self, text: str) -> np.ndarray:
        """``text`` -> ``(len(text),)`` int64 ids.

        Raises
        ------
        ValueError
            ``text`` has characters outside the vocabulary (they are listed).
        """
        try:
            return np.fromiter((self.stoi[ch] for ch in text), dtype=np.int64, count=len(text))
        except KeyError:
            unknown = sorted({ch for ch in text if ch not in self.stoi})
            shown = ", ".join(repr(ch) for ch in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise ValueError(
                f"{len(unknown)} character(s) not in the vocabulary: {shown}{more}; build the "
                "vocabulary from a text that contains them, or remove them from the input"
            ) from None

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """``(L,)`` ids -> string; ids outside ``[0, len(self))`` raise ValueError."""
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= len(self)):
            raise ValueError(
                f"ids must lie in [0, {len(self)}); found [{arr.min()}, {arr.max()}]"
            )
        return "".join(self.itos[i] for i in arr.tolist())


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file (a BOM is dropped) with clear errors.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is empty or not valid UTF-8 (the byte offset is given).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text file {str(p)!r} does not exist; pass path= a UTF-8 file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{p} is not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 4]!r}); "
            "convert it, e.g. `iconv -f latin1 -t utf-8`"
        ) from None
    if not text:
        raise ValueError(f"{p} is empty; a character corpus needs some text")
    return text


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """A text with its vocabulary and its id stream.

    Attributes
    ----------
    text : str
    vocab : Vocabulary
    ids : ndarray
        ``(len(text),)`` int64.
    """

    text: str
    vocab: Vocabulary
    ids: np.ndarray

    @classmethod
    def from_text(cls, text: str, vocab: Vocabulary | None = None) -> TextCorpus:
        if not text:
            raise ValueError("a corpus needs a non-empty text")
        v = Vocabulary.from_text(text) if vocab is None else vocab
        return cls(text, v, v.encode(text))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TextCorpus:
        return cls.from_text(read_text(path))

    def encode(self, text: str) -> np.ndarray:
        return self.vocab.encode(text)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.vocab.decode(ids)


def _check_stream(ids: np.ndarray, batch_size: int, steps: int) -> np.ndarray:
    check_positive_int("batch_size", batch_size)
    check_positive_int("steps", steps)
    arr = np.asarray(ids)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array; got shape {arr.shape} {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def sequential_batches(
    ids: np.ndarray, batch_size: int, steps: int, drop_last: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Contiguous chunks for truncated BPTT with carried state.

    The stream (minus one id for the shifted targets) is cut into ``batch_size`` rows of
    ``L = (len(ids) - 1) // batch_size`` ids; chunk ``k`` is columns ``[k T, (k + 1) T)``.  Row
    ``b`` of chunk ``k + 1`` continues row ``b`` of chunk ``k`` exactly.

    Yields
    ------
    (X, Y)
        ``(B, T)`` int64 inputs and ``(B, T)`` int64 next ids (``Y[:, t] = X[:, t + 1]`` within a
        chunk, and ``Y[:, -1]`` is the first input of the next chunk).  With ``drop_last=False``
        the final chunk may be shorter than ``T``.
    """
    arr = _check_stream(ids, batch_size, steps)
    length = (len(arr) - 1) // batch_size
    if length < (steps if drop_last else 1):
        raise ValueError(
            f"a stream of {len(arr)} ids is too short for batch_size={batch_size} x steps={steps}"
        )
    xs = arr[: batch_size * length].reshape(batch_size, length)
    ys = arr[1 : batch_size * length + 1].reshape(batch_size, length)
    for start in range(0, length, steps):
        stop = start + steps
        if stop > length and drop_last:
            break
        yield xs[:, start:stop].copy(), ys[:, start:stop].copy()


def random_batches(
    ids: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator,
    num_batches: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Windows at random offsets (uniform over ``[0, len(ids) - T - 1]``) from ``rng``.

    Yields
    ------
    (X, Y)
        ``(B, T)`` int64 inputs and next ids; ``num_batches`` of them (forever when None).
    """
    arr = _check_stream(ids, batch_size, steps)
    high = len(arr) - steps
    if high < 1:
        raise ValueError(f"a stream of {len(arr)} ids is too short for steps={steps}")
    offsets = np.arange(steps)
    count = 0
    while num_batches is None or count < num_batches:
        starts = rng.integers(0, high, size=batch_size)[:, None] + offsets
        yield arr[starts], arr[starts + 1]
        count += 1


def windows(ids: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows: ``(N, T)`` inputs and ``(N, T)`` next ids, ``N = (len-1) // T``."""
    arr = _check_stream(ids, 1, steps)
    n = (len(arr) - 1) // steps
    x = arr[: n * steps].reshape(n, steps)
    y = arr[1 : n * steps + 1].reshape(n, steps)
    return x, y


def sample_from_logits(
    logits: np.ndarray, temperature: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw one id per row from ``softmax(logits / temperature)``.

    Parameters
    ----------
    logits : ndarray
        ``(B, V)`` or ``(V,)``.
    temperature : float
        ``> 0``; lower is greedier.  ``0`` means argmax (greedy decoding).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray
        ``(B,)`` int64 (or a 0-d array for ``(V,)`` logits).
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim not in (1, 2) or z.shape[-1] < 1:
        raise ValueError(f"logits must be (B, V) or (V,); got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or infinity")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0; got {temperature}")
    rows = z.reshape(-1, z.shape[-1])
    if temperature == 0:
        out = rows.argmax(axis=1)
    else:
        scaled = rows / temperature
        p = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        u = rng.random((rows.shape[0], 1)) * cdf[:, -1:]
        out = np.minimum((cdf <= u).sum(axis=1), rows.shape[1] - 1)
    out = out.astype(np.int64)
    return out if z.ndim == 2 else out.reshape(())


StepFn = Callable[[np.ndarray, Any], tuple[np.ndarray, Any]]


def generate(
    step_fn: StepFn,
    prime: Sequence[int] | np.ndarray,
    length: int,
    temperature: float,
    rng: np.random.Generator,
    state: Any = None,
) -> np.ndarray:
    """One-to-many generation: feed ``prime``, then sample ``length`` ids.

    Parameters
    ----------
    step_fn : callable
        ``step_fn(ids (B,) int64, state) -> (logits (B, V), new_state)``; ``state`` is whatever the
        model carries (None at the start).
    prime : array-like
        ``(P,)`` or ``(B, P)`` ids, ``P >= 1``; its last id's logits give the first sample.
    length : int
        Ids to generate.
    temperature : float
        See :func:`sample_from_logits`.
    rng : numpy.random.Generator
    state : Any
        Initial state passed to the first call.

    Returns
    -------
    ndarray
        ``(length,)`` int64 for a 1-D prime, ``(B, length)`` for ``(B, P)``; the prime is not
        included.
    """
    p = np.asarray(prime, dtype=np.int64)
    if p.ndim not in (1, 2) or p.shape[-1] < 1:
        raise ValueError(f"prime must be (P,) or (B, P) ids with P >= 1; got shape {p.shape}")
    length = check_positive_int("length", length, minimum=0)
    batch = p.reshape(-1, p.shape[-1])
    out = np.empty((batch.shape[0], length), dtype=np.int64)
    logits: np.ndarray | None = None
    for t in range(batch.shape[1]):
        logits, state = step_fn(batch[:, t], state)
    for t in range(length):
        assert logits is not None
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[0] != batch.shape[0]:
            raise ValueError(
                f"step_fn must return logits (B, V) with B = {batch.shape[0]}; got {logits.shape}"
            )
        nxt = sample_from_logits(logits, temperature, rng)
        out[:, t] = nxt
        if t + 1 < length:
            logits, state = step_fn(nxt, state)
    return out if p.ndim == 2 else out[0]


def generate_text(
    step_fn: StepFn, vocab: Vocabulary, prime: str, length: int, temperature: float,
    rng: np.random.Generator, state: Any = None,
) -> str:
    """:func:`generate` on characters: returns the ``length`` sampled characters."""
    if not prime:
        raise ValueError("prime must be a non-empty string (generation needs a first input)")
    return vocab.decode(generate(step_fn, vocab.encode(prime), length, temperature, rng, state))


def perplexity(cross_entropy: float | np.ndarray) -> float:
    """``exp`` of the mean cross-entropy in nats (per character)."""
    ce = float(np.mean(cross_entropy))
    if not math.isfinite(ce) or ce < 0:
        raise ValueError(f"cross-entropy must be a finite number >= 0 nats; got {ce}")
    return math.exp(ce)


def bits_per_char(cross_entropy: float | np.ndarray) -> float:
    """Mean cross-entropy converted from nats to bits."""
    return float(np.mean(cross_entropy)) / math.log(2)


# --------------------------------------------------------------------------- a generated text

_GRAMMAR: dict[str, list[list[str]]] = {
    "S": [["NP", "VP", "."], ["NP", "VP", "and", "NP", "VP", "."]],
    "NP": [["the", "N"], ["a", "ADJ", "N"], ["the", "ADJ", "N"]],
    "VP": [["V", "NP"], ["V"], ["V", "the", "N", "with", "NP"]],
    "N": [["cat"], ["dog"], ["bird"], ["robot"], ["river"], ["lamp"]],
    "ADJ": [["small"], ["quiet"], ["red"], ["old"]],
    "V": [["sees"], ["likes"], ["follows"], ["sleeps"], ["finds"]],
}


def toy_text(sentences: int, rng: np.random.Generator) -> str:
    """Sentences from a small context-free grammar, one per line -- a corpus for tests and demos.
    """
    check_positive_int("sentences", sentences)

    def expand(symbol: str) -> list[str]:
        if symbol not in _GRAMMAR:
            return [symbol]
        options = _GRAMMAR[symbol]
        words: list[str] = []
        for part in options[int(rng.integers(len(options)))]:
            words.extend(expand(part))
        return words

    lines = []
    for _ in range(sentences):
        words = expand("S")
        line = " ".join(words).replace(" .", ".")
        lines.append(line[0].upper() + line[1:])
    return "\n".join(lines) + "\n"


def load_text(
    *, path: str | os.PathLike[str] | None = None, steps: int = 50, seed: int = 0,
    val_fraction: float = 0.05, test_fraction: float = 0.05,
) -> Dataset:
    """A character-level corpus as next-character step classification on index inputs.

    The id stream is cut into contiguous parts -- train first, then validation, then test (the
    last ``test_fraction``) -- so no window straddles two splits; each part becomes
    non-overlapping windows of ``steps``.  The vocabulary is the whole file's, so every split
    encodes.  ``meta["streams"]`` holds the three id streams for :func:`sequential_batches` and
    :func:`random_batches`; ``meta["corpus"]`` the :class:`TextCorpus`.

    Returns
    -------
    Dataset
        ``X`` ``(N, T)`` int64, ``y`` ``(N, T)`` int64, ``input_size = output_size = V``.
    """
    if path is None:
        raise ValueError(
            "the 'text' dataset needs path= a UTF-8 text file (for a quick corpus, write "
            "rnnlab.data.text.toy_text(200, np.random.default_rng(0)) to a file)"
        )
    steps = check_positive_int("steps", steps)
    check_fraction("val_fraction", val_fraction)
    check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction + test_fraction must be < 1")
    corpus = TextCorpus.from_file(path)
    n = len(corpus.ids)
    n_test, n_val = int(n * test_fraction), int(n * val_fraction)
    n_train = n - n_val - n_test
    streams = {
        "train": corpus.ids[:n_train],
        "val": corpus.ids[n_train : n_train + n_val],
        "test": corpus.ids[n_train + n_val :],
    }
    for name, stream in streams.items():
        if len(stream) < steps + 1:
            raise ValueError(
                f"{path}: the {name} part has {len(stream)} characters, too few for steps={steps} "
                f"(needs >= {steps + 1}); use a longer text, fewer steps or larger fractions"
            )
    splits = [Split(*windows(stream, steps)) for stream in streams.values()]
    v = len(corpus.vocab)
    return Dataset(
        "text", *three(splits), input_size=v, output_size=v, task="step_classification",
        loss="softmax_ce", input_kind="index",
        baselines={"ce_uniform": math.log(v), "ce_unigram": _unigram_ce(streams["train"], v,
                                                                        streams["test"])},
        meta={"path": str(path), "steps": steps, "vocab": corpus.vocab, "corpus": corpus,
              "streams": streams, "seed": seed},
    )


def _unigram_ce(train: np.ndarray, v: int, test: np.ndarray) -> float:
    """CE (nats) on ``test`` of train's character frequencies (add-one smoothed)."""
    counts = np.bincount(train, minlength=v).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[test].mean())
