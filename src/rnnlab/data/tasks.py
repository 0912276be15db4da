"""Synthetic recurrent-network tasks, each generated from an explicit Generator, each with its
analytic baseline computed in code.

=========  =====================  ============================  ==================================
name       task                   shapes                        baseline
=========  =====================  ============================  ==================================
xor        step classification    X (N, T, 1), y (N, T)         optimal error = 1/2 on 2 of 3 steps
adding     sequence regression    X (N, T, 2), y (N, 1)         MSE of predicting 1 = 1/6
copy       step classification    X (N, T+20, 10), y (N, T+20)  CE = 10 ln 8 / (T + 20)
sine       step regression        X (N, T, 1), y (N, T, 1)      MSE of predicting 0 / persistence
parity     sequence or step cls.  X (N, T, 1), y (N,) / (N, T)  chance: CE ln 2, accuracy 1/2
=========  =====================  ============================  ==================================

Every ``load_*`` draws train, validation and test from three independent children
(``Generator.spawn``) of ``np.random.default_rng(seed)``; the global NumPy generator is never used.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Dataset, InputKind, Split, check_positive_int, one_hot, three


def split_generators(seed: int) -> tuple[np.random.Generator, ...]:
    """Three independent Generators (train, val, test) spawned from ``default_rng(seed)``."""
    return tuple(np.random.default_rng(seed).spawn(3))


def _sizes(n_train: int, n_val: int | None, n_test: int) -> tuple[int, int, int]:
    n_train = check_positive_int("n_train", n_train)
    n_val = check_positive_int("n_val", max(1, n_train // 10) if n_val is None else n_val)
    return n_train, n_val, check_positive_int("n_test", n_test)


# --------------------------------------------------------------------------- temporal XOR (004)


def xor_bits(n: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3k)`` int64 bit streams of triples ``(a, b, a XOR b)`` with ``3k >= steps + 1``."""
    k = -(-(steps + 1) // 3)
    ab = rng.integers(0, 2, size=(n, k, 2), dtype=np.int64)
    triples = np.concatenate([ab, ab[..., :1] ^ ab[..., 1:]], axis=-1)
    return triples.reshape(n, 3 * k)


def make_xor(n: int, steps: int, rng: np.random.Generator) -> Split:
    """Next-bit prediction on a temporal-XOR stream (Elman 1990).

    Returns
    -------
    Split
        ``X`` ``(n, T, 1)`` float32 bits ``s[0:T]``; ``y`` ``(n, T)`` int64 next bits
        ``s[1:T+1]``.  Each sequence starts at a triple boundary, so the target at step ``t`` is
        bit ``(t + 1) % 3`` of a triple and only targets with ``(t + 1) % 3 == 2`` are predictable.
    """
    bits = xor_bits(n, steps, rng)
    return Split(bits[:, :steps, None].astype(np.float32), bits[:, 1 : steps + 1].copy())


def xor_target_positions(steps: int, offset: int = 1) -> np.ndarray:
    """``(T,)`` position inside its triple (0 = a, 1 = b, 2 = a XOR b) of each step's target."""
    return (np.arange(steps) + offset) % 3


def xor_position_error(
    pred_bits: np.ndarray, targets: np.ndarray, offset: int = 1
) -> np.ndarray:
    """Error rate by the target's position in its triple.

    Parameters
    ----------
    pred_bits : ndarray
        ``(N, T)`` or ``(T,)`` predicted bits (0/1).
    targets : ndarray
        Same shape: the true next bits (``Split.y``).
    offset : int
        Stream index of the first target (1 for :func:`make_xor`).

    Returns
    -------
    ndarray
        ``(3,)`` float: error on targets that are an ``a`` bit, a ``b`` bit, and the predictable
        ``a XOR b`` bit; NaN where ``T`` holds no such target.  The optimal predictor scores
        ``(0.5, 0.5, 0.0)``.
    """
    pred, tgt = np.asarray(pred_bits), np.asarray(targets)
    if pred.shape != tgt.shape or pred.ndim not in (1, 2):
        raise ValueError(
            f"pred_bits and targets must both be (N, T) or (T,); got {pred.shape} and {tgt.shape}"
        )
    wrong = (pred != tgt).reshape(-1, tgt.shape[-1])
    pos = xor_target_positions(tgt.shape[-1], offset)
    out = np.full(3, np.nan)
    for k in range(3):
        if np.any(pos == k):
            out[k] = wrong[:, pos == k].mean()
    return out


def xor_baselines(steps: int) -> dict[str, float]:
    """Analytic per-step error and CE (nats) of the optimal predictor and of chance."""
    unpredictable = float(np.mean(xor_target_positions(steps) != 2))
    return {
        "error_optimal": 0.5 * unpredictable,
        "ce_optimal": math.log(2) * unpredictable,
        "error_chance": 0.5,
        "ce_chance": math.log(2),
    }


def load_xor(
    *, steps: int = 30, seed: int = 0, n_train: int = 1000, n_val: int | None = None,
    n_test: int = 200,
) -> Dataset:
    """Elman's temporal XOR as next-bit step classification (2 classes, every step scored)."""
    steps = check_positive_int("steps", steps)
    sizes = _sizes(n_train, n_val, n_test)
    splits = [make_xor(n, steps, g) for n, g in zip(sizes, split_generators(seed), strict=True)]
    return Dataset(
        "xor", *three(splits), input_size=1, output_size=2, task="step_classification",
        loss="softmax_ce", baselines=xor_baselines(steps),
        meta={"steps": steps, "position_error_optimal": (0.5, 0.5, 0.0), "seed": seed},
        scorer=score_xor,
    )


def score_xor(ds: Dataset, split: str, y_pred: np.ndarray) -> dict[str, float]:
    """Task metrics of temporal XOR: the error rate of the predicted bits (argmax of
    ``(N, T, 2)`` probabilities) by the target's position in its triple (Elman 1990):
    ``error_a``, ``error_b`` (unpredictable: 0.5 at best) and ``error_xor`` (predictable: 0)."""
    err = xor_position_error(np.asarray(y_pred).argmax(-1), getattr(ds, split).y)
    return {"error_a": float(err[0]), "error_b": float(err[1]), "error_xor": float(err[2])}


def score_regression(ds: Dataset, split: str, y_pred: np.ndarray) -> dict[str, float]:
    """Task metrics of a regression task: ``mse`` (per output, over every scored entry) and
    ``mse_ratio``, the MSE over the task's reference baseline (``mse_predict_1`` for the adding
    problem, ``mse_predict_0`` for the sine): below 1 beats the baseline, 0 is perfect."""
    y = getattr(ds, split).y
    mse = float(np.mean((np.asarray(y_pred, np.float64) - y) ** 2))
    base = ds.baselines.get("mse_predict_1", ds.baselines.get("mse_predict_0"))
    out = {"mse": mse}
    if base:
        out["mse_ratio"] = mse / float(base)
    return out


def score_copy(ds: Dataset, split: str, y_pred: np.ndarray) -> dict[str, float]:
    """Task metrics of copy memory: ``recall_accuracy``, the fraction of the ``length`` recalled
    symbols predicted right (argmax), and ``recall_exact``, the fraction of sequences recalled
    without a mistake."""
    length = int(ds.meta["length"])
    pred = np.asarray(y_pred).argmax(-1)[:, -length:]
    ok = pred == getattr(ds, split).y[:, -length:]
    return {"recall_accuracy": float(ok.mean()), "recall_exact": float(ok.all(axis=1).mean())}


# --------------------------------------------------------------------------- adding problem


def make_adding(n: int, steps: int, rng: np.random.Generator) -> Split:
    """The adding problem.

    Returns
    -------
    Split
        ``X`` ``(n, T, 2)`` float32: channel 0 values ~ U[0, 1], channel 1 a marker that is 1 at
        one step in ``[0, T//2)`` and one in ``[T//2, T)``; ``y`` ``(n, 1)`` float32, the sum of
        the two marked values.
    """
    steps = check_positive_int("steps", steps, minimum=2)
    half = steps // 2
    values = rng.random((n, steps))
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, steps, size=n)
    rows = np.arange(n)
    marker = np.zeros((n, steps))
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    X = np.stack([values, marker], axis=-1).astype(np.float32)
    y = (X[rows, first, 0] + X[rows, second, 0])[:, None]
    return Split(X, y.astype(np.float32))


