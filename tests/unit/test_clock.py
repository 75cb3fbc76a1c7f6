"""The fake clock: time order, ties in scheduling order, cancellation, nested scheduling."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen.errors import LocalProtocolError
from lichen.testing.clock import FakeClock


def waiting(clock: FakeClock) -> int:
    """Timers held in the clock's buckets, cancelled ones not yet swept included."""
    return sum(len(bucket) for bucket in clock._buckets.values())


def test_time_moves_only_when_told() -> None:
    clock = FakeClock(start=100.0)
    assert clock.now() == 100.0
    assert clock.advance(2.5) == 0
    assert clock.now() == 102.5


def test_callbacks_run_in_time_order_and_see_their_deadline() -> None:
    clock = FakeClock()
    seen: list[tuple[str, float]] = []
    clock.call_later(3, lambda: seen.append(("c", clock.now())))
    clock.call_later(1, lambda: seen.append(("a", clock.now())))
    clock.call_at(2, lambda: seen.append(("b", clock.now())))
    assert clock.advance(2) == 2
    assert seen == [("a", 1.0), ("b", 2.0)]
    assert clock.now() == 2.0
    clock.advance(5)
    assert seen[-1] == ("c", 3.0)
    assert clock.now() == 7.0


def test_ties_run_in_scheduling_order() -> None:
    clock = FakeClock()
    seen: list[int] = []
    for i in range(50):
        clock.call_at(1.0, seen.append, i)
    clock.run_until_idle()
    assert seen == list(range(50))


def test_callbacks_take_arguments() -> None:
    clock = FakeClock()
    seen: list[tuple[int, str]] = []
    clock.call_later(1, lambda n, s: seen.append((n, s)), 7, "x")
    clock.run_until_idle()
    assert seen == [(7, "x")]


def test_callbacks_scheduled_from_callbacks_run() -> None:
    clock = FakeClock()
    seen: list[float] = []

    def tick(left: int) -> None:
        seen.append(clock.now())
        if left:
            clock.call_later(1, tick, left - 1)

    clock.call_later(1, tick, 4)
    assert clock.run_until_idle() == 5
    assert seen == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert clock.next_deadline() is None


def test_callback_scheduled_inside_the_advance_window_runs_in_it() -> None:
    clock = FakeClock()
    seen: list[str] = []
    clock.call_later(1, lambda: clock.call_later(0.5, seen.append, "inner"))
    clock.advance(2)
    assert seen == ["inner"]
    clock.call_later(1, lambda: clock.call_later(5, seen.append, "later"))
    clock.advance(2)
    assert seen == ["inner"]
    assert clock.next_deadline() == 8.0


def test_deadline_in_the_past_runs_without_moving_time_back() -> None:
    clock = FakeClock(start=10.0)
    seen: list[float] = []
    clock.call_at(3.0, lambda: seen.append(clock.now()))
    clock.advance(0)
    assert seen == [10.0]


def test_cancel() -> None:
    clock = FakeClock()
    seen: list[str] = []
    keep = clock.call_later(1, seen.append, "keep")
    drop = clock.call_later(1, seen.append, "drop")
    assert len(clock) == 2
    drop.cancel()
    drop.cancel()
    assert drop.cancelled and not drop.pending
    assert len(clock) == 1
    clock.run_until_idle()
    assert seen == ["keep"]
    assert not keep.cancelled and not keep.pending
    keep.cancel()
    assert not keep.cancelled


def test_a_callback_can_cancel_a_later_one() -> None:
    clock = FakeClock()
    seen: list[str] = []
    later = clock.call_later(2, seen.append, "later")
    clock.call_later(1, later.cancel)
    clock.run_until_idle()
    assert seen == []


def test_next_deadline_skips_cancelled_timers() -> None:
    clock = FakeClock()
    assert clock.next_deadline() is None
    first = clock.call_later(1, lambda: None)
    clock.call_later(2, lambda: None)
    first.cancel()
    assert clock.next_deadline() == 2.0


def test_many_cancelled_timers_are_swept() -> None:
    clock = FakeClock()
    seen: list[int] = []
    timers = [clock.call_later(i, seen.append, i) for i in range(10_000)]
    for timer in timers:
        if timer.when % 10:
            timer.cancel()
    assert len(clock) == 1000
    assert waiting(clock) < 3000
    clock.run_until_idle()
    assert seen == list(range(0, 10_000, 10))


