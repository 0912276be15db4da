"""Sequential MNIST / Fashion-MNIST: file resolution (data_dir, system, cache, download), views,
permutation, scaling, validation carve and bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from rnnlab import data
from rnnlab.data.download import DownloadError
from rnnlab.data.idx import IDXError, write_idx
from rnnlab.data.images import (
    ROLES,
    SOURCES,
    debian_directories,
    divisors,
    locate,
    pixel_permutation,
    read_image_set,
    sequence_view,
)

from .conftest import Server, sha256, tiny_arrays, write_set

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- views


def test_row_view_equals_reshape() -> None:
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    rows = sequence_view(imgs, 28)
    assert rows.shape == (5, 28, 28)
    np.testing.assert_array_equal(rows, imgs)  # step t is image row t
    pixels = sequence_view(imgs, 784)
    assert pixels.shape == (5, 784, 1)
    np.testing.assert_array_equal(pixels[:, :, 0], imgs.reshape(5, 784))


@pytest.mark.parametrize("steps", divisors(784))
def test_every_divisor_of_784(steps: int) -> None:
    imgs = np.arange(2 * 784).reshape(2, 28, 28)
    x = sequence_view(imgs, steps)
    assert x.shape == (2, steps, 784 // steps)
    np.testing.assert_array_equal(x.reshape(2, 784), imgs.reshape(2, 784))


@pytest.mark.parametrize("steps", [3, 5, 27, 100, 785])
def test_steps_must_divide(steps: int) -> None:
    with pytest.raises(ValueError, match=rf"steps={steps} does not divide the 784 values.*28x28"):
        sequence_view(np.zeros((1, 28, 28)), steps)


def test_permutation_fixed_by_seed_and_bijection() -> None:
    p = pixel_permutation(784, 7)
    np.testing.assert_array_equal(p, pixel_permutation(784, 7))
    assert not np.array_equal(p, pixel_permutation(784, 8))
    np.testing.assert_array_equal(np.sort(p), np.arange(784))
    imgs = np.random.default_rng(1).integers(0, 256, (3, 28, 28))
    x = sequence_view(imgs, 784, p)
    np.testing.assert_array_equal(x[:, :, 0], imgs.reshape(3, 784)[:, p])
    inverse = np.argsort(p)
    np.testing.assert_array_equal(x[:, inverse, 0], imgs.reshape(3, 784))
    with pytest.raises(ValueError, match="bijection"):
        sequence_view(imgs, 784, np.zeros(784, np.int64))


# --------------------------------------------------------------------------- loading from data_dir


def test_load_from_data_dir(tiny_set: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, arrays = tiny_set
    ds = data.load("mnist", data_dir=folder, seed=3)
    assert ds.meta["origin"] == "data_dir"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (36, 4, 12)
    assert ds.train.X.shape == (36, 28, 28) and ds.train.X.dtype == np.float32
    assert ds.input_size == 28 and ds.output_size == 10 and ds.task == "sequence_classification"
    assert 0.0 <= ds.train.X.min() and ds.train.X.max() <= 1.0
    np.testing.assert_allclose(ds.test.X * 255, arrays["test_images"], atol=1e-3)
    np.testing.assert_array_equal(ds.test.y, arrays["test_labels"])
    # the validation carve: disjoint, covers the training file, fixed by the seed
    flat = arrays["train_images"].reshape(40, 784).astype(np.float32) / 255
    got = np.concatenate([ds.train.X, ds.val.X]).reshape(40, 784)
    order = np.lexsort(got.T)
    np.testing.assert_array_equal(got[order], flat[np.lexsort(flat.T)])
    again = data.load("mnist", data_dir=folder, seed=3)
    np.testing.assert_array_equal(again.val.X, ds.val.X)
    other = data.load("mnist", data_dir=folder, seed=4)
    assert not np.array_equal(other.val.y, ds.val.y) or not np.array_equal(other.val.X, ds.val.X)


def test_raw_files_and_subdirectory(tmp_path: Path) -> None:
    arrays = tiny_arrays(1)
    write_set(tmp_path / "root" / "fashion-mnist", arrays, gz=False)
    ds = data.load("fashion-mnist", data_dir=tmp_path / "root", steps=784)
    assert ds.train.X.shape[1:] == (784, 1)
    assert ds.meta["classes"][0] == "T-shirt/top"
    assert ds.meta["files"]["test_images"].endswith("t10k-images-idx3-ubyte")


def test_permuted_and_standardised(tiny_set: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, arrays = tiny_set
    ds = data.load("permuted-mnist", data_dir=folder, permutation_seed=5)
    assert ds.name == "permuted-mnist" and ds.train.X.shape[1:] == (784, 1)
    perm = pixel_permutation(784, 5)
    np.testing.assert_array_equal(ds.meta["permutation"], perm)
    test_flat = arrays["test_images"].reshape(12, 784).astype(np.float32) / 255
    np.testing.assert_allclose(ds.test.X[:, :, 0], test_flat[:, perm], rtol=1e-6)
    rows = data.load("permuted-mnist", data_dir=folder, steps=28, permutation_seed=5)
    np.testing.assert_array_equal(rows.test.X.reshape(12, 784), ds.test.X.reshape(12, 784))
    std = data.load("mnist", data_dir=folder, scale="standard")
    assert abs(float(std.train.X.mean())) < 1e-5
    assert abs(float(std.train.X.std()) - 1.0) < 1e-4
    mean, sd = std.meta["pixel_mean"], std.meta["pixel_std"]
    np.testing.assert_allclose(std.test.X.reshape(12, 784), (test_flat - mean) / sd, atol=1e-5)


# --------------------------------------------------------------------------- bad input


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data directory .*nowhere.* does not exist"):
        data.load("mnist", data_dir=tmp_path / "nowhere")


def test_data_dir_without_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"not in data directory.*train-images-idx3-ubyte"):
        data.load("fashion-mnist", data_dir=tmp_path)


def test_steps_not_dividing_image(tiny_set: tuple[Path, dict[str, np.ndarray]]) -> None:
    with pytest.raises(ValueError, match=r"steps=30 does not divide the 784 values"):
        data.load("mnist", data_dir=tiny_set[0], steps=30)


def test_labels_outside_class_range(tmp_path: Path) -> None:
    arrays = tiny_arrays()
    arrays["train_labels"][3] = 12
    write_set(tmp_path, arrays)
    with pytest.raises(IDXError, match=r"train-labels-idx1-ubyte.gz: label 12 is outside the"):
        data.load("mnist", data_dir=tmp_path)


def test_length_mismatch(tmp_path: Path) -> None:
    arrays = tiny_arrays()
    arrays["test_labels"] = arrays["test_labels"][:-1]
    paths = write_set(tmp_path, arrays)
    with pytest.raises(IDXError, match="12 images but .* 11 labels"):
        read_image_set(paths["test_images"], paths["test_labels"])


def test_truncated_file_named(tmp_path: Path) -> None:
    paths = write_set(tmp_path, tiny_arrays())
    raw = gzip.decompress(paths["test_images"].read_bytes())
    paths["test_images"].write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(IDXError, match=r"t10k-images-idx3-ubyte.gz: truncated IDX file"):
        data.load("mnist", data_dir=tmp_path)


def test_labels_file_in_place_of_images(tmp_path: Path) -> None:
    arrays = tiny_arrays()
    write_set(tmp_path, arrays)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", arrays["train_labels"])
    with pytest.raises(IDXError, match="train-images-idx3-ubyte.gz: expected 3 dimensions"):
        data.load("mnist", data_dir=tmp_path)


# --------------------------------------------------------------------------- cache and download


def serve_set(server: Server, arrays: dict[str, np.ndarray], tmp: Path) -> dict[str, str]:
    files = write_set(tmp / "served", arrays)
    sums = {}
    for path in files.values():
        body = path.read_bytes()
        server.routes[f"/mirror/{path.name}"] = body
        sums[path.name] = sha256(body)
    return sums


def test_download_then_cache(http_server: Server, tmp_path: Path) -> None:
    arrays = tiny_arrays(2)
    sums = serve_set(http_server, arrays, tmp_path)
    opts = dict(
        cache_dir=tmp_path / "cache", mirrors=[http_server.url("/nothing"),
                                               http_server.url("/mirror")],
        checksums=sums, system_dirs=(),
    )
    ds = data.load("fashion-mnist", **opts)
    assert ds.meta["origin"] == "download"
    np.testing.assert_array_equal(ds.test.y, arrays["test_labels"])
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(sums)
    n_hits = len(http_server.hits)
    ds2 = data.load("fashion-mnist", **opts)
    assert ds2.meta["origin"] == "cache" and len(http_server.hits) == n_hits
    # a damaged cache file is fetched again
    (tmp_path / "cache" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    ds3 = data.load("fashion-mnist", **opts)
    assert ds3.meta["origin"] == "download"
    assert http_server.hits[n_hits:] == ["/nothing/t10k-labels-idx1-ubyte.gz",
                                        "/mirror/t10k-labels-idx1-ubyte.gz"]


def test_download_failure_leaves_no_partial(http_server: Server, tmp_path: Path) -> None:
    arrays = tiny_arrays(3)
    sums = serve_set(http_server, arrays, tmp_path)
    http_server.routes["/mirror/train-images-idx3-ubyte.gz"] = (
        "drop", http_server.routes["/mirror/train-images-idx3-ubyte.gz"])
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"mnist: could not download train-images-idx3-ubyte"):
        data.load("mnist", cache_dir=cache, mirrors=[http_server.url("/mirror")], checksums=sums)
    assert not list(cache.glob("*.part"))
    assert not (cache / "train-images-idx3-ubyte.gz").exists()


def test_corrupt_served_file_with_matching_checksum(http_server: Server, tmp_path: Path) -> None:
    """A file that verifies (the checksum table itself is wrong) still fails the strict parser."""
    arrays = tiny_arrays(4)
    sums = serve_set(http_server, arrays, tmp_path)
    body = http_server.routes["/mirror/t10k-images-idx3-ubyte.gz"]
    assert isinstance(body, bytes)
    broken = gzip.compress(gzip.decompress(body)[:-100])
    http_server.routes["/mirror/t10k-images-idx3-ubyte.gz"] = broken
    sums["t10k-images-idx3-ubyte.gz"] = sha256(broken)
    with pytest.raises(IDXError, match=r"t10k-images-idx3-ubyte.gz: truncated"):
        data.load("mnist", cache_dir=tmp_path / "c", mirrors=[http_server.url("/mirror")],
                  checksums=sums)


def test_no_download_no_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"not in the cache .*download=False.*dataset-fash"):
        data.load("fashion-mnist", cache_dir=tmp_path, download=False, system_dirs=())


def test_system_dir_override(tmp_path: Path) -> None:
    arrays = tiny_arrays(5)
    write_set(tmp_path / "sys", arrays)
    paths, origin = locate("fashion-mnist", system_dirs=[tmp_path / "absent", tmp_path / "sys"],
                           cache_dir=tmp_path / "cache", download_missing=False)
    assert origin == "system" and paths["train_images"].parent == tmp_path / "sys"


def test_canonical_sources_are_well_formed() -> None:
    for source in SOURCES.values():
        assert set(source.sha256) == {stem + ".gz" for stem in ROLES.values()}
        assert all(len(h) == 64 for h in source.sha256.values())
        assert all(m.startswith(("http://", "https://")) for m in source.mirrors)


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_debian_fashion_mnist(tmp_path: Path) -> None:
    paths, origin = locate("fashion-mnist", cache_dir=tmp_path, download_missing=False)
    assert origin == "system"
    assert paths["test_images"].parent == DEBIAN_DIR
    images, labels = read_image_set(paths["test_images"], paths["test_labels"])
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 1000))
    if debian_directories("dataset-fashion-mnist"):
        assert DEBIAN_DIR in debian_directories("dataset-fashion-mnist")


def test_pixel_moments_are_numpys_mean_and_std_from_the_histogram() -> None:
    """The 8-bit shortcut (a histogram counted in blocks) gives the mean and std of the float32
    pixels that NumPy's float64 reductions give, within their rounding, and the same float32
    values a standardised split is built from; other dtypes take NumPy's reductions."""
    from rnnlab.data.images import pixel_moments

    rng = np.random.default_rng(0)
    for shape in ((3, 5), (1500, 784)):                    # one block, and several
        raw = rng.integers(0, 256, shape).astype(np.uint8)
        raw[0, :3] = (0, 255, 17)
        scaled = raw.astype(np.float32) / np.float32(255.0)
        mean, std = pixel_moments(raw, scaled)
        np.testing.assert_allclose(mean, scaled.mean(dtype=np.float64), rtol=1e-13)
        np.testing.assert_allclose(std, scaled.std(dtype=np.float64), rtol=1e-13)
        assert np.float32(mean) == np.float32(scaled.mean(dtype=np.float64))
        assert np.float32(std) == np.float32(scaled.std(dtype=np.float64))
    wide = rng.integers(0, 1000, (4, 6)).astype(np.uint16)
    scaled = wide.astype(np.float32) / np.float32(255.0)
    assert pixel_moments(wide, scaled) == (float(scaled.mean(dtype=np.float64)),
                                           float(scaled.std(dtype=np.float64)))
    flat = np.full((2, 3), 7, np.uint8)
    assert pixel_moments(flat, flat.astype(np.float32) / np.float32(255.0))[1] == 0.0
