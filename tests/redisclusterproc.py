"""A real Redis Cluster for tests: three Valkey/Redis servers in cluster mode, each with a
third of the hash slots, started the way an operator would (CLUSTER ADDSLOTSRANGE, CLUSTER
MEET) and ready once every server says ``cluster_state:ok``."""

from __future__ import annotations

from pathlib import Path

import redis

from paho_helpers import TIMEOUT, wait_until
from roost.cluster.localserver import LocalServer, free_port
from roost.errors import RoostError

SLOTS = 16384
START_ATTEMPTS = 5
CLUSTER_MODE = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")


def start_redis_cluster(directory: Path, shards: int = 3) -> list[LocalServer]:
    servers: list[LocalServer] = []
    buses: list[int] = []
    try:
        for index in range(shards):
            server, bus = _start_shard(directory / f"shard{index}")
            servers.append(server)
            buses.append(bus)
        for index, server in enumerate(servers):
            first, last = index * SLOTS // shards, (index + 1) * SLOTS // shards - 1
            with redis.Redis(port=server.port) as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        with redis.Redis(port=servers[0].port) as client:
            for server, bus in zip(servers[1:], buses[1:], strict=True):
                client.execute_command("CLUSTER", "MEET", server.host, server.port, bus)
        wait_until(lambda: all(map(_cluster_ok, servers)), TIMEOUT, "the Redis Cluster")
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def _start_shard(directory: Path) -> tuple[LocalServer, int]:
    """A server in cluster mode and its bus port: one of its own, as the default (the
    port + 10000) is past 65535 for a high port; another if that one was taken meanwhile."""
    for attempt in range(START_ATTEMPTS):
        bus = free_port()
        options = (*CLUSTER_MODE, "--cluster-port", str(bus))
        try:
            return LocalServer(directory / str(attempt), extra_arguments=options).start(), bus
        except RoostError:
            continue
    raise RoostError(f"no Redis Cluster server started in {directory}")


def _cluster_ok(server: LocalServer) -> bool:
    with redis.Redis(port=server.port) as client:
        return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")
