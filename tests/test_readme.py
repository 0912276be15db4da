"""README.md: the two set-up commands first, then what most users type (the command line, the
estimator, ``rnnlab.RNN``) before the functional core; every docs page linked; seed 000
explained; its Python blocks valid; the package typed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

SETUP = """# rnnlab

```bash
pip install -e '.[cli]' && python -m rnnlab
pip install -e '.[test]' && python -m pytest -q
```
"""


def test_the_set_up_commands_come_first_unchanged():
    assert README.startswith(SETUP)


def test_what_users_type_comes_before_the_functional_core():
    order = [README.index(s) for s in ("rnnlab train --dataset", "RNNClassifier(",
                                       "rnnlab.RNN.for_dataset(", "from rnnlab import RNNSpec")]
    assert order == sorted(order)
    assert order[0] < README.index("## The functional core")


def test_every_docs_page_is_linked_and_seed_000_explained():
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    linked = set(re.findall(r"\(docs/([\w.-]+\.md)", README))
    assert set(pages) <= linked, set(pages) - linked
    first = README.index("seed 000")
    assert "derivation notes" in README[first:first + 300]


def test_python_blocks_parse_and_the_package_is_typed():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 3
    for b in blocks:
        ast.parse(b)
    assert (ROOT / "src" / "rnnlab" / "py.typed").exists()
    assert 'rnnlab = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()
