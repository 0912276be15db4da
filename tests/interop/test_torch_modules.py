"""PyTorch modules both ways: ``to_torch`` gives an nn.Module whose forward (and autograd) equals
rnnlab's on the whole set-up grid in float64; ``from_torch`` reads our module, user modules (any
attribute names, a bare nn.RNN with a head, an nn.Embedding in front), state dicts and files;
the bidirectional many-to-one convention is a parameter with warnings."""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings

import numpy as np
import pytest

from rnnlab import RNN, RNNSpec, backward, forward, init_params
from rnnlab.interop.verify import random_batch

from conftest import ACTS, LOSSES, SETUPS, assert_close

torch = pytest.importorskip("torch")
nn = torch.nn

from rnnlab.interop import torch as rt  # noqa: E402
from rnnlab.interop.torch_modules import ElmanRNN, RNNModule  # noqa: E402

TOL = 1e-12
SHAPES = [(1, False), (2, False), (1, True), (2, True)]


def _grid():
    for i, (act, su, (layers, bidir), padded) in enumerate(
            itertools.product(ACTS, SETUPS, SHAPES, [False, True])):
        loss = LOSSES[i % len(LOSSES)]
        yield act, loss, su, layers, bidir, padded, "dense"
        if su["setup"] != "one_to_many" and i % 2:
            yield act, loss, su, layers, bidir, padded, "index"


GRID = list(_grid())


def _run(module, batch, grad=False):
    X = torch.as_tensor(batch["X"])
    h0 = torch.tensor(batch["h0"], requires_grad=grad) if "h0" in batch else None
    ln = batch.get("lengths")
    out = module(X, h0=h0, lengths=None if ln is None else torch.as_tensor(ln),
                 steps=batch.get("steps"))
    return out, h0


@pytest.mark.parametrize("act,loss,su,layers,bidir,padded,kind", GRID)
def test_to_torch_forward_and_autograd_equal_rnnlab(act, loss, su, layers, bidir, padded, kind):
    spec = RNNSpec(3, 5, 4, num_layers=layers, bidirectional=bidir, nonlinearity=act,
                   loss=loss, input_kind=kind, **su)
    rng = np.random.default_rng(7)
    params = init_params(spec, rng, dtype=np.float64)
    module = rt.to_torch(params, spec)
    assert isinstance(module, nn.Module) and module.fc.weight.dtype == torch.float64
    assert isinstance(module.rnn, nn.RNN if act in ("tanh", "relu") else ElmanRNN)
    batch = random_batch(spec, rng, batch_size=4, steps=6, lengths=padded, initial_state=True,
                         dtype=np.float64)
    ours, cache = forward(params, batch["X"], spec, h0=batch["h0"],
                          lengths=batch.get("lengths"), steps=batch.get("steps"))
    out, h0 = _run(module, batch, grad=True)
    assert_close(out.y.detach().numpy(), ours.y, TOL, "y")
    assert_close(out.logits.detach().numpy(), ours.logits, TOL, "logits")
    assert_close(out.h_n.detach().numpy(), ours.h_n, TOL, "h_n")
    # the same gradients for an arbitrary upstream gradient on the logits
    dz = rng.standard_normal(ours.logits.shape)
    if padded and spec.per_step_output:        # padded steps are not scored
        dz *= (np.arange(6)[None, :] < batch["lengths"][:, None])[..., None]
    g = backward(params, dz, cache)
    out.logits.backward(torch.as_tensor(dz))
    theirs = rt.from_torch_state_dict({k: p.grad for k, p in module.named_parameters()}, spec)
    for k, v in theirs.items():
        assert_close(g.params[k], v / 2 if k.endswith("b_h") else v, 1e-10, k)
    assert_close(g.h0, h0.grad.numpy(), 1e-10, "h0")


def test_round_trip_through_our_module_is_exact():
    spec = RNNSpec(4, 6, 3, num_layers=2, bidirectional=True, nonlinearity="sigmoid",
                   loss="sigmoid_bce", setup="many_to_many")
    params = init_params(spec, np.random.default_rng(0))
    module = rt.to_torch(params, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # our module: no convention to guess
        back, spec2 = rt.from_torch(module)
    assert spec2 == spec and list(back) == list(params)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])
        assert back[k].dtype == np.float32
    model = RNN.from_torch(module)
    assert model.spec == spec and model.dtype == np.float32
    assert isinstance(model.to_torch(), RNNModule)
    # the ElmanRNN alone (sigmoid: no nn.RNN) with its head, as a user's module would hold it
    again, spec3 = rt.from_torch(module.rnn, head=module.fc, loss="sigmoid_bce",
                                 setup="many_to_many")
    assert spec3 == spec and all(np.array_equal(again[k], params[k]) for k in params)
    # a bidirectional many-to-one state dict: the convention is asked for there too
    sd = rt.to_torch_state_dict(params, RNNSpec(4, 6, 3, num_layers=2, bidirectional=True))
    with pytest.warns(UserWarning, match="Say which with head_reads="):
        rt.from_torch(sd)


