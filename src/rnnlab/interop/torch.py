"""Our parameters <-> PyTorch: ready modules, ``nn.RNN`` + ``nn.Linear`` state dicts, files.

::

    module = to_torch(params, spec)            # an nn.Module whose forward equals rnnlab.forward
    params, spec = from_torch(module)          # any module holding one nn.RNN and one nn.Linear
    save(params, spec, "model.pt");  params, spec = load("model.pt")

PyTorch works in the same row convention as seed 003 but stores each weight transposed
(``weight_ih_l0`` is ``(H, D)``, our ``W_xh`` is ``(D, H)``) and has two biases per layer,
``bias_ih + bias_hh``, where we have their sum ``b_h`` (docs/derivation.md, section 7)::

    rnn.weight_ih_l{k}[_reverse]  = l{k}[r].W_xh.T       rnn.bias_ih_l{k}[_reverse] = l{k}[r].b_h
    rnn.weight_hh_l{k}[_reverse]  = l{k}[r].W_hh.T       rnn.bias_hh_l{k}[_reverse] = 0
    fc.weight = W_hy.T            fc.bias = b_y

Index inputs (``input_kind="index"``) map to an ``nn.RNN`` that reads one-hot vectors of the
ids: ``weight_ih_l0`` is ``W_xh^T``, vocabulary wide; :func:`from_torch` folds an ``nn.Embedding``
in front of the RNN into ``W_xh = E W_ih^T``.

torch is imported only inside the functions that need it (:func:`to_torch`, :func:`from_torch`
on a module, :func:`save`, :func:`load`), so rnnlab never needs it; the state-dict functions work
on NumPy arrays (tensors are converted with ``.detach().cpu().numpy()``).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..core.params import Params, check_params, shapes
from ..core.spec import RNNSpec
from .files import write_bytes

__all__ = ["FILE_FORMAT", "HEAD_READS", "from_torch", "from_torch_state_dict", "load", "save",
           "to_torch", "to_torch_state_dict"]

HEAD_READS: tuple[str, ...] = ("final_states", "last_step")
"""What a bidirectional many-to-one PyTorch module's head reads: ``"final_states"`` (``h_n``:
the forward state at the last step and the reverse state at ``t = 0``, rnnlab's convention) or
``"last_step"`` (``out[:, -1]``: both directions at ``t = T-1``)."""

FILE_FORMAT = "rnnlab-torch"


def _torch_name(key: str, rnn_prefix: str) -> tuple[str, str]:
    """``"l1r.W_hh"`` -> ``("rnn.weight_hh_l1_reverse", "rnn.bias_hh_l1_reverse")``."""
    layer, name = key.split(".")
    reverse = layer.endswith("r")
    k = layer[1:-1] if reverse else layer[1:]
    suffix = f"_l{k}" + ("_reverse" if reverse else "")
    kind = {"W_xh": "ih", "W_hh": "hh", "b_h": "ih"}[name]
    return f"{rnn_prefix}{'bias' if name == 'b_h' else 'weight'}_{kind}{suffix}", (
        f"{rnn_prefix}bias_hh{suffix}"
    )


def to_torch_state_dict(
    params: Mapping[str, NDArray[np.floating]],
    spec: RNNSpec,
    *,
    rnn_prefix: str = "rnn.",
    head_prefix: str = "fc.",
) -> dict[str, NDArray[np.floating]]:
    """Our parameters as a state_dict of NumPy arrays for ``nn.RNN`` (+ ``nn.Linear`` head).

    Load it with ``model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.
    ``b_h`` goes to ``bias_ih`` and ``bias_hh`` is zero, so their sum is ``b_h``.  For index
    inputs ``weight_ih_l0`` is ``W_xh^T`` ``(H, vocabulary)``: the RNN reads one-hot vectors.
    """
    check_params(params, spec)
    sd: dict[str, NDArray[np.floating]] = {}
    for key, value in params.items():
        if key == "W_hy":
            sd[f"{head_prefix}weight"] = np.ascontiguousarray(value.T)
        elif key == "b_y":
            sd[f"{head_prefix}bias"] = value.copy()
        else:
            name, bias_hh = _torch_name(key, rnn_prefix)
            if key.endswith("b_h"):
                sd[name] = value.copy()
                sd[bias_hh] = np.zeros_like(value)
            else:
                sd[name] = np.ascontiguousarray(value.T)
    return sd


def _to_numpy(v: Any) -> NDArray[np.floating]:
    if hasattr(v, "detach"):
        t = v.detach().cpu()
        if t.dtype.is_floating_point and t.dtype.itemsize < 4:     # float16, bfloat16
            t = t.float()
        v = t.numpy()
    return np.asarray(v)


def from_torch_state_dict(
    state_dict: Mapping[str, Any],
    spec: RNNSpec,
    *,
    rnn_prefix: str = "rnn.",
    head_prefix: str = "fc.",
) -> Params:
    """Our parameters from an ``nn.RNN`` (+ ``nn.Linear``) state_dict (tensors or arrays).

    ``b_h = bias_ih + bias_hh``; a missing bias (``bias=False``) counts as zero.  The dtype is the
    state_dict's.  Keys other than the RNN's and the head's are ignored; missing ones raise a
    ``KeyError``-free ``ValueError`` naming them.
    """
    sd = {k: _to_numpy(v) for k, v in state_dict.items()}
    params: Params = {}
    missing: list[str] = []
    for key in shapes(spec):
        if key in ("W_hy", "b_y"):
            name = f"{head_prefix}{'weight' if key == 'W_hy' else 'bias'}"
            if name not in sd:
                missing.append(name)
                continue
            params[key] = np.ascontiguousarray(sd[name].T if key == "W_hy" else sd[name])
            continue
        name, bias_hh = _torch_name(key, rnn_prefix)
        if key.endswith("b_h"):
            w_key = name.replace("bias_ih", "weight_ih")
            if w_key not in sd:
                missing.append(w_key)
                continue
            zero = np.zeros(sd[w_key].shape[0], dtype=sd[w_key].dtype)
            params[key] = sd.get(name, zero) + sd.get(bias_hh, zero)
        elif name not in sd:
            missing.append(name)
        else:
            params[key] = np.ascontiguousarray(sd[name].T)
    if missing:
        raise ValueError(f"state_dict lacks {missing} needed for {spec}")
    check_params(params, spec)
    return params


# ----------------------------------------------------------------------------- modules


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError("this needs PyTorch: pip install 'rnnlab[torch]' (rnnlab is tested "
                          "with torch==2.13.0)") from None
    return torch


def to_torch(params: Mapping[str, NDArray[np.floating]], spec: RNNSpec, *, dtype: Any = None,
             device: Any = None) -> Any:
    """A ready ``nn.Module`` computing the network: :class:`RNNModule` (``nn.RNN`` + ``nn.Linear``
    head + the output activation of the loss, batch first).

    ``module(X, h0=None, lengths=None, steps=None)`` takes rnnlab's inputs as tensors (or
    arrays) and returns ``(y, logits, h_n)``, equal to :func:`rnnlab.forward`'s ``Output``.

    Parameters
    ----------
    params : dict
    spec : RNNSpec
    dtype : torch.dtype, optional
        The parameters' dtype by default (float32 or float64).
    device : optional
    """
    torch = _import_torch()
    from .torch_modules import RNNModule

    if not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
    np_dtype = check_params(params, spec)
    if dtype is None:
        dtype = torch.float64 if np_dtype == np.float64 else torch.float32
    module = RNNModule(spec, dtype=dtype, device=device)
    sd = {k: torch.from_numpy(np.array(v, copy=True)).to(dtype=dtype, device=device)
          for k, v in to_torch_state_dict(params, spec).items()}
    module.load_state_dict(sd)
    return module


def _spec_fields(d: Mapping[str, Any]) -> None:
    valid = {f.name for f in fields(RNNSpec)}
    unknown = sorted(set(d) - valid)
    if unknown:
        raise TypeError(f"unknown RNNSpec fields {unknown}; valid fields are {sorted(valid)}")


def _named(module: Any, kinds: tuple[type, ...]) -> list[tuple[str, Any]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, kinds)]


def _pick(module: Any, kinds: tuple[type, ...], what: str, prefix: str | None) -> tuple[str, Any]:
    """The submodule ``prefix`` names, or the only submodule of ``kinds``."""
    if prefix is not None:
        name = prefix[:-1] if prefix.endswith(".") else prefix
        found = dict(module.named_modules())
        if name not in found or not isinstance(found[name], kinds):
            have = [n for n, _ in _named(module, kinds)]
            raise ValueError(f"the module has no {what} called {name!r}; its {what}s are {have}")
        return name, found[name]
    cands = _named(module, kinds)
    if len(cands) != 1:
        names = [n or "(the module itself)" for n, _ in cands]
        raise ValueError(f"expected one {what} in the module, found {len(cands)} {names}"
                         + ("; name one with its prefix" if cands else ""))
    return cands[0]


def _module_parts(source: Any, head: Any, rnn_prefix: str | None, head_prefix: str | None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict under rnn./fc., inferred spec fields)`` of a user's module."""
    torch = _import_torch()
    from .torch_modules import ElmanRNN

    nn = torch.nn
    others = _named(source, (nn.LSTM, nn.GRU))
    rnns = _named(source, (nn.RNN, ElmanRNN))
    if others and not rnns:
        raise ValueError(f"rnnlab has Elman RNNs only; the module holds "
                         f"{type(others[0][1]).__name__} {others[0][0] or '(itself)'!r}")
    rnn_name, rnn = _pick(source, (nn.RNN, ElmanRNN), "nn.RNN", rnn_prefix)
    if head is None:
        if rnn_name == "" and head_prefix is None:
            raise ValueError("a bare nn.RNN has no head: pass head=nn.Linear(...) (the layer "
                             "that reads its output), or the module that holds both")
        _, head = _pick(source, (nn.Linear,), "nn.Linear head", head_prefix)
    elif not isinstance(head, nn.Linear):
        raise TypeError(f"head must be an nn.Linear; got {type(head).__name__}")
    nd = 2 if rnn.bidirectional else 1
    if head.in_features != nd * rnn.hidden_size:
        raise ValueError(f"the head reads {head.in_features} features; the RNN's output is "
                         f"{nd} x {rnn.hidden_size} = {nd * rnn.hidden_size} wide")
    if rnn.nonlinearity not in ("tanh", "relu", "sigmoid", "identity"):
        raise ValueError(f"unknown nonlinearity {rnn.nonlinearity!r}")
    inferred: dict[str, Any] = dict(
        input_size=rnn.input_size, hidden_size=rnn.hidden_size, output_size=head.out_features,
        num_layers=rnn.num_layers, bidirectional=bool(rnn.bidirectional),
        nonlinearity=rnn.nonlinearity)
    sd: dict[str, Any] = {f"rnn.{k}": v for k, v in rnn.state_dict().items()}
    sd.update({f"fc.{k}": v for k, v in head.state_dict().items()})
    embeddings = _named(source, (nn.Embedding,)) if rnn_name else []
    if len(embeddings) > 1:
        raise ValueError(f"expected at most one nn.Embedding in front of the RNN, found "
                         f"{[n for n, _ in embeddings]}")
    if embeddings:
        name, emb = embeddings[0]
        if emb.max_norm is not None:
            raise ValueError(f"nn.Embedding {name!r} renormalises rows (max_norm="
                             f"{emb.max_norm}); rnnlab's index inputs read rows as they are")
        if emb.embedding_dim != rnn.input_size:
            raise ValueError(f"nn.Embedding {name!r} is {emb.embedding_dim} wide; the RNN reads "
                             f"{rnn.input_size}")
        E = _to_numpy(emb.weight)                                             # (V, E)
        for sfx in [""] + (["_reverse"] if nd == 2 else []):
            key = f"rnn.weight_ih_l0{sfx}"
            sd[key] = _to_numpy(sd[key]) @ E.T     # (H, E) x (E, V): W_xh = E W_ih^T, transposed
        inferred.update(input_size=emb.num_embeddings, input_kind="index")
    return sd, inferred