def load_adding(
    *, steps: int = 50, seed: int = 0, n_train: int = 10000, n_val: int | None = None,
    n_test: int = 1000,
) -> Dataset:
    """The adding problem; baseline: always predicting 1 has MSE Var(u1 + u2) = 2/12 = 1/6."""
    sizes = _sizes(n_train, n_val, n_test)
    splits = [make_adding(n, steps, g) for n, g in zip(sizes, split_generators(seed), strict=True)]
    return Dataset(
        "adding", *three(splits), input_size=2, output_size=1, task="sequence_regression",
        loss="identity_mse", baselines={"mse_predict_1": 1.0 / 6.0, "mse_optimal": 0.0},
        meta={"steps": steps, "seed": seed}, scorer=score_regression,
    )


# --------------------------------------------------------------------------- copy memory


def make_copy(
    n: int, delay: int, rng: np.random.Generator, symbols: int = 8, length: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Copy memory (Arjovsky et al. 2016) as index arrays.

    Alphabet: 0 blank, 1..``symbols`` data, ``symbols + 1`` delimiter.

    Returns
    -------
    (ndarray, ndarray)
        Inputs and targets, both ``(n, delay + 2 * length)`` int64.  Input: ``length`` data
        symbols, ``delay - 1`` blanks, the delimiter, ``length`` blanks.  Target: blanks for
        ``delay + length`` steps, then the data symbols.
    """
    delay = check_positive_int("steps (the copy delay)", delay)
    total = delay + 2 * length
    data = rng.integers(1, symbols + 1, size=(n, length), dtype=np.int64)
    inputs = np.zeros((n, total), dtype=np.int64)
    inputs[:, :length] = data
    inputs[:, length + delay - 1] = symbols + 1
    targets = np.zeros((n, total), dtype=np.int64)
    targets[:, -length:] = data
    return inputs, targets


def copy_baseline(delay: int, symbols: int = 8, length: int = 10) -> float:
    """CE (nats per step) of the best memoryless predictor: ``length ln(symbols) / (T + 2 length)``.

    It predicts blank with certainty for the first ``T + length`` steps and the uniform
    distribution over the ``symbols`` data symbols for the last ``length``.
    """
    return length * math.log(symbols) / (delay + 2 * length)


def load_copy(
    *, steps: int = 20, seed: int = 0, n_train: int = 10000, n_val: int | None = None,
    n_test: int = 1000, input_kind: InputKind = "dense", symbols: int = 8, length: int = 10,
) -> Dataset:
    """Copy memory; ``steps`` is the delay ``T``, the sequences are ``T + 2 length`` long.

    ``input_kind="dense"`` gives one-hot ``X`` ``(N, T + 20, symbols + 2)`` float32;
    ``"index"`` gives ``(N, T + 20)`` int64.  Output: ``symbols + 1`` classes (blank + data).
    """
    if input_kind not in ("dense", "index"):
        raise ValueError(f"input_kind must be 'dense' or 'index'; got {input_kind!r}")
    symbols = check_positive_int("symbols", symbols, minimum=2)
    length = check_positive_int("length", length)
    sizes = _sizes(n_train, n_val, n_test)
    splits = []
    for n, g in zip(sizes, split_generators(seed), strict=True):
        inputs, targets = make_copy(n, steps, g, symbols, length)
        X = one_hot(inputs, symbols + 2) if input_kind == "dense" else inputs
        splits.append(Split(X, targets))
    return Dataset(
        "copy", *three(splits), input_size=symbols + 2, output_size=symbols + 1,
        task="step_classification", loss="softmax_ce", input_kind=input_kind,
        baselines={"ce_memoryless": copy_baseline(steps, symbols, length), "ce_optimal": 0.0},
        meta={"steps": steps, "delay": steps, "sequence_length": steps + 2 * length,
              "symbols": symbols, "length": length, "blank": 0, "delimiter": symbols + 1,
              "seed": seed},
        scorer=score_copy,
    )


# --------------------------------------------------------------------------- sine regression


def make_sine(
    n: int, steps: int, rng: np.random.Generator, omega_min: float = 0.1,
    omega_max: float = 0.5, amplitude: float = 1.0, noise: float = 0.0,
) -> Split:
    """One-step-ahead prediction of sinusoids with random frequency and phase.

    ``s_t = A sin(omega t + phi) + noise e_t``, ``omega ~ U[omega_min, omega_max]`` (radians per
    step), ``phi ~ U[0, 2 pi)``, ``e_t ~ N(0, 1)``.

    Returns
    -------
    Split
        ``X`` ``(n, T, 1)`` = ``s[0:T]``, ``y`` ``(n, T, 1)`` = ``s[1:T+1]``, float32.
    """
    omega = rng.uniform(omega_min, omega_max, size=(n, 1))
    phase = rng.uniform(0.0, 2.0 * math.pi, size=(n, 1))
    s = amplitude * np.sin(omega * np.arange(steps + 1) + phase)
    if noise:
        s = s + noise * rng.standard_normal(s.shape)
    s32 = s.astype(np.float32)
    return Split(s32[:, :-1, None].copy(), s32[:, 1:, None].copy())


def sine_baselines(
    omega_min: float, omega_max: float, amplitude: float, noise: float
) -> dict[str, float]:
    """Analytic MSEs: predicting 0, persistence (``y_hat_t = x_t``), and the noise floor.

    ``E[s^2] = A^2 / 2 + sigma^2``; persistence: ``A^2 (1 - E[cos omega]) + 2 sigma^2`` with
    ``E[cos omega] = (sin omega_max - sin omega_min) / (omega_max - omega_min)``.
    """
    if omega_max > omega_min:
        mean_cos = (math.sin(omega_max) - math.sin(omega_min)) / (omega_max - omega_min)
    else:
        mean_cos = math.cos(omega_min)
    a2, s2 = amplitude**2, noise**2
    return {
        "mse_predict_0": a2 / 2.0 + s2,
        "mse_persistence": a2 * (1.0 - mean_cos) + 2.0 * s2,
        "mse_noise_floor": s2,
    }


def load_sine(
    *, steps: int = 50, seed: int = 0, n_train: int = 1000, n_val: int | None = None,
    n_test: int = 200, omega_min: float = 0.1, omega_max: float = 0.5, amplitude: float = 1.0,
    noise: float = 0.0,
) -> Dataset:
    """Sine next-value regression (identity output, MSE) with analytic baselines."""
    steps = check_positive_int("steps", steps)
    if not 0.0 < omega_min <= omega_max:
        raise ValueError(f"need 0 < omega_min <= omega_max; got {omega_min}, {omega_max}")
    if noise < 0.0:
        raise ValueError(f"noise must be >= 0; got {noise}")
    sizes = _sizes(n_train, n_val, n_test)
    splits = [
        make_sine(n, steps, g, omega_min, omega_max, amplitude, noise)
        for n, g in zip(sizes, split_generators(seed), strict=True)
    ]
    return Dataset(
        "sine", *three(splits), input_size=1, output_size=1, task="step_regression",
        loss="identity_mse", baselines=sine_baselines(omega_min, omega_max, amplitude, noise),
        meta={"steps": steps, "omega_range": (omega_min, omega_max), "amplitude": amplitude,
              "noise": noise, "seed": seed},
        scorer=score_regression,
    )


# --------------------------------------------------------------------------- parity


def make_parity(n: int, steps: int, rng: np.random.Generator, per_step: bool = False) -> Split:
    """Random bits; target the parity of the whole sequence ``(n,)`` or the running parity
    ``(n, T)`` (``per_step``).  ``X`` is ``(n, T, 1)`` float32."""
    bits = rng.integers(0, 2, size=(n, steps), dtype=np.int64)
    y = np.cumsum(bits, axis=1) % 2 if per_step else bits.sum(axis=1) % 2
    return Split(bits[..., None].astype(np.float32), y.astype(np.int64))


def load_parity(
    *, steps: int = 10, seed: int = 0, n_train: int = 2000, n_val: int | None = None,
    n_test: int = 500, per_step: bool = False,
) -> Dataset:
    """Parity of a bit string; chance baselines accuracy 1/2 and CE ln 2."""
    steps = check_positive_int("steps", steps)
    sizes = _sizes(n_train, n_val, n_test)
    splits = [
        make_parity(n, steps, g, per_step)
        for n, g in zip(sizes, split_generators(seed), strict=True)
    ]
    return Dataset(
        "parity", *three(splits), input_size=1, output_size=2,
        task="step_classification" if per_step else "sequence_classification",
        loss="softmax_ce", baselines={"accuracy_chance": 0.5, "ce_chance": math.log(2)},
        meta={"steps": steps, "per_step": per_step, "seed": seed},
    )
