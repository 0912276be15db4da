"""Export a network to ONNX: the standard ``RNN`` operator, the head and the output activation.

::

    from rnnlab.interop import onnx as rx
    rx.export(params, spec, "model.onnx", lengths=True)      # or RNN.export_onnx / rnnlab export

    import onnxruntime as ort
    sess = ort.InferenceSession("model.onnx")
    y, logits, h_n = sess.run(None, {"X": X.astype("float32"), "lengths": lengths})

The graph (docs/interop.md has the full account):

* **inputs** ``X``: ``(B, T, D)`` float32; ``(B, T)`` int64 ids for ``input_kind="index"``;
  ``(B, D)`` float32 plus ``steps`` (an int64 scalar, the ``T`` of rnnlab's ``steps=``) for
  ``setup="one_to_many"``.  With ``lengths=True`` also ``lengths`` ``(B,)`` int64 (the first
  ``lengths[b]`` steps of sequence ``b`` are real, rnnlab's ``lengths=``); with
  ``initial_state=True`` also ``h0`` ``(num_layers * num_directions, B, H)``.  ``B`` and ``T``
  are dynamic.
* **outputs** ``y`` (``g(logits)``), ``logits`` and ``h_n``: rnnlab's ``Output(y, logits, h_n)``.
* **recurrence**: one ``RNN`` node per layer (``direction="bidirectional"`` for bidirectional
  layers), ``W = W_xh^T``, ``R = W_hh^T``, ``B = [b_h, 0]`` per direction, ``sequence_lens`` from
  ``lengths`` and ``initial_h`` from ``h0``.  Hidden activations: ``tanh -> Tanh``,
  ``relu -> Relu``, ``sigmoid -> Sigmoid``, ``identity -> Affine(alpha=1, beta=0)`` (or
  ``LeakyRelu(alpha=1)``, the same function, with ``identity="LeakyRelu"``).
* **index inputs**: a ``Gather`` of the rows of ``[W_xh | W_xh_reverse]`` (eq. 21) feeds the first
  ``RNN`` node, whose ``W`` then selects each direction's block (an identity, exact).
* **one-to-many**: ``Expand`` (``feed="every"``) or ``Pad`` (``feed="first"``) builds the input
  sequence of ``steps`` steps.
* **head**: ``MatMul`` + ``Add`` on the final states (many-to-one: ``[forward at the last real
  step, reverse at t = 0]``, the ``Y_h`` of the top ``RNN`` node) or on every step; the output
  activation is ``Softmax`` (``softmax_ce``), ``Sigmoid`` (``sigmoid_bce``), ``Identity``
  (``identity_mse``) or ``Relu`` (``relu_mse``).
* **padding**: the ``RNN`` operator zeroes the outputs at padded steps; rnnlab carries the state
  there (eq. 7), so a ``Where`` puts the carried state back (the forward direction's last real
  state, the reverse direction's ``h0``) and every output equals rnnlab's, padded steps included.

The file is float32 (ONNX Runtime has no float64 ``RNN`` kernel), checked with
``onnx.checker.check_model(full_check=True)`` before it is written, atomically.  Needs the
``onnx`` package (``pip install 'rnnlab[onnx]'``); running it needs ``onnxruntime`` or another
ONNX runtime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..core.params import check_params
from ..core.spec import RNNSpec
from ..version import __version__
from .files import write_bytes

__all__ = ["ACTIVATIONS", "DEFAULT_OPSET", "IDENTITY_ACTIVATIONS", "MIN_OPSET",
           "OUTPUT_ACTIVATIONS", "build", "export", "input_names", "spec_of"]

ACTIVATIONS: dict[str, tuple[str, float | None, float | None]] = {
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "identity": ("Affine", 1.0, 0.0),
}
"""rnnlab's hidden activation -> the ``RNN`` operator's activation ``(name, alpha, beta)``."""

IDENTITY_ACTIVATIONS: dict[str, tuple[str, float | None, float | None]] = {
    "Affine": ("Affine", 1.0, 0.0),          # alpha * x + beta
    "LeakyRelu": ("LeakyRelu", 1.0, None),   # x >= 0 ? x : alpha * x
}
"""The two exact spellings of ``f(x) = x`` among the ``RNN`` operator's activations (both are
among the operator's optional activations; ONNX Runtime has both)."""

OUTPUT_ACTIVATIONS: dict[str, str] = {
    "softmax_ce": "Softmax",
    "sigmoid_bce": "Sigmoid",
    "identity_mse": "Identity",
    "relu_mse": "Relu",
}
"""rnnlab's loss -> the ONNX operator of its output activation ``g`` (eq. 8)."""