def _check_head_reads(spec: RNNSpec, head_reads: str | None) -> None:
    if head_reads is not None and head_reads not in HEAD_READS:
        raise ValueError(f"head_reads must be one of {list(HEAD_READS)} or None; got "
                         f"{head_reads!r}")
    if not (spec.bidirectional and spec.setup == "many_to_one" and spec.label_steps == "last"):
        return
    if head_reads == "last_step":
        warnings.warn(
            "from_torch: the module's head reads out[:, -1], i.e. both directions at the last "
            "step, where the reverse direction has read one step only; rnnlab's many-to-one "
            "head reads the final states h_n (forward at the last step, reverse at t = 0), so "
            "the converted network computes a different function with the same weights. "
            "Fine-tune it in rnnlab, or convert with label_steps='all', whose prediction at the "
            "last step is exactly out[:, -1].", UserWarning, stacklevel=3)
    elif head_reads is None:
        warnings.warn(
            "from_torch: bidirectional many-to-one; rnnlab's head reads the final states h_n "
            "(forward at the last step, reverse at t = 0). If the module's head reads "
            "out[:, -1] instead, the converted network computes a different function. Say which "
            "with head_reads='final_states' or head_reads='last_step'.", UserWarning,
            stacklevel=3)


def from_torch(
    source: Any,
    spec: RNNSpec | None = None,
    *,
    head: Any = None,
    head_reads: str | None = None,
    rnn_prefix: str | None = None,
    head_prefix: str | None = None,
    **spec_fields: Any,
) -> tuple[Params, RNNSpec]:
    """Our ``(params, spec)`` from a PyTorch module, a state dict or a :func:`save` file's
    contents.

    Parameters
    ----------
    source : nn.Module or mapping
        * the :class:`RNNModule` of :func:`to_torch` (its spec comes along);
        * any module holding one ``nn.RNN`` (or :class:`ElmanRNN`) and one ``nn.Linear`` head,
          optionally an ``nn.Embedding`` in front (folded into index inputs,
          ``W_xh = E W_ih^T``); a bare ``nn.RNN`` with ``head=``.  Sizes, layers, direction
          and nonlinearity are read off the modules;
        * a state dict (tensors or arrays) of ``nn.RNN`` + ``nn.Linear`` keys, with ``spec`` or
          the spec fields it cannot tell (``nonlinearity`` defaults to ``nn.RNN``'s ``"tanh"``);
        * ``torch.load(path, weights_only=True)`` of a :func:`save` file.
    spec : RNNSpec, optional
        Checked against what the module says; required fields a state dict lacks come from it.
    head : nn.Linear, optional
        The head of a bare ``nn.RNN``.
    head_reads : {"final_states", "last_step"}, optional
        For a bidirectional many-to-one network, what the module's head reads: ``h_n``
        (rnnlab's convention; the conversion is exact) or ``out[:, -1]`` (a different function:
        a warning says so).  Left out, a warning asks for it.
    rnn_prefix, head_prefix : str, optional
        Name the RNN and the head (``"encoder.rnn."``) when the module holds several, or the
        keys' prefixes in a state dict (default: found from the keys, ``"rnn."``/``"fc."``).
    **spec_fields
        :class:`RNNSpec` fields the module does not tell: ``loss``, ``setup``, ``label_steps``,
        ``feed``, ``reduction`` (defaults as in RNNSpec).

    Returns
    -------
    params : dict
        In the module's dtype (float16/bfloat16 become float32).
    spec : RNNSpec
    """
    _spec_fields(spec_fields)
    if spec is not None and not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an RNNSpec or None; got {type(spec).__name__}")
    if hasattr(source, "named_modules") and hasattr(source, "state_dict"):
        from .torch_modules import RNNModule

        if isinstance(source, RNNModule):
            _agree(source.spec, spec, spec_fields, "the module's spec")
            return from_torch_state_dict(source.state_dict(), source.spec), source.spec
        sd, inferred = _module_parts(source, head, rnn_prefix, head_prefix)
        spec = _resolve_spec(inferred, spec, spec_fields)
        _check_head_reads(spec, head_reads)
        return from_torch_state_dict(sd, spec), spec
    if not isinstance(source, Mapping):
        raise TypeError(f"source must be an nn.Module or a state dict; got "
                        f"{type(source).__name__}")
    if source.get("format") == FILE_FORMAT:
        file_spec = RNNSpec.from_dict(dict(source["spec"]))
        _agree(file_spec, spec, spec_fields, "the file's spec")
        return from_torch_state_dict(source["state_dict"], file_spec), file_spec
    rp = _prefix(source, "weight_ih_l0", rnn_prefix)
    hp: str | None
    if head is not None:
        if not hasattr(head, "state_dict"):
            raise TypeError(f"head must be an nn.Linear; got {type(head).__name__}")
        sd = dict(source)
        sd.update({f"__head__.{k}": v for k, v in head.state_dict().items()})
        hp = "__head__."
    else:
        sd, hp = dict(source), head_prefix
    hp = _head_prefix(sd, rp) if hp is None else hp
    if spec is None:
        spec = _resolve_spec(_infer_from_state_dict(sd, rp, hp), None, spec_fields)
    elif spec_fields:
        _agree(spec, None, spec_fields, "spec")
    _check_head_reads(spec, head_reads)
    return from_torch_state_dict(sd, spec, rnn_prefix=rp, head_prefix=hp), spec


