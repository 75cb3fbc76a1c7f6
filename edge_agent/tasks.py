"""The long-lived background tasks of one component (agent, hub link, hub).

Each task is kept referenced until it ends (asyncio keeps only weak references), a task that
fails is logged with its traceback instead of vanishing, and :meth:`cancel_all` ends them
together at shutdown; work spawned after that (by a message handler still running, say) is
dropped, so nothing outlives the shutdown. :func:`wait_event` is how a task's loop waits for
its wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

CANCEL_ROUND = 0.5
"""Seconds :meth:`BackgroundTasks.cancel_all` waits before cancelling a task again."""
CANCEL_ROUNDS = 10
"""Rounds after which the tasks still running are logged and left behind."""


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass (None: no limit); True when
    it is set.

    Not ``asyncio.wait_for(event.wait(), timeout)``: on Python 3.11 that returns normally,
    swallowing the cancellation, when the event is set just as the task is cancelled (CPython
    gh-86296), and a ``while True`` loop around it then never ends.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


class BackgroundTasks:
    """Spawn, report and cancel one component's background tasks."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[Any], what: str) -> None:
        self._log = log
        self._what = what
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background; once :meth:`cancel_all` has begun, drop it."""
        if self._closed:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s task failed", self._what, exc_info=task.exception())

    async def cancel_all(self, *, except_current: bool = False) -> None:
        """Cancel every task (but the calling one, if asked) and wait until they have ended.

        A task that outlives its cancellation (code that caught it, or a library that lost
        it) is cancelled again every ``CANCEL_ROUND`` seconds; after ``CANCEL_ROUNDS`` it is
        logged and left, so a shutdown cannot hang on it.
        """
        self._closed = True
        current = asyncio.current_task() if except_current else None
        pending = {t for t in self._tasks if t is not current}
        for _ in range(CANCEL_ROUNDS):
            if not pending:
                return
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CANCEL_ROUND)
        for task in pending:
            self._log.error("%s task %s did not end when cancelled", self._what, task.get_name())
