"""The pure core imports no I/O machinery: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PURE_MODULES = [
    "roost.codec",
    "roost.topics",
    "roost.cache",
    "roost.session",
    "roost.seldom",
    "roost.router",
    "roost.timers",
    "roost.transactions",
    "roost.message",
    "roost.negotiation",
    "roost.outbox",
    "roost.protocol",
    "roost.core",
    "roost.presence",
    "roost.cluster.wire",
    "roost.cluster.routes",
    "roost.cluster.membership",
    "roost.cluster.assign",
    "roost.transport.proxy",
    "roost.security.acl",
    "roost.security.scram",
    "roost.security.backoff",
    "roost.security.passwords",
    "roost.security.limits",
    "roost.transport.certificate",
    "roost.store.deferred",
]

# threading is allowed: the standard logging module imports it.
FORBIDDEN = ["asyncio", "sqlite3", "socket", "selectors", "ssl", "redis", "uvloop"]
SHELL_MODULES = [
    "roost.attach",
    "roost.broker",
    "roost.store.sqlite",
    "roost.store.sqlite_batch",
    "roost.store.redis",
    "roost.cluster.node",
    "roost.cluster.flow",
    "roost.transport.tcp",
    "roost.transport.tls",
    "roost.transport.websocket",
    "roost.transport.listeners",
    "roost.client",
    "roost.workers",
    "roost.worker_settings",
    "roost.cluster.supervisor",
]

PROBE = textwrap.dedent(
    """
    import builtins, importlib, json, sys

    watched = set(sys.argv[2].split(","))
    importer_of = {}
    original_import = builtins.__import__

    def tracing_import(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {}).get("__name__", "?")
        top = name.split(".")[0]
        if (top in watched or name in watched) and name not in sys.modules:
            importer_of.setdefault(name, importer)
        return original_import(name, globals, locals, fromlist, level)

    before = set(sys.modules)
    builtins.__import__ = tracing_import
    for module in sys.argv[1].split(","):
        importlib.import_module(module)
    builtins.__import__ = original_import
    print(json.dumps({
        "before": sorted(before),
        "after": sorted(sys.modules),
        "importer_of": importer_of,
    }))
    """
)


def probe(modules: list[str], watched: list[str]) -> tuple[set[str], set[str], dict[str, str]]:
    """Import ``modules`` in a fresh interpreter: (modules before, modules after, who first
    imported each watched module)."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(modules), ",".join(watched)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    return set(data["before"]), set(data["after"]), data["importer_of"]


def chain(importer_of: dict[str, str], name: str) -> str:
    links = [name]
    while name in importer_of and len(links) < 20:
        name = importer_of[name]
        links.append(name)
    return " <- ".join(links)


def test_pure_core_imports_no_io_modules() -> None:
    _, after, importer_of = probe(PURE_MODULES, FORBIDDEN + SHELL_MODULES)
    for module in PURE_MODULES:
        assert module in after
    found = sorted(
        name for name in after if name.split(".")[0] in FORBIDDEN or name in SHELL_MODULES
    )
    assert not found, "; ".join(chain(importer_of, name) for name in found)


def test_probe_detects_a_forbidden_import() -> None:
    """The check itself works: importing the asyncio shell is caught with its chain."""
    before, after, importer_of = probe(["roost.broker"], ["asyncio"])
    assert "asyncio" not in before
    assert "asyncio" in after
    assert importer_of["asyncio"].startswith("roost")
