"""rnnlab's network as PyTorch modules (this module imports torch; rnnlab itself never does).

:class:`RNNModule` is what :func:`rnnlab.interop.torch.to_torch` returns: ``rnn`` (an
``nn.RNN`` for tanh/ReLU, an :class:`ElmanRNN` with the same parameters for sigmoid/identity,
which ``nn.RNN`` lacks), ``fc`` (an ``nn.Linear`` head) and the output activation of the spec's
loss.  Its forward takes rnnlab's inputs and returns rnnlab's ``Output(y, logits, h_n)`` as
tensors, equal to :func:`rnnlab.forward` (tested in float64 on the whole set-up grid).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.spec import RNNSpec

__all__ = ["ElmanRNN", "RNNModule", "TorchOutput"]

_TORCH_NONLINEARITIES = ("tanh", "relu")
_HIDDEN = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
           "identity": lambda z: z}


class TorchOutput(NamedTuple):
    """What :meth:`RNNModule.forward` returns: rnnlab's ``Output`` as tensors.

    Attributes
    ----------
    y : (B, O) or (B, T, O)
        ``g(logits)``: probabilities for the classification losses, values for MSE.
    logits : same shape as ``y``
    h_n : (num_layers * num_directions, B, H)
    """

    y: Tensor
    logits: Tensor
    h_n: Tensor


class ElmanRNN(nn.Module):
    """``nn.RNN`` for any of rnnlab's hidden activations (tanh, relu, sigmoid, identity).

    Same constructor arguments, parameter names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...),
    shapes, initialisation and call, ``(output, h_n) = rnn(input, hx)``; variable lengths come
    as ``lengths=`` (padded steps carry the state, rnnlab's eq. 7) instead of a PackedSequence.
    The recurrence is a loop over time written in PyTorch operations, so autograd works.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 bidirectional: bool = False, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if nonlinearity not in _HIDDEN:
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected one of "
                             f"{sorted(_HIDDEN)}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.nonlinearity, self.bias, self.batch_first = nonlinearity, bias, batch_first
        self.bidirectional = bidirectional
        kw = {"device": device, "dtype": dtype}
        nd = 2 if bidirectional else 1
        for layer in range(num_layers):
            d_in = input_size if layer == 0 else hidden_size * nd
            for sfx in [""] + (["_reverse"] if bidirectional else []):
                self.register_parameter(f"weight_ih_l{layer}{sfx}",
                                        nn.Parameter(torch.empty(hidden_size, d_in, **kw)))
                self.register_parameter(f"weight_hh_l{layer}{sfx}",
                                        nn.Parameter(torch.empty(hidden_size, hidden_size, **kw)))
                if bias:
                    self.register_parameter(f"bias_ih_l{layer}{sfx}",
                                            nn.Parameter(torch.empty(hidden_size, **kw)))
                    self.register_parameter(f"bias_hh_l{layer}{sfx}",
                                            nn.Parameter(torch.empty(hidden_size, **kw)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``U(-1/sqrt(H), 1/sqrt(H))`` for every entry, as ``nn.RNN``."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            nn.init.uniform_(w, -k, k)

    def forward(self, input: Tensor, hx: Tensor | None = None, lengths: Any = None
                ) -> tuple[Tensor, Tensor]:
        """``(output, h_n)``: output ``(B, T, nd H)`` (batch first) or ``(T, B, nd H)``."""
        x = input if self.batch_first else input.transpose(0, 1)          # (B, T, D)
        B, T = x.shape[0], x.shape[1]
        nd = 2 if self.bidirectional else 1
        H = self.hidden_size
        if hx is None:
            hx = x.new_zeros(self.num_layers * nd, B, H)
        real = None
        if lengths is not None:
            ln = torch.as_tensor(lengths, device=x.device)
            real = (torch.arange(T, device=x.device)[None, :] < ln[:, None])[..., None]
        f = _HIDDEN[self.nonlinearity]
        finals = []
        for layer in range(self.num_layers):
            outs = []
            for d, sfx in enumerate([""] + (["_reverse"] if nd == 2 else [])):
                W_ih = getattr(self, f"weight_ih_l{layer}{sfx}")
                W_hh = getattr(self, f"weight_hh_l{layer}{sfx}")
                A = x @ W_ih.T                                             # (B, T, H), eq. (5)
                if self.bias:
                    A = A + getattr(self, f"bias_ih_l{layer}{sfx}") + \
                        getattr(self, f"bias_hh_l{layer}{sfx}")
                h = hx[layer * nd + d]
                states: list[Tensor] = [h] * T
                for t in (range(T - 1, -1, -1) if d == 1 else range(T)):
                    new = f(A[:, t] + h @ W_hh.T)                          # eq. (6)
                    h = new if real is None else torch.where(real[:, t], new, h)   # eq. (7)
                    states[t] = h
                outs.append(torch.stack(states, dim=1))                    # (B, T, H)
                finals.append(h)
            x = torch.cat(outs, dim=2) if nd == 2 else outs[0]
        out = x if self.batch_first else x.transpose(0, 1)
        return out, torch.stack(finals)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"nonlinearity={self.nonlinearity!r}, bidirectional={self.bidirectional}, "
                f"batch_first={self.batch_first}")


class RNNModule(nn.Module):
    """rnnlab's network (an :class:`RNNSpec`) as a PyTorch module, batch first.

    Parameters
    ----------
    spec : RNNSpec
    dtype : torch.dtype, optional
        ``torch.float32`` by default.
    device : optional

    Attributes
    ----------
    spec : RNNSpec
    rnn : nn.RNN or ElmanRNN
        ``nn.RNN(batch_first=True)`` for tanh and ReLU; :class:`ElmanRNN` for sigmoid and
        identity.  Its parameter names are ``nn.RNN``'s.  For ``input_kind="index"`` it reads
        one-hot vectors of the ids (``weight_ih_l0`` is ``W_xh^T``, vocabulary wide).
    fc : nn.Linear
        The head, ``nd H -> O``.

    Notes
    -----
    The many-to-one head reads the final states ``h_n`` of the top layer, ``[forward at the last
    real step, reverse at t = 0]`` for a bidirectional network (rnnlab's convention, as Keras'
    ``Bidirectional``), not ``output[:, -1]``, where the reverse direction has read one step only.
    The state dict (``rnn.weight_ih_l0``, ..., ``fc.weight``, ``fc.bias``) loads into
    ``nn.RNN`` + ``nn.Linear`` attributes called ``rnn`` and ``fc``.
    """

    def __init__(self, spec: RNNSpec, *, dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        if not isinstance(spec, RNNSpec):
            raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
        self.spec = spec
        kw = {"dtype": dtype or torch.float32, "device": device}
        cls = nn.RNN if spec.nonlinearity in _TORCH_NONLINEARITIES else ElmanRNN
        self.rnn = cls(spec.input_size, spec.hidden_size, num_layers=spec.num_layers,
                       nonlinearity=spec.nonlinearity, bidirectional=spec.bidirectional,
                       batch_first=True, **kw)
        self.fc = nn.Linear(spec.hidden_size * spec.num_directions, spec.output_size, **kw)

    def _inputs(self, x: Any, steps: int | None) -> Tensor:
        """The ``(B, T, D)`` float sequence the recurrence reads."""
        spec = self.spec
        dtype = self.fc.weight.dtype
        device = self.fc.weight.device
        xt = torch.as_tensor(x, device=device)
        if spec.input_kind == "index":
            if xt.dtype.is_floating_point or xt.dim() != 2:
                raise ValueError(f"X must be (B, T) integer ids for input_kind='index'; got "
                                 f"{tuple(xt.shape)} {xt.dtype}")
            return F.one_hot(xt.long(), spec.input_size).to(dtype)              # eq. (21)
        xt = xt.to(dtype)
        if spec.setup == "one_to_many":
            if xt.dim() != 2 or steps is None:
                raise ValueError(f"setup='one_to_many' takes X (B, {spec.input_size}) and "
                                 f"steps=T; got X {tuple(xt.shape)}, steps={steps!r}")
            seq = xt[:, None, :].expand(xt.shape[0], int(steps), xt.shape[1])
            if spec.feed == "first":
                seq = torch.cat([xt[:, None, :], xt.new_zeros(xt.shape[0], int(steps) - 1,
                                                              xt.shape[1])], dim=1)
            return seq
        if steps is not None:
            raise ValueError(f"steps is only used with setup='one_to_many'; got "
                             f"setup={spec.setup!r}")
        if xt.dim() != 3:
            raise ValueError(f"X must be (B, T, {spec.input_size}); got {tuple(xt.shape)}")
        return xt

    def forward(self, x: Any, h0: Tensor | None = None, lengths: Any = None,
                steps: int | None = None) -> TorchOutput:
        """Run the network, as :func:`rnnlab.forward`.

        Parameters
        ----------
        x : Tensor
            ``(B, T, D)``; ``(B, T)`` ids for ``input_kind="index"``; ``(B, D)`` for
            ``setup="one_to_many"`` (then ``steps`` gives T).
        h0 : (num_layers * num_directions, B, H), optional
        lengths : (B,) ints, optional
            The first ``lengths[b]`` steps of sequence ``b`` are real; padded steps carry the
            state (eq. 7), as rnnlab's ``lengths=``.
        steps : int, optional

        Returns
        -------
        TorchOutput
            ``(y, logits, h_n)``.
        """
        spec = self.spec
        seq = self._inputs(x, steps)
        B, T = seq.shape[0], seq.shape[1]
        nd, H = spec.num_directions, spec.hidden_size
        if h0 is not None:
            h0 = torch.as_tensor(h0, dtype=seq.dtype, device=seq.device)
        ln = None if lengths is None else torch.as_tensor(lengths).long()
        if isinstance(self.rnn, ElmanRNN):
            out, h_n = self.rnn(seq, h0, lengths=ln)
        elif ln is None:
            out, h_n = self.rnn(seq, h0)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(seq, ln.cpu(), batch_first=True,
                                                       enforce_sorted=False)
            out_p, h_n = self.rnn(packed, h0)
            out, _ = nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=T)
            # rnnlab's padded steps carry the state (eq. 7); pad_packed_sequence left zeros:
            # the forward state at the last real step, the reverse direction's h0
            fill = [h_n[-nd]]
            if nd == 2:
                fill.append(h0[-1] if h0 is not None else seq.new_zeros(B, H))
            real = torch.arange(T, device=seq.device)[None, :] < ln.to(seq.device)[:, None]
            out = torch.where(real[..., None], out, torch.cat(fill, dim=1)[:, None, :])
        if spec.per_step_output:
            top = out                                                          # (B, T, nd H)
        else:                                                # final states, (B, nd H)
            top = h_n[-nd:].transpose(0, 1).reshape(B, nd * H)
        logits = self.fc(top)                                                  # eq. (8)
        return TorchOutput(self.output_activation(logits), logits, h_n)

    def output_activation(self, logits: Tensor) -> Tensor:
        """``g`` of the spec's loss: softmax, sigmoid, identity or ReLU."""
        loss = self.spec.loss
        if loss == "softmax_ce":
            return torch.softmax(logits, dim=-1)
        if loss == "sigmoid_bce":
            return torch.sigmoid(logits)
        if loss == "relu_mse":
            return torch.relu(logits)
        return logits

    def extra_repr(self) -> str:
        s = self.spec
        return f"setup={s.setup!r}, loss={s.loss!r}, input_kind={s.input_kind!r}"
