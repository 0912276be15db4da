"""benchmarks.step compares like with like: every implementation of a config starts from the
same parameters and batch, so their first losses agree (float32 rounding; float64 tighter)."""

import dataclasses

import pytest

pytest.importorskip("torch")
pytest.importorskip("threadpoolctl")

from benchmarks import step as bench  # noqa: E402


@pytest.mark.parametrize("name", [*bench.LAYOUT_CONFIGS, "a", "c"])
def test_first_losses_agree(name):
    # the config's kind (layers, directions, dtype, index inputs, loss) at a small size
    cfg = dataclasses.replace(bench.CONFIGS[name], B=8, T=6, H=16)
    impls = ["rnnlab", "torch", "torch-bf"]
    losses = {impl: bench.MAKERS[impl](cfg, 1)() for impl in impls}
    tol = 1e-10 if cfg.dtype == "float64" else 2e-5
    for impl in impls[1:]:
        assert losses[impl] == pytest.approx(losses["rnnlab"], rel=tol), losses


def test_layout_flops():
    a, a2, ab = (bench.CONFIGS[k] for k in ("a", "a2", "ab"))
    B, T, D, H, C = a.B, a.T, a.D, a.H, a.C
    assert a.flops() == 2.0 * B * T * (D * H + H * H) + 2.0 * B * H * C
    assert a2.flops() == a.flops() + 2.0 * B * T * (H * H + H * H)
    assert ab.flops() == 2 * 2.0 * B * T * (D * H + H * H) + 2.0 * B * 2 * H * C
