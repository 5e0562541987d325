"""Fixtures of the access tests: real Valkey, real node processes with HTTP listeners."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from accessproc import AccessCluster
from roost.cluster.localserver import LocalServer


@pytest.fixture
def cluster(redis_server: LocalServer, tmp_path: Path) -> Iterator[AccessCluster]:
    nodes = AccessCluster(redis_server, tmp_path / "nodes")
    yield nodes
    nodes.stop_all()
