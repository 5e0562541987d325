"""The Redis connections of a cluster node, each with the timeouts its job needs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from redis.asyncio import Redis
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
    def for_settings(cls, settings: Settings) -> RedisClients:
        timeout = settings.node_timeout_ms / 1000
        url = settings.cluster
        retry = Retry(
            ExponentialBackoff(cap=1.0, base=0.05),
            STORE_RETRIES,
            supported_errors=(RedisConnectionError, RedisTimeoutError),
        )
        return cls(
            commands=Redis.from_url(
                url, socket_timeout=timeout / 2, socket_connect_timeout=timeout / 2
            ),
            reader=Redis.from_url(
                url,
                socket_timeout=READ_BLOCK_MS / 1000 + timeout,
                socket_connect_timeout=timeout / 2,
            ),
            store=Redis.from_url(url, socket_connect_timeout=timeout, retry=retry),
        )

    async def aclose(self) -> None:
        for client in (self.commands, self.reader, self.store):
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