DEFAULT_OPSET = 17
MIN_OPSET = 14          # the RNN operator's version 14 (its layout attribute; we use layout 0)
META_SPEC = "rnnlab.spec"


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'rnnlab[onnx]'") \
            from None
    return onnx


def input_names(spec: RNNSpec, *, lengths: bool = False, initial_state: bool = False
                ) -> list[str]:
    """The graph inputs an export of ``spec`` takes, in order."""
    names = ["X"]
    if spec.setup == "one_to_many":
        names.append("steps")
    if lengths:
        names.append("lengths")
    if initial_state:
        names.append("h0")
    return names


class _Graph:
    """Nodes and initializers under unique names."""

    def __init__(self, onnx: Any) -> None:
        self.onnx = onnx
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.consts: dict[str, NDArray[Any]] = {}
        self.count = 0

    def const(self, name: str, value: NDArray[Any]) -> str:
        """An initializer called ``name`` (made once; asking again returns the same name)."""
        if name in self.consts:
            if not np.array_equal(self.consts[name], value):
                raise ValueError(f"ONNX initializer {name!r} is already defined with other "
                                 "values (an exporter bug: each name must stand for one array)")
            return name
        self.consts[name] = value
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def ints(self, *values: int) -> str:
        """A 1-D int64 initializer holding ``values``."""
        return self.const("ints_" + "_".join(str(v).replace("-", "m") for v in values),
                          np.array(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1,
           **attrs: Any) -> Any:
        """Add a node; return its output name (or the list of names when ``outputs`` > 1)."""
        if isinstance(outputs, int):
            names = []
            for _ in range(outputs):
                self.count += 1
                names.append(f"{op_type.lower()}_{self.count}")
        else:
            names = outputs
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if len(names) == 1 else names


def _float32(params: Mapping[str, NDArray[np.floating]]) -> dict[str, NDArray[np.float32]]:
    out = {}
    for k, v in params.items():
        big = float(np.abs(v).max()) if v.size else 0.0
        if big > float(np.finfo(np.float32).max):
            raise ValueError(f"cannot export to ONNX: params[{k!r}] holds {big:.3g}, beyond "
                             "float32's range (ONNX Runtime's RNN operator is float32 only)")
        out[k] = np.asarray(v, dtype=np.float32)
    return out


def build(
    params: Mapping[str, NDArray[np.floating]],
    spec: RNNSpec,
    *,
    lengths: bool = False,
    initial_state: bool = False,
    opset: int = DEFAULT_OPSET,
    identity: str = "Affine",
    name: str = "rnnlab",
) -> Any:
    """The network as a checked ``onnx.ModelProto`` (float32).

    Parameters
    ----------
    params : dict
        The parameters (:func:`rnnlab.init_params` layout); float64 ones are rounded to float32.
    spec : RNNSpec
    lengths : bool
        Add the ``lengths`` input ``(B,)`` int64 (variable-length sequences, trailing padding).
    initial_state : bool
        Add the ``h0`` input ``(num_layers * num_directions, B, H)``; without it states start at 0.
    opset : int
        ONNX opset of the default domain, from 14 to the installed ``onnx`` package's newest.
    identity : {"Affine", "LeakyRelu"}
        How ``nonlinearity="identity"`` is spelt in the ``RNN`` operator (both are exact).
    name : str
        The graph's name.

    Returns
    -------
    onnx.ModelProto
        With ``rnnlab.spec`` (the spec as JSON) in its metadata.

    Raises
    ------
    ValueError
        One line saying why the model cannot be expressed (a parameter beyond float32, an opset
        outside the supported range, an unknown ``identity`` spelling).
    """
    onnx = _import_onnx()
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
    check_params(params, spec)
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an int in [{MIN_OPSET}, {newest}] (the RNN operator "
                         f"from version 14 to the installed onnx's newest); got {opset!r}")
    if identity not in IDENTITY_ACTIVATIONS:
        raise ValueError(f"identity must be one of {list(IDENTITY_ACTIVATIONS)}; got {identity!r}")
    for flag, value in (("lengths", lengths), ("initial_state", initial_state)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool; got {value!r}")
    p = _float32(params)
    helper, TP = onnx.helper, onnx.TensorProto
    H, nd, L, O = spec.hidden_size, spec.num_directions, spec.num_layers, spec.output_size
    D = spec.input_size
    g = _Graph(onnx)
    act, alpha, beta = (IDENTITY_ACTIVATIONS[identity] if spec.nonlinearity == "identity"
                        else ACTIVATIONS[spec.nonlinearity])
    rnn_attrs: dict[str, Any] = dict(hidden_size=H, activations=[act] * nd,
                                     direction="bidirectional" if nd == 2 else "forward")
    if alpha is not None:
        rnn_attrs["activation_alpha"] = [alpha] * nd
    if beta is not None:
        rnn_attrs["activation_beta"] = [beta] * nd

    # ---- inputs, time first
    inputs = []
    if spec.input_kind == "index":
        inputs.append(helper.make_tensor_value_info("X", TP.INT64, ["B", "T"]))
    elif spec.setup == "one_to_many":
        inputs.append(helper.make_tensor_value_info("X", TP.FLOAT, ["B", D]))
        inputs.append(helper.make_tensor_value_info("steps", TP.INT64, []))
    else:
        inputs.append(helper.make_tensor_value_info("X", TP.FLOAT, ["B", "T", D]))
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TP.INT64, ["B"]))
    if initial_state:
        inputs.append(helper.make_tensor_value_info("h0", TP.FLOAT, [L * nd, "B", H]))

    if spec.input_kind == "index":
        # eq. (21): X_t W_xh is a row of W_xh; both directions' rows in one Gather (T, B, nd H)
        ids = g.op("Transpose", ["X"], perm=[1, 0])
        table = np.concatenate([p[f"{k}.W_xh"] for k in spec.layer_keys(0)], axis=1)
        x = g.op("Gather", [g.const("W_xh_rows", table), ids], axis=0)
    elif spec.setup == "one_to_many":
        steps1 = g.op("Reshape", ["steps", g.ints(1)])                      # (1,)
        x0 = g.op("Unsqueeze", ["X", g.ints(0)])                            # (1, B, D)
        if spec.feed == "every":                  # the vector at every step
            shape = g.op("Concat", [steps1, g.op("Shape", ["X"])], axis=0)
            x = g.op("Expand", [x0, shape])
        else:                                     # at the first step, zeros after
            rest = g.op("Sub", [steps1, g.ints(1)])
            pads = g.op("Concat", [g.ints(0, 0, 0), rest, g.ints(0, 0)], axis=0)
            x = g.op("Pad", [x0, pads])
    else:
        x = g.op("Transpose", ["X"], perm=[1, 0, 2])                  # (T, B, D)

    seq_lens = g.op("Cast", ["lengths"], to=TP.INT32) if lengths else ""

    # ---- the recurrent layers, eqs. (5)-(7)
    finals, y_h, h0_top = [], "", ""
    for layer in range(L):
        keys = spec.layer_keys(layer)
        if layer == 0 and spec.input_kind == "index":
            W = np.zeros((nd, H, nd * H), np.float32)      # direction d reads its block of rows
            for d in range(nd):
                W[d, :, d * H:(d + 1) * H] = np.eye(H, dtype=np.float32)
        else:
            W = np.stack([p[f"{k}.W_xh"].T for k in keys])                 # (nd, H, D_l)
        R = np.stack([p[f"{k}.W_hh"].T for k in keys])                     # (nd, H, H)
        Bias = np.stack([np.concatenate([p[f"{k}.b_h"], np.zeros(H, np.float32)])
                         for k in keys])                                   # (nd, 2H): Wb, Rb
        init = ""
        if initial_state:
            init = g.op("Slice", ["h0", g.ints(layer * nd), g.ints((layer + 1) * nd), g.ints(0)])
        rnn_in = [x, g.const(f"l{layer}_W", W), g.const(f"l{layer}_R", R),
                  g.const(f"l{layer}_B", Bias), seq_lens, init]
        while rnn_in[-1] == "":
            rnn_in.pop()
        y, y_h = g.op("RNN", rnn_in, [f"l{layer}_Y", f"l{layer}_Y_h"], **rnn_attrs)
        finals.append(y_h)
        h0_top = init
        # (T, nd, B, H) -> (T, B, nd H): [H_fwd, H_rev], the next layer's input
        x = g.op("Reshape", [g.op("Transpose", [y], perm=[0, 2, 1, 3]), g.ints(0, 0, -1)])

    if L > 1:
        g.op("Concat", finals, ["h_n"], axis=0)                     # (L nd, B, H), PyTorch's order
    else:
        g.op("Identity", finals, ["h_n"])

    # ---- the head, eq. (8)
    W_hy, b_y = g.const("W_hy", p["W_hy"]), g.const("b_y", p["b_y"])
    if spec.per_step_output:
        top = x                                                           # (T, B, nd H)
        if lengths:
            top = _carry_padded(g, top, y_h, h0_top, nd)
        z = g.op("Add", [g.op("MatMul", [top, W_hy]), b_y])                  # (T, B, O)
        logits = g.op("Transpose", [z], ["logits"], perm=[1, 0, 2])
    else:
        # the final states [forward at the last real step, reverse at t = 0]: (B, nd H)
        top = g.op("Reshape", [g.op("Transpose", [y_h], perm=[1, 0, 2]), g.ints(0, -1)])
        logits = g.op("Add", [g.op("MatMul", [top, W_hy]), b_y], ["logits"])
    out_op = OUTPUT_ACTIVATIONS[spec.loss]
    g.op(out_op, [logits], ["y"], **({"axis": -1} if out_op == "Softmax" else {}))

    lead = ["B", "T"] if spec.per_step_output else ["B"]
    outputs = [helper.make_tensor_value_info("y", TP.FLOAT, lead + [O]),
               helper.make_tensor_value_info("logits", TP.FLOAT, lead + [O]),
               helper.make_tensor_value_info("h_n", TP.FLOAT, [L * nd, "B", H])]
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="rnnlab", producer_version=__version__,
                              doc_string=f"rnnlab {spec}")
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    helper.set_model_props(model, {META_SPEC: json.dumps(spec.to_dict(), sort_keys=True)})
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:        # a bug of ours, not the user's input
        raise RuntimeError(f"rnnlab built an invalid ONNX graph for {spec}: {exc}") from exc
    return model


