"""``rnnlab export RUN --format onnx|torch|safetensors``: each format written, verified against
rnnlab's forward and readable by its own library; user mistakes one line with exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("click")

from rnnlab import RNN  # noqa: E402
from rnnlab.cli import main  # noqa: E402


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("export")
    assert main(["train", "--runs-dir", str(runs), "--name", "xor", "--dataset", "xor",
                 "-T", "6", "--hidden", "6", "--epochs", "2", "--progress", "off",
                 "--no-diagnostics"]) == 0
    return runs / "xor"


def test_help(capsys):
    rc, out, _ = run(capsys, "export", "--help")
    assert rc == 0 and "--format" in out and "onnx" in out and "safetensors" in out


def test_onnx(trained, tmp_path, capsys):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "xor.onnx"
    rc, out, err = run(capsys, "export", str(trained), "--format", "onnx", "-o", str(path),
                       "--checkpoint", "best", "--lengths")
    assert rc == 0, err
    assert "inputs X, lengths; outputs y, logits, h_n" in out
    assert "verified in onnxruntime" in out
    model = RNN.load(trained / "checkpoints" / "best.npz")
    X = np.random.default_rng(0).standard_normal((3, 6, model.spec.input_size))
    lengths = np.array([6, 2, 4])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(["y"], {"X": X.astype(np.float32), "lengths": lengths})[0]
    np.testing.assert_allclose(y, model.predict_proba(X, lengths=lengths), atol=1e-6)


def test_torch(trained, tmp_path, capsys):
    pytest.importorskip("torch")
    from rnnlab.interop import torch as rt

    path = tmp_path / "xor.pt"
    rc, out, err = run(capsys, "export", str(trained), "-f", "torch", "-o", str(path))
    assert rc == 0, err
    assert "verified in torch" in out
    params, spec = rt.load(path)
    model = RNN.load(trained / "checkpoints" / "last.npz")
    assert spec == model.spec
    assert all(np.array_equal(params[k], v) for k, v in model.params.items())


def test_safetensors_from_a_checkpoint_file(tmp_path, capsys):
    pytest.importorskip("safetensors")
    model = RNN(12, 5, output_size=12, setup="many_to_many", input_kind="index",
                bidirectional=True, seed=0)
    ckpt = model.save(tmp_path / "char.npz")
    path = tmp_path / "char.safetensors"
    rc, out, err = run(capsys, "export", str(ckpt), "-f", "safetensors", "-o", str(path),
                       "--layout", "torch")
    assert rc == 0, err
    assert "torch layout" in out and "bit-identical" in out
    again = RNN.load_safetensors(path)
    assert again.spec == model.spec


def test_index_model_to_onnx_from_a_checkpoint_file(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = RNN(12, 5, num_layers=2, output_size=12, setup="many_to_many", input_kind="index",
                nonlinearity="identity", seed=0)
    ckpt = model.save(tmp_path / "char.npz")
    rc, out, err = run(capsys, "export", str(ckpt), "-f", "onnx", "-o",
                       str(tmp_path / "char.onnx"), "--initial-state", "--seed", "3")
    assert rc == 0, err
    assert "inputs X, h0" in out and "verified" in out


@pytest.mark.parametrize("args,needles", [
    (["-f", "onnx", "-o", "{tmp}/a.onnx", "--checkpoint", "middle"], ["middle", "does not exist"]),
    (["-f", "torch", "-o", "{tmp}/a.pt", "--lengths"], ["--lengths", "--format onnx"]),
    (["-f", "onnx", "-o", "{tmp}/a.onnx", "--layout", "torch"], ["--layout"]),
    (["-f", "keras", "-o", "{tmp}/a"], ["keras"]),
    (["-f", "onnx", "-o", "{tmp}/a.onnx", "--opset", "9"], ["opset must be an int in [14"]),
])
def test_user_mistakes_are_one_line(trained, tmp_path, capsys, args, needles):
    rc, _, err = run(capsys, "export", str(trained), *[a.format(tmp=tmp_path) for a in args])
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_existing_output_is_kept_unless_overwrite(trained, tmp_path, capsys):
    pytest.importorskip("safetensors")
    path = tmp_path / "keep.safetensors"
    path.write_bytes(b"mine")
    rc, _, err = run(capsys, "export", str(trained), "-f", "safetensors", "-o", str(path))
    assert rc == 2 and "exists; pass --overwrite" in err and path.read_bytes() == b"mine"
    rc, _, err = run(capsys, "export", str(trained), "-f", "safetensors", "-o", str(path),
                     "--overwrite")
    assert rc == 0 and path.read_bytes() != b"mine"


def test_missing_run(tmp_path, capsys):
    rc, _, err = run(capsys, "export", str(tmp_path / "nope"), "-f", "onnx", "-o",
                     str(tmp_path / "a.onnx"))
    assert rc == 2 and "does not exist" in err
    assert not (tmp_path / "a.onnx").exists()
