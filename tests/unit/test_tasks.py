"""Background tasks end when cancelled, even when their wake-up comes at the same moment."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from edge_agent.tasks import CANCEL_ROUNDS, BackgroundTasks, wait_event

LOG = logging.getLogger("test.tasks")


async def _woken_loop(wake: asyncio.Event, rounds: list[int]) -> None:
    while True:
        await wait_event(wake, 60.0)
        wake.clear()
        rounds.append(1)


@pytest.mark.parametrize("ticks", [0, 1, 2, 3])
def test_a_loop_woken_as_it_is_cancelled_ends(ticks: int) -> None:
    # asyncio.wait_for(event.wait(), t) in this loop swallows the cancellation on 3.11 when the
    # event is set 0 to 2 loop iterations before it (CPython gh-86296): the loop goes on.
    async def main() -> None:
        tasks = BackgroundTasks(LOG, "test")
        wake, rounds = asyncio.Event(), []
        tasks.spawn(_woken_loop(wake, rounds))
        await asyncio.sleep(0)
        wake.set()
        for _ in range(ticks):
            await asyncio.sleep(0)
        task = next(iter(tasks._tasks))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        assert done == {task} and task.cancelled()

    asyncio.run(main())


def test_wait_event_says_whether_the_event_came() -> None:
    async def main() -> None:
        event = asyncio.Event()
        assert not await wait_event(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        assert await wait_event(event, 5.0)

    asyncio.run(main())


def test_cancel_all_cancels_again_a_task_that_caught_its_cancellation() -> None:
    async def stubborn(caught: list[int]) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            caught.append(1)  # a library that swallowed it
        await asyncio.sleep(60)

    async def main() -> None:
        tasks, caught = BackgroundTasks(LOG, "test"), []
        tasks.spawn(stubborn(caught))
        await asyncio.sleep(0)
        await asyncio.wait_for(tasks.cancel_all(), 5.0)
        assert caught == [1] and not tasks._tasks

    asyncio.run(main())


def test_cancel_all_gives_up_on_a_task_that_will_not_end(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("edge_agent.tasks.CANCEL_ROUND", 0.01)

    async def obstinate() -> None:  # outlives every round of cancel_all, then one more
        for _ in range(CANCEL_ROUNDS + 1):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    async def main() -> None:
        tasks = BackgroundTasks(LOG, "test")
        tasks.spawn(obstinate())
        await asyncio.sleep(0)
        await asyncio.wait_for(tasks.cancel_all(), 5.0)  # returns instead of hanging
        (left,) = tasks._tasks
        assert not left.done()
        left.cancel()
        await left

    with caplog.at_level(logging.ERROR, logger="test.tasks"):
        asyncio.run(main())
    assert "did not end when cancelled" in caplog.text


def test_work_spawned_after_cancel_all_does_not_run() -> None:
    ran: list[int] = []

    async def work() -> None:
        ran.append(1)

    async def main() -> None:
        tasks = BackgroundTasks(LOG, "test")
        await tasks.cancel_all()
        tasks.spawn(work())  # a handler still running as its component stops
        await asyncio.sleep(0.01)
        assert not tasks._tasks

    asyncio.run(main())
    assert ran == []
