"""The Redis connections of a cluster node, each with the timeouts its job needs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from roost.config import Settings

READ_BLOCK_MS = 1000  # how long one blocking inbox read waits for entries
STORE_RETRIES = 20  # reconnection attempts of the store (backoff up to 1 s each)


@dataclass(frozen=True)
class RedisClients:
    """``commands``: heartbeats, forwarding, claims; its socket timeout bounds a stalled
    Redis, so the node notices it is cut off. ``reader``: blocking inbox reads. ``store``:
    the session store, which waits for a stalled Redis and rides out a restart (retrying
    for about 15 s) rather than failing: acknowledgements wait for it meanwhile."""

    commands: Redis
    reader: Redis
    store: Redis

    @classmethod
    async def for_settings(cls, settings: Settings) -> RedisClients:
        """Clients of the server at ``settings.cluster``: of the Redis Cluster it belongs
        to if it is a cluster node (``cluster_enabled``), else of that one server."""
        timeout = settings.node_timeout_ms / 1000
        url = settings.cluster
        retry = Retry(
            ExponentialBackoff(cap=1.0, base=0.05),
            STORE_RETRIES,
            supported_errors=(RedisConnectionError, RedisTimeoutError),
        )
        connect: Any = Redis.from_url
        if await _is_cluster_node(url, timeout):
            connect = RedisCluster.from_url
        return cls(
            commands=connect(url, socket_timeout=timeout / 2, socket_connect_timeout=timeout / 2),
            reader=connect(
                url,
                socket_timeout=READ_BLOCK_MS / 1000 + timeout,
                socket_connect_timeout=timeout / 2,
            ),
            store=connect(url, socket_connect_timeout=timeout, retry=retry),
        )

    async def aclose(self) -> None:
        for client in (self.commands, self.reader, self.store):
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()


async def _is_cluster_node(url: str, timeout: float) -> bool:
    """Whether the server at ``url`` is a node of a Redis Cluster (not if it cannot be
    asked: the store then says that it cannot reach it)."""
    probe = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        info = await probe.info("cluster")
    except (RedisError, OSError):
        return False
    finally:
        await probe.aclose()
    return bool(info.get("cluster_enabled"))
