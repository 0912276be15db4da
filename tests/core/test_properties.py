"""Property tests over random shapes and set-ups (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab import RNNSpec, init_params
from rnnlab import network as net
from rnnlab.diagnostics import relative_error

from conftest import make_inputs, make_targets

specs = st.builds(
    RNNSpec,
    input_size=st.integers(1, 4),
    hidden_size=st.integers(1, 5),
    output_size=st.integers(1, 4),
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    nonlinearity=st.sampled_from(["tanh", "sigmoid", "identity"]),
    loss=st.sampled_from(["softmax_ce", "sigmoid_bce", "identity_mse"]),
    setup=st.sampled_from(["many_to_one", "many_to_many", "one_to_many"]),
    label_steps=st.sampled_from(["last", "all"]),
    feed=st.sampled_from(["every", "first"]),
    reduction=st.sampled_from(["mean", "sum"]),
)


@settings(max_examples=60, deadline=None)
@given(spec=specs, B=st.integers(1, 4), T=st.integers(1, 6), seed=st.integers(0, 2**31),
       use_lengths=st.booleans())
def test_shapes_and_directional_derivative(spec, B, T, seed, use_lengths):
    """Every output and gradient has its documented shape, and the gradient predicts the change
    of the loss along a random direction (a directional finite difference)."""
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng, dtype=np.float64)
    X = make_inputs(spec, rng, B, T)
    Y = make_targets(spec, rng, B, T)
    lengths = rng.integers(1, T + 1, size=B) if use_lengths else None
    steps = T if spec.setup == "one_to_many" else None
    loss, g, out = net.value_and_grad(params, X, Y, spec, lengths=lengths, steps=steps)
    O, L = spec.output_size, spec.num_layers * spec.num_directions
    assert out.y.shape == ((B, T, O) if spec.per_step_output else (B, O))
    assert out.h_n.shape == (L, B, spec.hidden_size)
    assert g.h0.shape == out.h_n.shape
    assert g.X is not None and g.X.shape == np.shape(X)
    assert {k: v.shape for k, v in g.params.items()} == {k: v.shape for k, v in params.items()}
    if spec.loss == "softmax_ce":
        np.testing.assert_allclose(out.y.sum(axis=-1), 1.0, rtol=1e-12)
    direction = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    eps = 1e-4

    def at(s: float) -> float:
        q = {k: params[k] + s * direction[k] for k in params}
        o, _ = net.forward(q, X, spec, lengths=lengths, steps=steps)
        return net.loss_and_grad(spec, o, Y, lengths=lengths).value

    fd = (-at(2 * eps) + 8 * at(eps) - 8 * at(-eps) + at(-2 * eps)) / (12 * eps)
    analytic = sum(float((g.params[k] * direction[k]).sum()) for k in params)
    assert relative_error(np.array([analytic]), np.array([fd]), 1e-6) < 1e-6
