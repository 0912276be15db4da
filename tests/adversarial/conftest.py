"""The adversarial tests' sampling: a seeded sample of the random configurations by default,
all of them with ``--adversarial-full`` (or ``RNNLAB_ADVERSARIAL_FULL=1``); see README.md."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import full_run

FULL_CASES = 300          # random configurations in a full run
SAMPLE_CASES = 12         # in the default run (seeded: the same every run)
SAMPLE_SEED = 20261201


def case_seeds(config: pytest.Config) -> list[int]:
    """The seeds of the random configurations this run tests."""
    if full_run(config):
        return list(range(FULL_CASES))
    rng = np.random.default_rng(SAMPLE_SEED)
    return sorted(int(s) for s in rng.choice(FULL_CASES, size=SAMPLE_CASES, replace=False))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_seed" in metafunc.fixturenames:
        metafunc.parametrize("case_seed", case_seeds(metafunc.config))
