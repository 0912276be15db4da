"""The training progress bar: tqdm when installed (``rnnlab[progress]``), a plain line otherwise,
silent when the stream is not a terminal (unless forced on)."""

from __future__ import annotations

import time
from typing import IO, Any


class Progress:
    """A tqdm bar when available, else a plain carriage-return line; silent when disabled."""

    def __init__(self, mode: str, stream: IO[str], epochs: int) -> None:
        isatty = getattr(stream, "isatty", None)
        self.enabled = mode == "on" or (mode == "auto" and bool(isatty and isatty()))
        self.stream, self.epochs = stream, epochs
        self._tqdm: Any = None
        self._bar: Any = None
        self._last = 0.0
        if self.enabled:
            try:
                import tqdm
                self._tqdm = tqdm.tqdm
            except ImportError:     # plain fallback
                self._tqdm = None

    def start(self, epoch: int, total: int, done: int) -> None:
        if self.enabled and self._tqdm is not None:
            self._bar = self._tqdm(total=total, initial=done, desc=f"epoch {epoch}/{self.epochs}",
                                   file=self.stream, leave=False, unit="batch",
                                   dynamic_ncols=True, mininterval=0.2)
        self._epoch, self._total, self._done = epoch, total, done

    def update(self, info: dict[str, str]) -> None:
        if not self.enabled:
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

    def end(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        shown = [f"epoch {record['epoch']}/{self.epochs}"]
        for k, v in record.items():
            if k == "seq_per_s" and v is not None:
                shown.append(f"{v:.0f} seq/s")
            elif isinstance(v, float) and k not in ("lr", "time"):
                shown.append(f"{k} {v:.4f}")
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self.stream.write("  ".join(shown) + "\n")
        else:
            self.stream.write("\r" + "  ".join(shown) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
