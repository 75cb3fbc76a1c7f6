"""The long-lived background tasks of one component (agent, hub link, hub).

Each task is kept referenced until it ends (asyncio keeps only weak references), a task that
fails is logged with its traceback instead of vanishing, and :meth:`cancel_all` ends them
together at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    """Spawn, report and cancel one component's background tasks."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[Any], what: str) -> None:
        self._log = log
        self._what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s task failed", self._what, exc_info=task.exception())

    async def cancel_all(self, *, except_current: bool = False) -> None:
        """Cancel every task (but the calling one, if asked) and wait until they have ended."""
        current = asyncio.current_task() if except_current else None
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
