"""``python -m bench.heap``: where the memory of idle connections goes.

Starts a Roost broker (uvloop, the settings ``python -m bench`` gives it) in a child
process, opens ``--connections`` idle MQTT 3.1.1 clients (keep alive 60) from this process,
and has the broker describe its heap before and after:

* VmRSS, the figure the ``idle-10k`` scenario reports;
* a count of live objects by type (``gc.get_objects()`` plus the untracked objects they
  refer to: str, bytes, int, float ...), with ``sys.getsizeof`` bytes;
* with ``--trace``, ``tracemalloc`` (``--trace-depth`` frames) grouped by the innermost
  frame in ``roost`` (allocations made from C, e.g. by uvloop's accept callbacks, are
  grouped under their innermost Python frame).

Every figure is the difference after - before, divided by the connections. tracemalloc
slows the broker and adds its own bookkeeping to RSS: compare RSS without ``--trace``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.brokers import (
    HOST,
    MAX_INFLIGHT,
    MAX_KEEPALIVE,
    MAX_QUEUED_MESSAGES,
    free_port,
    proc_rss_kb,
    raise_nofile,
    src_env,
)
from bench.loadgen import connect_packet

CONNACK_OK = b"\x20\x02\x00\x00"
CONCURRENCY = 64


# -- the broker side -------------------------------------------------------------------------


def heap_by_type() -> dict[str, list[int]]:
    """type name -> [count, bytes] of every live object reachable by the collector's view."""
    tracked = gc.get_objects()  # first: the containers below are not to be counted
    seen: set[int] = set()
    table: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    pending: list[Any] = list(tracked)
    while pending:
        obj = pending.pop()
        key = id(obj)
        if key in seen:
            continue
        seen.add(key)
        row = table[type(obj).__qualname__ + _module_of(obj)]
        row[0] += 1
        row[1] += sys.getsizeof(obj, 0)
        if not gc.is_tracked(obj) or obj is tracked:
            continue
        for ref in gc.get_referents(obj):
            if not gc.is_tracked(ref) and id(ref) not in seen:
                pending.append(ref)
    del tracked, pending
    return dict(table)


def _module_of(obj: object) -> str:
    module = type(obj).__dict__.get("__module__") or getattr(type(obj), "__module__", "")
    if not isinstance(module, str) or module == "builtins":
        return ""
    return f" ({module.split('.')[0]})"


def traced_by_site() -> dict[str, list[int]]:
    """'file:line' of the innermost roost frame (else the innermost frame) -> [blocks, bytes]."""
    import tracemalloc

    table: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for trace in tracemalloc.take_snapshot().traces:
        frames = list(reversed(trace.traceback))  # most recent first
        chosen = next((f for f in frames if "/roost/" in f.filename), frames[0])
        label = f"{_short(chosen.filename)}:{chosen.lineno}"
        row = table[label]
        row[0] += 1
        row[1] += trace.size
    return dict(table)


def _short(filename: str) -> str:
    for marker in ("/roost/", "/uvloop/", "/asyncio/", "/python3.11/"):
        if marker in filename:
            return marker.strip("/") + "/" + filename.split(marker, 1)[1]
    return filename


