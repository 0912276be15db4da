"""``python -m rnnlab``: the main job, seed 000's experiment on the bundled 8x8 digits.

Test accuracy against the number of time steps ``T`` in {1, 2, 4, ..., 64} (each step reads
``64 / T`` pixels) for three methods and three seeds, on two local processes; prints the table and
writes ``runs/timesteps-digits/accuracy_vs_T.png/.svg``.  Options go to
``rnnlab experiment timesteps`` (``python -m rnnlab --dataset fashion-mnist --data-dir DIR``);
``python -m rnnlab COMMAND ...`` runs any other command of the ``rnnlab`` command line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

_TOP_LEVEL = ("-h", "--help", "--version")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from .cli import main as cli_main
    except ImportError as exc:
        print(f"rnnlab: error: the command line needs its extra ({exc}): "
              "pip install 'rnnlab[cli]'", file=sys.stderr)
        return 2
    if not args or (args[0].startswith("-") and args[0] not in _TOP_LEVEL):
        args = ["experiment", "timesteps", *args]
    return cli_main(args, prog_name="python -m rnnlab")


if __name__ == "__main__":
    raise SystemExit(main())
