"""Sequential MNIST and Fashion-MNIST (seed 000): IDX files read as sequences.

Where the four IDX files come from, in order:

1. ``data_dir`` when given (the files directly in it, or in ``data_dir/<name>/`` or the
   torchvision layout ``data_dir/MNIST/raw/``); nothing else is tried then;
2. a system directory -- Debian's ``dataset-fashion-mnist`` package installs
   ``/usr/share/datasets/fashion-mnist/`` (``dpkg -L dataset-fashion-mnist`` is asked too);
3. the cache directory (``cache_dir``, default ``$RNNLAB_CACHE_DIR`` or
   ``$XDG_CACHE_HOME/rnnlab`` or ``~/.cache/rnnlab``, then ``/<name>``), checked by SHA-256;
4. a download from the canonical mirrors into the cache, verified by SHA-256.

A 28 x 28 image becomes a sequence of ``T`` steps of ``D = 784 / T`` pixels in row-major order:
``T = 28`` is row by row, ``T = 784`` pixel by pixel, and any divisor of 784 works.  Permuted MNIST
applies one fixed pixel permutation, drawn from ``default_rng(permutation_seed)``, before the split
into steps.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .base import Dataset, Split, check_fraction, check_positive_int, validation_indices
from .download import DownloadError, RemoteFile, download, mirror_urls, sha256_file
from .idx import IDXError, read_idx

log = logging.getLogger("rnnlab.data")

#: The four files of an MNIST-style set, by role (names without ``.gz``).
ROLES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class ImageSource:
    """Where an MNIST-style set can be found and how to check it."""

    name: str
    sha256: Mapping[str, str]  # "<stem>.gz" -> hex SHA-256 of the canonical gzip file
    mirrors: tuple[str, ...]  # base URLs, tried in order
    classes: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    debian_package: str | None = None
    subdirs: tuple[str, ...] = ()
    image_shape: tuple[int, int] = (28, 28)   # every image of the set is this many pixels


SOURCES: dict[str, ImageSource] = {
    "mnist": ImageSource(
        name="mnist",
        sha256={
            "train-images-idx3-ubyte.gz": (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
            ),
            "train-labels-idx1-ubyte.gz": (
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
            ),
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        classes=tuple(str(d) for d in range(10)),
        subdirs=("mnist", "MNIST/raw"),
    ),
    "fashion-mnist": ImageSource(
        name="fashion-mnist",
        sha256={
            "train-images-idx3-ubyte.gz": (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
            ),
            "train-labels-idx1-ubyte.gz": (
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
            ),
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        debian_package="dataset-fashion-mnist",
        subdirs=("fashion-mnist", "fashion", "FashionMNIST/raw"),
    ),
}


def default_cache_dir() -> Path:
    """``$RNNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnlab``, else ``~/.cache/rnnlab``."""
    if os.environ.get("RNNLAB_CACHE_DIR"):
        return Path(os.environ["RNNLAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rnnlab"


def _candidates(stem: str) -> list[str]:
    alt = stem.replace("-idx", ".idx")  # the names some archives unpack to
    return [stem + ".gz", stem, alt + ".gz", alt]


def find_in_directory(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in ``directory`` by role, or None if any is missing."""
    found: dict[str, Path] = {}
    for role, stem in ROLES.items():
        for name in _candidates(stem):
            if (directory / name).is_file():
                found[role] = directory / name
                break
        else:
            return None
    return found


