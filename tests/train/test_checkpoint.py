"""Checkpoints: exact round trips, no pickle, atomic replacement, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rnnlab import checkpoint, optim
from rnnlab.checkpoint import CheckpointError, check_compatible, load, restore_rng, save

SHAPES = {"l0.W_xh": (3, 4), "l0.W_hh": (4, 4), "l0.b_h": (4,), "W_hy": (4, 2), "b_y": (2,)}
CONFIG = {"hidden_size": 4, "layers": [1, 2], "act": "tanh", "lr": 1e-3, "nested": {"a": None}}


def make_params(seed: int = 0, dtype: type = np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def trained_adam_state(params: dict) -> dict:
    opt = optim.Adam(lr=1e-2, amsgrad=True)
    state = opt.init(params)
    rng = np.random.default_rng(99)
    for _ in range(3):
        grads = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}
        params, state = opt.update(params, grads, state)
    return state


def assert_same_arrays(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_bit_exact(tmp_path, dtype):
    params = make_params(1, dtype)
    params["b_y"][0] = np.nextafter(dtype(1), dtype(2))   # a value JSON/float text would blur
    state = trained_adam_state(params)
    rng = np.random.default_rng(2024)
    rng.standard_normal(7)
    path = save(tmp_path / "ckpt.npz", params=params, opt_state=state, rng=rng, epoch=3,
                step=1234, config=CONFIG, extra={"best_val": 0.25, "history": [1.0, 0.5]})
    assert path == tmp_path / "ckpt.npz"
    ck = load(path)
    assert_same_arrays(ck.params, params)
    assert ck.opt_state is not None
    assert list(ck.opt_state) == list(state) and ck.opt_state["step"] == 3
    for slot in ("m", "v", "v_max"):
        assert_same_arrays(ck.opt_state[slot], state[slot])
    assert (ck.epoch, ck.step, ck.config, ck.path) == (3, 1234, CONFIG, path)
    assert ck.extra == {"best_val": 0.25, "history": [1.0, 0.5]}
    assert ck.format_version == checkpoint.FORMAT_VERSION
    restored = restore_rng(ck)
    assert np.array_equal(restored.standard_normal(100), rng.standard_normal(100))
    assert restored.integers(0, 2**63, 10).tolist() == rng.integers(0, 2**63, 10).tolist()


def test_restored_optimizer_state_continues_identically(tmp_path):
    params = make_params(2)
    opt = optim.RMSprop(momentum=0.9, centered=True)
    state = opt.init(params)
    grads = {k: np.ones_like(v) for k, v in params.items()}
    opt.update_(params, grads, state)
    save(tmp_path / "c", params=params, opt_state=state, epoch=0, step=1, config={})
    ck = load(tmp_path / "c")
    assert ck.opt_state is not None
    p1, s1 = opt.update(params, grads, state)
    opt.update_(ck.params, grads, ck.opt_state)  # loaded arrays are writable
    assert_same_arrays(p1, ck.params)
    assert_same_arrays(optim.flatten_state(s1), optim.flatten_state(ck.opt_state))


def test_optional_parts_absent(tmp_path):
    params = make_params()
    save(tmp_path / "c", params=params, epoch=0, step=0, config={})
    ck = load(tmp_path / "c")
    assert ck.opt_state is None and ck.rng_state is None and ck.extra == {} and ck.config == {}
    with pytest.raises(ValueError, match="holds no RNG state"):
        restore_rng(ck)
    save(tmp_path / "s", params=params, opt_state=optim.SGD().init(params), epoch=0, step=0,
         config={})
    assert load(tmp_path / "s").opt_state == {"step": 0}


@pytest.mark.parametrize("bitgen", ["PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"])
def test_every_bit_generator_continues_the_stream(tmp_path, bitgen):
    rng = np.random.Generator(getattr(np.random, bitgen)(7))
    rng.random(3)
    rng.integers(0, 10, dtype=np.uint32)  # leaves a buffered 32-bit half in some generators
    save(tmp_path / "c", params=make_params(), rng=rng, epoch=0, step=0, config={})
    restored = restore_rng(load(tmp_path / "c"))
    assert type(restored.bit_generator).__name__ == bitgen
    assert restored.integers(0, 2**32, 50, dtype=np.uint32).tolist() == \
        rng.integers(0, 2**32, 50, dtype=np.uint32).tolist()
    assert np.array_equal(restored.random(50), rng.random(50))


def test_config_normalisation_and_json_errors(tmp_path):
    params = make_params()
    cfg = {"sizes": (1, 2), "n": np.int64(3), "x": np.float32(0.5), "flag": np.bool_(True)}
    save(tmp_path / "c", params=params, epoch=0, step=0, config=cfg)
    assert load(tmp_path / "c").config == {"sizes": [1, 2], "n": 3, "x": 0.5, "flag": True}
    with pytest.raises(TypeError, match=r"config\['w'\] is not JSON-serialisable: ndarray"):
        save(tmp_path / "d", params=params, epoch=0, step=0, config={"w": np.zeros(2)})
    with pytest.raises(TypeError, match=r"config\['a'\] keys must be str"):
        save(tmp_path / "d", params=params, epoch=0, step=0, config={"a": {1: 2}})
    with pytest.raises(TypeError, match="extra.*not JSON-serialisable"):
        save(tmp_path / "d", params=params, epoch=0, step=0, config={}, extra={"f": object()})
    assert not (tmp_path / "d").exists()


def test_file_is_a_plain_npz_without_pickle(tmp_path):
    path = save(tmp_path / "c.npz", params=make_params(), opt_state=trained_adam_state(
        make_params()), rng=np.random.default_rng(0), epoch=1, step=2, config=CONFIG)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    assert all(n.endswith(".npy") for n in names)
    with np.load(path, allow_pickle=False) as z:
        assert z["__meta__"].dtype == np.uint8
        meta = json.loads(z["__meta__"].tobytes())
        assert meta["format"] == "rnnlab-checkpoint" and meta["format_version"] == 1
        assert z["params/l0.W_hh"].shape == (4, 4) and "opt/m/l0.W_hh" in z.files
        assert all(z[n].dtype != object for n in z.files)
    assert isinstance(meta["rng_state"]["state"]["state"], int)  # 128-bit int in JSON


@pytest.mark.parametrize("where", ["params", "opt_state"])
def test_object_arrays_are_refused(tmp_path, where):
    params = make_params()
    bad = np.array([{"a": 1}, None], dtype=object)
    kwargs = {"params": dict(params, evil=bad)} if where == "params" else {
        "params": params, "opt_state": {"step": 1, "m": {"evil": bad}}}
    with pytest.raises(TypeError, match="dtype object.*no object arrays"):
        save(tmp_path / "c", epoch=0, step=0, config={}, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    params = make_params()
    with pytest.raises(ValueError, match="epoch must be >= 0, got -1"):
        save(tmp_path / "c", params=params, epoch=-1, step=0, config={})
    with pytest.raises(TypeError, match="step must be an int"):
        save(tmp_path / "c", params=params, epoch=0, step=1.0, config={})
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        save(tmp_path / "c", params=params, rng=np.random.RandomState(0),  # noqa: NPY002
             epoch=0, step=0, config={})
    with pytest.raises(TypeError, match="params must be a non-empty mapping"):
        save(tmp_path / "c", params={}, epoch=0, step=0, config={})
    with pytest.raises(TypeError, match=r"params\['b_y'\] must be a numpy array"):
        save(tmp_path / "c", params=dict(params, b_y=[1.0]), epoch=0, step=0, config={})


# --------------------------------------------------------------------------- load errors


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint file not found.*nope.npz"):
        load(tmp_path / "nope.npz")


def test_directory_paths(tmp_path):
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        load(tmp_path)
    with pytest.raises(IsADirectoryError, match="checkpoint path is a directory"):
        save(tmp_path, params=make_params(), epoch=0, step=0, config={})


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", b"PK\x03\x04garbage"])
def test_not_an_npz(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path}.*not a valid rnnlab checkpoint"):
        load(path)


def test_single_npy_and_foreign_npz(tmp_path):
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(CheckpointError, match="single .npy array"):
        load(npy)
    foreign = tmp_path / "f.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(CheckpointError, match=f"{foreign} is not an rnnlab checkpoint"):
        load(foreign)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, fraction):
    path = save(tmp_path / "c.npz", params=make_params(), rng=np.random.default_rng(0),
                epoch=0, step=0, config=CONFIG)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=str(path)):
        load(path)


def test_corrupted_array_bytes_are_detected(tmp_path):
    params = {"w": np.arange(10_000, dtype=np.float64)}
    path = save(tmp_path / "c.npz", params=params, epoch=0, step=0, config={})
    data = bytearray(path.read_bytes())
    i = data.find(np.arange(5000, 5001, dtype=np.float64).tobytes())
    data[i + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{path} is corrupt or truncated.*CRC"):
        load(path)


def _write_meta(path: Path, meta: dict, **arrays) -> None:
    blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, __meta__=blob, **arrays)


def test_wrong_format_version(tmp_path):
    path = tmp_path / "v99.npz"
    _write_meta(path, {"format": "rnnlab-checkpoint", "format_version": 99})
    with pytest.raises(CheckpointError, match=f"{path} has checkpoint format version 99; .*"
                                              "reads format version 1"):
        load(path)


def test_inconsistent_members(tmp_path):
    good = save(tmp_path / "g.npz", params=make_params(), epoch=0, step=0, config={})
    with np.load(good) as z:
        meta = json.loads(z["__meta__"].tobytes())
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    missing = tmp_path / "m.npz"
    _write_meta(missing, meta, **{k: v for k, v in arrays.items() if k != "params/b_y"})
    with pytest.raises(CheckpointError, match=f"{missing} is corrupt: .*params/b_y"):
        load(missing)
    extra = tmp_path / "e.npz"
    _write_meta(extra, meta, **arrays, stray=np.zeros(1))
    with pytest.raises(CheckpointError, match=r"unexpected entries \['stray'\]"):
        load(extra)


# --------------------------------------------------------------------------- atomicity


def test_overwrite_keeps_permissions_sane_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "c.npz"
    for epoch in range(3):
        save(path, params=make_params(epoch), epoch=epoch, step=0, config={})
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]
    assert load(path).epoch == 2
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failure_while_writing_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = save(tmp_path / "c.npz", params=make_params(0), epoch=1, step=1, config={})

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", boom)
    with pytest.raises(OSError, match="No space left"):
        save(path, params=make_params(5), epoch=2, step=2, config={})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]
    ck = load(path)
    assert ck.epoch == 1
    assert_same_arrays(ck.params, make_params(0))


def test_leftover_temp_file_does_not_break_the_next_save(tmp_path):
    path = save(tmp_path / "c.npz", params=make_params(0), epoch=1, step=1, config={})
    stale = tmp_path / ".c.npz.0123456789abcdef.tmp"
    stale.write_bytes(b"PK\x03\x04 half-written garbage")
    save(path, params=make_params(1), epoch=2, step=2, config={})
    assert load(path).epoch == 2
    assert stale.exists()  # not ours to delete: it might belong to a live writer


def test_unwritable_locations(tmp_path):
    params = make_params()
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(NotADirectoryError, match=f"cannot write checkpoint {regular}/c.npz"):
        save(regular / "c.npz", params=params, epoch=0, step=0, config={})
    with pytest.raises(FileNotFoundError, match="cannot write checkpoint .*nodir/c.npz"):
        save(tmp_path / "nodir" / "c.npz", params=params, epoch=0, step=0, config={})


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=f"cannot write checkpoint {ro}/c.npz"):
            save(ro / "c.npz", params=make_params(), epoch=0, step=0, config={})
    finally:
        ro.chmod(0o755)


WRITER = """
import sys
import numpy as np
from rnnlab import checkpoint
params = {"big": np.random.default_rng(1).standard_normal(int(sys.argv[2])), "tag": np.ones(3)}
print("ready", flush=True)
while True:
    checkpoint.save(sys.argv[1], params=params, epoch=1, step=1, config={"v": "new"})
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_save_leaves_old_or_new_checkpoint(tmp_path):
    n = 3_000_000  # 24 MB of float64: each save takes tens of milliseconds
    path = tmp_path / "ckpt.npz"
    old = {"big": np.random.default_rng(0).standard_normal(n), "tag": np.zeros(3)}
    new = {"big": np.random.default_rng(1).standard_normal(n), "tag": np.ones(3)}
    src = str(Path(checkpoint.__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    delays = np.random.default_rng(2024).uniform(0.0, 0.3, size=6)
    outcomes = []
    for delay in delays:
        save(path, params=old, epoch=0, step=0, config={"v": "old"})  # a good checkpoint
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(float(delay))
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        ck = load(path)
        expected = new if ck.config == {"v": "new"} else old
        assert ck.config in ({"v": "old"}, {"v": "new"})
        assert ck.epoch == (1 if expected is new else 0)
        assert_same_arrays(ck.params, expected)
        outcomes.append(ck.config["v"])
    leftovers = list(tmp_path.glob(".ckpt.npz.*.tmp"))
    assert leftovers, f"no kill landed in the middle of a write ({outcomes}); proved nothing"
    # The next save works despite the half-written temporary files.
    save(path, params=old, epoch=5, step=5, config={"v": "final"})
    assert load(path).epoch == 5


# --------------------------------------------------------------------------- compatibility


def test_check_compatible_accepts_matching_model(tmp_path):
    params = make_params()
    save(tmp_path / "c", params=params, opt_state=trained_adam_state(params), epoch=0, step=0,
         config=dict(CONFIG, layers=(1, 2)))
    ck = load(tmp_path / "c")
    check_compatible(ck, make_params(9), CONFIG)
    check_compatible(ck, make_params(9))


def test_check_compatible_names_mismatches(tmp_path):
    params = make_params()
    save(tmp_path / "c", params=params, opt_state=trained_adam_state(params), epoch=0, step=0,
         config=CONFIG)
    ck = load(tmp_path / "c")
    template = dict(make_params(), **{"l0.W_hh": np.zeros((8, 8))})
    with pytest.raises(ValueError, match=r"params\['l0.W_hh'\] has shape \(4, 4\) in the "
                                         r"checkpoint but \(8, 8\) in the model"):
        check_compatible(ck, template, CONFIG)
    with pytest.raises(ValueError, match=r"params\['b_y'\] has dtype float64 in the checkpoint "
                                         "but float32"):
        check_compatible(ck, dict(make_params(), b_y=np.zeros(2, np.float32)))
    with pytest.raises(ValueError, match=r"params\['extra'\] is in the model but not in the "
                                         r"checkpoint"):
        check_compatible(ck, dict(make_params(), extra=np.zeros(1)))
    smaller = {k: v for k, v in make_params().items() if k != "b_y"}
    with pytest.raises(ValueError, match=r"params\['b_y'\] is in the checkpoint but not in the "
                                         r"model.*opt_state\['m'\] has keys"):
        check_compatible(ck, smaller)
    with pytest.raises(ValueError, match=r"config\['hidden_size'\] is 4 in the checkpoint but 8 "
                                         r"in the current config.*config\['new'\] is <missing>"):
        check_compatible(ck, make_params(), dict(CONFIG, hidden_size=8, new=1))
    check_compatible(ck, make_params(), dict(CONFIG, lr=0.5), config_keys=["hidden_size"])
    with pytest.raises(ValueError, match=r"config\['lr'\] is 0.001 in the checkpoint but 0.5"):
        check_compatible(ck, make_params(), dict(CONFIG, lr=0.5), config_keys=["lr"])
