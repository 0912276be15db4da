"""Datasets for rnnlab behind one small interface (:class:`Dataset` of three :class:`Split` s).

``load(name, steps=..., seed=..., data_dir=..., **options)`` returns a :class:`Dataset`;
``names()`` lists the registered names.  Sequential images (``mnist``, ``fashion-mnist``,
``permuted-mnist``, ``digits``, ``mnist1d``), synthetic tasks with analytic baselines (``xor``,
``adding``, ``copy``, ``reber``, ``sine``, ``parity``) and character-level ``text``.

This subpackage imports nothing from the rest of rnnlab; NumPy is its only hard dependency
(scikit-learn and mnist1d are imported lazily by the datasets that need them).
"""

from .base import Dataset, Split, TaskKind, carve_validation, one_hot
from .download import DownloadError, RemoteFile, download
from .idx import IDXError, read_idx, write_idx
from .images import load_images, pixel_permutation, sequence_view
from .reber import strict_accuracy, strict_correct
from .registry import describe, load, names, options
from .tasks import xor_position_error
from .text import (
    TextCorpus,
    Vocabulary,
    generate,
    generate_text,
    perplexity,
    random_batches,
    sample_from_logits,
    sequential_batches,
)

__all__ = [
    "Dataset",
    "DownloadError",
    "IDXError",
    "RemoteFile",
    "Split",
    "TaskKind",
    "TextCorpus",
    "Vocabulary",
    "carve_validation",
    "describe",
    "download",
    "generate",
    "generate_text",
    "load",
    "load_images",
    "names",
    "one_hot",
    "options",
    "perplexity",
    "pixel_permutation",
    "random_batches",
    "read_idx",
    "sample_from_logits",
    "sequence_view",
    "sequential_batches",
    "strict_accuracy",
    "strict_correct",
    "write_idx",
    "xor_position_error",
]