def _carry_padded(g: _Graph, top: str, y_h: str, h0_top: str, nd: int) -> str:
    """Padded steps of the top layer's output as rnnlab has them (eq. 7): the forward state at
    the last real step, the reverse direction's ``h0``; the RNN operator left zeros there."""
    steps = g.op("Gather", [g.op("Shape", [top]), g.const("index_0", np.array(0, np.int64))],
                 axis=0)                                                              # T
    t = g.op("Range", [g.const("zero", np.array(0, np.int64)), steps,
                       g.const("unit", np.array(1, np.int64))])                       # (T,)
    real = g.op("Less", [g.op("Unsqueeze", [t, g.ints(1)]),
                         g.op("Unsqueeze", ["lengths", g.ints(0)])])                  # (T, B)
    real = g.op("Unsqueeze", [real, g.ints(2)])                                       # (T, B, 1)
    fill = y_h                                                        # (nd, B, H)
    if nd == 2:
        fwd = g.op("Slice", [y_h, g.ints(0), g.ints(1), g.ints(0)])                   # (1, B, H)
        if h0_top:
            rev = g.op("Slice", [h0_top, g.ints(1), g.ints(2), g.ints(0)])
        else:
            rev = g.op("ConstantOfShape", [g.op("Shape", [fwd])])                     # zeros
        fill = g.op("Concat", [fwd, rev], axis=0)                                     # (2, B, H)
    fill = g.op("Reshape", [g.op("Transpose", [fill], perm=[1, 0, 2]), g.ints(0, -1)])  # (B, nd H)
    return str(g.op("Where", [real, top, fill]))


