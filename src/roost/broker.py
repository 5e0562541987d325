"""The asyncio shell of a Roost node: listeners, the periodic sweep, graceful shutdown, and
stopping on its own when the store fails."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from roost.access import open_access
from roost.attach import Attacher, Authenticator
from roost.cluster.clients import RedisClients
from roost.cluster.node import ClusterError, ClusterNode
from roost.config import Settings, listeners_of
from roost.core import BrokerCore
from roost.errors import ConfigError, RoostError, StoreError
from roost.security.acl import Acl
from roost.security.authenticator import PasswordAuthenticator
from roost.security.passwords import PasswordFile
from roost.store.base import Store
from roost.store.memory import MemoryStore
from roost.store.redis import RedisStore
from roost.store.sqlite import SqliteStore
from roost.systopics import SysTopics
from roost.transport.listeners import BoundListener, open_listener

if TYPE_CHECKING:
    from roost.http.server import HttpServer  # aiohttp is imported only when HTTP is on

log = logging.getLogger("roost.broker")

SWEEP_INTERVAL = 0.25  # seconds between sweeps of keep-alive, will-delay and expiry timers


class Reloadable(Protocol):
    """A rule set read from a file, read again on SIGHUP (:meth:`Broker.reload`)."""

    def reload(self) -> bool:
        """Read the file again; if it is broken, keep the rules in force (and log why)."""
        ...


class Broker:
    """A single Roost node serving MQTT over its listeners (TCP, TLS, WebSocket, WSS)."""

    def __init__(
        self,
        settings: Settings,
        authenticator: Authenticator | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock`` gives the broker's time in seconds (default: the event loop's monotonic
        clock); tests inject one that they move on by hand. Without ``authenticator``, the
        ``password_file`` setting (if any) decides who may connect; an unreadable or broken
        file raises ConfigError."""
        self.settings = settings
        self.reloadables: list[Reloadable] = []  # every file-backed rule set (SIGHUP)
        self.passwords: PasswordFile | None = None
        self._password_auth: PasswordAuthenticator | None = None
        if authenticator is None and settings.password_file:
            self.passwords = PasswordFile.load(settings.password_file)
            self.reloadables.append(self.passwords)
            authenticator = self._password_auth = PasswordAuthenticator.for_settings(
                self.passwords, settings, clock or time.monotonic
            )
        self.attacher = Attacher(authenticator, enhanced_auth=self._password_auth)
        self._clock = clock
        self.core: BrokerCore | None = None
        self.port = settings.port  # of the main TCP listener (the actual one once started)
        self.listeners: list[BoundListener] = []  # every MQTT listener, the main one first
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._store: Store | None = None
        self._redis: RedisClients | None = None  # in a cluster
        self._redis_store: RedisStore | None = None  # the store, in a cluster
        self.cluster: ClusterNode | None = None
        self.http: HttpServer | None = None  # serves /api/v1/assign (roost.access)
        self.failure: RoostError | None = None  # why the broker stopped on its own
        self.stopping = asyncio.Event()  # set by a signal, or by a store failure
        self.acl: Acl | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.settings.acl_file:
            self.acl = Acl(self.settings.acl_file)  # ConfigError naming the file
            self.reloadables.append(self.acl)
            self._warn_unchecked_user_names(self.acl)
        if self.settings.cluster:
            self._redis = await RedisClients.for_settings(self.settings)
            store = self._redis_store = RedisStore(
                self._redis.store,
                loop,
                max_pending_writes=self.settings.max_pending_writes,
                on_failure=self._store_failed,
            )
            await store.open()
            self._store = store
        else:
            self._store = open_store(self.settings, loop, self._store_failed)
        core = self.core = BrokerCore(self.settings, self._clock or loop.time, self._store)
        core.acl = self.acl
        core.load()
        if self.settings.sys_interval:
            core.tick_hooks.append(SysTopics(core, self.settings.sys_interval).tick)
        try:
            reuse_port = self.settings.workers != "1"  # one of several worker processes
            for listener in listeners_of(self.settings):
                server, bound = await open_listener(listener, core, self.attacher, reuse_port)
                self._servers.append(server)
                self.listeners.append(bound)
        except ConfigError:
            for server in self._servers:
                server.close()
            raise
        self.port = self.listeners[0].port
        if self._redis is not None and self._redis_store is not None:
            self.cluster = await self._join_cluster(core, self._redis, self._redis_store)
            self.attacher.claimer = self.cluster
        self.http = await open_access(
            self.settings,
            core,
            self.attacher,
            self.cluster,
            f"{self.settings.host}:{self.port}",
            self.listeners,
        )
        for server in self._servers:
            await server.start_serving()
        self._sweeper = loop.create_task(self._sweep(core))
        log.info("roost listening on %s", ", ".join(bound.describe() for bound in self.listeners))

    def _warn_unchecked_user_names(self, acl: Acl) -> None:
        """An ACL that grants by user name trusts the name a client sends unless something
        checks it (a password file, or a listener taking the certificate's CN)."""
        unchecked = [
            listener.name
            for listener in listeners_of(self.settings)
            if not listener.use_identity_as_username
        ]
        if acl.has_user_rules and self.attacher.authenticator is None and unchecked:
            log.warning(
                "acl_file %s grants rights by user name, but no password_file checks the "
                "user names sent on %s: any client there can connect as any user and get "
                "its rights",
                acl.path,
                ", ".join(unchecked),
            )

    def port_of(self, kind: str) -> int:
        """The actual port of the first listener of ``kind`` (tcp, tls, ws, wss)."""
        for bound in self.listeners:
            if bound.listener.kind == kind:
                return bound.port
        raise LookupError(f"this node has no {kind} listener")

    async def _join_cluster(
        self, core: BrokerCore, redis: RedisClients, store: RedisStore
    ) -> ClusterNode:
        settings = self.settings
        listener = f"{settings.host}:{self.port}"
        node = ClusterNode(
            core,
            redis.commands,
            redis.reader,
            settings.node_id or listener,
            settings.advertise or listener,
            sessions=store,
            on_fatal=self._failed,
        )
        await node.start()
        return node

    async def _sweep(self, core: BrokerCore) -> None:
        """The one periodic timer of the node [MISSION §4]."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                core.tick()
            except Exception:
                log.exception("error in the periodic sweep")

    def reload(self) -> None:
        """Read every file-backed rule set again (SIGHUP); connections stay open, and a
        broken file leaves its rules as they were."""
        log.info("reloading %d rule files", len(self.reloadables))
        for reloadable in self.reloadables:
            try:
                reloadable.reload()
            except Exception:
                log.exception("error reloading %r", reloadable)

    def sweep(self) -> None:
        """Run now what the periodic sweep runs: everything that is due by the clock."""
        if self.core is not None:
            self.core.tick()

    def _store_failed(self, error: StoreError) -> None:
        """A write failed: serving on would acknowledge what is not on disk, so stop."""
        log.error("store failure, stopping: %s", error, exc_info=error)
        self._failed(error)

    def _failed(self, error: RoostError) -> None:
        """Stop accepting and close every connection now; ``stopping`` tells the owner
        to stop the broker."""
        if self.failure is not None:
            return
        self.failure = error
        for server in self._servers:
            server.close()
        if self.core is not None:
            self.core.shutdown()
        self.stopping.set()

    async def stop(self) -> None:
        """Stop accepting, tell clients (MQTT 5: DISCONNECT 0x8B), close everything."""
        if self.http is not None:
            await self.http.stop()
        for server in self._servers:
            server.close()
        if self.core is not None:
            self.core.shutdown()
        if self._password_auth is not None:
            self._password_auth.close()  # checks not started yet are dropped, not awaited
        await self.attacher.drain()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for server in self._servers:
            await server.wait_closed()
        if self.cluster is not None:
            await self.cluster.stop()
            self.cluster = None
        if self._store is not None:
            try:
                if self._redis_store is not None:
                    await self._redis_store.aclose()
                else:
                    self._store.close()
            except StoreError as exc:
                self._store_failed(exc)
            self._store = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        log.info("roost stopped")


def open_store(
    settings: Settings,
    loop: asyncio.AbstractEventLoop,
    on_failure: Callable[[StoreError], None],
) -> Store:
    """The store the settings ask for; ``on_failure`` is told if it stops working."""
    if settings.store == "memory":
        return MemoryStore()
    store = SqliteStore(
        settings.data_dir,
        settings.durability,
        settings.commit_interval_ms,
        loop,
        max_pending_writes=settings.max_pending_writes,
        on_failure=on_failure,
    )
    log.info("data in %s (durability %s)", store.path, settings.durability)
    return store


async def serve(settings: Settings) -> int:
    """Run a broker until SIGINT or SIGTERM (status 0) or a store failure (status 1)."""
    broker = Broker(settings)
    await broker.start()
    settle_garbage_collector()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, broker.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, broker.reload)
    await broker.stopping.wait()
    log.info("shutting down")
    await broker.stop()
    return 1 if broker.failure is not None else 0


def settle_garbage_collector() -> None:
    """Collect what start-up left and take every object that survived it (modules, the
    loaded state) out of the cyclic collector's sight: a full collection then scans only
    what was made since, instead of pausing the event loop for tens of milliseconds. For
    a process that is a broker for life (``serve``), not for brokers embedded in another
    program, whose objects would never be collected."""
    gc.collect()
    gc.freeze()


def run(settings: Settings) -> int:
    """Entry point of ``roost serve``: uvloop when installed, else the default loop."""
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        return runner(serve(settings))
    except (StoreError, ClusterError, ConfigError) as exc:
        log.error("cannot start: %s", exc)
        return 1
