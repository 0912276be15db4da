"""``rnnlab.RNN``: construction, inference, parameters, state dicts, PyTorch export, files."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import RNN, RNNSpec, TrainConfig, checkpoint, init_params
from rnnlab import network as net


def test_constructor_builds_the_spec_with_pytorch_names():
    m = RNN(3, 5, 2, "relu", bidirectional=True, output_size=4, setup="many_to_many",
            dtype="float64", seed=0)
    assert m.spec == RNNSpec(3, 5, 4, num_layers=2, bidirectional=True, nonlinearity="relu",
                             setup="many_to_many")
    assert m.dtype == np.float64 and all(p.dtype == np.float64 for p in m.parameters())
    assert RNN(3, 5).spec.output_size == 5                 # no head size given: H
    assert list(m.params) == list(init_params(m.spec, np.random.default_rng(0)))
    a, b = RNN(3, 5, seed=4), RNN(3, 5, rng=np.random.default_rng(4))
    for k in a.params:                                      # seed == rng from the same seed
        assert np.array_equal(a.params[k], b.params[k])
    assert not np.array_equal(RNN(3, 5, seed=5).params["W_hy"], a.params["W_hy"])
    assert repr(m).startswith("RNN(3, 5, output_size=4, num_layers=2, bidirectional=True")


@pytest.mark.parametrize("kw,err,match", [
    ({"batch_first": False}, ValueError, r"rnnlab is batch first"),
    ({"init": "xavier"}, ValueError, r"unknown init 'xavier'; expected one of"),
    ({"nonlinearity": "gelu"}, ValueError, r"gelu"),
    ({"dtype": "float16"}, ValueError, r"dtype must be float32 or float64; got float16"),
    ({"seed": 1, "rng": np.random.default_rng(1)}, ValueError, r"give seed or rng, not both"),
    ({"rng": 3}, TypeError, r"rng must be a numpy.random.Generator"),
    ({"output_size": 0}, ValueError, r"output_size must be >= 1; got 0"),
])
def test_constructor_errors(kw, err, match):
    with pytest.raises(err, match=match):
        RNN(3, 5, **kw)


def test_forward_predict_and_proba_agree_with_the_core():
    m = RNN(3, 6, output_size=4, seed=0, dtype="float64")
    X = np.random.default_rng(1).standard_normal((7, 5, 3))
    out = m(X)
    ref, _ = net.forward(m.params, X, m.spec)
    assert np.array_equal(out.logits, ref.logits) and out.h_n.shape == (1, 7, 6)
    assert np.array_equal(m.predict(X), ref.y.argmax(-1))
    proba = m.predict_proba(X, batch_size=3)               # batched in 3 passes
    np.testing.assert_allclose(proba, ref.y, rtol=1e-12)
    np.testing.assert_allclose(proba.sum(-1), 1.0)
    h0 = np.ones((1, 7, 6)) * 0.1
    assert not np.array_equal(m.forward(X, h0=h0).logits, out.logits)
    mask = np.ones((7, 5), dtype=bool)
    mask[0, 3:] = False
    assert np.array_equal(m.predict(X, mask=mask), m(X, mask=mask).y.argmax(-1))


def test_predict_for_other_losses():
    X = np.random.default_rng(1).standard_normal((4, 5, 3))
    reg = RNN(3, 6, output_size=2, loss="identity_mse", seed=0)
    assert np.array_equal(reg.predict(X, engine="reference"), reg(X).y)
    # the fast engine (float32, compiled tanh of eq. 38): the same values to float32 rounding
    np.testing.assert_allclose(reg.predict(X), reg(X).y, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"predict_proba needs a classification loss"):
        reg.predict_proba(X)
    bce = RNN(3, 6, output_size=2, loss="sigmoid_bce", setup="many_to_many", seed=0)
    assert np.array_equal(bce.predict(X, engine="reference"),
                          (bce(X).y > 0.5).astype(np.int64))
    assert bce.predict(X).shape == (4, 5, 2)


def test_parameters_and_state_dict_round_trip():
    m = RNN(3, 4, output_size=2, num_layers=2, seed=0)
    names = [k for k, _ in m.named_parameters()]
    assert names == list(m.params) and len(list(m.parameters())) == len(names)
    assert m.num_parameters == sum(p.size for p in m.parameters())
    sd = m.state_dict()
    sd["b_y"][:] = 7                                     # a copy: the model is untouched
    assert not np.any(m.params["b_y"] == 7)
    other = RNN(3, 4, output_size=2, num_layers=2, seed=1)
    assert other.load_state_dict({k: v.astype(np.float64) for k, v in sd.items()}) == ([], [])
    assert other.params["b_y"].dtype == np.float32 and np.all(other.params["b_y"] == 7)
    with pytest.raises(ValueError, match=r"missing keys \['b_y'\], unexpected keys \['bias'\]"):
        other.load_state_dict({**{k: v for k, v in sd.items() if k != "b_y"}, "bias": 1})
    missing, unexpected = other.load_state_dict({"b_y": np.zeros(2)}, strict=False)
    assert "W_hy" in missing and unexpected == [] and np.all(other.params["b_y"] == 0)
    with pytest.raises(ValueError, match=r"state_dict\['W_hy'\] has shape \(2, 4\); the model "
                                         r"needs \(4, 2\)"):
        other.load_state_dict({"W_hy": np.zeros((2, 4))}, strict=False)
    with pytest.raises(ValueError, match=r"contains NaN or inf"):
        other.load_state_dict({"b_y": np.array([np.nan, 0])}, strict=False)


def test_to_torch_state_dict_runs_in_torch():
    torch = pytest.importorskip("torch")
    m = RNN(3, 5, 2, "tanh", bidirectional=True, output_size=4, dtype="float64", seed=0)
    sd = m.to_torch_state_dict()
    rnn = torch.nn.RNN(3, 5, 2, nonlinearity="tanh", batch_first=True, bidirectional=True,
                       dtype=torch.float64)
    fc = torch.nn.Linear(10, 4, dtype=torch.float64)
    rnn.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in sd.items()
                         if k.startswith("rnn.")})
    fc.load_state_dict({k[3:]: torch.from_numpy(v) for k, v in sd.items() if k.startswith("fc.")})
    X = np.random.default_rng(2).standard_normal((3, 6, 3))
    seq, h_n = rnn(torch.from_numpy(X))
    top = torch.cat([h_n[-2], h_n[-1]], dim=1)            # many-to-one: both final states
    np.testing.assert_allclose(fc(top).detach().numpy(), m(X).logits, rtol=1e-10, atol=1e-12)


def test_save_and_load(tmp_path):
    m = RNN(3, 4, output_size=2, nonlinearity="relu", init="irnn", dtype="float64", seed=0)
    path = m.save(tmp_path / "m.npz")
    back = RNN.load(path)
    assert back.spec == m.spec and back.dtype == np.float64 and back.init == "irnn"
    X = np.random.default_rng(0).standard_normal((2, 5, 3))
    assert np.array_equal(back(X).logits, m(X).logits)
    with pytest.raises(IsADirectoryError):
        m.save(tmp_path)
    with pytest.raises(OSError, match="cannot write checkpoint"):
        m.save(tmp_path / "missing" / "m.npz")
    checkpoint.save(tmp_path / "foreign.npz", params=m.params, epoch=0, step=0, config={"a": 1})
    with pytest.raises(ValueError, match=r"has no model spec in its config"):
        RNN.load(tmp_path / "foreign.npz")


def test_fit_delegates_and_a_training_checkpoint_loads_as_a_model(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6, 3))
    y = (X[:, :3, 0].sum(1) > 0).astype(np.int64)
    m = RNN(3, 8, output_size=2, seed=0)
    h = m.fit((X, y), TrainConfig(epochs=2, progress="off"), batch_size=8, lr=1e-2,
              checkpoint_dir=tmp_path)
    assert m.history is h and h.epoch == 2 and h.step == 10
    assert RNN.load(tmp_path / "last.npz")(X).logits.tobytes() == m(X).logits.tobytes()
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys \['epoch'\]"):
        m.fit((X, y), epoch=3)


@pytest.mark.parametrize("name,kw,setup,loss,kind", [
    ("xor", {"steps": 12}, "many_to_many", "softmax_ce", "dense"),
    ("adding", {"steps": 10}, "many_to_one", "identity_mse", "dense"),
    ("sine", {"steps": 10}, "many_to_many", "identity_mse", "dense"),
    ("parity", {"steps": 8}, "many_to_one", "softmax_ce", "dense"),
])
def test_for_dataset_maps_the_task(name, kw, setup, loss, kind):
    from rnnlab.data import registry

    ds = registry.load(name, seed=0, **kw)
    m = RNN.for_dataset(ds, 6, num_layers=2, dtype="float64", seed=0)
    assert (m.spec.setup, m.spec.loss, m.spec.input_kind) == (setup, loss, kind)
    assert (m.spec.input_size, m.spec.output_size, m.spec.num_layers) == (
        ds.input_size, ds.output_size, 2)
    assert m.dtype == np.float64
    ev = m.evaluate(ds.test.X, ds.test.y, ds.test.mask)
    assert "loss" in ev and np.isfinite(ev["loss"])


def test_for_dataset_with_index_inputs(tmp_path):
    from rnnlab.data import registry
    from rnnlab.data.text import toy_text

    (tmp_path / "t.txt").write_text(toy_text(60, np.random.default_rng(0)))
    ds = registry.load("text", path=tmp_path / "t.txt", steps=10)
    m = RNN.for_dataset(ds, 8, seed=0)
    assert (m.spec.input_kind, m.spec.setup) == ("index", "many_to_many")
    assert m.predict(ds.test.X).shape == ds.test.y.shape
    assert set(m.evaluate(ds)) == {"loss", "accuracy", "perplexity"}


SPECS_FOR_ENGINES = [
    dict(input_size=3, hidden_size=6, output_size=4),
    dict(input_size=3, hidden_size=6, output_size=4, num_layers=2, bidirectional=True),
    dict(input_size=3, hidden_size=6, output_size=2, loss="sigmoid_bce", setup="many_to_many",
         nonlinearity="sigmoid"),
    dict(input_size=7, hidden_size=5, output_size=7, setup="many_to_many", input_kind="index",
         nonlinearity="relu"),
    dict(input_size=3, hidden_size=6, output_size=2, loss="identity_mse", setup="one_to_many",
         feed="first"),
]


@pytest.mark.parametrize("kw", SPECS_FOR_ENGINES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_inference_engines_agree(kw, dtype):
    """predict_proba / predict / evaluate on the fast engine (the default) give the reference
    pass's numbers: float64 to 1e-12, float32 to float32 rounding; with masks, lengths, batches
    of several sizes (the workspace keeps buffers per shape); N = 0 refused."""
    kw = dict(kw)
    m = RNN(kw.pop("input_size"), kw.pop("hidden_size"), seed=3, dtype=dtype, **kw)
    rng = np.random.default_rng(0)
    spec, N, T = m.spec, 11, 6
    if spec.input_kind == "index":
        X = rng.integers(0, spec.input_size, (N, T))
    elif spec.setup == "one_to_many":
        X = rng.standard_normal((N, spec.input_size))
    else:
        X = rng.standard_normal((N, T, spec.input_size))
    steps = T if spec.setup == "one_to_many" else None
    lengths = rng.integers(1, T + 1, N) if spec.setup != "one_to_many" else None
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)
    for ln in (None, lengths):
        if ln is None and lengths is None and spec.setup != "one_to_many":
            continue
        kwargs = dict(steps=steps, lengths=ln, batch_size=4)
        ref = m._outputs(X, None, ln, steps, 4, "reference")
        fast = m._outputs(X, None, ln, steps, 4, "fast")
        np.testing.assert_allclose(fast, ref, **tol)
        want = m.forward(X, lengths=ln, steps=steps).y
        np.testing.assert_allclose(ref, want, rtol=1e-6 if dtype == "float32" else 1e-14)
        if spec.loss == "identity_mse":
            np.testing.assert_allclose(m.predict(X, **kwargs), ref, **tol)
        else:
            np.testing.assert_allclose(m.predict_proba(X, **kwargs), ref, **tol)
    if spec.loss == "softmax_ce" and spec.setup == "many_to_one":
        y = rng.integers(0, spec.output_size, N)
        a = m.evaluate(X, y, batch_size=5)
        b = m.evaluate(X, y, batch_size=5, engine="reference")
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-10 if dtype == "float64" else 1e-5)
        with pytest.raises(ValueError, match="empty batch"):      # as the reference pass
            m.predict_proba(X[:0])
    with pytest.raises(ValueError, match="engine must be one of"):
        m.predict(X, engine="gpu", steps=steps)


def test_inference_workspace_is_not_copied():
    import copy

    m = RNN(3, 4, output_size=2, seed=0)
    X = np.zeros((2, 3, 3), np.float32)
    m.predict(X)
    assert m._workspace is not None
    c = copy.deepcopy(m)
    assert c._workspace is None and np.array_equal(c.predict(X), m.predict(X))


@pytest.mark.parametrize("dtype,layers,act", [("float64", 1, "tanh"), ("float32", 2, "relu"),
                                              ("float32", 1, "sigmoid")])
def test_generate_matches_the_reference_step(dtype, layers, act):
    """RNN.generate (the Sampler) draws the same ids as data.text.generate with a step function
    on the reference forward pass and the same Generator: sampling and greedy, 1-D and 2-D
    primes."""
    from rnnlab.data.text import generate

    m = RNN(13, 8, num_layers=layers, nonlinearity=act, output_size=13, setup="many_to_many",
            input_kind="index", dtype=dtype, seed=1)

    def step(ids, state):
        out, _ = net.forward(m.params, ids[:, None], m.spec, h0=state)
        return out.logits[:, -1, :], out.h_n

    prime = np.array([[1, 2, 3], [4, 5, 6], [0, 0, 12]])
    for temp in (1.0, 0.5, 0.0):
        want = generate(step, prime, 200, temp, np.random.default_rng(7))
        got = m.generate(prime, 200, temperature=temp, rng=np.random.default_rng(7))
        assert got.shape == (3, 200) and got.dtype == np.int64
        assert np.array_equal(got, want)
        one = m.generate(prime[1], 50, temperature=temp, rng=np.random.default_rng(7))
        assert np.array_equal(one, generate(step, prime[1], 50, temp, np.random.default_rng(7)))
    assert m.generate(prime, 0, rng=np.random.default_rng(0)).shape == (3, 0)


def test_generate_refuses_what_it_cannot_do():
    m = RNN(5, 4, output_size=5, setup="many_to_many", input_kind="index", seed=0)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        m.generate([1, 2], 5)
    with pytest.raises(ValueError, match=r"prime ids must be in \[0, 5\)"):
        m.generate([1, 5], 5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="prime must be"):
        m.generate([], 5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        m.generate([1], 5, temperature=-1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="h0 must have shape"):
        m.generate([1], 5, rng=np.random.default_rng(0), h0=np.zeros((2, 1, 4)))
    clf = RNN(5, 4, output_size=3, seed=0)
    with pytest.raises(ValueError, match="setup='many_to_many'"):
        clf.generate([1], 5, rng=np.random.default_rng(0))
    bi = RNN(5, 4, output_size=5, setup="many_to_many", bidirectional=True, seed=0)
    with pytest.raises(ValueError, match="unidirectional"):
        bi.generate([1], 5, rng=np.random.default_rng(0))


def test_generate_refuses_non_finite_logits():
    m = RNN(5, 4, output_size=5, setup="many_to_many", input_kind="index", seed=0,
            nonlinearity="identity", dtype="float32")
    m.params["l0.W_hh"][:] = 1e30 * np.eye(4, dtype=np.float32)   # the state overflows
    m.params["l0.W_xh"][:] = 1.0
    with pytest.raises(ValueError, match="logits contain NaN or infinity"):
        m.generate([1, 2, 3], 10, rng=np.random.default_rng(0))


def test_concurrent_predictions_on_one_model():
    """A workspace is not thread-safe; the model's own is held for a call and a call from
    another thread meanwhile gets one of its own: predictions from 4 threads at once equal the
    sequential ones."""
    from concurrent.futures import ThreadPoolExecutor

    m = RNN(6, 32, output_size=5, seed=0)
    rng = np.random.default_rng(0)
    Xs = [rng.standard_normal((300, 20, 6)).astype(np.float32) for _ in range(8)]
    want = [m.predict_proba(X, batch_size=64) for X in Xs]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda X: m.predict_proba(X, batch_size=64), Xs))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
