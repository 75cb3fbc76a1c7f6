"""A fake clock for sans-IO tests and simulations: time moves only when the caller says so.

Timers due at the same instant share a bucket (a list, in scheduling order) and a binary heap
holds each distinct deadline once, so hundreds of thousands of timers cost O(log n) each,
ties run in the order they were scheduled, and cancelled timers are skipped when their turn
comes (and swept out in bulk once they outnumber the live ones). Nothing here reads a real
clock or sleeps.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import TypeVarTuple, Unpack

from lichen.errors import LocalProtocolError

Ts = TypeVarTuple("Ts")

# A sweep is O(n); running one only once cancelled timers are both numerous and the majority
# keeps the amortised cost per cancel O(1) while bounding memory to about twice the live ones.
_SWEEP_MIN_CANCELLED = 1024


class Timer:
    """A scheduled callback. ``cancel()`` before it runs and it never will."""

    __slots__ = ("_args", "_callback", "_cancelled", "_clock", "when")

    def __init__(
        self,
        clock: FakeClock,
        when: float,
        callback: Callable[..., object],
        args: tuple[object, ...],
    ) -> None:
        self._clock = clock
        self.when = when
        self._callback: Callable[..., object] | None = callback
        self._args = args
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` stopped this timer before it ran."""
        return self._cancelled

    @property
    def pending(self) -> bool:
        """True while the timer has neither run nor been cancelled."""
        return self._callback is not None

    def cancel(self) -> None:
        """Stop the callback from running. Idempotent; a no-op once it has run."""
        if self._callback is None:
            return
        self._callback = None
        self._args = ()
        self._cancelled = True
        self._clock._forget_cancelled()

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "pending" if self.pending else "done"
        return f"<Timer when={self.when!r} {state}>"


