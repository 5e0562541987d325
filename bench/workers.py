"""The ``workers`` scenario: ``roost serve --workers 2`` (every core of the machine) against
``--workers 1`` (one process, as ever) and Mosquitto, on two loads:

* **fan-out**: 1 QoS 0 publisher -> 100 subscribers on one topic (the ``qos0-fanout`` load);
* **many-to-many**: 32 QoS 0 publishers, each cycling over 8 topics, -> 32 subscribers,
  4 per topic (each publish is delivered 4 times).

With two workers the kernel spreads the connections over both (SO_REUSEPORT), so about
half of every message's subscribers are on the other worker: it crosses the cluster bus
(one relay record per message and destination worker, batched per loop turn into one
XADD on the embedded Valkey).

Placement: ``--workers 1`` and Mosquitto run as in the other scenarios (broker on the
broker core, generator on the other). ``--workers 2`` is given every core (its workers and
its Valkey inherit the parent's affinity), and so is the generator, which then competes
with it: on a 2-core machine that is the honest comparison ("the whole machine against
one core of it"), and the CPU rows say who used what.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bench import loadgen as lg
from bench.brokers import BrokerProcess, Mosquitto, Roost, proc_cpu_seconds, proc_rss_kb
from bench.cluster import by_round, command_calls, measure, med
from bench.runner import Ctx, rate, split
from bench.scenarios import (
    FANOUT_TOPIC,
    Metric,
    Outcome,
    Scenario,
    loss_percent,
    merge,
    place,
    qos0_batch,
    single,
)

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
MANY_TOPICS = 8
MANY_PUBLISHERS = 32
MANY_SUBSCRIBERS = 32
MANY_TOPIC = "bench/many/{}"
# Deliveries outstanding, for all three brokers; larger than in the other scenarios: a
# message that crosses workers waits for the receiving worker's next read of its inbox, so
# with small windows the run measures that round trip rather than the CPU.
FANOUT_WINDOW = 2048  # publishes (x 100 subscribers)
MANY_WINDOW = 16384
VALKEY_URL = re.compile(r"valkey at redis://([\d.]+):(\d+)/")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/PID/task/*/children)."""
    found = [pid]
    for task in _tasks(pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as fh:
            for child in fh.read().split():
                found += process_tree(int(child))
    return found


def _tasks(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


class RoostWorkers(Roost):
    """``roost serve --workers N``: ready once the parent says that every worker listens;
    CPU and RSS summed over the parent, the workers and the embedded Valkey."""

    name = "roost-workers"

    def __init__(self, cpus: set[int], count: int, extra_args: list[str]) -> None:
        # The parent's "listening (N workers)" line is at info; the bench runs at warning.
        flags = ["--workers", str(count), "--log-levels", "roost.workers=info"]
        super().__init__(cpus, [*extra_args, *flags])
        self.processes = count

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        super().start(timeout)
        deadline = time.monotonic() + timeout
        while f"({self.processes} workers)" not in self.log(100_000):
            if not self.alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start its workers: {self.log()}")
            time.sleep(0.05)

    def parts(self) -> dict[str, float]:
        """CPU seconds of the workers (together), the Valkey and the parent."""
        out = {"workers": 0.0, "valkey": 0.0, "parent": proc_cpu_seconds(self.pid)}
        for pid in process_tree(self.pid)[1:]:
            kind = "valkey" if "valkey" in command_name(pid) else "workers"
            out[kind] += proc_cpu_seconds(pid)
        return out

    def cpu_seconds(self) -> float:
        return sum(self.parts().values())

    def rss_kb(self) -> int:
        return sum(proc_rss_kb(pid) for pid in process_tree(self.pid))

    def commandstats(self) -> dict[str, int]:
        """Calls per command of the embedded Valkey since it started."""
        found = VALKEY_URL.search(self.log(100_000))
        if found is None:
            return {}
        return command_calls(found[1], int(found[2]))

    def stop(self) -> None:
        """SIGTERM to the parent (it stops the workers, then the Valkey); whatever of the
        tree is left after STOP_TIMEOUT is killed."""
        tree = process_tree(self.pid) if self.alive() else []
        if self.proc is not None and self.alive():
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                self.proc.wait(STOP_TIMEOUT)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        super().stop()


# -- loads ---------------------------------------------------------------------------------


def fanout_roles(ctx: Ctx) -> list[list[dict[str, Any]]]:
    nw, subs = ctx.workers, ctx.fanout_subs
    batch = qos0_batch(FANOUT_TOPIC, ctx.payload, 8, subs)
    return merge(
        place(nw, subs, {"role": "sub", "filters": [FANOUT_TOPIC], "qos": 0}),
        single(nw, {"role": "pub0", "batches": [batch], "window": FANOUT_WINDOW * subs}, nw - 1),
    )


def many_roles(ctx: Ctx) -> list[list[dict[str, Any]]]:
    """MANY_PUBLISHERS publishers cycling over MANY_TOPICS topics; subscriber k (over all
    generator processes) takes topic k % MANY_TOPICS."""
    fanout = MANY_SUBSCRIBERS // MANY_TOPICS
    topics = [MANY_TOPIC.format(t) for t in range(MANY_TOPICS)]
    batches = [qos0_batch(topic, ctx.payload, 8, fanout) for topic in topics]
    roles: list[list[dict[str, Any]]] = []
    first = 0
    pubs = split(MANY_PUBLISHERS, ctx.workers)
    for w, count in enumerate(split(MANY_SUBSCRIBERS, ctx.workers)):
        per_conn = [[topics[(first + k) % MANY_TOPICS]] for k in range(count)]
        first += count
        role = {"role": "sub", "n": count, "filters_per_conn": per_conn, "qos": 0}
        publishers = {"role": "pub0", "n": pubs[w], "batches": batches, "window": MANY_WINDOW}
        roles.append([r for r in (role, publishers) if r["n"]])
    return roles


LOADS = {"fanout": fanout_roles, "many": many_roles}


# -- the scenario ----------------------------------------------------------------------------


def run_workers(ctx: Ctx) -> Outcome:
    """Per round and load: --workers 1, --workers 2, Mosquitto (when installed)."""
    every = sorted(ctx.broker_cpus | ctx.gen_cpus)
    whole = dataclasses.replace(ctx, broker_cpus=set(every), gen_cpus=set(every))
    out = Outcome()
    series: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        series.setdefault(key, []).append(value)

    for _ in range(ctx.rounds):
        for load, roles in LOADS.items():
            # Each broker is made (its free port picked) just before it runs: a port picked
            # earlier may meanwhile be a source port of the generator's connections.
            setups: list[tuple[str, Ctx, Callable[[], BrokerProcess]]] = [
                ("one", ctx, lambda: Roost(ctx.broker_cpus, list(ctx.roost_args))),
                ("two", whole, lambda: RoostWorkers(set(every), 2, list(ctx.roost_args))),
            ]
            if ctx.mosquitto:
                mosquitto = partial(Mosquitto, ctx.broker_cpus, ctx.mosquitto)
                setups.append(("mosq", ctx, mosquitto))
            for kind, run_ctx, make in setups:
                broker = make()
                try:
                    broker.start()
                    m = measure(run_ctx, broker, roles(ctx))
                finally:
                    broker.stop()
                out.notes.extend(f"{load} {kind}: {note}" for note in m.run.problems())
                add(f"{load}_{kind}", rate(m.a, m.b, lg.RECV))
                add(f"{load}_{kind}_loss", loss_percent(m.final[lg.EXPECTED], m.final[lg.RECV]))
                if kind != "two":
                    continue
                for part, percent in m.cpu().items():
                    cpu.setdefault(f"{load}_{part}", []).append(percent)
                published = m.b[lg.SENT] - m.a[lg.SENT]
                commands = m.commands()
                if published:
                    add(f"{load}_cmds", sum(commands.values()) / published)
                if commands.get("xadd"):
                    add(f"{load}_per_xadd", published / commands["xadd"])

    metrics = out.metrics
    for key, values in series.items():
        metrics[key] = med(values)
    for key, values in cpu.items():
        metrics[f"cpu_{key}"] = med(values)
    for load in LOADS:
        one, two, mosq = (metrics.get(f"{load}_{kind}", 0.0) for kind in ("one", "two", "mosq"))
        if one:
            metrics[f"{load}_two_one"] = two / one
        if mosq:
            metrics[f"{load}_two_mosq"] = two / mosq
            metrics[f"{load}_one_mosq"] = one / mosq
        if ctx.rounds > 1:
            out.notes.append(
                f"{load}: workers 2 / workers 1 by round: "
                f"{by_round(series[f'{load}_two'], series[f'{load}_one'])}"
            )
    out.extra.update(series=series, cpu=cpu)
    return out


def load_metrics(load: str, label: str) -> tuple[Metric, ...]:
    return (
        Metric(f"{load}_two", f"{label}: --workers 2, deliveries/s", "higher"),
        Metric(f"{load}_one", f"{label}: --workers 1, deliveries/s", "higher"),
        Metric(f"{load}_mosq", f"{label}: mosquitto, deliveries/s"),
        Metric(f"{load}_two_one", f"{label}: workers 2 / workers 1", "higher", 2),
        Metric(f"{load}_two_mosq", f"{label}: workers 2 / mosquitto", "higher", 2),
        Metric(f"{load}_one_mosq", f"{label}: workers 1 / mosquitto", "higher", 2),
        Metric(f"{load}_two_loss", f"{label}: --workers 2, lost % (after drain)", "lower", 2),
        Metric(f"{load}_one_loss", f"{label}: --workers 1, lost % (after drain)", "lower", 2),
        Metric(f"cpu_{load}_workers", f"{label}, 2 workers: workers CPU % (both)"),
        Metric(f"cpu_{load}_valkey", f"{label}, 2 workers: Valkey CPU %"),
        Metric(f"cpu_{load}_generator", f"{label}, 2 workers: generator CPU %"),
        Metric(f"cpu_{load}_other", f"{label}, 2 workers: other load, all cores %"),
        Metric(f"{load}_cmds", f"{label}, 2 workers: Valkey commands per publish", "lower", 3),
        Metric(f"{load}_per_xadd", f"{label}, 2 workers: publishes per XADD", "higher", 1),
    )


WORKERS_SCENARIOS: dict[str, Scenario] = {
    "workers": Scenario(
        "workers",
        "roost --workers 2 (both cores) vs --workers 1 vs Mosquitto: QoS 0 fan-out 1 -> 100 "
        "and many-to-many 32 -> 32 (8 topics, 4 subscribers each)",
        (
            *load_metrics("fanout", "fan-out 1->100"),
            *load_metrics("many", "many 32->32"),
        ),
        lambda ctx, _: run_workers(ctx),
        per_broker=False,
        default=False,
    )
}
