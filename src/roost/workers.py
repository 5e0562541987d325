"""``roost serve --workers N``: one node on every core of a machine.

The parent process serves no client. It checks what the workers would trip over (files,
certificates, the ports), reserves the listeners' ports (:mod:`roost.worker_settings`),
starts an embedded Valkey under ``data_dir`` unless ``cluster`` names one, and then runs N
``roost serve`` worker processes with the supervisor of ``roost cluster up``. Each worker
is a cluster node ``<node_id or HOST:PORT>/w<i>`` listening on the same ports with
SO_REUSEPORT, so that the kernel spreads connections over them, and announcing the same
address; a message published on one worker reaches subscribers on the others over the
cluster bus. To a client it is one broker on one port.

A worker that dies is a dead node: the others adopt its sessions, and it is started again
under its id once the cluster is done with its former run; a worker that cannot start at
all (before it ever listened) stops everything with status 1. SIGINT and SIGTERM stop the
workers (MQTT 5 clients get DISCONNECT 0x8B), then the Valkey; SIGHUP is passed on to
every worker (they read their rule files again). See docs/cluster.md.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from roost.cluster import keys
from roost.cluster.localserver import LocalServer, find_server_binary
from roost.cluster.supervisor import (
    NodeProcess,
    environment_without,
    stop_nodes,
)
from roost.config import ENV_PREFIX, TLS_KINDS, Settings, listeners_of
from roost.errors import ConfigError
from roost.security.acl import read_acl
from roost.security.passwords import PasswordFile
from roost.transport.listeners import BoundListener
from roost.transport.tls import server_context
from roost.worker_settings import (
    PortReservation,
    check_http_ports,
    shared_settings,
    worker_count,
    worker_http_port,
    worker_node_id,
    write_settings,
)

log = logging.getLogger("roost.workers")

# Marks a worker (INDEX:PARENT PID): it serves, it starts no workers, it stops with its parent
WORKER_FLAG = "--worker"
START_TIMEOUT = 30.0  # seconds for a worker to listen
RESTART_ATTEMPTS = 10  # tries to start a dead worker again (its id may still be adopted)
# Node timeouts to wait for the cluster to be done with a dead worker's former run: it is
# seen dead after one, and its adopter reads its inbox for two more (ADOPTION_GRACE_TIMEOUTS)
DEPARTURE_TIMEOUTS = 5
MAX_RESTARTS = 5  # restarts within RESTART_WINDOW before the parent gives up
RESTART_WINDOW = 60.0
# The embedded Valkey's AOF policy for the ``durability`` setting (see docs/cluster.md).
APPENDFSYNC = {"full": "always", "batch": "everysec", "none": "no"}


PR_SET_PDEATHSIG = 1  # prctl(2) option: a signal for this process when its parent dies


def stop_with_parent(parent: int) -> None:
    """In a worker: SIGTERM this process (a graceful stop) when the parent dies, even by
    SIGKILL, so that no worker is left serving on its own (Linux; elsewhere nothing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def check_settings(settings: Settings, count: int) -> None:
    """Raise ConfigError (or ServerNotFound) for what would stop every worker at start:
    run in the parent, so that a bad setting is reported once and nothing is started."""
    check_http_ports(settings, count)
    if settings.redirect != "never" and not settings.cluster:
        raise ConfigError(
            f"setting 'redirect' = {settings.redirect!r} sends clients to other nodes, and "
            "workers without 'cluster' all have the same address; use redirect = 'never'"
        )
    if settings.password_file:
        PasswordFile.load(settings.password_file)
    if settings.acl_file:
        read_acl(settings.acl_file)
    for listener in listeners_of(settings):
        if listener.kind in TLS_KINDS:
            server_context(listener)
    if not settings.cluster:
        find_server_binary()


class Workers:
    """The worker processes of one node and their supervision."""

    def __init__(self, settings: Settings, count: int, config: Path) -> None:
        """``settings``: what every worker shares (bound ports, cluster URL); ``config``:
        those settings as a TOML file."""
        self.settings = settings
        self.count = count
        self.config = config
        self.wake = threading.Event()  # a signal, or a worker's output ended
        self.stopping = threading.Event()  # SIGINT / SIGTERM
        self.processes: dict[int, NodeProcess] = {}  # by index
        self._lock = threading.Lock()
        self._env = environment_without(ENV_PREFIX)  # the TOML file holds every setting
        self._restarts: collections.deque[float] = collections.deque()

    def spawn(self, index: int) -> NodeProcess:
        arguments = [
            "--config", str(self.config),
            WORKER_FLAG, f"{index}:{os.getpid()}",
            "--node-id", worker_node_id(self.settings, index),
            "--http-port", str(worker_http_port(self.settings, index)),
        ]  # fmt: skip
        prefix = self.settings.log_format == "text"
        worker = NodeProcess(f"w{index}", arguments, sys.stderr, self._lock, self._env, prefix)
        worker.start(on_exit=self.wake)
        log.info("worker w%d started (pid %d)", index, worker.pid)
        return worker

    def run(self) -> int:
        """Start the workers and watch them until SIGINT/SIGTERM (status 0) or until one
        cannot start (status 1); stops them all before returning.

        Worker w0 starts first: it takes back what its former run held (if the node ran
        before) and, as any node, adopts the former runs of the others, which are dead.
        Each other worker starts once that is done, so that none finds its former run
        being adopted (it would refuse to start)."""
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        try:
            first = self._bring_up([0], adopted=False)
            if not (first and self._bring_up(list(range(1, self.count)))):
                return 0 if self.stopping.is_set() else 1
            self._wait_acquainted()
            described = ", ".join(self._listeners())
            log.info("roost listening on %s (%d workers)", described, self.count)
            return self._watch()
        finally:
            stop_nodes(list(self.processes.values()))

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping.set()
        self.wake.set()

    def _on_reload(self, signum: int, frame: object) -> None:
        for worker in self.processes.values():
            worker.send_signal(signal.SIGHUP)

    def _listeners(self) -> list[str]:
        listeners = listeners_of(self.settings)
        return [BoundListener(listener, listener.port).describe() for listener in listeners]

    def _watch(self) -> int:
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.stopping.is_set():
                return 0
            for index, worker in list(self.processes.items()):
                if not worker.exited.is_set():
                    continue
                status = worker.wait()
                log.warning("worker w%d (pid %d) ended, status %d", index, worker.pid, status)
                if not self._restart(index):
                    return 1

    def _restart(self, index: int) -> bool:
        """Start worker ``index`` again; False if it does not come up, or if restarts
        come too often."""
        now = time.monotonic()
        self._restarts.append(now)
        while self._restarts[0] < now - RESTART_WINDOW:
            self._restarts.popleft()
        if len(self._restarts) > MAX_RESTARTS:
            log.error("%d worker restarts within %g s; stopping", MAX_RESTARTS, RESTART_WINDOW)
            return False
        return self._bring_up([index], again=True)

    def _bring_up(self, indexes: list[int], again: bool = False, adopted: bool = True) -> bool:
        """Start the workers ``indexes`` together once the cluster is done with their
        former runs (heartbeat expired and, if ``adopted``, adopted by another worker),
        and wait until they listen; True if they all do. A worker that fails is tried
        again (RESTART_ATTEMPTS in all) if it ran before (``again``) or if its former run
        was still in the cluster: it may have met an adoption of that run. Otherwise it
        cannot start at all (a bad setting)."""
        pending = indexes
        for attempt in range(1, RESTART_ATTEMPTS + 1):
            former = [worker_node_id(self.settings, i) for i in pending]
            transient = self._wait_departed(former, adopted)
            for index in pending:
                self.processes[index] = self.spawn(index)
            failed = [i for i in pending if not self._started(self.processes[i])]
            if not failed or self.stopping.is_set():
                return not failed
            for index in failed:
                status = self.processes[index].wait()
                log.warning(
                    "worker w%d did not start (status %d, attempt %d of %d)",
                    index,
                    status,
                    attempt,
                    RESTART_ATTEMPTS,
                )
            if not (again or transient):
                break
            pending = failed
        names = ", ".join(f"w{index}" for index in failed)
        log.error("worker %s could not start; stopping", names)
        return False

    def _started(self, worker: NodeProcess) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while not worker.ready.is_set():
            if worker.exited.is_set() or self.stopping.is_set() or time.monotonic() > deadline:
                return worker.ready.is_set()
            worker.exited.wait(0.05)
        return True

    def _wait_departed(self, node_ids: list[str], adopted: bool) -> bool:
        """Until the cluster is done with the former runs of these workers, if any: their
        heartbeat records expired (a node refuses the id of one that looks alive), then
        another worker adopted what they held (a node refuses to start while its former
        run is adopted; waited for only if ``adopted``). Returns whether a failure to
        start may yet pass: True if a former run is still waiting to be adopted after
        DEPARTURE_TIMEOUTS; False if they are gone, or if a record stays alive (a live
        node has the id: the worker says so)."""

        def expired(redis: Redis) -> bool:
            return not any(redis.exists(keys.node(node_id)) for node_id in node_ids)

        def left(redis: Redis) -> bool:
            return not any(redis.sismember(keys.NODES, node_id) for node_id in node_ids)

        if not self._wait_in_redis(expired, 2):
            return False
        return adopted and not self._wait_in_redis(left, DEPARTURE_TIMEOUTS)

    def _wait_acquainted(self) -> None:
        """Until every worker has read the others' heartbeat records, so that a message
        published on any worker reaches subscribers on every other from the start: two
        beats of each after all listen (a node reads its peers right after each beat)."""
        records = [keys.node(worker_node_id(self.settings, i)) for i in range(self.count)]

        def beats(redis: Redis) -> list[int]:
            return [int(redis.hget(record, "beat") or 0) for record in records]

        first: list[int] = []

        def moved_twice(redis: Redis) -> bool:
            now = beats(redis)
            first[:] = first or now
            return all(beat >= start + 2 for beat, start in zip(now, first, strict=True))

        self._wait_in_redis(moved_twice, 2)

    def _wait_in_redis(self, done: Callable[[Redis], bool], timeouts: float) -> bool:
        """Poll ``done`` on the cluster's Redis for up to ``timeouts`` node timeouts;
        whether it came true. Gives up early on SIGTERM, or if Redis cannot be read."""
        deadline = time.monotonic() + timeouts * self.settings.node_timeout_ms / 1000
        redis = Redis.from_url(self.settings.cluster, socket_timeout=2, socket_connect_timeout=2)
        try:
            while not done(redis):
                if time.monotonic() > deadline or self.stopping.wait(0.05):
                    return False
            return True
        except RedisError as exc:
            log.warning("cannot read the cluster's Redis: %s", exc)
            return False
        finally:
            redis.close()


def run_workers(settings: Settings) -> int:
    """Entry point of ``roost serve`` with ``workers`` above 1. Raises ConfigError (and
    ServerNotFound) before anything is started."""
    count = worker_count(settings)
    check_settings(settings, count)
    # Until the workers run: SIGTERM unwinds as Ctrl-C does, so that the Valkey is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    reservation = PortReservation(listeners_of(settings))
    ports = reservation.bind()
    directory = Path(tempfile.mkdtemp(prefix="roost-workers-"))
    valkey: LocalServer | None = None
    try:
        cluster = settings.cluster
        if not cluster:
            data = Path(settings.data_dir).resolve() / "valkey"  # absolute: it runs in there
            valkey = LocalServer(data, appendfsync=APPENDFSYNC[settings.durability]).start()
            assert valkey.process is not None
            cluster = valkey.url
            log.info("valkey at %s (pid %d), data in %s", cluster, valkey.process.pid, data)
        shared = shared_settings(settings, ports, cluster)
        workers = Workers(shared, count, write_settings(shared, directory))
        return workers.run()
    finally:
        if valkey is not None:
            valkey.stop()
            log.info("valkey stopped")
        reservation.close()
        shutil.rmtree(directory, ignore_errors=True)
