"""How a :class:`~rnnlab.fast.workspace.Workspace` call uses its thread budget, chosen by timing
(docs/performance.md): the options (:class:`ThreadOption`) and the tuner that picks among them
(:class:`ThreadTuner`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import NamedTuple

from .pool import MIN_LOOP_ROWS

__all__ = ["MIN_SPLIT_WORK", "ThreadOption", "ThreadTuner", "thread_options"]


class ThreadOption(NamedTuple):
    """How a :class:`~rnnlab.fast.workspace.Workspace` call uses its thread budget.

    ``loop`` BLAS threads for the recurrent loops, ``rest`` for everything else; with ``split > 1``
    the BLAS runs one thread and the work is split over ``split`` Python threads instead (the
    loops by batch rows, the large products by output rows; see :class:`Runner`).
    """

    loop: int
    rest: int
    split: int = 1


# A split pays for its thread hand-offs when each piece's step product has at least this many
# multiply-adds (rows x H x H): row MNIST's 64 x 128 x 128 does, RTRL's small 8 x 32 x 32 does not
# (measured: 22k sequences/s split against 46k whole).
MIN_SPLIT_WORK = 1 << 18


def thread_options(budget: int, compiled: bool, B: int, H: int) -> list[ThreadOption]:
    """The options a tuner tries for a budget of BLAS threads, a batch of ``B`` and ``H`` units.

    ``(1, 1)``, ``(1, budget)``, ``(budget, budget)`` and, when each piece has enough work, the
    batch split over ``budget`` threads.  With the compiled loops (:mod:`rnnlab.fast.kernels`, which
    run without the GIL) a split uses the cores better than BLAS threads, and the BLAS-thread
    options would hurt it: after a multi-threaded product OpenBLAS's workers spin for about
    0.1 s, taking a core from the pieces (measured: row MNIST 3.9 ms per step split alone, 5.8 ms
    when every other 20 steps use two BLAS threads).  So then the options are ``(1, 1)`` and the
    split only.
    """
    opts = [ThreadOption(1, 1)]
    if budget == 1:
        return opts
    rows = B // budget
    split = ([ThreadOption(1, 1, budget)]
             if rows >= MIN_LOOP_ROWS and rows * H * H >= MIN_SPLIT_WORK else [])
    if compiled and split:
        return opts + split
    return opts + [ThreadOption(1, budget), ThreadOption(budget, budget)] + split


class ThreadTuner:
    """Chooses how a :class:`Workspace` uses its thread budget, by timing its own calls.

    The options (:class:`ThreadOption`, from :func:`thread_options`) differ in the BLAS thread
    counts for the recurrent loops (one small ``(B, H) x (H, H)`` product and a few element-wise
    passes per step) and for everything else (the large products over all steps), or split the
    batch over Python threads.  Which is fastest depends on the shapes and on what else the
    machine runs: on an idle machine two threads win for large ``H``; on a busy one a second
    thread that must wait for a core costs more than it gives, at every one of the ``2T`` small
    products.

    Options run in *runs* of consecutive calls of which only the last few are timed, because an
    option's first calls after another's are slow: another option's BLAS threads may still be
    spinning, and a split needs both cores busy for a while before it runs at speed (on this
    2-vCPU machine row MNIST took 6-8 ms per call for the first 10-16 calls of a split, then
    4.1 ms; one thread, 4.7-5.0 ms).  So a split's run is ``split_run`` calls with the last
    ``timed`` timed, any other option's ``run`` calls.  After one untimed call each option gets a
    run (the split ones first); then the fastest by the median of its last ``keep`` timed calls
    runs, and every ``explore_every`` calls another option gets a run, so that a change of load
    is noticed.
    """

    def __init__(self, budget: int, explore_every: int = 200, keep: int = 5, run: int = 6,
                 split_run: int = 20, timed: int = 3,
                 options: Sequence[ThreadOption] | None = None) -> None:
        if not 1 <= timed <= min(run, split_run):
            raise ValueError(f"timed must lie in [1, min(run, split_run)]; got timed={timed}, "
                             f"run={run}, split_run={split_run}")
        self.budget = budget
        opts = list(thread_options(budget, False, 1, 1) if options is None else options)
        self.options = sorted(opts, key=lambda o: o.split == 1)      # splits are tried first
        self.times: dict[ThreadOption, list[float]] = {o: [] for o in self.options}
        self.keep, self.explore_every, self.timed = keep, explore_every, timed
        self.run, self.split_run = run, split_run
        self.calls = 0
        self._rotate = 0
        self._current: ThreadOption | None = None
        self._left = 0                 # calls left in the current run
        self._skip = 0                 # untimed calls left before the best's times count again
        self._timing = False           # whether the call just picked is timed

    def best(self) -> ThreadOption:
        return min(self.options, key=lambda o: statistics.median(self.times[o]) if self.times[o]
                   else float("inf"))

    def pick(self) -> ThreadOption | None:
        """The option to run now; ``None`` for the first call (untimed: it allocates)."""
        self.calls += 1
        self._timing = False
        if self.calls == 1:
            return None
        if self._left == 0:
            untried = [o for o in self.options if not self.times[o]]
            if untried:
                self._current = untried[0]
            elif len(self.options) > 1 and self.calls % self.explore_every == 0:
                best = self.best()
                others = [o for o in self.options if o != best]
                self._rotate += 1
                self._current = others[self._rotate % len(others)]
            else:
                best = self.best()
                if best != self._current:    # back from a run of another option: warm up again
                    self._current, self._skip = best, self._warmup(best)
                self._timing = self._skip == 0   # steady state: the best, timed once warm
                self._skip = max(0, self._skip - 1)
                return best
            self._left = self._warmup(self._current) + self.timed
        assert self._current is not None
        self._left -= 1
        self._timing = self._left < self.timed
        return self._current

    def _warmup(self, option: ThreadOption) -> int:
        """Untimed calls before an option's times count (see the class docstring)."""
        return (self.split_run if option.split > 1 else self.run) - self.timed

    def record(self, option: ThreadOption, seconds: float) -> None:
        """The time of the call :meth:`pick` just chose ``option`` for (ignored if untimed)."""
        if not self._timing:
            return
        t = self.times[option]
        t.append(seconds)
        if len(t) > self.keep:
            del t[0]
