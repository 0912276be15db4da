"""The Add and Mimic task families of Marschall, Cho and Savin (2020), the benchmarks of their
comparison of online learning rules (docs/online.md).

Both are *streams*: one long input sequence with a target at every step, cut into consecutive
windows of ``T`` steps.  Window ``i`` of a split continues window ``i - 1``, so with
``TrainConfig(stateful=True)`` the network reads each split as the unbroken stream those authors
train on online (every stream row starts from a zero state each epoch; its first few targets
depend on inputs it has not seen).  Without ``stateful`` every window starts from zero.

``add-task``
    Inputs ``x_t`` are fair coin flips; the target is a probability that depends on two past
    inputs, ``t1`` and ``t2`` steps back (Pitis 2016, Marschall et al. 2020):
    ``p_t = 0.5 + 0.5 x_{t - t1} - 0.25 x_{t - t2}``.  With ``tau_task > 1`` every coin and every
    target is held for ``tau_task`` steps (the lags count coins).  ``targets="probability"``:
    ``y_t = p_t`` with a sigmoid output and binary cross-entropy (soft targets);
    ``"sample"``: ``y_t ~ Bernoulli(p_t)`` as 2-class labels with softmax cross-entropy.  Either
    way the expected cross-entropy of the three reference predictors is analytic (nats):
    predicting the mean, ``H(5/8) = 0.662``; knowing ``x_{t-t1}``, ``0.519``; knowing both,
    ``0.454`` (the optimum).

``mimic``
    Inputs are Bernoulli(``p_input``) vectors; the targets are the outputs of a fixed random
    *teacher* network of the same kind (a tanh RNN with ``hidden`` units whose recurrent matrix
    has spectral radius ``radius``, which sets its memory) fed the same stream: its outputs
    ``z_t`` (mean squared error, the default) or probabilities ``sigmoid(z_t)``
    (``output="sigmoid"``, binary cross-entropy with soft targets).  Baselines are measured on
    the test stream: the optimum (the teacher itself: 0, or the targets' own entropy), the best
    constant, and the best memoryless predictor (the mean target given the current input).

Every loader draws train, validation and test from three independent children of
``np.random.default_rng(seed)``, and the teacher's weights from a fourth.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Dataset, Split, check_positive_int, three

__all__ = [
    "add_task_baselines",
    "binary_entropy",
    "load_add_task",
    "load_mimic",
    "make_add_task",
    "make_mimic",
    "mimic_teacher",
]


def _generators(seed: int) -> tuple[np.random.Generator, ...]:
    """Train, val, test and teacher Generators: four children of ``default_rng(seed)``."""
    return tuple(np.random.default_rng(seed).spawn(4))


def _sizes(n_train: int, n_val: int | None, n_test: int) -> tuple[int, int, int]:
    n_train = check_positive_int("n_train", n_train)
    n_val = check_positive_int("n_val", max(1, n_train // 10) if n_val is None else n_val)
    return n_train, n_val, check_positive_int("n_test", n_test)


def binary_entropy(p: np.ndarray | float) -> np.ndarray:
    """``H(p) = -p ln p - (1 - p) ln(1 - p)`` in nats (0 at p = 0 and 1)."""
    q = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(q * np.log(q) + (1 - q) * np.log1p(-q))
    return np.where((q <= 0) | (q >= 1), 0.0, h)


def _windows(stream: np.ndarray, n: int, steps: int) -> np.ndarray:
    """The first ``n * steps`` entries of ``stream`` (time first) as ``n`` consecutive windows."""
    return stream[: n * steps].reshape((n, steps) + stream.shape[1:])


# --------------------------------------------------------------------------- Add task


def add_task_baselines() -> dict[str, float]:
    """Expected cross-entropy (nats per step) of the three reference predictors of the Add task.

    ``p = 0.5 + 0.5 a - 0.25 b`` with independent fair bits ``a = x_{t-t1}``, ``b = x_{t-t2}``;
    the cross-entropy of a prediction ``q`` is linear in the target, so its expectation is that of
    the target's mean: the mean ``5/8`` costs ``H(5/8)``; knowing ``a`` (means 7/8 and 3/8),
    ``(H(7/8) + H(3/8)) / 2``; knowing both, the mean entropy of ``p`` over the four cases.
    """
    both = float(np.mean(binary_entropy(np.array([0.5, 1.0, 0.25, 0.75]))))
    first = float(np.mean(binary_entropy(np.array([0.875, 0.375]))))
    return {"ce_mean": float(binary_entropy(0.625)), "ce_first_lag": first, "ce_optimal": both}


def make_add_task(n: int, steps: int, rng: np.random.Generator, *, t1: int = 3, t2: int = 8,
                  tau_task: int = 1, targets: str = "probability") -> Split:
    """``n`` consecutive windows of ``steps`` steps of one Add-task stream.

    Returns
    -------
    Split
        ``X`` ``(n, T, 1)`` float32 coin flips; ``y`` ``(n, T, 1)`` float32 probabilities
        (``targets="probability"``) or ``(n, T)`` int64 sampled bits (``"sample"``).  The coins
        before the stream's first step count as 0 (they are never shown).
    """
    total = n * steps
    coins = -(-total // tau_task)
    x = rng.integers(0, 2, size=coins).astype(np.float64)
    lag1 = np.concatenate([np.zeros(t1), x])[:coins]
    lag2 = np.concatenate([np.zeros(t2), x])[:coins]
    p = 0.5 + 0.5 * lag1 - 0.25 * lag2
    x_fine, p_fine = np.repeat(x, tau_task)[:total], np.repeat(p, tau_task)[:total]
    X = _windows(x_fine, n, steps)[..., None].astype(np.float32)
    if targets == "probability":
        return Split(X, _windows(p_fine, n, steps)[..., None].astype(np.float32))
    y = (rng.random(coins) < p).astype(np.int64)          # one draw per coin, held like p
    return Split(X, _windows(np.repeat(y, tau_task)[:total], n, steps))


def load_add_task(
    *, steps: int = 50, seed: int = 0, n_train: int = 400, n_val: int | None = None,
    n_test: int = 100, t1: int = 3, t2: int = 8, tau_task: int = 1,
    targets: str = "probability",
) -> Dataset:
    """Marschall et al.'s Add task as a stream of windows (module docstring).

    Parameters
    ----------
    steps : int
        ``T``, steps per window.
    n_train, n_val, n_test : int
        Windows per split (each split one stream of ``n T`` steps).
    t1, t2 : int
        The lags of the two dependencies, ``1 <= t1 < t2`` (in coins).
    tau_task : int
        Steps each coin (and target) is held.
    targets : {"probability", "sample"}
        Soft targets with a sigmoid output and binary cross-entropy, or sampled 2-class labels.
    """
    steps = check_positive_int("steps", steps)
    t1 = check_positive_int("t1", t1)
    t2 = check_positive_int("t2", t2)
    tau_task = check_positive_int("tau_task", tau_task)
    if t2 <= t1:
        raise ValueError(f"the Add task needs t1 < t2; got t1={t1}, t2={t2}")
    if targets not in ("probability", "sample"):
        raise ValueError(f"targets must be 'probability' or 'sample'; got {targets!r}")
    sizes = _sizes(n_train, n_val, n_test)
    gens = _generators(seed)
    splits = [make_add_task(n, steps, g, t1=t1, t2=t2, tau_task=tau_task, targets=targets)
              for n, g in zip(sizes, gens[:3], strict=True)]
    soft = targets == "probability"
    return Dataset(
        "add-task", *three(splits), input_size=1, output_size=1 if soft else 2,
        task="step_regression" if soft else "step_classification",
        loss="sigmoid_bce" if soft else "softmax_ce", baselines=add_task_baselines(),
        meta={"steps": steps, "t1": t1, "t2": t2, "tau_task": tau_task, "targets": targets,
              "stream": True, "seed": seed},
    )


# --------------------------------------------------------------------------- Mimic task


def mimic_teacher(rng: np.random.Generator, *, inputs: int = 2, hidden: int = 32,
                  outputs: int = 2, radius: float = 0.9, gain: float = 1.0
                  ) -> dict[str, np.ndarray]:
    """The teacher's weights (float64, rnnlab's row layout and keys).

    ``W_xh`` ``N(0, 1/D)``; ``W_hh = radius · Q`` with ``Q`` a Haar-random orthogonal matrix (all
    eigenvalues of modulus ``radius``, so the teacher forgets at the rate ``radius^t``); biases
    0; ``W_hy`` ``N(0, gain^2/H)``, so the logits have standard deviation about ``gain`` times the
    states' RMS.
    """
    q, r = np.linalg.qr(rng.standard_normal((hidden, hidden)))
    W_hh = radius * q * np.sign(np.diag(r))
    return {
        "l0.W_xh": rng.standard_normal((inputs, hidden)) / math.sqrt(inputs),
        "l0.W_hh": W_hh,
        "l0.b_h": np.zeros(hidden),
        "W_hy": gain * rng.standard_normal((hidden, outputs)) / math.sqrt(hidden),
        "b_y": np.zeros(outputs),
    }


def make_mimic(n: int, steps: int, rng: np.random.Generator, teacher: dict[str, np.ndarray], *,
               p_input: float = 0.5, tau_task: int = 1, output: str = "identity") -> Split:
    """``n`` consecutive windows of one stream: Bernoulli inputs and the teacher's outputs.

    The teacher starts from a zero state at the stream's first step and runs unbroken through
    every window (``H_t = tanh(x_t W_xh + H_{t-1} W_hh)``, ``z_t = H_t W_hy``).
    """
    total = n * steps
    D = teacher["l0.W_xh"].shape[0]
    draws = -(-total // tau_task)
    x = np.repeat((rng.random((draws, D)) < p_input).astype(np.float64), tau_task, axis=0)[:total]
    A = x @ teacher["l0.W_xh"] + teacher["l0.b_h"]
    h = np.zeros(teacher["l0.W_hh"].shape[0])
    states = np.empty((total, h.size))
    for t in range(total):
        h = np.tanh(A[t] + h @ teacher["l0.W_hh"])
        states[t] = h
    z = states @ teacher["W_hy"] + teacher["b_y"]
    y = 0.5 * (1.0 + np.tanh(0.5 * z)) if output == "sigmoid" else z
    return Split(_windows(x, n, steps).astype(np.float32), _windows(y, n, steps).astype(np.float32))


def _mimic_baselines(s: Split, output: str) -> dict[str, float]:
    """Measured on one split: the optimum, the best constant, the best memoryless predictor."""
    X = s.X.reshape(-1, s.X.shape[-1]).astype(np.float64)
    Y = s.y.reshape(-1, s.y.shape[-1]).astype(np.float64)
    keys = X @ (2.0 ** np.arange(X.shape[1]))          # the current input pattern
    cond = np.empty_like(Y)
    for k in np.unique(keys):
        rows = keys == k
        cond[rows] = Y[rows].mean(axis=0)
    mean = Y.mean(axis=0)
    if output == "sigmoid":                            # E[BCE(y, q)] per output, averaged
        def bce(q: np.ndarray) -> float:
            q = np.clip(q, 1e-12, 1 - 1e-12)
            return float(np.mean(-(Y * np.log(q) + (1 - Y) * np.log1p(-q))))
        return {"bce_optimal": float(np.mean(binary_entropy(Y))), "bce_mean": bce(mean),
                "bce_memoryless": bce(cond)}
    return {"mse_optimal": 0.0, "mse_mean": float(np.mean((Y - mean) ** 2)),
            "mse_memoryless": float(np.mean((Y - cond) ** 2))}


def load_mimic(
    *, steps: int = 50, seed: int = 0, n_train: int = 400, n_val: int | None = None,
    n_test: int = 100, inputs: int = 2, hidden: int = 32, outputs: int = 2,
    radius: float = 0.9, gain: float = 1.0, p_input: float = 0.5, tau_task: int = 1,
    output: str = "identity",
) -> Dataset:
    """Marschall et al.'s Mimic task as a stream of windows (module docstring).

    Parameters
    ----------
    steps : int
        ``T``, steps per window.
    n_train, n_val, n_test : int
        Windows per split (each split one stream).
    inputs, hidden, outputs : int
        The teacher's ``D``, ``H``, ``O`` (the student's ``D`` and ``O`` follow).
    radius : float in (0, 1)
        Spectral radius of the teacher's ``W_hh``: its memory (about ``1 / (1 - radius)`` steps).
    gain : float > 0
        Scale of the teacher's head.
    p_input : float in (0, 1)
        Probability of a 1 in each input.
    tau_task : int
        Steps each input is held.
    output : {"identity", "sigmoid"}
        Targets ``z_t`` (mean squared error) or ``sigmoid(z_t)`` (binary cross-entropy).
    """
    steps = check_positive_int("steps", steps)
    for name, v in (("inputs", inputs), ("hidden", hidden), ("outputs", outputs),
                    ("tau_task", tau_task)):
        check_positive_int(name, v)
    if not 0.0 < radius < 1.0:
        raise ValueError(f"radius must be in (0, 1) (the teacher must forget); got {radius!r}")
    if not (math.isfinite(gain) and gain > 0.0):
        raise ValueError(f"gain must be a finite number > 0; got {gain!r}")
    if not 0.0 < p_input < 1.0:
        raise ValueError(f"p_input must be in (0, 1); got {p_input!r}")
    if output not in ("sigmoid", "identity"):
        raise ValueError(f"output must be 'sigmoid' or 'identity'; got {output!r}")
    sizes = _sizes(n_train, n_val, n_test)
    gens = _generators(seed)
    teacher = mimic_teacher(gens[3], inputs=inputs, hidden=hidden, outputs=outputs,
                            radius=radius, gain=gain)
    splits = [make_mimic(n, steps, g, teacher, p_input=p_input, tau_task=tau_task, output=output)
              for n, g in zip(sizes, gens[:3], strict=True)]
    return Dataset(
        "mimic", *three(splits), input_size=inputs, output_size=outputs, task="step_regression",
        loss="sigmoid_bce" if output == "sigmoid" else "identity_mse",
        baselines=_mimic_baselines(splits[2], output),
        meta={"steps": steps, "teacher_hidden": hidden, "radius": radius, "gain": gain,
              "p_input": p_input, "tau_task": tau_task, "output": output, "stream": True,
              "seed": seed},
    )