def _agree(have: RNNSpec, spec: RNNSpec | None, spec_fields: Mapping[str, Any],
           what: str) -> None:
    if spec is not None and spec != have:
        raise ValueError(f"spec {spec} disagrees with {what} {have}")
    d = have.to_dict()
    wrong = {k: v for k, v in spec_fields.items() if d[k] != v}
    if wrong:
        raise ValueError(f"{wrong} disagree with {what} " +
                         str({k: d[k] for k in wrong}))


def _resolve_spec(inferred: dict[str, Any], spec: RNNSpec | None,
                  spec_fields: Mapping[str, Any]) -> RNNSpec:
    """``spec`` checked against what the module says, or one made from it and ``spec_fields``."""
    clash = {k: (v, inferred[k]) for k, v in spec_fields.items()
             if k in inferred and inferred[k] != v}
    if clash:
        raise ValueError("the module says otherwise: " + ", ".join(
            f"{k}={theirs!r}, not {ours!r}" for k, (ours, theirs) in clash.items()))
    if spec is None:
        return RNNSpec(**{**spec_fields, **inferred})
    d = spec.to_dict()
    wrong = {k: (d[k], v) for k, v in inferred.items() if d[k] != v}
    if wrong:
        raise ValueError("spec disagrees with the module: " + ", ".join(
            f"{k}={ours!r} but the module has {theirs!r}" for k, (ours, theirs) in wrong.items()))
    _agree(spec, None, spec_fields, "spec")
    return spec


