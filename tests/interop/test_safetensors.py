"""safetensors files: parameters bit for bit and the spec in the metadata, in rnnlab's layout or
the PyTorch module's; files from elsewhere with a spec; bad files refused with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnnlab import RNN, RNNSpec, init_params

st = pytest.importorskip("safetensors")

import safetensors.numpy  # noqa: E402

from rnnlab.interop import safetensors as rst  # noqa: E402
from rnnlab.interop.torch import to_torch_state_dict  # noqa: E402

SPEC = RNNSpec(5, 6, 3, num_layers=2, bidirectional=True, nonlinearity="relu",
               loss="sigmoid_bce", setup="many_to_many")


@pytest.mark.parametrize("layout", rst.LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_bit_exact(tmp_path, layout, dtype):
    params = init_params(SPEC, np.random.default_rng(0), dtype=dtype)
    path = rst.save(params, SPEC, tmp_path / "m.safetensors", layout=layout,
                    metadata={"trained_on": "xor"})
    back, spec = rst.load(path)
    assert spec == SPEC and list(back) == list(params)
    for k, v in params.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)
    meta = rst.metadata(path)
    assert meta["format"] == "rnnlab" and meta["layout"] == layout
    assert json.loads(meta["spec"]) == SPEC.to_dict() and meta["trained_on"] == "xor"
    raw = safetensors.numpy.load_file(path)        # any safetensors reader sees the arrays
    key = "l1r.W_xh" if layout == "rnnlab" else "rnn.weight_ih_l1_reverse"
    assert raw[key].shape == ((12, 6) if layout == "rnnlab" else (6, 12))


def test_model_methods_and_predictions(tmp_path):
    model = RNN(4, 7, output_size=2, setup="many_to_one", seed=3)
    path = model.save_safetensors(tmp_path / "m.safetensors")
    again = RNN.load_safetensors(path)
    X = np.random.default_rng(0).standard_normal((5, 6, 4)).astype(np.float32)
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))
    with pytest.raises(FileExistsError, match="exists"):
        model.save_safetensors(path, overwrite=False)


def test_torch_layout_loads_into_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from rnnlab.interop.torch import to_torch

    params = init_params(SPEC, np.random.default_rng(1), dtype=np.float64)
    path = rst.save(params, SPEC, tmp_path / "m.safetensors", layout="torch")
    module = to_torch(init_params(SPEC, np.random.default_rng(2), dtype=np.float64), SPEC)
    module.load_state_dict(load_file(path))                   # strict: the same keys and shapes
    X = np.random.default_rng(3).standard_normal((2, 4, 5))
    from rnnlab import forward

    np.testing.assert_allclose(module(torch.as_tensor(X)).logits.detach().numpy(),
                               forward(params, X, SPEC)[0].logits, rtol=1e-12, atol=1e-12)


def test_a_file_from_elsewhere_needs_a_spec(tmp_path):
    params = init_params(SPEC, np.random.default_rng(0))
    path = tmp_path / "foreign.safetensors"
    safetensors.numpy.save_file(to_torch_state_dict(params, SPEC), str(path))
    with pytest.raises(ValueError, match="has no rnnlab spec in its metadata.*pass spec="):
        rst.load(path)
    back, spec = rst.load(path, SPEC)
    assert spec == SPEC and all(np.array_equal(back[k], params[k]) for k in params)
    with pytest.raises(ValueError, match="does not match"):
        rst.load(path, RNNSpec(5, 6, 3), layout="rnnlab")


def test_bad_files_and_arguments(tmp_path):
    params = init_params(SPEC, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"metadata keys \['spec'\] are rnnlab's own"):
        rst.save(params, SPEC, tmp_path / "a.safetensors", metadata={"spec": "x"})
    with pytest.raises(TypeError, match="metadata must map str to str"):
        rst.save(params, SPEC, tmp_path / "a.safetensors", metadata={"epochs": 3})
    with pytest.raises(ValueError, match="layout must be one of"):
        rst.save(params, SPEC, tmp_path / "a.safetensors", layout="keras")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rst.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        rst.load(tmp_path / "junk.safetensors")
    path = rst.save(params, SPEC, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="disagrees with the file's"):
        rst.load(path, RNNSpec(5, 6, 3))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
