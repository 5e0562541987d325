"""Orchestration of one measurement: worker processes, phases, counter snapshots.

The orchestrator never touches a socket during a measurement: it flips the phase slot of
the shared control array and samples the shared counters, the broker's /proc entries and
the workers' CPU time.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import time
from dataclasses import dataclass, field
from typing import Any

from bench import loadgen as lg
from bench.brokers import BrokerProcess, cores_busy_seconds, proc_cpu_seconds

BOOT_TIMEOUT = 60.0
EXIT_TIMEOUT = 60.0


class RunError(RuntimeError):
    pass


@dataclass
class Snapshot:
    t: float
    totals: list[int]
    broker_cpu: float
    gen_cpu: float
    broker_rss_kb: int
    broker_core_busy: float
    gen_core_busy: float

    def __getitem__(self, slot: int) -> int:
        return self.totals[slot]


def rate(a: Snapshot, b: Snapshot, slot: int) -> float:
    return (b[slot] - a[slot]) / (b.t - a.t)


def cpu_percent(a: Snapshot, b: Snapshot, gen: bool = False) -> float:
    used = (b.gen_cpu - a.gen_cpu) if gen else (b.broker_cpu - a.broker_cpu)
    return 100.0 * used / (b.t - a.t)


def other_load_percent(a: Snapshot, b: Snapshot, gen: bool = False) -> float:
    """Busy time of the broker's (generator's) cores not spent by the broker (generator):
    other processes on a shared machine, plus kernel work not charged to a process."""
    if gen:
        busy, own = b.gen_core_busy - a.gen_core_busy, b.gen_cpu - a.gen_cpu
    else:
        busy, own = b.broker_core_busy - a.broker_core_busy, b.broker_cpu - a.broker_cpu
    return max(0.0, 100.0 * (busy - own) / (b.t - a.t))


@dataclass
class Ctx:
    """Settings shared by all scenarios."""

    seconds: float = 5.0
    warmup: float = 1.0
    rounds: int = 2
    workers: int = 1
    broker_cpus: set[int] = field(default_factory=lambda: {0})
    gen_cpus: set[int] = field(default_factory=lambda: {1})
    publishers: int = 8
    payload: int = 64
    qos0_window: int = 4096
    wildcard_window: int = 16384
    qos1_window: int = 64
    fanout_subs: int = 100
    wildcard_subs: int = 10_000
    connections: int = 10_000
    idle_seconds: float = 10.0
    latency_rate: float = 2000.0
    soak_seconds: float = 60.0
    soak_rate: float = 5000.0
    soak_interval: float = 5.0
    connect_concurrency: int = 64
    drain_seconds: float = 15.0
    # cluster scenarios (bench/cluster.py)
    roost_args: list[str] = field(default_factory=list)  # extra roost serve flags
    mosquitto: str | None = None  # Mosquitto's path, for scale figures
    cluster_spread: bool = False  # nodes on different cores instead of all on the broker core


def split(n: int, parts: int) -> list[int]:
    """``n`` items over ``parts`` buckets, as even as possible."""
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class LoadRun:
    """Worker processes running ``roles`` (one list of role dicts per worker) against
    ``broker``. Use as a context manager: workers are always terminated on exit."""

    def __init__(self, ctx: Ctx, broker: BrokerProcess, roles: list[list[dict[str, Any]]]) -> None:
        self.ctx = ctx
        self.broker = broker
        self.nworkers = len(roles)
        spawn = mp.get_context("spawn")
        self.counters: Any = spawn.RawArray("q", self.nworkers * lg.NSLOTS)
        self.ctrl: Any = spawn.RawArray("q", lg.NCTRL)
        self.results: Any = spawn.Queue()
        concurrency = max(1, ctx.connect_concurrency // self.nworkers)
        self.procs = [
            spawn.Process(
                target=lg.worker_main,
                args=(
                    wid,
                    self.nworkers,
                    broker.load_port,
                    roles[wid],
                    self.counters,
                    self.ctrl,
                    self.results,
                    ctx.gen_cpus,
                    concurrency,
                    broker.cafile,
                ),
                daemon=True,
                name=f"bench-worker-{wid}",
            )
            for wid in range(self.nworkers)
        ]
        self.outputs: list[dict[str, Any]] = []

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> LoadRun:
        for proc in self.procs:
            proc.start()
        self._wait_all(lg.BOOTED, BOOT_TIMEOUT, "worker start-up")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ctrl[lg.PHASE] = lg.P_EXIT
        for proc in self.procs:
            proc.join(timeout=0.5 if proc.is_alive() else 0)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        with contextlib.suppress(Exception):
            self.results.close()
            self.results.join_thread()

    def _check(self) -> None:
        if not self.broker.alive():
            code = self.broker.proc.returncode if self.broker.proc else None
            raise RunError(f"{self.broker.name} exited (code {code}): {self.broker.log()}")
        for wid, proc in enumerate(self.procs):
            if not proc.is_alive() and not self.counters[wid * lg.NSLOTS + lg.DONE]:
                raise RunError(f"worker {wid} died (exit code {proc.exitcode})")

    def _wait_all(self, slot: int, timeout: float, what: str) -> float:
        start = time.monotonic()
        deadline = start + timeout
        while True:
            done = sum(
                1
                for w in range(self.nworkers)
                if self.counters[w * lg.NSLOTS + slot] or self.counters[w * lg.NSLOTS + lg.DONE]
            )
            if done == self.nworkers:
                fatal = [o for o in self._drain_results() if "fatal" in o]
                if fatal:
                    raise RunError(f"worker failed during {what}: {fatal[0]['fatal']}")
                return time.monotonic() - start
            self._check()
            if time.monotonic() > deadline:
                raise RunError(f"time-out ({timeout:.0f} s) waiting for {what}")
            time.sleep(0.005)

    def _drain_results(self) -> list[dict[str, Any]]:
        while True:
            try:
                self.outputs.append(self.results.get_nowait())
            except queue.Empty:
                return self.outputs

    # -- phases -----------------------------------------------------------------------------

    def setup(self, timeout: float = 180.0) -> float:
        """Connect and subscribe everything; seconds until every worker was ready."""
        self.ctrl[lg.PHASE] = lg.P_SETUP
        return self._wait_all(lg.READY, timeout, "connections and subscriptions")

    def go(self) -> None:
        self.ctrl[lg.PHASE] = lg.P_RUN

    def measuring(self, on: bool) -> None:
        self.ctrl[lg.MEASURING] = 1 if on else 0

    def stop_load(self) -> None:
        self.ctrl[lg.PHASE] = lg.P_STOP

    def sleep(self, seconds: float) -> None:
        """Sleep while checking that the broker and the workers are alive."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._check()
            time.sleep(min(0.1, left))

    def drain(self, quiet: float = 0.5, idle_cpu: float = 0.2) -> None:
        """After ``stop_load``: wait until every expected delivery has arrived, or until
        nothing has moved for ``quiet`` seconds while the broker was idle (below
        ``idle_cpu`` of a core: it is not still working through a backlog), at most
        ``ctx.drain_seconds``."""
        deadline = time.monotonic() + self.ctx.drain_seconds
        last = (-1, -1)
        since = time.monotonic()
        cpu_since = self.broker.cpu_seconds()
        while time.monotonic() < deadline:
            self._check()
            received, acked = self.total(lg.RECV), self.total(lg.ACKED)
            now = time.monotonic()
            if (received, acked) != last:
                last = (received, acked)
                since = now
                cpu_since = self.broker.cpu_seconds()
            elif received >= self.total(lg.EXPECTED) and now - since >= 0.1:
                return
            elif now - since >= quiet:
                busy = (self.broker.cpu_seconds() - cpu_since) / (now - since)
                if busy < idle_cpu:
                    return
            time.sleep(0.02)

    def finish(self) -> list[dict[str, Any]]:
        """Disconnect everything and collect the workers' reports."""
        self.ctrl[lg.PHASE] = lg.P_EXIT
        deadline = time.monotonic() + EXIT_TIMEOUT
        self._drain_results()
        while len(self.outputs) < self.nworkers and time.monotonic() < deadline:
            try:
                self.outputs.append(self.results.get(timeout=0.2))
            except queue.Empty:
                if not any(p.is_alive() for p in self.procs):
                    self._drain_results()
                    break
        return self.outputs

    # -- sampling ---------------------------------------------------------------------------

    def total(self, slot: int) -> int:
        c = self.counters
        return sum(c[w * lg.NSLOTS + slot] for w in range(self.nworkers))

    def snapshot(self) -> Snapshot:
        c = self.counters
        totals = [sum(c[w * lg.NSLOTS + s] for w in range(self.nworkers)) for s in range(lg.NSLOTS)]
        return Snapshot(
            t=time.monotonic(),
            totals=totals,
            broker_cpu=self.broker.cpu_seconds(),
            gen_cpu=sum(proc_cpu_seconds(p.pid) for p in self.procs if p.pid is not None),
            broker_rss_kb=self.broker.rss_kb(),
            broker_core_busy=cores_busy_seconds(self.ctx.broker_cpus),
            gen_core_busy=cores_busy_seconds(self.ctx.gen_cpus - self.ctx.broker_cpus),
        )

    def problems(self) -> list[str]:
        """Human-readable notes about errors seen by the workers."""
        notes = []
        labels = (
            (lg.ERRORS, "errors"),
            (lg.CONN_FAIL, "failed connection attempts"),
            (lg.DROPPED, "connections lost mid-run"),
            (lg.STALLS, "QoS 0 window stalls (deliveries stopped; outstanding written off)"),
        )
        for slot, label in labels:
            count = self.total(slot)
            if count:
                notes.append(f"{count} {label}")
        seen: set[str] = set()
        for output in self.outputs:
            for message in output.get("errors", [])[:5]:
                if message not in seen:
                    seen.add(message)
                    notes.append(f"worker {output['wid']}: {message}")
            if "fatal" in output:
                notes.append(f"worker {output['wid']} failed: {output['fatal'][:500]}")
        return notes