def _prefix(sd: Mapping[str, Any], suffix: str, given: str | None) -> str:
    if given is not None:
        return given
    hits = sorted(k[: -len(suffix)] for k in sd if isinstance(k, str) and k.endswith(suffix))
    if len(hits) != 1:
        raise ValueError(f"cannot tell the RNN's keys: {len(hits)} keys end in {suffix!r} "
                         f"({hits}); pass rnn_prefix=")
    return hits[0]


def _head_prefix(sd: Mapping[str, Any], rp: str) -> str:
    """``"fc."`` when present, else the only ``*.weight`` key outside the RNN's."""
    if "fc.weight" in sd:
        return "fc."
    cands = [k[: -len("weight")] for k in sd
             if k.endswith("weight") and np.ndim(_to_numpy(sd[k])) == 2
             and not (k.startswith(rp) and k[len(rp):].startswith(("weight_ih_l", "weight_hh_l")))]
    if len(cands) != 1:
        raise ValueError(f"cannot tell the head's keys (candidates {cands}); pass head_prefix= "
                         "or head=")
    return cands[0]


def _infer_from_state_dict(sd: Mapping[str, Any], rp: str, hp: str) -> dict[str, Any]:
    L = 0
    while f"{rp}weight_ih_l{L}" in sd:
        L += 1
    w_ih = _to_numpy(sd[f"{rp}weight_ih_l0"])
    if f"{hp}weight" not in sd:
        raise ValueError(f"state_dict lacks the head's {hp}weight")
    return dict(input_size=int(w_ih.shape[1]), hidden_size=int(w_ih.shape[0]),
                output_size=int(_to_numpy(sd[f"{hp}weight"]).shape[0]), num_layers=L,
                bidirectional=f"{rp}weight_ih_l0_reverse" in sd)