def debian_directories(package: str) -> list[Path]:
    """Directories holding ``*-ubyte*`` files of an installed Debian package (via ``dpkg -L``)."""
    dpkg = shutil.which("dpkg")
    if dpkg is None:
        return []
    try:
        out = subprocess.run(
            [dpkg, "-L", package], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    dirs = {Path(line).parent for line in out.stdout.splitlines() if "-ubyte" in line}
    return sorted(dirs)


def _search_dirs(root: Path, source: ImageSource) -> list[Path]:
    return [root] + [root / sub for sub in source.subdirs]


def locate(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download_missing: bool = True,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    system_dirs: Sequence[str | os.PathLike[str]] | None = None,
    timeout: float = 30.0,
) -> tuple[dict[str, Path], str]:
    """Find (or fetch) the four IDX files of ``name``.

    Returns
    -------
    (dict, str)
        Paths by role (``train_images``, ``train_labels``, ``test_images``, ``test_labels``) and
        the origin: ``"data_dir"``, ``"system"``, ``"cache"`` or ``"download"``.
    """
    source = SOURCES[name]
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"data directory {str(root)!r} does not exist (or is not a directory); pass "
                f"data_dir= a directory holding the {name} IDX files "
                f"({', '.join(s + '[.gz]' for s in ROLES.values())}), or leave it out to use the "
                "cache and download"
            )
        for folder in _search_dirs(root, source):
            found = find_in_directory(folder)
            if found is not None:
                return found, "data_dir"
        searched = ", ".join(str(d) for d in _search_dirs(root, source))
        raise FileNotFoundError(
            f"the {name} IDX files are not in data directory {str(root)!r} (searched {searched}); "
            f"it needs {', '.join(s + '[.gz]' for s in ROLES.values())}"
        )

    if system_dirs is None:
        systems = [Path(d) for d in source.system_dirs]
        if source.debian_package is not None and not any(d.is_dir() for d in systems):
            systems += debian_directories(source.debian_package)
    else:
        systems = [Path(d) for d in system_dirs]
    for folder in systems:
        found = find_in_directory(folder) if folder.is_dir() else None
        if found is not None:
            return found, "system"

    sums = dict(source.sha256 if checksums is None else checksums)
    bases = tuple(source.mirrors if mirrors is None else mirrors)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / name
    paths: dict[str, Path] = {}
    fetched = False
    for role, stem in ROLES.items():
        filename = stem + ".gz"
        if filename not in sums:
            raise ValueError(f"no SHA-256 known for {filename}; checksums= must cover all four")
        path = cache / filename
        if path.is_file() and sha256_file(path) == sums[filename].lower():
            paths[role] = path
            continue
        if not download_missing:
            raise FileNotFoundError(
                f"{name}: {filename} is not in the cache {str(cache)!r} and download=False; pass "
                "data_dir= a directory with the IDX files"
                + (
                    f", install Debian's {source.debian_package} package"
                    if source.debian_package
                    else ""
                )
                + ", or allow the download"
            )
        remote = RemoteFile(filename, sums[filename], mirror_urls(bases, filename))
        paths[role] = download(remote, cache, timeout=timeout, log=log.info)
        fetched = True
    return paths, "download" if fetched else "cache"