class UserModel(nn.Module):
    """A typical PyTorch classifier, with its own attribute names."""

    def __init__(self, D, H, O, bidirectional=False, reads="h_n", embed=None, layers=1):
        super().__init__()
        self.embed = None if embed is None else nn.Embedding(embed, D, dtype=torch.float64)
        self.encoder = nn.RNN(D, H, num_layers=layers, batch_first=True,
                              bidirectional=bidirectional, nonlinearity="relu",
                              dtype=torch.float64)
        self.classifier = nn.Linear(H * (2 if bidirectional else 1), O, dtype=torch.float64)
        self.reads = reads

    def forward(self, x):
        if self.embed is not None:
            x = self.embed(x)
        out, h_n = self.encoder(x)
        if self.reads == "last_step":
            return self.classifier(out[:, -1])
        nd = 2 if self.encoder.bidirectional else 1
        return self.classifier(h_n[-nd:].transpose(0, 1).reshape(x.shape[0], -1))


def test_user_module_with_other_names_converts_exactly():
    torch.manual_seed(0)
    user = UserModel(3, 5, 4, layers=2)
    params, spec = rt.from_torch(user)
    assert spec == RNNSpec(3, 5, 4, num_layers=2, nonlinearity="relu")
    X = np.random.default_rng(0).standard_normal((6, 7, 3))
    ours, _ = forward(params, X, spec)
    assert_close(ours.logits, user(torch.as_tensor(X)).detach().numpy(), TOL, "logits")


def test_embedding_in_front_folds_into_index_inputs():
    torch.manual_seed(1)
    user = UserModel(3, 5, 4, bidirectional=True, embed=20)
    params, spec = rt.from_torch(user, head_reads="final_states", setup="many_to_one")
    assert spec.input_kind == "index" and spec.input_size == 20
    ids = np.random.default_rng(1).integers(0, 20, size=(6, 7))
    ours, _ = forward(params, ids, spec)
    assert_close(ours.logits, user(torch.as_tensor(ids)).detach().numpy(), TOL, "logits")


def test_bidirectional_head_convention_is_explicit():
    torch.manual_seed(2)
    user = UserModel(3, 5, 4, bidirectional=True)
    X = np.random.default_rng(2).standard_normal((6, 7, 3))
    theirs = user(torch.as_tensor(X)).detach().numpy()
    with pytest.warns(UserWarning, match=r"head_reads='final_states' or head_reads='last_step'"):
        params, spec = rt.from_torch(user)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params, spec = rt.from_torch(user, head_reads="final_states")
    assert_close(forward(params, X, spec)[0].logits, theirs, TOL, "h_n head")

    user.reads = "last_step"                     # the usual out[:, -1] head
    theirs = user(torch.as_tensor(X)).detach().numpy()
    with pytest.warns(UserWarning, match=r"reads out\[:, -1\].*different function"):
        params, spec = rt.from_torch(user, head_reads="last_step")
    ours = forward(params, X, spec)[0].logits
    assert np.abs(ours - theirs).max() > 1e-3       # what the warning says: not the same
    # ... and what it offers: label_steps="all", whose last step is exactly out[:, -1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params, spec = rt.from_torch(user, head_reads="last_step", label_steps="all")
    assert_close(forward(params, X, spec)[0].logits[:, -1], theirs, TOL, "out[:, -1]")
    with pytest.raises(ValueError, match="head_reads must be one of"):
        rt.from_torch(user, head_reads="last")


