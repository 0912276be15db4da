"""ONNX export: every set-up, activation and output activation, stacked and bidirectional layers,
variable lengths, initial states and index inputs, checked by onnx.checker and run in ONNX Runtime
against rnnlab's forward (float64 parameters, the float32 file: within 2e-5 of each output's
scale)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rnnlab import RNN, RNNSpec, forward, init_params
from rnnlab.interop.verify import random_batch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from rnnlab.interop import onnx as rx  # noqa: E402

TOL = 2e-5          # float32 against a float64 reference, relative to the output's scale
SETUPS = [dict(setup="many_to_one"), dict(setup="many_to_one", label_steps="all"),
          dict(setup="many_to_many"), dict(setup="one_to_many", feed="every"),
          dict(setup="one_to_many", feed="first")]
LOSSES = ["softmax_ce", "sigmoid_bce", "identity_mse", "relu_mse"]
ACTS = ["tanh", "relu", "sigmoid", "identity"]
SHAPES = [(1, False), (2, False), (1, True), (2, True)]          # layers, bidirectional
FLAGS = [(False, False), (True, True), (True, False)]           # lengths, initial_state


def _grid():
    for i, (act, su, (layers, bidir), (ln, h0)) in enumerate(
            itertools.product(ACTS, SETUPS, SHAPES, FLAGS)):
        loss = LOSSES[i % len(LOSSES)]                       # every loss with every set-up
        for kind in ("dense", "index"):
            if kind == "index" and su["setup"] == "one_to_many":
                continue
            if kind == "index" and (i % 3):                  # a third of the cells for ids
                continue
            yield act, loss, su, layers, bidir, ln, h0, kind


GRID = list(_grid())


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _feeds(batch: dict) -> dict:
    feeds = {}
    for k, v in batch.items():
        a = np.asarray(v)
        feeds[k] = a.astype(np.float32) if a.dtype.kind == "f" else a.astype(np.int64)
    return feeds


def _assert_close(got, ref, what):
    scale = float(np.abs(ref).max())
    diff = float(np.abs(np.asarray(got, np.float64) - ref).max())
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    assert diff <= TOL * scale + 1e-30, f"{what}: {diff:.3g} > {TOL} x {scale:.3g}"


@pytest.mark.parametrize("act,loss,su,layers,bidir,ln,h0,kind", GRID,
                         ids=["-".join(str(x) for x in c[:2]) + "-" + "-".join(
                             f"{k}={v}" for k, v in c[2].items()) + "-" + "-".join(
                             str(x) for x in c[3:]) for c in GRID])
def test_onnx_runtime_equals_rnnlab_forward(act, loss, su, layers, bidir, ln, h0, kind):
    spec = RNNSpec(3, 5, 4, num_layers=layers, bidirectional=bidir, nonlinearity=act,
                   loss=loss, input_kind=kind, **su)
    rng = np.random.default_rng(len(GRID))
    params = init_params(spec, rng, dtype=np.float64)
    model = rx.build(params, spec, lengths=ln, initial_state=h0)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == rx.input_names(spec, lengths=ln,
                                                                 initial_state=h0)
    sess = _session(model)
    for B, T in ((4, 7), (1, 3)):                       # batch and time are dynamic
        batch = random_batch(spec, rng, batch_size=B, steps=T, lengths=ln, initial_state=h0,
                             dtype=np.float64)
        y, logits, h_n = sess.run(["y", "logits", "h_n"], _feeds(batch))
        ours, _ = forward(params, batch["X"], spec, h0=batch.get("h0"),
                          lengths=batch.get("lengths"), steps=batch.get("steps"))
        _assert_close(y, ours.y, "y")
        _assert_close(logits, ours.logits, "logits")
        _assert_close(h_n, ours.h_n, "h_n")


@pytest.mark.parametrize("act", ACTS)
def test_graph_uses_the_rnn_operator_with_the_documented_activations(act):
    spec = RNNSpec(3, 4, 2, num_layers=2, bidirectional=True, nonlinearity=act)
    model = rx.build(init_params(spec, np.random.default_rng(0)), spec, lengths=True)
    rnns = [n for n in model.graph.node if n.op_type == "RNN"]
    casts = {n.output[0] for n in model.graph.node if n.op_type == "Cast"}
    assert len(rnns) == 2
    for node in rnns:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        name, alpha, beta = rx.ACTIVATIONS[act]
        assert attrs["activations"] == [name.encode()] * 2
        assert attrs["direction"] == b"bidirectional" and attrs["hidden_size"] == 4
        if alpha is not None:
            assert attrs["activation_alpha"] == [alpha] * 2
        assert node.input[4] in casts                    # sequence_lens: lengths as int32
    assert {n.op_type for n in model.graph.node} >= {"Softmax", "MatMul", "Add"}
    assert rx.ACTIVATIONS["identity"] == ("Affine", 1.0, 0.0)


def test_index_inputs_gather_rows_and_identity_as_leaky_relu():
    spec = RNNSpec(11, 4, 3, nonlinearity="identity", setup="many_to_many", input_kind="index",
                   bidirectional=True)
    rng = np.random.default_rng(1)
    params = init_params(spec, rng, dtype=np.float64)
    model = rx.build(params, spec, identity="LeakyRelu")
    ops = [n.op_type for n in model.graph.node]
    assert "Gather" in ops and "Affine" not in str(model.graph.node)
    X = rng.integers(0, 11, size=(5, 6))
    y, logits, h_n = _session(model).run(None, {"X": X})
    ours, _ = forward(params, X, spec)
    _assert_close(logits, ours.logits, "logits")
    _assert_close(h_n, ours.h_n, "h_n")


def test_export_writes_a_checked_file_with_the_spec(tmp_path):
    model = RNN(6, 8, 2, "relu", bidirectional=True, output_size=3, seed=0)
    path = model.export_onnx(tmp_path / "m.onnx", lengths=True)
    proto = onnx.load_model(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert rx.spec_of(path) == model.spec
    assert proto.producer_name == "rnnlab" and proto.opset_import[0].version == rx.DEFAULT_OPSET
    X = np.random.default_rng(2).standard_normal((3, 5, 6)).astype(np.float32)
    lengths = np.array([5, 1, 3])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(["y"], {"X": X, "lengths": lengths})[0]
    np.testing.assert_allclose(y, model.predict_proba(X, lengths=lengths), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(y.argmax(1), model.predict(X, lengths=lengths))
    with pytest.raises(FileExistsError, match="exists"):
        model.export_onnx(path, overwrite=False)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("opset", [rx.MIN_OPSET, 21])
def test_other_opsets(opset):
    spec = RNNSpec(3, 4, 2, setup="many_to_many", bidirectional=True)
    params = init_params(spec, np.random.default_rng(0))
    model = rx.build(params, spec, opset=opset, lengths=True)
    assert model.opset_import[0].version == opset
    batch = random_batch(spec, np.random.default_rng(1), lengths=True)
    ours, _ = forward(params, batch["X"], spec, lengths=batch["lengths"])
    _assert_close(_session(model).run(["logits"], _feeds(batch))[0], ours.logits, "logits")


@pytest.mark.parametrize("kwargs,match", [
    (dict(opset=13), r"opset must be an int in \[14, "),
    (dict(opset=10_000), "opset must be an int"),
    (dict(identity="Linear"), "identity must be one of"),
    (dict(lengths=1), "lengths must be a bool"),
])
def test_bad_arguments_are_one_line(kwargs, match):
    spec = RNNSpec(3, 4, 2)
    with pytest.raises((ValueError, TypeError), match=match) as info:
        rx.build(init_params(spec, np.random.default_rng(0)), spec, **kwargs)
    assert "\n" not in str(info.value)


def test_a_parameter_beyond_float32_cannot_be_expressed():
    spec = RNNSpec(3, 4, 2)
    params = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    params["l0.W_hh"][0, 0] = 1e39
    with pytest.raises(ValueError, match=r"params\['l0.W_hh'\] holds 1e\+39, beyond float32"):
        rx.build(params, spec)


def test_verify_reports_the_differences(tmp_path):
    from rnnlab.interop import verify

    spec = RNNSpec(3, 4, 2, setup="one_to_many", feed="first", num_layers=2)
    params = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    path = rx.export(params, spec, tmp_path / "m.onnx", lengths=True, initial_state=True)
    batch = random_batch(spec, np.random.default_rng(3), lengths=True, initial_state=True)
    diffs = verify.onnx_file(path, params, spec, batch)
    assert set(diffs) == {"y", "logits", "h_n"} and max(diffs.values()) < TOL
    other = dict(params, b_y=params["b_y"] + 0.1)          # a different network: seen
    assert verify.onnx_file(path, other, spec, batch)["logits"] > 1e-3
