"""The write pipeline the SQLite and Redis stores share: changes are queued as operations on
the event loop and written one batch at a time, acknowledgements wait for the batch that
holds what they confirm, the queue is bounded, and a failed batch stops the store.

A subclass says how a batch is written (:meth:`BatchingStore._write_batch`) and reports
back on the loop: :meth:`BatchingStore._batch_done` once the batch is durable, or
:meth:`BatchingStore._failed` after setting ``_failure``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from roost.errors import StoreError
from roost.session import Delivery
from roost.stats import LatencyHistogram

# An operation queued for the writer, emptied when cancelled before it was written (a list,
# so the one who queued it can cancel or amend it in place).
Op = list[Any]


class BatchingStore:
    """Queueing, acknowledging and back-pressure for a store that writes in batches."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_pending_writes: int,
        on_failure: Callable[[StoreError], None],
    ) -> None:
        """``on_failure`` is called on the loop, once, if a write fails: the store then
        accepts no more work and acknowledgements waiting for a commit are dropped."""
        self._loop = loop
        self._max_pending = max_pending_writes
        self._on_failure = on_failure
        self._acknowledge_at_once = False  # acknowledgements do not wait for a batch
        self._ops: list[Op] = []
        # Delivery inserts recorded since the last batch was taken, by (client id, seq): a
        # delivery completed before it was written never needs to be.
        self._unwritten: dict[tuple[str, int], Op] = {}
        self._callbacks: list[Callable[[], None]] = []
        self._drained: list[Callable[[], None]] = []  # waiting for the backlog to shrink
        self._flush_scheduled = False
        self._busy = False  # a batch is being written
        self._writing = 0  # operations in that batch
        self._failure: StoreError | None = None
        self._batch_started = 0.0  # time.perf_counter() when the batch being written began
        self.commit_latency = LatencyHistogram()  # from a batch's start to its durability

    def _record(self, op: Op) -> Op:
        """Queue one operation for the next batch (dropped once a write has failed)."""
        if self._failure is not None:
            return op
        self._ops.append(op)
        if not (self._flush_scheduled or self._busy):  # (a batch done flushes what waits)
            self._flush_scheduled = True
            self._schedule_flush()
        return op

    def _schedule_flush(self) -> None:
        """Have :meth:`_flush` run: on the next turn of the loop, one batch per turn."""
        self._loop.call_soon(self._flush)

    def _cancel_insert(self, client_id: str, delivery: Delivery) -> bool:
        """Drop the delivery's insert if it is still pending; True if it was: saved and
        done within one batch, it never needs to be written."""
        insert = self._unwritten.pop((client_id, delivery.seq), None)
        if insert is None:
            return False
        insert.clear()
        return True

    def _forget_unwritten(self) -> None:
        """The pending inserts were taken for a batch (or dropped): no longer cancellable."""
        self._unwritten.clear()

    # -- acknowledging ------------------------------------------------------------------------

    def after_commit(self, callback: Callable[[], None]) -> None:
        if self._failure is not None:
            return  # never: what it would confirm was not written
        if self._acknowledge_at_once or not (self._ops or self._busy):
            callback()
            return
        self._callbacks.append(callback)
        if not (self._flush_scheduled or self._busy):
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    @property
    def backlogged(self) -> bool:
        """More operations are waiting to be written than ``max_pending_writes`` (always,
        once a write has failed: the store takes no more work)."""
        return self._failure is not None or self._pending() > self._max_pending

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once at most half of ``max_pending_writes`` operations are
        waiting (at once if that is already so; never after a failure)."""
        if self._failure is not None:
            return
        if self._pending() <= self._max_pending // 2:
            callback()
        else:
            self._drained.append(callback)

    def _pending(self) -> int:
        return len(self._ops) + self._writing

    @property
    def pending_writes(self) -> int:
        """Operations waiting to be written or being written (for metrics)."""
        return self._pending()

    # -- writing ------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Hand what was recorded to the writer (one batch at a time)."""
        self._flush_scheduled = False
        if self._busy or not (self._ops or self._callbacks):
            return
        ops = [op for op in self._ops if op]
        self._ops = []
        self._forget_unwritten()
        callbacks, self._callbacks = self._callbacks, []
        if not ops:  # everything they wait for is already written
            for callback in callbacks:
                callback()
            return
        self._busy = True
        self._writing = len(ops)
        self._batch_started = time.perf_counter()
        self._write_batch(ops, callbacks)

    def _write_batch(self, ops: list[Op], callbacks: list[Callable[[], None]]) -> None:
        """Start writing ``ops`` as one batch; call :meth:`_batch_done` with ``callbacks``
        on the loop once it is durable."""
        raise NotImplementedError

    def _batch_done(self, callbacks: list[Callable[[], None]]) -> None:
        self.commit_latency.observe(time.perf_counter() - self._batch_started)
        self._busy = False
        self._writing = 0
        for callback in callbacks:
            callback()
        if self._ops or self._callbacks:
            self._flush()
        if self._drained and self._pending() <= self._max_pending // 2:
            drained, self._drained = self._drained, []
            for callback in drained:
                callback()

    def _failed(self) -> None:
        """On the loop after a failed write: drop all waiting work, tell the broker."""
        assert self._failure is not None
        self._ops = []
        self._forget_unwritten()
        self._callbacks = []
        self._drained = []
        self._on_failure(self._failure)