def test_bare_rnn_needs_a_head_and_state_dicts_infer_the_spec():
    torch.manual_seed(3)
    rnn = nn.RNN(3, 5, num_layers=2, batch_first=True, dtype=torch.float64)
    head = nn.Linear(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="a bare nn.RNN has no head"):
        rt.from_torch(rnn)
    params, spec = rt.from_torch(rnn, head=head, loss="identity_mse", setup="many_to_many")
    assert spec == RNNSpec(3, 5, 2, num_layers=2, loss="identity_mse", setup="many_to_many")
    X = np.random.default_rng(3).standard_normal((2, 4, 3))
    out, _ = rnn(torch.as_tensor(X))
    assert_close(forward(params, X, spec)[0].logits, head(out).detach().numpy(), TOL, "logits")

    # a bare nn.RNN's state dict (no prefix) with a head module; spec inferred, tanh default
    p2, s2 = rt.from_torch(rnn.state_dict(), head=head, setup="many_to_many",
                           loss="identity_mse")
    assert s2 == spec and all(np.array_equal(p2[k], params[k]) for k in params)
    # a prefixed state dict, nonlinearity given
    sd = {**{f"rnn.{k}": v for k, v in rnn.state_dict().items()},
          **{f"out.{k}": v for k, v in head.state_dict().items()}}
    p3, s3 = rt.from_torch(sd, nonlinearity="relu")
    assert s3 == RNNSpec(3, 5, 2, num_layers=2, nonlinearity="relu")
    np.testing.assert_array_equal(p3["W_hy"], params["W_hy"])


def test_modules_that_are_not_one_elman_rnn_are_refused():
    lstm = nn.Sequential(nn.LSTM(3, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="rnnlab has Elman RNNs only; the module holds LSTM"):
        rt.from_torch(lstm)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.RNN(3, 4), nn.RNN(4, 4)
            self.fc = nn.Linear(4, 2)

    with pytest.raises(ValueError, match=r"expected one nn.RNN in the module, found 2 \['a', "
                                         r"'b'\]; name one"):
        rt.from_torch(Two())
    params, spec = rt.from_torch(Two(), rnn_prefix="b.")
    assert spec.input_size == 4
    with pytest.raises(ValueError, match="has no nn.RNN called 'c'"):
        rt.from_torch(Two(), rnn_prefix="c")
    with pytest.raises(ValueError, match="the head reads 4 features; the RNN's output is 2 x 4"):
        rt.from_torch(nn.RNN(3, 4, bidirectional=True), head=nn.Linear(4, 2))
    with pytest.raises(ValueError, match="disagrees with the module"):
        rt.from_torch(Two(), RNNSpec(4, 4, 2, nonlinearity="relu"), rnn_prefix="b")
    with pytest.raises(TypeError, match="unknown RNNSpec fields"):
        rt.from_torch(Two(), rnn_prefix="b", hidden=3)
    with pytest.raises(TypeError, match="source must be an nn.Module or a state dict"):
        rt.from_torch([1, 2])


def test_half_precision_modules_come_as_float32():
    module = rt.to_torch(init_params(RNNSpec(3, 4, 2), np.random.default_rng(0)),
                         RNNSpec(3, 4, 2)).to(torch.bfloat16)
    params, _ = rt.from_torch(module)
    assert all(v.dtype == np.float32 for v in params.values())


def test_save_and_load_a_torch_file(tmp_path):
    spec = RNNSpec(10, 4, 3, input_kind="index", setup="many_to_many", nonlinearity="identity")
    params = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    path = rt.save(params, spec, tmp_path / "m.pt")
    blob = torch.load(path, weights_only=True)            # plain data, no rnnlab needed
    assert blob["format"] == "rnnlab-torch" and blob["spec"] == spec.to_dict()
    assert blob["state_dict"]["rnn.weight_ih_l0"].shape == (4, 10)
    back, spec2 = rt.load(path)
    assert spec2 == spec and all(np.array_equal(back[k], params[k]) for k in params)
    module = rt.to_torch(back, spec2)
    ids = np.random.default_rng(1).integers(0, 10, size=(3, 5))
    assert_close(module(torch.as_tensor(ids)).logits.detach().numpy(),
                 forward(params, ids, spec)[0].logits, TOL, "logits")
    with pytest.raises(FileExistsError):
        rt.save(params, spec, path, overwrite=False)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="is not a readable PyTorch file"):
        rt.load(tmp_path / "junk.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="was not written by rnnlab.interop.torch.save"):
        rt.load(tmp_path / "other.pt")


def test_module_input_errors():
    spec = RNNSpec(3, 4, 2, setup="one_to_many")
    module = rt.to_torch(init_params(spec, np.random.default_rng(0)), spec)
    with pytest.raises(ValueError, match="takes X"):
        module(torch.zeros(2, 3))
    assert module(torch.zeros(2, 3), steps=5).y.shape == (2, 5, 2)


def test_importing_rnnlab_imports_no_optional_package():
    code = ("import sys, rnnlab, rnnlab.interop.torch, rnnlab.interop.onnx, "
            "rnnlab.interop.safetensors, rnnlab.interop.verify, rnnlab.cli; "
            "rnnlab.RNN(3, 4).save_safetensors; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'safetensors') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