# ----------------------------------------------------------------------------- files


def save(params: Mapping[str, NDArray[np.floating]], spec: RNNSpec,
         path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Write a PyTorch file: ``{"format", "format_version", "spec", "state_dict"}``.

    ``state_dict`` is the :func:`to_torch` module's (``rnn.*``, ``fc.*`` tensors), ``spec`` plain
    data; ``torch.load(path, weights_only=True)`` reads it without rnnlab, and
    :func:`load` (or :func:`from_torch` on what ``torch.load`` returns) brings it back.  Written
    with ``torch.save`` (its zip format), atomically.
    """
    torch = _import_torch()
    check_params(params, spec)
    blob = {"format": FILE_FORMAT, "format_version": 1, "spec": spec.to_dict(),
            "state_dict": {k: torch.from_numpy(np.array(v, copy=True))
                           for k, v in to_torch_state_dict(params, spec).items()}}
    buf = io.BytesIO()
    torch.save(blob, buf)
    return write_bytes(path, buf.getvalue(), overwrite=overwrite, what="PyTorch file")


def load(path: str | os.PathLike[str]) -> tuple[Params, RNNSpec]:
    """``(params, spec)`` from a :func:`save` file (read with ``weights_only=True``, no pickle
    of code); ``to_torch(*load(path))`` is the module again."""
    torch = _import_torch()
    try:
        blob = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"PyTorch file {os.fspath(path)!r} does not exist") from None
    except Exception as exc:       # torch raises RuntimeError/UnpicklingError on foreign files
        raise ValueError(f"{os.fspath(path)!r} is not a readable PyTorch file: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None
    if not isinstance(blob, Mapping) or blob.get("format") != FILE_FORMAT:
        raise ValueError(f"{os.fspath(path)!r} was not written by rnnlab.interop.torch.save "
                         "(no 'format': 'rnnlab-torch'); for a state dict use from_torch(sd, "
                         "spec)")
    return from_torch(blob)
