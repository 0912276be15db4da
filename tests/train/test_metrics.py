"""rnnlab.train.metrics: evaluate / predict on either inference engine."""

import numpy as np
import pytest

from rnnlab import RNNSpec, Workspace
from rnnlab.core.params import init_params
from rnnlab.train.metrics import evaluate, predict


@pytest.mark.parametrize("spec", [
    RNNSpec(4, 6, 3),
    RNNSpec(4, 6, 3, num_layers=2, nonlinearity="relu", label_steps="all"),
    RNNSpec(4, 6, 2, loss="identity_mse", setup="many_to_many", bidirectional=True),
])
def test_evaluate_and_predict_on_both_engines(spec):
    rng = np.random.default_rng(0)
    params = init_params(spec, rng, scheme="pytorch", dtype="float64")
    X = rng.standard_normal((13, 5, 4))
    if spec.loss == "identity_mse":
        y = rng.standard_normal((13, 5, 2))
    else:
        y = rng.integers(0, spec.output_size, 13)
    mask = np.ones((13, 5), bool)
    mask[2, 3:] = False
    ws = Workspace(spec)
    ref = evaluate(params, spec, X, y, mask, batch_size=4, engine="reference")
    for engine in ("fast", ws, ws):                      # a given workspace is reused
        got = evaluate(params, spec, X, y, mask, batch_size=4, engine=engine)
        assert got.keys() == ref.keys()
        for k in ref:
            assert got[k] == pytest.approx(ref[k], rel=1e-12, abs=1e-14)
    p_ref = predict(params, spec, X, mask, batch_size=5, engine="reference")
    np.testing.assert_allclose(predict(params, spec, X, mask, batch_size=5, engine=ws), p_ref,
                               rtol=1e-12, atol=1e-14)


def test_engine_is_checked():
    spec = RNNSpec(4, 6, 3)
    params = init_params(spec, np.random.default_rng(0), dtype="float64")
    X, y = np.zeros((2, 3, 4)), np.zeros(2, np.int64)
    with pytest.raises(ValueError, match=r"engine must be one of \['fast', 'reference'\]"):
        evaluate(params, spec, X, y, engine="cuda")
    with pytest.raises(ValueError, match="the workspace was made for"):
        evaluate(params, spec, X, y, engine=Workspace(RNNSpec(4, 7, 3)))
