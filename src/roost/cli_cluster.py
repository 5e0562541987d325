"""``roost cluster up`` runs a local cluster (a Valkey/Redis and N nodes) in the
foreground until Ctrl-C; ``roost cluster status`` shows the nodes of a cluster as their
heartbeat records describe them."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from roost.cluster import keys
from roost.cluster.localserver import LocalServer
from roost.cluster.supervisor import (
    NodeProcess,
    install_stop_signals,
    node_arguments,
    stop_nodes,
    wait_ready,
)
from roost.errors import RoostError

DEFAULT_REDIS_PORT = 6379
DEFAULT_REDIS = f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"
START_TIMEOUT = 30.0  # seconds for every node to listen
STATUS_FIELDS = ("address", "connections", "redirect", "version", "up", "beat", "routes")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cluster up`` and ``cluster status``."""
    cluster = subparsers.add_parser("cluster", help="run or inspect a cluster of nodes")
    commands = cluster.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    up = commands.add_parser(
        "up",
        help="run a local cluster until Ctrl-C",
        description="Start a Valkey/Redis (unless --redis is given) and N nodes node0, "
        "node1 ... on consecutive ports; Ctrl-C stops them all. Flags after -- go to "
        "every node's 'roost serve'.",
    )
    up.add_argument("--nodes", type=int, default=3, metavar="N", help="default: 3")
    up.add_argument(
        "--base-port", type=int, default=6000, metavar="PORT", help="MQTT port of node0"
    )
    up.add_argument(
        "--http-base-port",
        type=int,
        default=8080,
        metavar="PORT",
        help="HTTP port of node0 (/api/v1/assign); -1: none",
    )
    up.add_argument("--redis", metavar="URL", help="use this Redis/Valkey, start none")
    up.add_argument(
        "--redis-port",
        type=int,
        default=DEFAULT_REDIS_PORT,
        metavar="PORT",
        help="port of the Valkey/Redis started (0: any free one)",
    )
    up.add_argument("--data-dir", default="./data/cluster", help="nodes' and Valkey's data")
    up.add_argument("node_flags", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    up.set_defaults(func=run_up)
    status = commands.add_parser("status", help="list the nodes of a cluster")
    status.add_argument("--redis", default=DEFAULT_REDIS, metavar="URL", help=DEFAULT_REDIS)
    status.set_defaults(func=run_status)


def run_up(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM (status 0) or until a node stops on its own (status 1)."""
    if args.nodes < 1:
        print("roost cluster up: error: --nodes must be at least 1", file=sys.stderr)
        return 2
    stop = threading.Event()
    install_stop_signals(stop)
    data_dir = Path(args.data_dir)
    node_flags = [flag for flag in args.node_flags if flag != "--"]
    lock = threading.Lock()
    server: LocalServer | None = None
    nodes: list[NodeProcess] = []
    try:
        redis_url = args.redis
        if redis_url is None:
            server = LocalServer(data_dir / "redis", port=args.redis_port).start()
            redis_url = server.url
            assert server.process is not None
            _say(lock, f"redis at {redis_url} (pid {server.process.pid})")
        for index in range(args.nodes):
            arguments = node_arguments(
                redis_url, index, args.base_port, args.http_base_port, data_dir
            )
            node = NodeProcess(f"node{index}", arguments + node_flags, sys.stdout, lock)
            nodes.append(node.start(on_exit=stop))
            _say(lock, f"node{index} (pid {node.pid}) on port {args.base_port + index}")
        if not wait_ready(nodes, stop, START_TIMEOUT):
            if not stop.is_set():
                print(
                    f"roost cluster up: error: nodes not up in {START_TIMEOUT:g} s",
                    file=sys.stderr,
                )
            return 1
        _say(lock, f"cluster up: {args.nodes} nodes on {redis_url}; Ctrl-C stops it")
        while not stop.wait(1.0):
            pass
        stopped_alone = [node.name for node in nodes if node.exited.is_set()]
        if stopped_alone:
            _say(lock, f"{', '.join(stopped_alone)} stopped; stopping the cluster")
        return 1 if stopped_alone else 0
    except RoostError as exc:
        print(f"roost cluster up: error: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop_all(nodes, server, lock)


def _stop_all(nodes: list[NodeProcess], server: LocalServer | None, lock: threading.Lock) -> None:
    """Nodes first (each leaves the cluster while Redis is still there), then Redis."""
    stop_nodes(nodes)
    if server is not None:
        server.stop()
    _say(lock, "cluster stopped")


def _say(lock: threading.Lock, text: str) -> None:
    with lock:
        print(f"[cluster] {text}", flush=True)


def run_status(args: argparse.Namespace) -> int:
    """Print one line per node of ``roost:nodes`` with its heartbeat record."""
    client: Any = Redis.from_url(args.redis, socket_timeout=5, socket_connect_timeout=5)
    try:
        members = sorted(member.decode() for member in client.smembers(keys.NODES))
        records = [client.hgetall(keys.node(member)) for member in members]
    except RedisError as exc:
        print(f"roost cluster status: error: cannot read {args.redis}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    rows = [["node", *STATUS_FIELDS]]
    alive = 0
    for member, record in zip(members, records, strict=True):
        fields = {key.decode(): value.decode() for key, value in record.items()}
        if not fields:
            rows.append([member, "(no heartbeat: dead or leaving)"])
            continue
        alive += 1
        fields["up"] = _uptime(fields.get("started", ""))
        rows.append([member, *(fields.get(name, "") for name in STATUS_FIELDS)])
    full_rows = [row for row in rows if len(row) == len(rows[0])]  # not the dead nodes'
    widths = [max(len(row[column]) for row in full_rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        )
    print(f"{alive} nodes alive")
    return 0


def _uptime(started: str) -> str:
    try:
        seconds = int(time.time() - float(started))
    except ValueError:
        return "?"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"
