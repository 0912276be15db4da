"""What :func:`rnnlab.fit` prints while it trains: a bar on a terminal (tqdm when installed,
``rnnlab[progress]``, a plain carriage-return line otherwise), one line per epoch elsewhere.

``progress="auto"`` (the default) shows the bar when the stream is a terminal and, when it is not
(a log file, a pipe, a notebook), writes one plain line per epoch and nothing per batch, so logs
stay readable; ``"on"`` forces the bar, ``"off"`` prints nothing.  Rates count the training
steps' own time: the engine is built (and its kernels compiled) before the clock starts.
"""

from __future__ import annotations

import time
from typing import IO, Any


class Progress:
    """A tqdm bar when available, else a plain carriage-return line; epoch lines only when the
    stream is not a terminal (``mode="auto"``); silent when ``mode="off"``."""

    def __init__(self, mode: str, stream: IO[str], epochs: int) -> None:
        isatty = getattr(stream, "isatty", None)
        tty = bool(isatty and isatty())
        self.bar = mode == "on" or (mode == "auto" and tty)
        self.lines = mode == "auto" and not tty         # one line per epoch, no bar
        self.enabled = self.bar                          # per-batch updates wanted
        self.stream, self.epochs = stream, epochs
        self._tqdm: Any = None
        self._bar: Any = None
        self._last = 0.0
        self._epoch = self._total = self._done = 0
        if self.bar:
            try:
                import tqdm
                self._tqdm = tqdm.tqdm
            except ImportError:     # plain fallback
                self._tqdm = None

    def start(self, epoch: int, total: int, done: int) -> None:
        if self.bar and self._tqdm is not None:
            self._bar = self._tqdm(total=total, initial=done, desc=f"epoch {epoch}/{self.epochs}",
                                   file=self.stream, leave=False, unit="batch",
                                   dynamic_ncols=True, mininterval=0.2)
        self._epoch, self._total, self._done = epoch, total, done

    def update(self, info: dict[str, str]) -> None:
        if not self.bar:
            return
        self._done += 1
        if self._bar is not None:
            self._bar.set_postfix(info, refresh=False)
            self._bar.update(1)
            return
        now = time.monotonic()
        if now - self._last >= 0.5 or self._done == self._total:
            self._last = now
            text = " ".join(f"{k} {v}" for k, v in info.items())
            self.stream.write(f"\repoch {self._epoch}/{self.epochs} {self._done}/{self._total} "
                              f"{text}")
            self.stream.flush()

    @staticmethod
    def epoch_line(record: dict[str, Any], epochs: int) -> str:
        """``epoch 3/10  train_loss 0.4121  train_accuracy 0.8750  val_loss ...  1234 seq/s``."""
        shown = [f"epoch {record['epoch']}/{epochs}"]
        for k, v in record.items():
            if k == "seq_per_s" and v is not None:
                shown.append(f"{v:.0f} seq/s")
            elif isinstance(v, float) and k not in ("lr", "time"):
                shown.append(f"{k} {v:.4f}")
        return "  ".join(shown)

    def end(self, record: dict[str, Any]) -> None:
        if not (self.bar or self.lines):
            return
        line = self.epoch_line(record, self.epochs)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self.stream.write(line + "\n")
        elif self.bar:
            self.stream.write("\r" + line + "\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
