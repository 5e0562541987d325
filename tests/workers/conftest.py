"""Fixtures of the workers tests: ``start_workers`` runs ``roost serve --workers N`` (real
processes, a real Valkey) and stops what is left of it at teardown, printing its log;
``clients`` (paho) and ``raw`` (raw MQTT) clients are stopped before it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clientfixtures import clients, raw
from workersproc import WorkersProcess

__all__ = ["clients", "raw", "start_workers"]


@pytest.fixture
def make_broker(start_workers: Callable[..., WorkersProcess]) -> None:
    """What ``clients`` and ``raw`` depend on: here, the workers' parents."""


@pytest.fixture
def start_workers(tmp_path: Path) -> Iterator[Callable[..., WorkersProcess]]:
    started: list[WorkersProcess] = []

    def start(workers: int = 2, *extra: str) -> WorkersProcess:
        parent = WorkersProcess(tmp_path / f"data{len(started)}", workers, *extra)
        started.append(parent)
        return parent.start()

    yield start
    for parent in started:
        if parent.process is not None and parent.process.poll() is None:
            parent.terminate(60)
        print(parent.text())  # pytest shows it for a test that failed
