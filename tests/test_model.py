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
    assert np.array_equal(reg.predict(X), reg(X).y)
    with pytest.raises(ValueError, match=r"predict_proba needs a classification loss"):
        reg.predict_proba(X)
    bce = RNN(3, 6, output_size=2, loss="sigmoid_bce", setup="many_to_many", seed=0)
    assert np.array_equal(bce.predict(X), (bce(X).y > 0.5).astype(np.int64))
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