def read_image_set(
    images_path: Path, labels_path: Path, num_classes: int = 10,
    image_shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one (images, labels) pair with strict checks.

    ``image_shape``, when given, is the ``(H, W)`` every image must have (28 x 28 for MNIST and
    Fashion-MNIST): a file of other images is the wrong file, refused rather than read as other
    sequences.

    Returns
    -------
    (ndarray, ndarray)
        ``(N, H, W)`` uint8 images and ``(N,)`` int64 labels in ``[0, num_classes)``.
    """
    images = read_idx(images_path, ndim=3, dtype=np.uint8)
    if image_shape is not None and images.shape[1:] != tuple(image_shape):
        H, W = image_shape
        raise IDXError(
            f"{images_path}: expected {H}x{W} images, found "
            f"{'x'.join(map(str, images.shape[1:]))} (shape {images.shape}); is this the right "
            "file?"
        )
    labels = read_idx(labels_path, ndim=1, dtype=np.uint8).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise IDXError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; the pair must have equal lengths"
        )
    if labels.size and labels.max() >= num_classes:
        raise IDXError(
            f"{labels_path}: label {int(labels.max())} is outside the class range "
            f"[0, {num_classes}); is this the right labels file?"
        )
    return images, labels


def divisors(n: int) -> list[int]:
    """All positive divisors of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def check_steps(steps: int, size: int, what: str) -> int:
    """Validate that ``steps`` divides ``size``; return ``size // steps`` (the features D)."""
    steps = check_positive_int("steps", steps)
    if size % steps:
        raise ValueError(
            f"steps={steps} does not divide the {size} values of {what}; choose T among "
            f"{divisors(size)} (D = {size} / T features per step)"
        )
    return size // steps


def pixel_permutation(n_pixels: int, seed: int) -> np.ndarray:
    """A fixed random bijection of ``range(n_pixels)``: ``default_rng(seed).permutation``."""
    return np.random.default_rng(seed).permutation(n_pixels)


def sequence_view(
    images: np.ndarray, steps: int, permutation: np.ndarray | None = None
) -> np.ndarray:
    """Images as sequences.

    Parameters
    ----------
    images : ndarray
        ``(N, H, W)`` or ``(N, P)``.
    steps : int
        ``T``; must divide ``P = H * W``.
    permutation : ndarray, optional
        ``(P,)`` pixel order applied before splitting into steps (permuted MNIST).

    Returns
    -------
    ndarray
        ``(N, T, P // T)``: step ``t`` holds flat pixels ``order[t*D:(t+1)*D]``, a view when no
        permutation is given.
    """
    flat = images.reshape(images.shape[0], -1)
    d = check_steps(steps, flat.shape[1], f"a {'x'.join(map(str, images.shape[1:]))} image")
    if permutation is not None:
        if sorted(permutation.tolist()) != list(range(flat.shape[1])):
            raise ValueError(f"permutation must be a bijection of range({flat.shape[1]})")
        flat = flat[:, permutation]
    return flat.reshape(flat.shape[0], steps, d)


def pixel_moments(raw: np.ndarray, scaled: np.ndarray) -> tuple[float, float]:
    """The mean and standard deviation of ``scaled`` (``raw / 255`` in float32), in float64.

    For 8-bit images (MNIST, Fashion-MNIST) they come from the 256-value histogram of ``raw``,
    counted in blocks: NumPy's ``std`` of the 42 million float32 values of Fashion-MNIST's
    training split took 1.2 s of its 2.3 s load, the histogram about 0.1 s.  The sums are over
    the same float32 values (each ``v / 255`` in float32 times its exact count), so the results
    agree with ``scaled.mean(dtype=float64)`` and ``scaled.std(dtype=float64)`` to within their
    rounding (about 1e-15 relative; tested); other dtypes use those two directly."""
    if raw.dtype != np.uint8 or raw.size == 0:
        return float(scaled.mean(dtype=np.float64)), float(scaled.std(dtype=np.float64))
    flat = raw.reshape(-1)
    counts = np.zeros(256, np.int64)
    block = 1 << 20
    for lo in range(0, flat.size, block):
        counts += np.bincount(flat[lo:lo + block], minlength=256)
    values = (np.arange(256, dtype=np.float32) / np.float32(255.0)).astype(np.float64)
    weights = counts.astype(np.float64)                  # exact: counts < 2^53
    mean = float(weights @ values) / flat.size
    var = float(weights @ (values - mean) ** 2) / flat.size
    return mean, float(np.sqrt(var))


def load_images(
    name: str = "mnist",
    *,
    steps: int = 28,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    permute: bool = False,
    permutation_seed: int = 0,
    scale: Literal["unit", "standard"] = "unit",
    val_fraction: float = 0.1,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    system_dirs: Sequence[str | os.PathLike[str]] | None = None,
    timeout: float = 30.0,
) -> Dataset:
    """MNIST or Fashion-MNIST as a sequence classification dataset.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
    steps : int
        ``T``, a divisor of the image size (784): 28 = row by row, 784 = pixel by pixel.
    seed : int
        Seeds the validation carve (``val_fraction`` of the 60 000 training images).
    permute : bool
        Apply the fixed pixel permutation of ``permutation_seed`` (permuted MNIST).
    scale : {"unit", "standard"}
        ``x / 255`` in [0, 1], or standardised by the training split's pixel mean and std.
    cache_dir, download, mirrors, checksums, system_dirs, timeout
        See :func:`locate`.

    Returns
    -------
    Dataset
        ``X`` ``(N, T, 784 / T)`` float32, ``y`` ``(N,)`` int64, 10 classes, ``softmax_ce``.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown image set {name!r}; expected one of {sorted(SOURCES)}")
    if scale not in ("unit", "standard"):
        raise ValueError(f"scale must be 'unit' or 'standard'; got {scale!r}")
    check_fraction("val_fraction", val_fraction)
    source = SOURCES[name]
    steps = check_positive_int("steps", steps)
    H, W = source.image_shape
    check_steps(steps, H * W, f"a {H}x{W} image")          # before any file is read
    try:
        paths, origin = locate(
            name, data_dir=data_dir, cache_dir=cache_dir, download_missing=download,
            mirrors=mirrors, checksums=checksums, system_dirs=system_dirs, timeout=timeout,
        )
    except DownloadError as exc:
        raise DownloadError(f"{name}: {exc}") from exc
    n_classes = len(source.classes)
    train_img, train_lab = read_image_set(paths["train_images"], paths["train_labels"], n_classes,
                                          source.image_shape)
    test_img, test_lab = read_image_set(paths["test_images"], paths["test_labels"], n_classes,
                                        source.image_shape)
    if train_img.shape[1:] != test_img.shape[1:]:
        raise IDXError(
            f"train images are {train_img.shape[1:]} but test images are {test_img.shape[1:]}"
        )
    pixels = int(np.prod(train_img.shape[1:]))
    shape_text = "x".join(map(str, train_img.shape[1:]))
    d = check_steps(steps, pixels, f"a {shape_text} image")
    perm = pixel_permutation(pixels, permutation_seed) if permute else None

    train_idx, val_idx = validation_indices(len(train_img), val_fraction,
                                            np.random.default_rng(seed))
    flat_train = train_img.reshape(len(train_img), pixels)
    train_raw = flat_train[train_idx]
    train_x = train_raw.astype(np.float32) / np.float32(255.0)
    mean, std = pixel_moments(train_raw, train_x)
    if scale == "standard" and std == 0.0:
        raise ValueError(f"{name}: the training images are constant; cannot standardise")

    def finish(x: np.ndarray, labels: np.ndarray) -> Split:
        if x.dtype != np.float32:
            x = x.astype(np.float32) / np.float32(255.0)
        if scale == "standard":
            x = (x - np.float32(mean)) / np.float32(std)
        return Split(np.ascontiguousarray(sequence_view(x, steps, perm), np.float32), labels)

    dataset_name = ("permuted-" + name) if permute else name
    return Dataset(
        name=dataset_name,
        train=finish(train_x, train_lab[train_idx]),
        val=finish(flat_train[val_idx], train_lab[val_idx]),
        test=finish(test_img.reshape(len(test_img), pixels), test_lab),
        input_size=d,
        output_size=n_classes,
        task="sequence_classification",
        loss="softmax_ce",
        baselines={"accuracy_chance": 1.0 / n_classes, "ce_chance": float(np.log(n_classes))},
        meta={
            "source": name,
            "origin": origin,
            "files": {role: str(p) for role, p in paths.items()},
            "steps": steps,
            "features_per_step": d,
            "image_shape": tuple(int(s) for s in train_img.shape[1:]),
            "classes": source.classes,
            "permutation": perm,
            "permutation_seed": permutation_seed if permute else None,
            "scale": scale,
            "pixel_mean": mean,
            "pixel_std": std,
            "val_fraction": val_fraction,
            "seed": seed,
        },
    )