def test_sweep_while_running_keeps_the_order() -> None:
    clock = FakeClock()
    seen: list[int] = []
    timers = [clock.call_at(1 + i % 100, seen.append, i) for i in range(5000)]

    def cull() -> None:
        for i, timer in enumerate(timers):
            if i % 5 < 3:
                timer.cancel()
        assert waiting(clock) < 3000

    clock.call_at(0.5, cull)
    clock.run_until_idle()
    kept = [i for i in range(5000) if i % 5 >= 3]
    assert seen == sorted(kept, key=lambda i: (i % 100, i))


def test_a_cancelled_last_timer_does_not_move_time() -> None:
    clock = FakeClock()
    clock.call_at(1, lambda: None)
    clock.call_at(5, lambda: None).cancel()
    clock.run_until_idle()
    assert clock.now() == 1.0


def test_stopping_inside_a_tie_keeps_the_rest_in_order() -> None:
    clock = FakeClock()
    seen: list[int] = []

    def first() -> None:
        seen.append(0)
        clock.call_at(1, seen.append, 99)
        raise ValueError("stop")

    clock.call_at(1, first)
    for i in range(1, 4):
        clock.call_at(1, seen.append, i)
    with pytest.raises(ValueError):
        clock.run_until_idle()
    assert clock.run_until(lambda: len(seen) == 2)
    clock.run_until_idle()
    assert seen == [0, 1, 2, 3, 99]


def test_run_until_idle_stops_at_max_time() -> None:
    clock = FakeClock()
    seen: list[int] = []
    for i in range(1, 6):
        clock.call_at(i, seen.append, i)
    assert clock.run_until_idle(max_time=3) == 3
    assert seen == [1, 2, 3]
    assert clock.now() == 3.0
    clock.run_until_idle()
    assert seen == [1, 2, 3, 4, 5]
    assert clock.now() == 5.0


def test_run_until_idle_bounds_a_perpetual_timer() -> None:
    clock = FakeClock()

    def again() -> None:
        clock.call_later(1, again)

    clock.call_later(1, again)
    with pytest.raises(LocalProtocolError):
        clock.run_until_idle(max_callbacks=100)
    assert clock.now() == 100.0
    clock.run_until_idle(max_time=150)
    assert clock.now() == 150.0


def test_run_until_waits_on_a_condition() -> None:
    clock = FakeClock()
    flag: list[bool] = []
    clock.call_later(4, flag.append, True)
    clock.call_later(9, flag.append, True)
    assert clock.run_until(lambda: bool(flag))
    assert clock.now() == 4.0
    assert not clock.run_until(lambda: len(flag) > 5, max_time=6)
    assert clock.now() == 6.0
    assert not clock.run_until(lambda: len(flag) > 5)
    assert clock.now() == 9.0


def test_misuse_is_refused() -> None:
    clock = FakeClock()
    with pytest.raises(LocalProtocolError):
        clock.advance(-1)
    with pytest.raises(LocalProtocolError):
        clock.advance(float("nan"))
    with pytest.raises(LocalProtocolError):
        clock.call_later(-0.1, lambda: None)
    with pytest.raises(LocalProtocolError):
        clock.call_at(float("nan"), lambda: None)
    with pytest.raises(LocalProtocolError):
        FakeClock(start=float("inf"))
    clock.call_later(1, lambda: clock.advance(1))
    with pytest.raises(LocalProtocolError):
        clock.run_until_idle()


def test_an_exception_in_a_callback_leaves_the_clock_usable() -> None:
    clock = FakeClock()
    seen: list[int] = []

    def boom() -> None:
        raise ValueError("boom")

    clock.call_at(1, boom)
    clock.call_at(2, seen.append, 2)
    with pytest.raises(ValueError):
        clock.advance(5)
    assert clock.now() == 1.0
    clock.advance(4)
    assert seen == [2]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.booleans(), st.integers(0, 5)), min_size=1, max_size=60
    )
)
def test_order_matches_a_sort_by_deadline_then_schedule(
    plan: list[tuple[int, bool, int]],
) -> None:
    clock = FakeClock()
    seen: list[int] = []
    timers = []
    for i, (when, _, _) in enumerate(plan):
        timers.append(clock.call_at(when / 4, seen.append, i))
    for timer, (_, cancel, _) in zip(timers, plan, strict=True):
        if cancel:
            timer.cancel()
    # Advance in uneven steps to show the order does not depend on how time is chopped up.
    for _, _, step in plan:
        clock.advance(step / 3)
    clock.run_until_idle()
    expected = sorted((when, i) for i, (when, cancel, _) in enumerate(plan) if not cancel)
    assert seen == [i for _, i in expected]
