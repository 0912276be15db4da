"""Central finite differences on every entry of every parameter, of dX and of dh0.

Every combination of hidden activation x output/loss x set-up, each at several of the 12
structures layers (1-3) x direction x masking, in float64; max relative error < 1e-6
(docs/derivation.md, eq. 22).  By default each combination checks 4 structures, rotated so that
every structure is checked with every activation, every loss and every set-up;
``--adversarial-full`` (or ``RNNLAB_ADVERSARIAL_FULL=1``) checks all 12 for every combination.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rnnlab import RNNSpec
from rnnlab import network as net
from rnnlab.diagnostics import finite_difference, relative_error

from conftest import ACTS, LOSSES, SETUPS, full_run, problem, relu_pattern

B, T, D, H, O = 3, 4, 2, 3, 3
TOL = 1e-6
FLOOR = 1e-5  # below this |gradient| the check is absolute at 1e-11, the FD round-off level


def check(spec: RNNSpec, masked: bool, zero_h0: bool = False) -> None:
    """Compare backward with finite differences; for ReLU, on a seed where no kink is crossed."""
    smooth = spec.nonlinearity != "relu" and spec.loss != "relu_mse"
    for seed in range(20):
        if _check_seed(spec, masked, seed, smooth, zero_h0):
            return
    pytest.fail("every seed tried moved a ReLU pre-activation across 0 during the check")


def _check_seed(spec: RNNSpec, masked: bool, seed: int, smooth: bool,
                zero_h0: bool = False) -> bool:
    eps = 1e-3
    params, X, Y, mask, h0 = problem(spec, seed, B, T, masked)
    if zero_h0:                 # the backward pass then skips the step that read h0 (eq. 19)
        h0 = np.zeros_like(h0)
    if spec.input_kind != "index":
        X = np.asarray(X, dtype=np.float64)
    steps = T if spec.setup == "one_to_many" else None
    out, cache = net.forward(params, X, spec, h0=h0, mask=mask, steps=steps)
    base = None if smooth else relu_pattern(params, spec, cache, out.logits)
    crossed = False

    def loss() -> float:
        nonlocal crossed
        o, c = net.forward(params, X, spec, h0=h0, mask=mask, steps=steps)
        if base is not None and relu_pattern(params, spec, c, o.logits) != base:
            crossed = True
        return net.loss_and_grad(spec, o, Y, mask=mask).value

    res = net.loss_and_grad(spec, out, Y, mask=mask)
    g = net.backward(params, res.dz, cache)
    assert set(g.params) == set(params)
    fd = {k: finite_difference(loss, p, eps) for k, p in params.items()}
    fd_X = finite_difference(loss, X, eps) if spec.input_kind != "index" else None
    fd_h0 = finite_difference(loss, h0, eps)
    if crossed:
        return False
    for k, p in params.items():
        assert g.params[k].shape == p.shape and g.params[k].dtype == p.dtype
        err = relative_error(g.params[k], fd[k], FLOOR)
        assert err < TOL, (k, err)
    if fd_X is not None:
        assert g.X is not None and g.X.shape == X.shape
        assert relative_error(g.X, fd_X, FLOOR) < TOL
    else:
        assert g.X is None
    assert relative_error(g.h0, fd_h0, FLOOR) < TOL
    # only real steps matter: a padded step's input has no effect at all
    if masked and spec.setup != "one_to_many" and spec.input_kind != "index":
        assert np.all(g.X[~mask] == 0.0)
    return True


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=lambda i: "-".join(SETUPS[i].values()))
def test_every_combination(act: str, loss: str, setup: int, request: pytest.FixtureRequest
                           ) -> None:
    structures = list(itertools.product((1, 2, 3), (False, True), (False, True)))
    if not full_run(request.config):
        # 4 of the 12, spaced by 3 from an offset that differs between neighbouring combinations:
        # over the activations (or the losses, or the set-ups) every structure comes up
        off = ACTS.index(act) + 3 * LOSSES.index(loss) + 5 * setup
        structures = [structures[(off + 3 * j) % 12] for j in range(4)]
    for layers, bidir, masked in structures:
        spec = RNNSpec(D, H, O, num_layers=layers, bidirectional=bidir, nonlinearity=act,
                       loss=loss, reduction="mean" if layers != 2 else "sum", **SETUPS[setup])
        check(spec, masked)


@pytest.mark.parametrize("setup", ["many_to_one", "many_to_many"])
@pytest.mark.parametrize("bidir", [False, True])
def test_index_inputs(setup: str, bidir: bool) -> None:
    spec = RNNSpec(5, H, O, num_layers=2, bidirectional=bidir, setup=setup, input_kind="index")
    check(spec, masked=True)
    check(spec, masked=False)


@pytest.mark.parametrize("setup", ["many_to_one", "many_to_many"])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)])
def test_a_zero_h0(setup: str, layers: int, bidir: bool) -> None:
    spec = RNNSpec(D, H, O, num_layers=layers, bidirectional=bidir, setup=setup)
    check(spec, masked=False, zero_h0=True)
    check(spec, masked=True, zero_h0=True)