class FakeClock:
    """Deterministic time: ``now()`` changes only in ``advance``, ``run_until_idle`` and
    ``run_until``, which run due callbacks in (deadline, scheduling order).

    Exceptions raised by a callback propagate to the caller of the run method; the clock then
    stands at that callback's deadline and the remaining timers stay scheduled.
    """

    def __init__(self, start: float = 0.0) -> None:
        if not math.isfinite(start):
            raise LocalProtocolError(f"clock start must be finite, got {start!r}")
        self._now = float(start)
        # Timers due at the same instant share one bucket, in scheduling order, and the heap
        # holds each distinct deadline once: ties cost an append, and the heap compares bare
        # floats rather than tuples.
        self._deadlines: list[float] = []
        self._buckets: dict[float, list[Timer]] = {}
        self._live = 0
        self._cancelled_waiting = 0
        self._running = False
        self.callbacks_run = 0
        """Callbacks run since this clock was made (a cheap progress counter for sims)."""

    def now(self) -> float:
        """The current fake time in seconds."""
        return self._now

    def __len__(self) -> int:
        """Number of timers still pending (not run, not cancelled)."""
        return self._live

    def call_at(self, when: float, callback: Callable[[Unpack[Ts]], object], *args: *Ts) -> Timer:
        """Schedule ``callback(*args)`` at absolute time ``when``.

        A deadline already in the past runs at the next run call, without moving time back.
        """
        if when != when:
            raise LocalProtocolError("timer deadline is NaN")
        timer = Timer(self, when, callback, args)
        bucket = self._buckets.get(when)
        if bucket is None:
            self._buckets[when] = [timer]
            heapq.heappush(self._deadlines, when)
        else:
            bucket.append(timer)
        self._live += 1
        return timer

    def call_later(
        self, delay: float, callback: Callable[[Unpack[Ts]], object], *args: *Ts
    ) -> Timer:
        """Schedule ``callback(*args)`` ``delay`` seconds from now (``delay`` >= 0)."""
        if not delay >= 0:
            raise LocalProtocolError(f"timer delay must be >= 0, got {delay!r}")
        return self.call_at(self._now + delay, callback, *args)

    def next_deadline(self) -> float | None:
        """Deadline of the earliest pending timer, or None when nothing is scheduled."""
        deadlines = self._deadlines
        while deadlines:
            when = deadlines[0]
            bucket = self._buckets[when]
            for timer in bucket:
                if timer._callback is not None:
                    return when
            heapq.heappop(deadlines)
            del self._buckets[when]
            self._cancelled_waiting -= len(bucket)
        return None

    def advance(self, seconds: float) -> int:
        """Move time forward by ``seconds``, running every callback due by then.

        Callbacks see ``now()`` equal to their own deadline; ones they schedule within the
        window also run. Returns the number of callbacks run.
        """
        if not seconds >= 0 or math.isinf(seconds):
            raise LocalProtocolError(f"advance needs a finite duration >= 0, got {seconds!r}")
        target = self._now + seconds
        ran = self._run(target, None)
        self._now = max(self._now, target)
        return ran

    def run_until_idle(
        self, max_time: float | None = None, max_callbacks: int | None = None
    ) -> int:
        """Run callbacks, including ones scheduled by callbacks, until none remain.

        ``max_time`` is an absolute clock time: callbacks due later stay scheduled and the
        clock stops there. ``max_callbacks`` bounds the work (LocalProtocolError when hit),
        so a timer that reschedules itself forever fails a test instead of hanging it.
        Returns the number of callbacks run.
        """
        ran = self._run(max_time, max_callbacks)
        if max_time is not None and self._live:
            self._now = max(self._now, max_time)
        return ran

    def run_until(
        self,
        condition: Callable[[], bool],
        max_time: float | None = None,
        max_callbacks: int | None = None,
    ) -> bool:
        """Run callbacks one at a time until ``condition()`` holds; True if it did.

        False when the clock went idle or reached ``max_time`` (absolute) first. Lets a test
        wait on an event rather than on a guessed duration.
        """
        ran = 0
        while not condition():
            if max_callbacks is not None and ran >= max_callbacks:
                raise LocalProtocolError(f"condition still false after {ran} callbacks")
            deadline = self.next_deadline()
            if deadline is None or (max_time is not None and deadline > max_time):
                if max_time is not None:
                    self._now = max(self._now, max_time)
                return False
            ran += self._run(deadline, 1, quiet=True)
        return True

    def _run(self, limit: float | None, max_callbacks: int | None, *, quiet: bool = False) -> int:
        if self._running:
            raise LocalProtocolError("the clock cannot be run from inside one of its callbacks")
        self._running = True
        deadlines = self._deadlines
        buckets = self._buckets
        pop = heapq.heappop
        ran = 0
        try:
            while deadlines:
                when = deadlines[0]
                if limit is not None and when > limit:
                    break
                pop(deadlines)
                bucket = buckets.pop(when)
                i = 0
                n = len(bucket)
                try:
                    while i < n:
                        timer = bucket[i]
                        callback = timer._callback
                        if callback is None:
                            i += 1
                            self._cancelled_waiting -= 1
                            continue
                        if max_callbacks is not None and ran >= max_callbacks:
                            if quiet:
                                break
                            raise LocalProtocolError(f"clock still busy after {ran} callbacks")
                        i += 1
                        args = timer._args
                        timer._callback = None
                        timer._args = ()
                        self._live -= 1
                        if when > self._now:
                            self._now = when
                        ran += 1
                        callback(*args)
                finally:
                    if i < n:
                        self._requeue(when, bucket[i:])
                if i < n:
                    break
        finally:
            self._running = False
            self.callbacks_run += ran
        return ran

    def _requeue(self, when: float, rest: list[Timer]) -> None:
        # A run stopped part-way through a bucket: its remaining timers keep their place ahead
        # of any scheduled for the same instant since.
        bucket = self._buckets.get(when)
        if bucket is None:
            self._buckets[when] = rest
            heapq.heappush(self._deadlines, when)
        else:
            bucket[:0] = rest

    def _forget_cancelled(self) -> None:
        self._live -= 1
        self._cancelled_waiting += 1
        dead = self._cancelled_waiting
        if dead >= _SWEEP_MIN_CANCELLED and dead > self._live:
            self._sweep()

    def _sweep(self) -> None:
        removed = 0
        for when, bucket in list(self._buckets.items()):
            live = [timer for timer in bucket if timer._callback is not None]
            removed += len(bucket) - len(live)
            if live:
                self._buckets[when] = live
            else:
                del self._buckets[when]
        # In place, because a run loop in progress holds a reference to this list. Cancelled
        # timers in a bucket being run right now are not here; the run loop counts them off.
        self._deadlines[:] = list(self._buckets)
        heapq.heapify(self._deadlines)
        self._cancelled_waiting -= removed