def serve(port: int, trace: int, max_connections: int) -> None:
    """The broker process: answers 'snap' on stdin with one JSON line on stdout."""
    if trace:
        import tracemalloc

        tracemalloc.start(trace)
    import uvloop

    from roost.broker import Broker
    from roost.config import Settings
    from roost.logs import configure_logging

    settings = Settings(
        host=HOST,
        port=port,
        log_level="warning",
        max_connections=max_connections,
        max_queued_messages=MAX_QUEUED_MESSAGES,
        max_inflight=MAX_INFLIGHT,
        max_keep_alive=MAX_KEEPALIVE,
    )
    configure_logging(settings.log_level, settings.log_format, settings.log_levels)

    async def main() -> None:
        broker = Broker(settings)
        await broker.start()
        loop = asyncio.get_running_loop()
        print(json.dumps({"ready": True}), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "quit":
                break
            gc.collect()
            report: dict[str, Any] = {"rss_kb": proc_rss_kb(os.getpid())}
            if trace:
                report["sites"] = traced_by_site()
            report["types"] = heap_by_type()
            core = broker.core
            assert core is not None
            report["open_connections"] = len(core.open_connections)
            print(json.dumps(report), flush=True)
        await broker.stop()

    uvloop.run(main())


# -- the client side -------------------------------------------------------------------------


async def open_idle(n: int, port: int) -> list[asyncio.StreamWriter]:
    sem = asyncio.Semaphore(CONCURRENCY)
    writers: list[asyncio.StreamWriter] = []

    async def one(i: int) -> None:
        async with sem:
            reader, writer = await asyncio.open_connection(HOST, port, limit=64)
            writer.write(connect_packet(f"h{i}", 60))
            if await reader.readexactly(4) != CONNACK_OK:
                raise RuntimeError(f"client h{i} was refused")
            writers.append(writer)

    await asyncio.gather(*(one(i) for i in range(n)))
    return writers


def diff(
    before: dict[str, list[int]], after: dict[str, list[int]], n: int, top: int
) -> list[tuple[str, float, float]]:
    rows = []
    for key in set(before) | set(after):
        b = before.get(key, [0, 0])
        a = after.get(key, [0, 0])
        rows.append((key, (a[0] - b[0]) / n, (a[1] - b[1]) / n))
    rows.sort(key=lambda r: -abs(r[2]))
    return rows[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.heap", description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--trace", action="store_true", help="tracemalloc sites too (slow)")
    parser.add_argument("--trace-depth", type=int, default=12)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", metavar="FILE", help="write both reports to FILE")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-trace", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    raise_nofile(2 * args.connections + 1024)
    if args.serve:
        serve(args.serve, args.serve_trace, args.connections + 1000)
        return 0
    port = free_port()
    depth = args.trace_depth if args.trace else 0
    child = subprocess.Popen(
        [
            *(sys.executable, "-m", "bench.heap", "--serve", str(port)),
            *("--serve-trace", str(depth), "--connections", str(args.connections)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=src_env(),
    )
    assert child.stdin is not None and child.stdout is not None
    try:

        def snap() -> dict[str, Any]:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("snap\n")
            child.stdin.flush()
            return dict(json.loads(child.stdout.readline()))

        json.loads(child.stdout.readline())  # ready
        before = snap()

        async def clients() -> dict[str, Any]:
            started = time.monotonic()
            writers = await open_idle(args.connections, port)
            print(
                f"{len(writers)} connections in {time.monotonic() - started:.1f} s",
                file=sys.stderr,
            )
            await asyncio.sleep(1.0)
            report = await asyncio.get_running_loop().run_in_executor(None, snap)
            for writer in writers:
                writer.close()
            return report

        after = asyncio.run(clients())
        n = after["open_connections"] - before["open_connections"]
        print(f"connections: {n}")
        print(f"RSS: {(after['rss_kb'] - before['rss_kb']) * 1024 / n:.0f} bytes per connection")
        print("\nobjects by type (per connection: count, bytes)")
        total = sum(row[2] for row in diff(before["types"], after["types"], n, 1_000_000))
        for key, count, size in diff(before["types"], after["types"], n, args.top):
            print(f"  {size:8.1f} B  {count:6.2f}  {key}")
        print(f"  {total:8.1f} B  total of sys.getsizeof over all types")
        if args.trace:
            print("\ntracemalloc by site (per connection: blocks, bytes)")
            rows = diff(before["sites"], after["sites"], n, 10_000)
            for key, count, size in rows[: args.top]:
                print(f"  {size:8.1f} B  {count:6.2f}  {key}")
            print(f"  {sum(r[2] for r in rows):8.1f} B  total traced")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"before": before, "after": after, "connections": n}, fh)
    finally:
        child.stdin.write("quit\n")
        child.stdin.flush()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