def spec_of(model: Any) -> RNNSpec:
    """The :class:`RNNSpec` an exported model (a ModelProto or a path) was built from."""
    onnx = _import_onnx()
    if isinstance(model, str | os.PathLike):
        model = onnx.load_model(os.fspath(model))
    props = {p.key: p.value for p in model.metadata_props}
    if META_SPEC not in props:
        raise ValueError(f"the ONNX model has no {META_SPEC!r} metadata; it was not exported by "
                         "rnnlab")
    return RNNSpec.from_dict(json.loads(props[META_SPEC]))


def export(
    params: Mapping[str, NDArray[np.floating]],
    spec: RNNSpec,
    path: str | os.PathLike[str],
    *,
    lengths: bool = False,
    initial_state: bool = False,
    opset: int = DEFAULT_OPSET,
    identity: str = "Affine",
    overwrite: bool = True,
) -> Path:
    """Write the network as an ONNX file (see the module docstring); return its path.

    Parameters are those of :func:`build`; ``overwrite=False`` refuses an existing file.  The
    file is written atomically (a temporary file renamed over the target).
    """
    model = build(params, spec, lengths=lengths, initial_state=initial_state, opset=opset,
                  identity=identity, name=Path(os.fspath(path)).stem or "rnnlab")
    return write_bytes(path, model.SerializeToString(), overwrite=overwrite, what="ONNX file")
