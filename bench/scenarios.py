"""The scenarios. Each one measures a single broker (started fresh for it) and returns its
metrics; the driver in ``bench.__main__`` runs them for Roost and Mosquitto in turn."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import median_high
from typing import Any

from bench import loadgen as lg
from bench.brokers import (
    NOFILE_TARGET,
    BrokerProcess,
    NullBroker,
    Roost,
    RoostTls,
    hard_nofile,
    proc_nofile,
)
from bench.runner import Ctx, LoadRun, Snapshot, cpu_percent, other_load_percent, rate, split

GEN_SATURATED = 85.0  # generator CPU % (per generator core) above which it may be the limit
NOISE_WARN = 10.0  # % of the broker core used by other processes: a noisy measurement

TOPIC = "bench/fanin"
FANOUT_TOPIC = "bench/fanout"
LATENCY_TOPIC = "bench/latency"
SOAK_TOPIC = "bench/soak"
FLOOD_TOPIC = "bench/flood"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str = ""  # "higher", "lower" or "" (context only)
    digits: int = 0


@dataclass
class Outcome:
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    failed: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    metrics: tuple[Metric, ...]
    run: Callable[[Ctx, BrokerProcess | None], Outcome]
    per_broker: bool = True
    default: bool = True
    single_round: bool = False


# -- helpers -----------------------------------------------------------------------------------


def qos0_batch(topic: str, payload: int, messages: int, fanout: int) -> tuple[bytes, int, int]:
    data = lg.publish_packet(topic, bytes(payload), 0) * messages
    return data, messages, messages * fanout


def place(nworkers: int, n: int, role: dict[str, Any]) -> list[dict[str, Any]]:
    """``role`` for ``n`` clients spread over ``nworkers`` workers (one dict per worker,
    empty entries dropped later)."""
    return [dict(role, n=k) for k in split(n, nworkers)]


def merge(*placements: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    nworkers = len(placements[0])
    return [[p[w] for p in placements if p[w]["n"] > 0] for w in range(nworkers)]


def single(nworkers: int, role: dict[str, Any], worker: int = 0) -> list[dict[str, Any]]:
    return [dict(role, n=role.get("n", 1) if w == worker else 0) for w in range(nworkers)]


def loss_percent(expected: int, received: int) -> float:
    return 100.0 * (expected - received) / expected if expected else 0.0


def measured_window(ctx: Ctx, run: LoadRun) -> tuple[Snapshot, Snapshot]:
    """Set up, start the load, warm up, then measure ``ctx.seconds`` (timed subscribers
    time that window only); the snapshots at its start and end."""
    run.setup()
    run.go()
    run.sleep(ctx.warmup)
    run.measuring(True)
    start = run.snapshot()
    run.sleep(ctx.seconds)
    end = run.snapshot()
    run.measuring(False)
    return start, end


def throughput(
    ctx: Ctx, broker: BrokerProcess, roles: list[list[dict[str, Any]]], drain: bool = True
) -> tuple[Snapshot, Snapshot, Snapshot, LoadRun]:
    """Set up, warm up, measure ``ctx.seconds`` (timed subscribers time that window only),
    stop publishing and drain. Returns (start, end, final) snapshots and the finished run."""
    with LoadRun(ctx, broker, roles) as run:
        start, end = measured_window(ctx, run)
        run.stop_load()
        if drain:
            run.drain()
        final = run.snapshot()
        run.finish()
    return start, end, final, run


def qos0_outcome(
    ctx: Ctx, run: LoadRun, a: Snapshot, b: Snapshot, final: Snapshot, expected: int
) -> Outcome:
    """Received and sent rates, loss against the ``expected`` counter, CPU."""
    out = Outcome(notes=run.problems())
    out.metrics["recv"] = rate(a, b, lg.RECV)
    out.metrics["sent"] = rate(a, b, lg.SENT)
    out.metrics["loss"] = loss_percent(final[expected], final[lg.RECV])
    cpu_metrics(ctx, out, a, b)
    return out


def cpu_metrics(ctx: Ctx, out: Outcome, a: Snapshot, b: Snapshot) -> None:
    out.metrics["broker_cpu"] = cpu_percent(a, b)
    out.metrics["gen_cpu"] = cpu_percent(a, b, gen=True)
    out.metrics["noise_broker"] = other_load_percent(a, b)
    out.metrics["noise_gen"] = other_load_percent(a, b, gen=True)
    cores = len(ctx.gen_cpus - ctx.broker_cpus) or 1
    if out.metrics["gen_cpu"] > GEN_SATURATED * cores:
        out.notes.append(
            f"load generator used {out.metrics['gen_cpu']:.0f}% CPU: "
            "the result may be bounded by the generator"
        )
    if out.metrics["noise_gen"] > NOISE_WARN * cores * 2:
        out.notes.append(
            f"other processes used {out.metrics['noise_gen']:.0f}% of the generator core(s)"
        )
    if out.metrics["noise_broker"] > NOISE_WARN:
        out.notes.append(
            f"other processes used {out.metrics['noise_broker']:.0f}% of the broker core"
        )


CPU_METRICS = (
    Metric("broker_cpu", "broker CPU %", "", 0),
    Metric("gen_cpu", "generator CPU %", "", 0),
    Metric("noise_broker", "other load on broker core %", "", 0),
    Metric("noise_gen", "other load on generator cores %", "", 0),
)


# -- 0. the generator's ceiling ----------------------------------------------------------------


def run_ceiling(ctx: Ctx, _: BrokerProcess | None) -> Outcome:
    out = Outcome()
    quick = Ctx(**{**ctx.__dict__, "seconds": min(ctx.seconds, 3.0), "warmup": 0.5})
    nw = ctx.workers
    batch = qos0_batch(TOPIC, ctx.payload, 32, 1)
    cases: list[tuple[str, str, int, list[list[dict[str, Any]]], int]] = [
        (
            "produce",
            "sink",
            0,
            merge(place(nw, ctx.publishers, {"role": "pub0", "batches": [batch], "window": 0})),
            lg.SENT,
        ),
        (
            "consume_q0",
            "source",
            0,
            merge(single(nw, {"role": "sub", "filters": [TOPIC], "qos": 0})),
            lg.RECV,
        ),
        (
            "consume_q1",
            "source",
            1,
            merge(single(nw, {"role": "sub", "filters": [TOPIC], "qos": 1})),
            lg.RECV,
        ),
    ]
    for key, mode, qos, roles, slot in cases:
        null = NullBroker(ctx.broker_cpus, mode, qos)
        try:
            null.start()
            a, b, _, run = throughput(quick, null, roles, drain=False)
            out.notes.extend(run.problems())
        finally:
            null.stop()
        out.metrics[key] = rate(a, b, slot)
        out.metrics[key + "_cpu"] = cpu_percent(a, b, gen=True)
    produce, consume = out.metrics["produce"], out.metrics["consume_q0"]
    out.metrics["fanin_bound"] = 1.0 / (1.0 / produce + 1.0 / consume) if produce and consume else 0
    return out


CEILING = Scenario(
    "ceiling",
    "load generator alone against a null broker (C-speed sink/source on the broker core)",
    (
        Metric("produce", "QoS0 publish msg/s (8 pubs -> sink)", "higher"),
        Metric("produce_cpu", "  generator CPU %"),
        Metric("consume_q0", "QoS0 receive msg/s (source -> 1 sub)", "higher"),
        Metric("consume_q0_cpu", "  generator CPU %"),
        Metric("consume_q1", "QoS1 receive+PUBACK msg/s", "higher"),
        Metric("consume_q1_cpu", "  generator CPU %"),
        Metric("fanin_bound", "fan-in bound 1/(1/pub+1/recv) msg/s", "higher"),
    ),
    run_ceiling,
    per_broker=False,
)


# -- 1. QoS 0 fan-in ---------------------------------------------------------------------------


def qos0_fanin_roles(ctx: Ctx) -> list[list[dict[str, Any]]]:
    nw = ctx.workers
    batch = qos0_batch(TOPIC, ctx.payload, 32, 1)
    return merge(
        single(nw, {"role": "sub", "filters": [TOPIC], "qos": 0}),
        place(
            nw,
            ctx.publishers,
            {"role": "pub0", "batches": [batch], "window": ctx.qos0_window},
        ),
    )


def run_qos0_fanin(ctx: Ctx, broker: BrokerProcess | None) -> Outcome:
    assert broker is not None
    a, b, final, run = throughput(ctx, broker, qos0_fanin_roles(ctx))
    return qos0_outcome(ctx, run, a, b, final, lg.SENT)


QOS0_FANIN = Scenario(
    "qos0-fanin",
    "8 publishers -> 1 subscriber, one topic, 64 B, QoS 0, window of outstanding deliveries",
    (
        Metric("recv", "received msg/s", "higher"),
        Metric("sent", "published msg/s", "higher"),
        Metric("loss", "lost % (whole run)", "lower", 2),
        *CPU_METRICS,
    ),
    run_qos0_fanin,
)


# -- 2. QoS 1 fan-in ---------------------------------------------------------------------------


def qos1_fanin_roles(ctx: Ctx, clean: bool) -> list[list[dict[str, Any]]]:
    """QoS 1 publishers with bounded windows -> one QoS 1 subscriber (``clean`` session
    or a persistent one)."""
    nw = ctx.workers
    return merge(
        single(nw, {"role": "sub", "filters": [TOPIC], "qos": 1, "clean": clean}),
        place(
            nw,
            ctx.publishers,
            {
                "role": "pub1",
                "topic": TOPIC,
                "payload": ctx.payload,
                "window": ctx.qos1_window,
                "delivery_window": ctx.qos0_window,
            },
        ),
    )


def run_qos1_fanin(ctx: Ctx, broker: BrokerProcess | None) -> Outcome:
    assert broker is not None
    roles = qos1_fanin_roles(ctx, clean=True)
    a, b, final, run = throughput(ctx, broker, roles)
    out = Outcome(notes=run.problems())
    out.metrics["acked"] = rate(a, b, lg.ACKED)
    out.metrics["recv"] = rate(a, b, lg.RECV)
    out.metrics["unacked"] = final[lg.SENT] - final[lg.ACKED]
    out.metrics["undelivered"] = final[lg.SENT] - final[lg.RECV]
    cpu_metrics(ctx, out, a, b)
    return out


QOS1_FANIN = Scenario(
    "qos1-fanin",
    "8 publishers (64 unacked each) -> 1 subscriber at QoS 1 acking every delivery",
    (
        Metric("acked", "PUBACKs at publishers/s", "higher"),
        Metric("recv", "delivered msg/s", "higher"),
        Metric("unacked", "never acked (after drain)", "lower"),
        Metric("undelivered", "sent - delivered (after drain)", "lower"),
        *CPU_METRICS,
    ),
    run_qos1_fanin,
)


# -- 3. QoS 0 fan-out --------------------------------------------------------------------------


def run_qos0_fanout(
    ctx: Ctx, broker: BrokerProcess | None, rate: float = 0.0, batch_messages: int = 8
) -> Outcome:
    """Throughput, and how evenly it reaches the subscribers: the publisher stamps each
    batch of ``batch_messages`` with its write time, and every subscriber notes the delay
    of each delivery and the longest gap between two reads that brought it deliveries.
    With ``rate`` the publisher publishes that many messages/s at most
    (``paced-fanout``)."""
    assert broker is not None
    nw = ctx.workers
    subs = ctx.fanout_subs
    batch = qos0_batch(FANOUT_TOPIC, ctx.payload, batch_messages, subs)
    stamp = (lg.publish_prefix(FANOUT_TOPIC, ctx.payload, 0), bytes(max(0, ctx.payload - 8)))
    roles = merge(
        place(nw, subs, {"role": "sub", "filters": [FANOUT_TOPIC], "qos": 0, "timing": True}),
        single(
            nw,
            {
                "role": "pub0",
                "batches": [batch],
                "window": 256 * subs,
                "stamp": stamp,
                "rate": rate,
            },
            worker=nw - 1,
        ),
    )
    a, b, final, run = throughput(ctx, broker, roles)
    out = qos0_outcome(ctx, run, a, b, final, lg.EXPECTED)
    gaps = sorted(g for o in run.outputs for g in o.get("gaps", []))
    delays: dict[int, int] = {}
    for o in run.outputs:
        for bucket, count in o.get("delays", {}).items():
            delays[bucket] = delays.get(bucket, 0) + count
    out.metrics["gap_max"] = gaps[-1] / 1e6 if gaps else 0.0
    out.metrics["gap_median"] = percentile(gaps, 0.50) / 1e6
    out.metrics["delay_p50"] = histogram_percentile(delays, 0.50) * lg.DELAY_BUCKET_NS / 1e6
    out.metrics["delay_p99"] = histogram_percentile(delays, 0.99) * lg.DELAY_BUCKET_NS / 1e6
    return out


QOS0_FANOUT = Scenario(
    "qos0-fanout",
    "1 publisher -> 100 subscribers on one topic, QoS 0",
    (
        Metric("recv", "deliveries/s (all subs)", "higher"),
        Metric("sent", "publishes/s", "higher"),
        Metric("loss", "lost % (whole run)", "lower", 2),
        Metric("gap_max", "longest gap between deliveries ms", "lower", 1),
        Metric("gap_median", "median over subs of their longest gap ms", "lower", 1),
        Metric("delay_p50", "delivery delay p50 ms", "lower", 2),
        Metric("delay_p99", "delivery delay p99 ms", "lower", 2),
        *CPU_METRICS,
    ),
    run_qos0_fanout,
)

# paced-fanout: one publish at a time, 500 a second (50,000 deliveries/s; each broker
# then uses about half its core): the gaps a subscriber sees when neither broker is
# saturated, whose floor is the 2 ms between two publishes.
FANOUT_PACE = 500.0


def run_paced_fanout(ctx: Ctx, broker: BrokerProcess | None) -> Outcome:
    return run_qos0_fanout(ctx, broker, FANOUT_PACE, batch_messages=1)


PACED_FANOUT = Scenario(
    "paced-fanout",
    f"1 publisher -> 100 subscribers, QoS 0, {FANOUT_PACE:,.0f} single publishes/s: gaps "
    "and delays where neither broker is saturated",
    QOS0_FANOUT.metrics,
    run_paced_fanout,
)


# -- 4. wildcards ------------------------------------------------------------------------------

WILDCARD_KINDS = ("dev/{g}/+/temp", "dev/{g}/#", "+/{g}/sensor/temp", "dev/{g}/sensor/+")
WILDCARD_TOPICS = (
    "dev/{g}/sensor/temp",  # matches all four filters of group g
    "dev/{g}/sensor/humidity",  # dev/g/# and dev/g/sensor/+
    "dev/{g}/status",  # dev/g/#
    "site/{g}/sensor/temp",  # +/g/sensor/temp
    "other/{g}/x",  # nothing
)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (no $-topic rules needed here)."""
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


