"""The (embedded) Reber grammar: next-symbol prediction with the strict criterion of Hochreiter and
Schmidhuber (1997).

Reber grammar (nodes 0..6; every branch has probability 1/2)::

    0 -B-> 1;  1 -T-> 2, 1 -P-> 3;  2 -S-> 2, 2 -X-> 4;  3 -T-> 3, 3 -V-> 5;
    4 -X-> 3, 4 -S-> 6;  5 -P-> 4, 5 -V-> 6;  6 -E-> end

Embedded Reber: ``B c <Reber string> c E`` with ``c`` in {T, P} chosen once; predicting the second
``c`` needs the first, many steps back.  A string is counted correct under the strict criterion
only if at *every* step the network's output ranks the allowed next symbols above all others
(``criterion="top_k"``: the ``k`` most active outputs are exactly the ``k`` allowed symbols, ties
fail), or, looser, if its most active output is always allowed (``criterion="argmax"``).
"""

from __future__ import annotations

import math

import numpy as np

from .base import Dataset, InputKind, Split, check_positive_int, one_hot, three
from .tasks import split_generators

SYMBOLS = "BTPSXVE"
INDEX = {s: i for i, s in enumerate(SYMBOLS)}
#: node -> ((symbol, next node), ...); -1 is the end.
TRANSITIONS: dict[int, tuple[tuple[str, int], ...]] = {
    0: (("B", 1),),
    1: (("T", 2), ("P", 3)),
    2: (("S", 2), ("X", 4)),
    3: (("T", 3), ("V", 5)),
    4: (("X", 3), ("S", 6)),
    5: (("P", 4), ("V", 6)),
    6: (("E", -1),),
}


def reber_string(rng: np.random.Generator) -> str:
    """One string of the Reber grammar, e.g. ``"BTSSXXTVVE"``."""
    node, out = 0, []
    while node != -1:
        options = TRANSITIONS[node]
        sym, node = options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]
        out.append(sym)
    return "".join(out)


def embedded_reber_string(rng: np.random.Generator) -> str:
    """One string of the embedded Reber grammar: ``B c <Reber> c E``."""
    c = "TP"[int(rng.integers(2))]
    return "B" + c + reber_string(rng) + c + "E"


def allowed_sets(string: str, embedded: bool = True) -> list[frozenset[str]]:
    """The allowed symbols at each position of ``string`` given the prefix before it.

    Returns
    -------
    list of frozenset
        ``len(string)`` sets; entry ``i`` holds the symbols the grammar allows at position ``i``.

    Raises
    ------
    ValueError
        ``string`` is not (a complete string) of the grammar; the message names the position.
    """
    # state: ("outer", k) for the embedded frame, ("inner", node), ("done",)
    phase, node, c = ("outer0" if embedded else "inner"), 0, ""
    sets: list[frozenset[str]] = []
    for i, sym in enumerate(string):
        if phase == "outer0":
            ok = frozenset("B")
        elif phase == "outer1":
            ok = frozenset("TP")
        elif phase == "inner":
            ok = frozenset(s for s, _ in TRANSITIONS[node])
        elif phase == "close":
            ok = frozenset(c)
        elif phase == "end":
            ok = frozenset("E")
        else:
            raise ValueError(f"{string!r} goes on after the end of the grammar at position {i}")
        if sym not in ok:
            raise ValueError(
                f"{string!r} is not in the {'embedded ' if embedded else ''}Reber grammar: "
                f"position {i} is {sym!r}, allowed {sorted(ok)}"
            )
        sets.append(ok)
        if phase == "outer0":
            phase = "outer1"
        elif phase == "outer1":
            phase, c, node = "inner", sym, 0
        elif phase == "inner":
            node = dict(TRANSITIONS[node])[sym]
            if node == -1:
                phase = "close" if embedded else "done"
        elif phase == "close":
            phase = "end"
        else:
            phase = "done"
    if phase != "done":
        raise ValueError(f"{string!r} is an unfinished string of the grammar")
    return sets


def is_reber(string: str, embedded: bool = True) -> bool:
    """Whether the automaton accepts ``string``."""
    try:
        allowed_sets(string, embedded)
    except ValueError:
        return False
    return True


