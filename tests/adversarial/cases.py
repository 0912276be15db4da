"""Random configurations for the adversarial tests (no PyTorch needed here: the subprocesses
under ``python -O`` use them too)."""

from __future__ import annotations

from typing import Any

import numpy as np


def random_case(seed: int) -> dict[str, Any]:
    """A random configuration and batch, drawn from ``default_rng(seed)``: every activation,
    loss and set-up, 1-3 layers, both directions, index inputs, masks or lengths, an ``h0``,
    soft targets, B and H down to 1 (the sizes that broke before), both reductions."""
    from rnnlab import RNNSpec, init_params

    rng = np.random.default_rng(seed)
    setup = rng.choice(["many_to_one", "many_to_one_all", "many_to_many", "one_to_many"])
    kw: dict[str, Any] = {
        "nonlinearity": str(rng.choice(["tanh", "sigmoid", "relu", "identity"])),
        "loss": str(rng.choice(["softmax_ce", "sigmoid_bce", "identity_mse", "relu_mse"])),
        "num_layers": int(rng.choice([1, 1, 2, 3])),
        "bidirectional": bool(rng.random() < 0.3),
        "reduction": str(rng.choice(["mean", "sum"])),
    }
    if setup == "many_to_one_all":
        kw.update(setup="many_to_one", label_steps="all")
    else:
        kw["setup"] = str(setup)
    if setup == "one_to_many":
        kw["feed"] = str(rng.choice(["every", "first"]))
    elif rng.random() < 0.2:
        kw["input_kind"] = "index"
    B, T = int(rng.choice([1, 1, 2, 3, 5])), int(rng.integers(1, 7))
    D, H, O = int(rng.integers(1, 5)), int(rng.choice([1, 1, 2, 3, 5, 8])), int(rng.integers(1, 5))
    spec = RNNSpec(D, H, O, **kw)
    params = init_params(spec, rng, scheme=str(rng.choice(["pytorch", "keras"])),
                         dtype=np.float64)
    for k in params:                                  # larger weights: saturation and growth
        params[k] *= float(rng.choice([0.5, 1.0, 2.0]))
    if spec.input_kind == "index":
        X = rng.integers(0, D, size=(B, T))
    elif spec.setup == "one_to_many":
        X = rng.standard_normal((B, D))
    else:
        X = rng.standard_normal((B, T, D))
    lead = (B,) if spec.setup == "many_to_one" else (B, T)
    if spec.loss == "softmax_ce":
        if rng.random() < 0.3:
            Y = rng.dirichlet(np.ones(O), size=lead)           # soft targets, rows sum to 1
        else:
            Y = rng.integers(0, O, size=lead)
    elif spec.loss == "sigmoid_bce":
        Y = rng.uniform(0.0, 1.0, size=lead + (O,))
    else:
        Y = rng.standard_normal(lead + (O,))
    mask = None
    if spec.setup != "one_to_many" and rng.random() < 0.4:
        mask = rng.random((B, T)) < 0.7
        mask[np.arange(B), rng.integers(0, T, size=B)] = True  # every row a real step
    h0 = (0.5 * rng.standard_normal((spec.num_layers * spec.num_directions, B, H))
          if rng.random() < 0.5 else None)
    return {"spec": spec, "params": params, "X": X, "Y": Y, "mask": mask, "h0": h0,
            "steps": T if spec.setup == "one_to_many" else None, "seed": seed}


def close(got: Any, ref: Any, tol: float) -> float:
    """``max |got - ref| / max(max |ref|, 1)``: the error relative to the array's scale."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if ref.size == 0:
        return 0.0
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1.0))