def wildcard_filters(n: int) -> list[str]:
    return [
        WILDCARD_KINDS[i % len(WILDCARD_KINDS)].format(g=i // len(WILDCARD_KINDS)) for i in range(n)
    ]


def wildcard_batches(
    n_subs: int, payload: int, count: int = 400, per_batch: int = 16, seed: int = 1
) -> list[tuple[bytes, int, int]]:
    """Pre-encoded publishes to random groups with their exact expected fan-out."""
    rng = random.Random(seed)
    filters = wildcard_filters(n_subs)
    groups = (n_subs + len(WILDCARD_KINDS) - 1) // len(WILDCARD_KINDS)
    batches = []
    for _ in range(count):
        data = []
        expected = 0
        for _ in range(per_batch):
            g = rng.randrange(groups)
            topic = rng.choice(WILDCARD_TOPICS).format(g=g)
            group_filters = filters[g * len(WILDCARD_KINDS) : (g + 1) * len(WILDCARD_KINDS)]
            expected += sum(topic_matches(f, topic) for f in group_filters)
            data.append(lg.publish_packet(topic, bytes(payload), 0))
        batches.append((b"".join(data), per_batch, expected))
    return batches


def run_wildcard(ctx: Ctx, broker: BrokerProcess | None) -> Outcome:
    assert broker is not None
    nw = max(2, ctx.workers)
    n = ctx.wildcard_subs
    filters = wildcard_filters(n)
    sub_roles = []
    start = 0
    for k in split(n, nw):
        sub_roles.append(
            {
                "role": "sub",
                "prefix": "w",
                "n": k,
                "qos": 0,
                "filters_per_conn": [[f] for f in filters[start : start + k]],
            }
        )
        start += k
    batches = wildcard_batches(n, ctx.payload)
    roles = merge(
        sub_roles,
        place(nw, 4, {"role": "pub0", "batches": batches, "window": ctx.wildcard_window}),
    )
    with LoadRun(ctx, broker, roles) as run:
        before = run.snapshot()
        setup = run.setup()
        after = run.snapshot()
        run.go()
        run.sleep(ctx.warmup)
        a = run.snapshot()
        run.sleep(ctx.seconds)
        b = run.snapshot()
        run.stop_load()
        run.drain()
        final = run.snapshot()
        run.finish()
    out = qos0_outcome(ctx, run, a, b, final, lg.EXPECTED)
    out.metrics["setup"] = setup
    out.metrics["setup_cost"] = 1e6 * (after.broker_cpu - before.broker_cpu) / max(1, n)
    out.metrics["rss"] = final.broker_rss_kb / 1024
    return out


WILDCARD = Scenario(
    "wildcard",
    "10,000 subscribers on distinct +/# filters, 4 QoS 0 publishers to topics matching 0-4",
    (
        Metric("recv", "deliveries/s", "higher"),
        Metric("sent", "publishes/s", "higher"),
        Metric("loss", "lost % (whole run)", "lower", 2),
        Metric("setup", "connect+subscribe all, s", "lower", 2),
        Metric("setup_cost", "broker CPU us per connect+subscribe", "lower", 1),
        Metric("rss", "broker RSS MB", "lower", 1),
        *CPU_METRICS,
    ),
    run_wildcard,
)


# -- 5. 10k idle connections -------------------------------------------------------------------

WORKER_FILES_SPARE = 512  # open files a generator worker needs beyond its connections
ONE_SOURCE_MAX = 10_000  # connections from 127.0.0.1 alone (finding a free port slows beyond)


def ephemeral_ports() -> int:
    """How many local ports the kernel hands out to one source address."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low, high = map(int, fh.read().split())
    except (OSError, ValueError):
        return ONE_SOURCE_MAX
    return high - low + 1


def idle_roles(ctx: Ctx) -> list[list[dict[str, Any]]]:
    """``ctx.connections`` idle clients over as many workers as their open-file limit
    needs (at least 2); beyond ONE_SOURCE_MAX each worker connects from its own
    127.0.0.x, so the ephemeral ports of one source address do not run out."""
    n = ctx.connections
    per_worker = max(1, min(NOFILE_TARGET, hard_nofile()) - WORKER_FILES_SPARE)
    per_worker = min(per_worker, ephemeral_ports() * 9 // 10)
    nw = max(2, ctx.workers, -(-n // per_worker))
    role: dict[str, Any] = {"role": "idle", "prefix": "i", "keepalive": 60}
    placed = place(nw, n, role)
    if n > ONE_SOURCE_MAX:
        for wid, worker_role in enumerate(placed):
            worker_role["source"] = f"127.0.0.{2 + wid}"
    return merge(placed)


def run_idle(ctx: Ctx, broker: BrokerProcess | None) -> Outcome:
    assert broker is not None
    n = ctx.connections
    roles = idle_roles(ctx)
    time.sleep(0.5)
    rss_before = broker.rss_kb()
    broker_files = proc_nofile(broker.pid) * broker.processes
    with LoadRun(ctx, broker, roles) as run:
        before = run.snapshot()
        elapsed = run.setup(timeout=max(180.0, n / 250))
        after = run.snapshot()
        connected = run.total(lg.CONNECTED)
        run.sleep(1.0)
        a = run.snapshot()
        run.sleep(ctx.idle_seconds)
        b = run.snapshot()
        run.finish()
    out = Outcome(notes=run.problems())
    out.metrics["connect"] = elapsed
    out.metrics["rate"] = connected / elapsed if elapsed else 0.0
    out.metrics["connect_broker_cpu"] = cpu_percent(before, after)
    out.metrics["connect_gen_cpu"] = cpu_percent(before, after, gen=True)
    out.metrics["connect_cost"] = (
        1e6 * (after.broker_cpu - before.broker_cpu) / connected if connected else 0.0
    )
    if out.metrics["connect_gen_cpu"] > GEN_SATURATED * len(ctx.gen_cpus):
        out.notes.append(
            f"load generator used {out.metrics['connect_gen_cpu']:.0f}% CPU while connecting: "
            "the connect time is bounded by the generator; compare broker CPU per connection"
        )
    out.metrics["rss_before"] = rss_before / 1024
    out.metrics["rss_after"] = a.broker_rss_kb / 1024
    out.metrics["per_conn"] = (a.broker_rss_kb - rss_before) / max(1, connected)
    out.metrics["idle_cpu"] = cpu_percent(a, b)
    if connected != n:
        out.notes.append(f"only {connected} of {n} connections were accepted")
    if broker_files < n:
        out.notes.append(
            f"the broker may open {broker_files} files (the hard limit here is "
            f"{hard_nofile()}; raising it needs CAP_SYS_RESOURCE): it cannot hold {n} clients"
        )
    return out


IDLE = Scenario(
    "idle-10k",
    "10,000 connections with keep alive 60: connect time, memory, idle CPU",
    (
        Metric("connect", "connect all (CONNACK), s", "lower", 2),
        Metric("rate", "connections/s", "higher"),
        Metric("connect_broker_cpu", "  broker CPU % while connecting"),
        Metric("connect_gen_cpu", "  generator CPU % while connecting"),
        Metric("connect_cost", "broker CPU us per connection", "lower", 1),
        Metric("rss_before", "broker RSS before, MB", "lower", 1),
        Metric("rss_after", "broker RSS after, MB", "lower", 1),
        Metric("per_conn", "KB per connection", "lower", 1),
        Metric("idle_cpu", "idle broker CPU %", "lower", 2),
    ),
    run_idle,
)


# -- 6. latency --------------------------------------------------------------------------------


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return float(sorted_values[index])


def histogram_percentile(counts: dict[int, int], q: float) -> float:
    """The bucket below which a fraction ``q`` of the counted values fall (upper edge)."""
    total = sum(counts.values())
    if not total:
        return 0.0
    rank = max(1, round(q * total))
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return float(bucket + 1)
    return float(max(counts) + 1)


def run_latency(ctx: Ctx, broker: BrokerProcess | None) -> Outcome:
    assert broker is not None
    nw = ctx.workers
    roles = merge(
        single(nw, {"role": "sub", "filters": [LATENCY_TOPIC], "qos": 1, "latency": True}),
        single(
            nw,
            {
                "role": "pub1",
                "topic": LATENCY_TOPIC,
                "payload": ctx.payload,
                "window": 1000,
                "rate": ctx.latency_rate,
                "stamped": True,
            },
        ),
    )
    with LoadRun(ctx, broker, roles) as run:
        a, b = measured_window(ctx, run)
        run.stop_load()
        run.drain()
        outputs = run.finish()
    samples = sorted(v for o in outputs for v in o.get("latencies", []))
    out = Outcome(notes=run.problems())
    out.metrics["rate"] = rate(a, b, lg.RECV)
    out.metrics["p50"] = percentile(samples, 0.50) / 1e6
    out.metrics["p99"] = percentile(samples, 0.99) / 1e6
    out.metrics["max"] = (samples[-1] / 1e6) if samples else 0.0
    out.metrics["samples"] = len(samples)
    cpu_metrics(ctx, out, a, b)
    return out


LATENCY = Scenario(
    "latency",
    "QoS 1 at a fixed 2,000 msg/s, 1 publisher -> 1 subscriber in one process",
    (
        Metric("rate", "delivered msg/s", ""),
        Metric("p50", "p50 ms", "lower", 3),
        Metric("p99", "p99 ms", "lower", 3),
        Metric("max", "max ms", "lower", 2),
        Metric("samples", "samples", ""),
        *CPU_METRICS,
    ),
    run_latency,
)


# -- 7. soak -----------------------------------------------------------------------------------


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return 60.0 * cov / var


def run_soak(ctx: Ctx, broker: BrokerProcess | None) -> Outcome:
    assert broker is not None
    nw = ctx.workers
    pubs = 4
    roles = merge(
        single(nw, {"role": "sub", "filters": [SOAK_TOPIC], "qos": 1}),
        place(
            nw,
            pubs,
            {
                "role": "pub1",
                "topic": SOAK_TOPIC,
                "payload": ctx.payload,
                "window": ctx.qos1_window,
                "rate": ctx.soak_rate / pubs,
            },
        ),
    )
    samples: list[tuple[float, float]] = []
    with LoadRun(ctx, broker, roles) as run:
        run.setup()
        run.go()
        run.sleep(ctx.warmup)
        a = run.snapshot()
        t0 = a.t
        samples.append((0.0, float(a.broker_rss_kb)))
        steps = max(1, int(ctx.soak_seconds / ctx.soak_interval))
        for _ in range(steps):
            run.sleep(ctx.soak_interval)
            s = run.snapshot()
            samples.append((s.t - t0, float(s.broker_rss_kb)))
        b = run.snapshot()
        run.stop_load()
        run.drain()
        final = run.snapshot()
        run.finish()
    out = Outcome(notes=run.problems())
    rss = [v for _, v in samples]
    out.metrics["recv"] = rate(a, b, lg.RECV)
    out.metrics["rss_start"] = rss[0] / 1024
    out.metrics["rss_end"] = rss[-1] / 1024
    out.metrics["rss_max"] = max(rss) / 1024
    out.metrics["slope"] = slope_per_minute(samples)
    out.metrics["undelivered"] = final[lg.SENT] - final[lg.RECV]
    cpu_metrics(ctx, out, a, b)
    out.extra["rss_samples_kb"] = samples
    return out


SOAK = Scenario(
    "soak",
    "bounded QoS 1 fan-in at a moderate fixed rate, broker RSS sampled every few seconds",
    (
        Metric("recv", "delivered msg/s", ""),
        Metric("rss_start", "RSS start MB", "lower", 1),
        Metric("rss_end", "RSS end MB", "lower", 1),
        Metric("rss_max", "RSS max MB", "lower", 1),
        Metric("slope", "RSS slope KB/min", "lower", 0),
        Metric("undelivered", "sent - delivered (after drain)", "lower"),
        *CPU_METRICS,
    ),
    run_soak,
    default=False,
    single_round=True,
)


# -- 8. Durability cost (Roost against itself) ---------------------------------------------

DURABLE_STORES = {
    "full": ["--store", "sqlite", "--durability", "full"],
    "memory": ["--store", "memory"],
}


def run_durable(ctx: Ctx, _: BrokerProcess | None) -> Outcome:
    """QoS 1 fan-in to one persistent subscriber: every delivery is stored, and every
    PUBACK waits for its commit with durability=full. Interleaved with --store memory.
    Each round's figures go to the notes: on a shared machine the spread matters."""
    out = Outcome()
    roles = qos1_fanin_roles(ctx, clean=False)
    rates: dict[str, list[float]] = {store: [] for store in DURABLE_STORES}
    costs: dict[str, list[float]] = {store: [] for store in DURABLE_STORES}
    for round_number in range(1, ctx.rounds + 1):
        figures = []
        for store, args in DURABLE_STORES.items():
            broker = Roost(ctx.broker_cpus, args)
            try:
                broker.start()
                a, b, _final, run = throughput(ctx, broker, roles)
                out.notes.extend(run.problems())
            finally:
                broker.stop()
            acked = rate(a, b, lg.ACKED)
            rates[store].append(acked)
            cost = cpu_percent(a, b) * 1e4 / acked if acked else 0.0  # CPU µs per message
            costs[store].append(cost)
            figures.append(
                f"{store} {acked:,.0f}/s {cost:.1f} µs/msg"
                f" (other load {other_load_percent(a, b):.0f}%)"
            )
        out.notes.append(f"run {round_number}: " + ", ".join(figures))
    for store in DURABLE_STORES:
        out.metrics[store] = median_high(rates[store])
        out.metrics[f"{store}_cpu"] = median_high(costs[store])
    if out.metrics["memory"]:
        out.metrics["ratio"] = out.metrics["full"] / out.metrics["memory"]
    return out


DURABLE = Scenario(
    "durable",
    "Roost only: 8 QoS 1 publishers -> 1 persistent subscriber, durability=full vs --store memory",
    (
        Metric("full", "PUBACKs/s, sqlite durability=full", "higher"),
        Metric("memory", "PUBACKs/s, --store memory", "higher"),
        Metric("ratio", "full / memory", "higher", 2),
        Metric("full_cpu", "broker CPU µs/msg, durability=full", "lower", 1),
        Metric("memory_cpu", "broker CPU µs/msg, --store memory", "lower", 1),
    ),
    run_durable,
    per_broker=False,
)


# -- 9. TLS cost (Roost against itself) ----------------------------------------------------


def run_tls(ctx: Ctx, _: BrokerProcess | None) -> Outcome:
    """The QoS 0 and QoS 1 fan-ins with every client on a TLS listener, against the same
    over plain TCP; fresh brokers, interleaved: TCP, TLS, TCP, TLS ..."""
    out = Outcome()
    runs = {
        "qos0": (qos0_fanin_roles(ctx), lg.RECV),
        "qos1": (qos1_fanin_roles(ctx, clean=True), lg.ACKED),
    }
    rates: dict[str, list[float]] = {f"{q}_{t}": [] for q in runs for t in ("tcp", "tls")}
    cpu: dict[str, list[float]] = {key: [] for key in rates}
    for _round in range(ctx.rounds):
        for qos, (roles, slot) in runs.items():
            for transport, kind in (("tcp", Roost), ("tls", RoostTls)):
                broker = kind(ctx.broker_cpus, ctx.roost_args)
                try:
                    broker.start()
                    a, b, _final, run = throughput(ctx, broker, roles)
                    out.notes.extend(run.problems())
                finally:
                    broker.stop()
                rates[f"{qos}_{transport}"].append(rate(a, b, slot))
                cpu[f"{qos}_{transport}"].append(cpu_percent(a, b))
    for key, values in rates.items():
        out.metrics[key] = sorted(values)[len(values) // 2]
        out.metrics[f"{key}_cpu"] = sorted(cpu[key])[len(values) // 2]
    for qos in runs:
        if out.metrics[f"{qos}_tcp"]:
            out.metrics[f"{qos}_ratio"] = out.metrics[f"{qos}_tls"] / out.metrics[f"{qos}_tcp"]
    out.extra["by_round"] = rates
    return out


TLS = Scenario(
    "tls",
    "Roost only: the QoS 0 and QoS 1 fan-ins over TLS (1.3, ECDSA) vs over plain TCP",
    (
        Metric("qos0_tcp", "QoS 0 fan-in received msg/s, TCP", "higher"),
        Metric("qos0_tls", "QoS 0 fan-in received msg/s, TLS", "higher"),
        Metric("qos0_ratio", "QoS 0 TLS / TCP", "higher", 2),
        Metric("qos1_tcp", "QoS 1 fan-in PUBACKs/s, TCP", "higher"),
        Metric("qos1_tls", "QoS 1 fan-in PUBACKs/s, TLS", "higher"),
        Metric("qos1_ratio", "QoS 1 TLS / TCP", "higher", 2),
        Metric("qos0_tcp_cpu", "broker CPU %, QoS 0 over TCP"),
        Metric("qos0_tls_cpu", "broker CPU %, QoS 0 over TLS"),
        Metric("qos1_tcp_cpu", "broker CPU %, QoS 1 over TCP"),
        Metric("qos1_tls_cpu", "broker CPU %, QoS 1 over TLS"),
    ),
    run_tls,
    per_broker=False,
    default=False,
)


# -- 10. fairness under a flood ----------------------------------------------------------------

PROBE_PING_INTERVAL = 0.005  # s between a PINGRESP and the probe's next PINGREQ
PROBE_CONNECT_INTERVAL = 0.2  # s between a probe connection's CONNACK and the next connect
PROBE_SETTLE = 0.5  # s the probe's last requests get to be answered before the load stops


def fairness_roles(ctx: Ctx) -> list[list[dict[str, Any]]]:
    """The flood on the generator workers; the probe in a process of its own, so that the
    publisher's loop does not delay the probe's reads."""
    nw = ctx.workers
    batch = qos0_batch(FLOOD_TOPIC, ctx.payload, 32, 2)
    flood = merge(
        single(nw, {"role": "sub", "filters": [FLOOD_TOPIC], "qos": 0, "prefix": "reader"}),
        single(
            nw,
            {
                "role": "sub",
                "filters": [FLOOD_TOPIC],
                "qos": 0,
                "prefix": "stalled",
                "stalled": True,
            },
        ),
        single(nw, {"role": "pub0", "batches": [batch], "window": 0}, worker=nw - 1),
    )
    probe = {
        "role": "probe",
        "n": 1,
        "ping_interval": PROBE_PING_INTERVAL,
        "connect_interval": PROBE_CONNECT_INTERVAL,
    }
    return [*flood, [probe]]


def run_fairness(ctx: Ctx, broker: BrokerProcess | None) -> Outcome:
    """One publisher floods QoS 0 flat out (no window) to a subscriber that reads and one
    that stopped reading; meanwhile a probe times PINGREQ -> PINGRESP on a connection of
    its own and new TCP connect + CONNECT -> CONNACK."""
    assert broker is not None
    with LoadRun(ctx, broker, fairness_roles(ctx)) as run:
        a, b = measured_window(ctx, run)
        run.sleep(PROBE_SETTLE)
        run.stop_load()
        outputs = run.finish()
    out = Outcome(notes=run.problems())
    reports = [o["probe"] for o in outputs if o.get("probe")]
    if not reports:
        out.notes.append("the probe reported nothing")
        out.failed = True
        return out
    report = reports[0]
    for kind in ("pings", "connects"):
        samples = sorted(report[kind])
        out.metrics[f"{kind}_p50"] = percentile(samples, 0.50) / 1e6
        if kind == "pings":
            out.metrics["pings_p99"] = percentile(samples, 0.99) / 1e6
        out.metrics[f"{kind}_max"] = (samples[-1] / 1e6) if samples else 0.0
        out.metrics[f"{kind}_n"] = len(samples)
        if report["unanswered"][kind]:
            out.notes.append(
                f"{report['unanswered'][kind]} {kind} still unanswered {PROBE_SETTLE} s after "
                "the window closed (counted with the time waited, a lower bound)"
            )
    out.metrics["sent"] = rate(a, b, lg.SENT)
    out.metrics["recv"] = rate(a, b, lg.RECV)
    cpu_metrics(ctx, out, a, b)
    return out


FAIRNESS = Scenario(
    "fairness",
    "1 QoS 0 publisher flat out -> 1 reading + 1 stalled subscriber; "
    "another client's PINGRESP and a new client's CONNACK",
    (
        Metric("pings_p50", "PINGREQ -> PINGRESP p50 ms", "lower", 2),
        Metric("pings_p99", "PINGREQ -> PINGRESP p99 ms", "lower", 2),
        Metric("pings_max", "PINGREQ -> PINGRESP max ms (target < 100)", "lower", 2),
        Metric("pings_n", "  pings", ""),
        Metric("connects_p50", "connect -> CONNACK p50 ms", "lower", 2),
        Metric("connects_max", "connect -> CONNACK max ms (target < 1000)", "lower", 2),
        Metric("connects_n", "  connects", ""),
        Metric("sent", "flood published msg/s", "higher"),
        Metric("recv", "flood received msg/s (reading subscriber)", "higher"),
        *CPU_METRICS,
    ),
    run_fairness,
)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        CEILING,
        QOS0_FANIN,
        QOS1_FANIN,
        QOS0_FANOUT,
        PACED_FANOUT,
        WILDCARD,
        IDLE,
        LATENCY,
        SOAK,
        DURABLE,
        TLS,
        FAIRNESS,
    )
}