def encode_strings(
    strings: list[str], embedded: bool = True, steps: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Next-symbol arrays, padded to ``steps`` prediction steps.

    Returns
    -------
    (inputs, targets, mask, allowed)
        ``(N, T)`` int64 symbol indices ``s[:-1]``, ``(N, T)`` int64 ``s[1:]``, ``(N, T)`` bool
        (True = real step), ``(N, T, 7)`` bool allowed next symbols.  Padding is 0 / False.
    """
    t = max(len(s) for s in strings) - 1 if steps is None else steps
    n = len(strings)
    inputs = np.zeros((n, t), np.int64)
    targets = np.zeros((n, t), np.int64)
    mask = np.zeros((n, t), bool)
    allowed = np.zeros((n, t, len(SYMBOLS)), bool)
    for i, s in enumerate(strings):
        if len(s) - 1 > t:
            raise ValueError(f"string {i} needs {len(s) - 1} steps, more than steps={t}")
        sets = allowed_sets(s, embedded)
        idx = [INDEX[ch] for ch in s]
        m = len(s) - 1
        inputs[i, :m], targets[i, :m], mask[i, :m] = idx[:-1], idx[1:], True
        for j, ok in enumerate(sets[1:]):
            allowed[i, j, [INDEX[ch] for ch in ok]] = True
    return inputs, targets, mask, allowed


def strict_correct(
    scores: np.ndarray,
    allowed: np.ndarray,
    mask: np.ndarray | None = None,
    criterion: str = "top_k",
) -> np.ndarray:
    """Per-string strict criterion.

    Parameters
    ----------
    scores : ndarray
        ``(N, T, V)`` predicted probabilities (or logits: only the order matters).
    allowed : ndarray
        ``(N, T, V)`` bool allowed next symbols.
    mask : ndarray, optional
        ``(N, T)`` bool; steps outside it are not judged.
    criterion : {"top_k", "argmax"}
        ``"top_k"`` (Hochreiter and Schmidhuber): every allowed symbol scores strictly higher than
        every other symbol.  ``"argmax"``: the top-scoring symbol is allowed.

    Returns
    -------
    ndarray
        ``(N,)`` bool: True where every judged step of the string is correct.
    """
    scores, allowed = np.asarray(scores, dtype=np.float64), np.asarray(allowed, dtype=bool)
    if scores.shape != allowed.shape or scores.ndim != 3:
        raise ValueError(
            f"scores and allowed must both be (N, T, V); got {scores.shape} and {allowed.shape}"
        )
    judged = np.ones(scores.shape[:2], bool) if mask is None else np.asarray(mask, bool)
    if judged.shape != scores.shape[:2]:
        raise ValueError(f"mask must be (N, T) = {scores.shape[:2]}; got {judged.shape}")
    if np.any(judged & ~allowed.any(-1)):
        raise ValueError("a judged step has no allowed symbol; check allowed and mask")
    if criterion == "top_k":
        lowest_allowed = np.where(allowed, scores, np.inf).min(-1)
        highest_other = np.where(allowed, -np.inf, scores).max(-1)
        ok = lowest_allowed > highest_other
    elif criterion == "argmax":
        ok = np.take_along_axis(allowed, scores.argmax(-1)[..., None], -1)[..., 0]
    else:
        raise ValueError(f"criterion must be 'top_k' or 'argmax'; got {criterion!r}")
    return np.all(ok | ~judged, axis=1)


def strict_accuracy(
    scores: np.ndarray, allowed: np.ndarray, mask: np.ndarray | None = None,
    criterion: str = "top_k",
) -> float:
    """Fraction of strings correct under :func:`strict_correct`."""
    return float(strict_correct(scores, allowed, mask, criterion).mean())


def score(ds: Dataset, split: str, y_pred: np.ndarray) -> dict[str, float]:
    """Task metrics of a Reber dataset: ``strict_accuracy`` (the Hochreiter-Schmidhuber
    criterion, :func:`strict_correct`) and ``strict_accuracy_argmax`` of ``(N, T, V)``
    predictions on ``split``."""
    s = getattr(ds, split)
    allowed = ds.meta["allowed"][split]
    return {"strict_accuracy": strict_accuracy(y_pred, allowed, s.mask),
            "strict_accuracy_argmax": strict_accuracy(y_pred, allowed, s.mask, "argmax")}


def reber_baselines(allowed: np.ndarray, mask: np.ndarray, embedded: bool) -> dict[str, float]:
    """Baselines from the allowed sets of a split.

    Every branch is a fair coin, so the optimal predictor's expected CE at a step is
    ``ln |allowed|``; ``ce_optimal`` averages it over real steps.  A predictor without the
    long-range memory (embedded grammar) pays ``ln 2`` more once per string and guesses the
    penultimate symbol: strict accuracy 1/2 at best.
    """
    real = mask.sum()
    ce = float(np.log(allowed.sum(-1)[mask]).sum() / real)
    out = {"ce_optimal": ce, "strict_accuracy_optimal": 1.0}
    if embedded:
        out["ce_no_long_memory"] = ce + math.log(2) * allowed.shape[0] / float(real)
        out["strict_accuracy_no_long_memory"] = 0.5
    return out


def load_reber(
    *, seed: int = 0, n_train: int = 256, n_val: int | None = None, n_test: int = 256,
    embedded: bool = True, input_kind: InputKind = "dense",
) -> Dataset:
    """Next-symbol prediction on (embedded) Reber strings, padded with a mask.

    Returns
    -------
    Dataset
        ``X`` ``(N, T, 7)`` one-hot float32 (or ``(N, T)`` int64 for ``input_kind="index"``),
        ``y`` ``(N, T)`` int64, ``mask`` ``(N, T)``; ``T`` = longest string - 1 over all splits.
        ``meta["allowed"][split]`` is the ``(N, T, 7)`` bool allowed-symbol array for
        :func:`strict_accuracy`.
    """
    if input_kind not in ("dense", "index"):
        raise ValueError(f"input_kind must be 'dense' or 'index'; got {input_kind!r}")
    n_train = check_positive_int("n_train", n_train)
    sizes = (n_train, max(1, n_train // 10) if n_val is None else n_val, n_test)
    make = embedded_reber_string if embedded else reber_string
    strings = [
        [make(g) for _ in range(check_positive_int("split size", n))]
        for n, g in zip(sizes, split_generators(seed), strict=True)
    ]
    steps = max(len(s) for group in strings for s in group) - 1
    splits, allowed = [], {}
    for name, group in zip(("train", "val", "test"), strings, strict=True):
        inputs, targets, mask, ok = encode_strings(group, embedded, steps)
        X = one_hot(inputs, len(SYMBOLS)) if input_kind == "dense" else inputs
        splits.append(Split(X, targets, mask))
        allowed[name] = ok
    test_mask = splits[2].mask
    assert test_mask is not None
    return Dataset(
        "reber", *three(splits), input_size=len(SYMBOLS), output_size=len(SYMBOLS),
        task="step_classification", loss="softmax_ce", input_kind=input_kind,
        baselines=reber_baselines(allowed["test"], test_mask, embedded),
        meta={"symbols": SYMBOLS, "embedded": embedded, "steps": steps, "allowed": allowed,
              "strings": dict(zip(("train", "val", "test"), strings, strict=True)), "seed": seed},
        scorer=score,
    )
