"""Shared helpers for the tests: random problems for every set-up, in float64; the
``--adversarial-full`` switch of the slow tests (tests/adversarial/README.md)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rnnlab import RNNSpec, init_params
from rnnlab import network as net

# the grid every gradient test covers: hidden activations x output/losses x set-ups
ACTS = ["tanh", "sigmoid", "relu", "identity"]
LOSSES = ["softmax_ce", "sigmoid_bce", "identity_mse", "relu_mse"]
SETUPS = [
    dict(setup="many_to_one"),
    dict(setup="many_to_one", label_steps="all"),
    dict(setup="many_to_many"),
    dict(setup="one_to_many", feed="every"),
    dict(setup="one_to_many", feed="first"),
]


def make_targets(spec: RNNSpec, rng: np.random.Generator, B: int, T: int) -> np.ndarray:
    """Random targets of the shape and kind ``spec`` expects for a batch (B, T)."""
    lead = (B, T) if spec.setup != "many_to_one" else (B,)
    O = spec.output_size
    if spec.loss == "softmax_ce":
        return rng.integers(0, O, size=lead)
    if spec.loss == "sigmoid_bce":
        return rng.uniform(0.0, 1.0, size=lead + (O,))
    return rng.standard_normal(lead + (O,))


def make_inputs(spec: RNNSpec, rng: np.random.Generator, B: int, T: int) -> np.ndarray:
    if spec.input_kind == "index":
        return rng.integers(0, spec.input_size, size=(B, T))
    if spec.setup == "one_to_many":
        return rng.standard_normal((B, spec.input_size))
    return rng.standard_normal((B, T, spec.input_size))


def random_mask(rng: np.random.Generator, B: int, T: int) -> np.ndarray:
    """A (B, T) mask with a mix of full rows, trailing padding and a hole in the middle."""
    m = np.ones((B, T), dtype=bool)
    for b in range(B):
        kind = b % 3
        if kind == 1:
            m[b, rng.integers(1, T):] = False          # trailing padding
        elif kind == 2 and T >= 3:
            m[b, 1] = False                            # a hole
    return m


def relu_pattern(params: dict, spec: RNNSpec, cache: net.Cache, logits: np.ndarray) -> bytes:
    """Which side of 0 every hidden pre-activation (at real steps) and every logit lies on.

    Finite differences of a ReLU network are exact only if no perturbation moves a
    pre-activation across the kink; the gradient checks compare this pattern before and after.
    """
    from rnnlab import cell

    signs = [(logits > 0).ravel()] if spec.loss == "relu_mse" else []
    nd = spec.num_directions
    for layer in range(spec.num_layers):
        inp = cache.inputs[layer]
        for d, p in enumerate(spec.layer_keys(layer)):
            hb = cache.hbufs[layer * nd + d]
            A = net.project(inp, params[f"{p}.W_xh"], params[f"{p}.b_h"])
            Z = A + cell.previous(hb, d == 1) @ params[f"{p}.W_hh"]
            if cache.mask is not None:
                Z = Z[cache.mask]
            signs.append((Z > 0).ravel())
    return np.packbits(np.concatenate(signs)).tobytes()


def cell_problem(seed: int = 0, B: int = 4, T: int = 9, H: int = 5):
    """(A, W_hh, h0, dH, mask) for one layer's recurrence in float64, time first; the mask has a
    real first step and about 30 % padded steps."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((T, B, H))
    W = rng.standard_normal((H, H)) * 0.5
    h0 = rng.standard_normal((B, H))
    dH = rng.standard_normal((T, B, H))
    mask = rng.random((T, B)) > 0.3
    mask[0] = True
    return A, W, h0, dH, mask


def assert_grads_close(got: dict, ref: dict, dtype: type, err: str = "") -> None:
    """The fast engine's gradients against the reference's: the same keys in the same order,
    and every array within rounding of the reference, scaled by its largest entry (float64:
    1e-11, summation order; float32 against a float64 reference: 2e-5, float32 rounding and
    the kernels' tanh, eq. 38)."""
    assert list(got) == list(ref), err
    tol = 1e-11 if np.dtype(dtype) == np.float64 else 2e-5
    for k, v in ref.items():
        assert got[k].shape == v.shape, (err, k)
        assert_close(got[k], v, tol, f"{err} {k}")


def assert_close(got: np.ndarray, ref: np.ndarray, tol: float, err: str = "") -> None:
    """``max |got - ref| <= tol * max(|ref|) + tiny``: rounding relative to the array's scale."""
    assert got.shape == ref.shape, (err, got.shape, ref.shape)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    diff = float(np.abs(np.asarray(got, np.float64) - ref).max()) if ref.size else 0.0
    assert diff <= tol * scale + 1e-30, f"{err}: max |diff| {diff:.3g} > {tol:g} x {scale:.3g}"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def problem(spec: RNNSpec, seed: int, B: int, T: int, masked: bool, with_h0: bool = True):
    """(params, X, Y, mask, h0) in float64 for ``spec``."""
    rng = np.random.default_rng(seed)
    # the PyTorch scheme draws non-zero biases: a generic point, no ReLU pre-activation at 0
    params = init_params(spec, rng, scheme="pytorch", dtype=np.float64)
    X = make_inputs(spec, rng, B, T)
    Y = make_targets(spec, rng, B, T)
    mask = random_mask(rng, B, T) if masked else None
    h0 = (0.5 * rng.standard_normal((spec.num_layers * spec.num_directions, B, spec.hidden_size))
          if with_h0 else None)
    return params, X, Y, mask, h0


# ----------------------------------------------------------------------------- the slow tests


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--adversarial-full", action="store_true", default=False,
        help="run every case of tests/adversarial (all random configurations, the slow kill and "
             "concurrency tests); default: a seeded sample, slow tests skipped. Also "
             "RNNLAB_ADVERSARIAL_FULL=1.")


def full_run(config: pytest.Config) -> bool:
    """Whether the whole adversarial set runs (``--adversarial-full`` or the env variable)."""
    return bool(config.getoption("--adversarial-full")) or \
        os.environ.get("RNNLAB_ADVERSARIAL_FULL", "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if full_run(config) or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with --adversarial-full (or -m slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
