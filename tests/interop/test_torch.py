"""Same weights in ``torch.nn.RNN`` + ``nn.Linear`` (PyTorch 2.13.0 CPU, float64): same outputs,
final states and gradients to 1e-10 relative; masks against ``pack_padded_sequence``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rnnlab import RNNSpec, init_params
from rnnlab import network as net
from rnnlab.diagnostics import relative_error
from rnnlab.interop.torch import from_torch_state_dict, to_torch_state_dict

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional
TOL = 1e-10
B, T, D, H, O = 4, 6, 3, 5, 4


class TorchModel(nn.Module):
    def __init__(self, spec: RNNSpec) -> None:
        super().__init__()
        self.spec = spec
        self.rnn = nn.RNN(spec.input_size, spec.hidden_size, num_layers=spec.num_layers,
                          nonlinearity=spec.nonlinearity, bidirectional=spec.bidirectional,
                          batch_first=True, dtype=torch.float64)
        self.fc = nn.Linear(spec.hidden_size * spec.num_directions, spec.output_size,
                            dtype=torch.float64)

    def forward(self, x, h0, lengths=None):
        if lengths is not None:
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                       enforce_sorted=False)
            seq, h_n = self.rnn(packed, h0)
            seq, _ = nn.utils.rnn.pad_packed_sequence(seq, batch_first=True, total_length=T)
        else:
            seq, h_n = self.rnn(x, h0)
        if self.spec.setup == "many_to_one":
            top = torch.cat([h_n[-2], h_n[-1]], dim=1) if self.spec.bidirectional else h_n[-1]
            return self.fc(top), h_n
        return self.fc(seq), h_n


CASES = list(itertools.product(["tanh", "relu"], [1, 2, 3], [False, True],
                               ["many_to_one", "many_to_many"], [False, True]))


@pytest.mark.parametrize("act,layers,bidir,setup,padded", CASES)
def test_same_outputs_and_gradients_as_torch(act, layers, bidir, setup, padded):
    spec = RNNSpec(D, H, O, num_layers=layers, bidirectional=bidir, nonlinearity=act, setup=setup)
    rng = np.random.default_rng(layers * 10 + bidir)
    params = init_params(spec, rng, dtype=np.float64)
    X = rng.standard_normal((B, T, D))
    h0 = rng.standard_normal((layers * spec.num_directions, B, H)) * 0.5
    Y = rng.integers(0, O, size=(B,) if setup == "many_to_one" else (B, T))
    lengths = np.array([T, 2, T - 1, 1]) if padded else None

    # rnnlab
    out, cache = net.forward(params, X, spec, h0=h0, lengths=lengths)
    res = net.loss_and_grad(spec, out, Y, lengths=lengths)
    g = net.backward(params, res.dz, cache)

    # torch, loaded from our parameters
    model = TorchModel(spec)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in
                           to_torch_state_dict(params, spec).items()})
    x_t = torch.tensor(X, requires_grad=True)
    h0_t = torch.tensor(h0, requires_grad=True)
    logits_t, h_n_t = model(x_t, h0_t, None if lengths is None else torch.tensor(lengths))
    y_t = torch.tensor(Y)
    if setup == "many_to_one":
        loss_t = F.cross_entropy(logits_t, y_t)
    elif lengths is None:
        loss_t = F.cross_entropy(logits_t.reshape(B * T, O), y_t.reshape(-1))
    else:
        m = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
        loss_t = F.cross_entropy(logits_t[m], y_t[m])
    loss_t.backward()

    assert abs(res.value - loss_t.item()) <= TOL * abs(loss_t.item())
    valid = (slice(None),) if lengths is None or setup == "many_to_one" else (
        np.arange(T)[None, :] < lengths[:, None],)
    assert relative_error(out.logits[valid], logits_t.detach().numpy()[valid]) < TOL
    assert relative_error(out.h_n, h_n_t.detach().numpy()) < TOL
    torch_grads = from_torch_state_dict(
        {k: p.grad for k, p in model.named_parameters()}, spec)
    # PyTorch's two bias gradients are equal; from_torch_state_dict added them: halve
    for k, v in torch_grads.items():
        ref = v / 2 if k.endswith("b_h") else v
        assert relative_error(g.params[k], ref) < TOL, k
    assert relative_error(g.X, x_t.grad.numpy()) < TOL
    assert relative_error(g.h0, h0_t.grad.numpy()) < TOL


def test_state_dict_round_trip_and_bias_sum():
    spec = RNNSpec(D, H, O, num_layers=2, bidirectional=True)
    params = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    model = TorchModel(spec)            # PyTorch's own random init, two biases per layer
    ours = from_torch_state_dict(model.state_dict(), spec)
    sd = model.state_dict()
    np.testing.assert_array_equal(
        ours["l1r.b_h"], (sd["rnn.bias_ih_l1_reverse"] + sd["rnn.bias_hh_l1_reverse"]).numpy())
    np.testing.assert_array_equal(ours["l0.W_xh"], sd["rnn.weight_ih_l0"].numpy().T)
    back = from_torch_state_dict(to_torch_state_dict(params, spec), spec)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])
    # and the converted weights give torch's own forward
    X = np.random.default_rng(1).standard_normal((B, T, D))
    out, _ = net.forward(ours, X, spec)
    ref, _ = model(torch.tensor(X), None)
    assert relative_error(out.logits, ref.detach().numpy()) < TOL


def test_missing_keys_are_named():
    spec = RNNSpec(D, H, O)
    sd = to_torch_state_dict(init_params(spec, np.random.default_rng(0)), spec)
    del sd["rnn.weight_hh_l0"]
    with pytest.raises(ValueError, match="rnn.weight_hh_l0"):
        from_torch_state_dict(sd, spec)
