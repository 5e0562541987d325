"""Order paid → logistics and loyalty points, with Roost transactional messages.

The order service records a payment in its own SQLite ``orders`` table and announces it on
``orders/paid``. Both must happen or neither: the announcement is sent as a half message, the
order row is written in the local transaction, and only then is the message committed. Two
consumers (logistics, loyalty points) subscribe to ``orders/paid``.

If the order service dies between the half message and the decision, the broker asks the
producer group ``orders`` for the transaction's state; a restarted order service answers from
its ``orders`` table: row present → COMMIT, absent → ROLLBACK.

Usage (against a running broker, e.g. ``roost serve``)::

    python examples/order_payment.py --host 127.0.0.1 --port 1883 demo

runs the whole story as subprocesses and exits 0 if it went as expected:

1. the consumers ``logistics`` and ``loyalty`` start;
2. ``pay 1001 --crash after-local-commit``: half message stored, order row committed, then the
   process dies before sending COMMIT;
3. ``pay 1002 --crash after-prepare``: half message stored, then the process dies before the
   local transaction;
4. ``serve``: the order service restarts and answers the check-backs: 1001 COMMIT (the
   consumers get it now), 1002 ROLLBACK (nobody ever gets it);
5. ``pay 1003``: a normal payment, committed at once.

The parts run on their own too::

    python examples/order_payment.py consumer logistics
    python examples/order_payment.py pay 1004 --amount 19.90 --db orders.sqlite
    python examples/order_payment.py serve --db orders.sqlite

Checks come ``--check-delay`` seconds (default 3) after a half message, then every
``transaction_check_interval`` of the broker (default 30 s; the demo is quickest with
``roost serve --transaction-check-interval 1``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from roost.client import (
    CheckRequest,
    HalfMessage,
    LocalTransactionState,
    MQTTClient,
    TransactionProducer,
)

TOPIC = "orders/paid"
GROUP = "orders"
CRASH_EXIT = 3  # exit status of a deliberately crashed order service
COMMIT, ROLLBACK = LocalTransactionState.COMMIT, LocalTransactionState.ROLLBACK


def say(*parts: object) -> None:
    print(*parts, flush=True)


# -- the order service ---------------------------------------------------------------------


def open_orders(path: str) -> sqlite3.Connection:
    """The order service's own database."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY,"
        " amount TEXT NOT NULL, status TEXT NOT NULL, tx_id TEXT UNIQUE NOT NULL)"
    )
    return db


def order_service(args: argparse.Namespace, db: sqlite3.Connection) -> TransactionProducer:
    """A member of producer group ``orders`` whose check-backs read the ``orders`` table.

    No row for the transaction means the local transaction never committed: a member still
    running it answers UNKNOWN by itself, and the check delay gives it time to finish.
    """

    def check(request: CheckRequest) -> LocalTransactionState:
        row = db.execute("SELECT order_id FROM orders WHERE tx_id = ?", (request.transaction_id,))
        found = row.fetchone()
        state = COMMIT if found else ROLLBACK
        order = json.loads(request.payload)["order_id"]
        say(f"check {request.check_number} for order {order}: {state.name}")
        return state

    url = f"mqtt://{args.host}:{args.port}"
    return TransactionProducer(url, GROUP, check=check)


async def pay(args: argparse.Namespace) -> None:
    """Record the payment of one order and announce it, as one transaction."""
    db = open_orders(args.db)

    def execute(message: HalfMessage) -> LocalTransactionState:
        say(f"half message for order {args.order} stored (tx {message.transaction_id})")
        if args.crash == "after-prepare":
            say("crashing before the local transaction")
            os._exit(CRASH_EXIT)
        with db:  # one local transaction: the order row and its transaction id
            db.execute(
                "INSERT INTO orders VALUES (?, ?, 'paid', ?)",
                (args.order, args.amount, message.transaction_id),
            )
        say(f"order {args.order} marked paid in the local database")
        if args.crash == "after-local-commit":
            say("crashing before the decision")
            os._exit(CRASH_EXIT)
        return COMMIT

    payload = json.dumps({"order_id": args.order, "amount": args.amount})
    async with order_service(args, db) as producer:
        result = await producer.send(TOPIC, payload, execute, check_delay=args.check_delay)
    say(f"order {args.order}: {result.state.name} sent")


async def serve(args: argparse.Namespace) -> None:
    """Answer check-backs for the group until interrupted."""
    async with order_service(args, open_orders(args.db)):
        say("answering check-backs")
        await asyncio.Event().wait()


# -- the consumers -------------------------------------------------------------------------


async def consume(args: argparse.Namespace) -> None:
    """Act on each paid order once: delivery is at least once, so skip repeated tx ids."""
    seen: set[str] = set()
    async with await MQTTClient.connect(args.host, args.port, args.name) as client:
        await client.subscribe(TOPIC, qos=1)
        say("ready")
        async for message in client.messages():
            tx_id = dict(message.properties.user_properties).get("roost-tx-id", "")
            if tx_id in seen:
                continue
            seen.add(tx_id)
            order = json.loads(message.payload)
            say(f"received order {order['order_id']} ({order['amount']} paid)")


# -- the demo ------------------------------------------------------------------------------


class Part:
    """One subprocess of the demo; its output lines are echoed with a name and a time."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, start: float) -> None:
        self.name = name
        self.process = process
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.seen: list[str] = []
        self._start = start
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode().rstrip()
            say(f"[{time.monotonic() - self._start:6.2f}s] {self.name:>10}: {line}")
            self.seen.append(line)
            self.lines.put_nowait(line)

    async def expect(self, text: str, timeout: float) -> None:
        """Wait for an output line containing ``text``."""
        async with asyncio.timeout(timeout):
            while text not in await self.lines.get():
                pass

    async def wait(self, timeout: float) -> int:
        async with asyncio.timeout(timeout):
            status = await self.process.wait()
            await self._reader
        return status

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        await self._reader


class DemoFailed(Exception):
    """A step of the demo did not happen as told."""


class Demo:
    """The story of this module's docstring, told by subprocesses."""

    def __init__(self, args: argparse.Namespace, db: Path) -> None:
        self.args = args
        self.db = str(db)
        self.parts: list[Part] = []
        self.start = time.monotonic()

    async def run(self, name: str, *command: str) -> Part:
        """Start this script with ``command`` as the part called ``name``."""
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, __file__, "--host", self.args.host, "--port", str(self.args.port)),
            *command,
            stdout=asyncio.subprocess.PIPE,
        )
        self.parts.append(Part(name, process, self.start))
        return self.parts[-1]

    async def pay(self, order: str, *options: str, status: int = 0) -> None:
        """Run the order service for one payment; it must exit with ``status``."""
        delay = str(self.args.check_delay)
        producer = await self.run(
            "producer", "pay", order, "--db", self.db, "--check-delay", delay, *options
        )
        if await producer.wait(self.args.timeout) != status:
            raise DemoFailed(f"the order service paying {order} did not exit with {status}")

    async def expect(self, parts: list[Part], text: str) -> None:
        for part in parts:
            try:
                await part.expect(text, self.args.timeout)
            except TimeoutError:
                raise DemoFailed(f"{part.name} did not print {text!r}") from None

    async def tell(self) -> None:
        consumers = [await self.run(name, "consumer", name) for name in ("logistics", "loyalty")]
        await self.expect(consumers, "ready")
        say("-- the order service dies after paying order 1001, before committing it")
        await self.pay("1001", "--crash", "after-local-commit", status=CRASH_EXIT)
        say("-- the order service dies after the half message of order 1002")
        await self.pay("1002", "--crash", "after-prepare", status=CRASH_EXIT)
        say("-- the order service restarts and answers the broker's check-backs")
        restarted = await self.run("restarted", "serve", "--db", self.db)
        await self.expect([restarted], "order 1001: COMMIT")
        await self.expect(consumers, "received order 1001")
        await self.expect([restarted], "order 1002: ROLLBACK")
        say("-- a normal payment: order 1003")
        await self.pay("1003")
        await self.expect(consumers, "received order 1003")
        for consumer in consumers:
            if any("received order 1002" in line for line in consumer.seen):
                raise DemoFailed(f"{consumer.name} received the rolled-back order 1002")

    async def stop(self) -> None:
        for part in self.parts:
            await part.stop()


async def demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 if every step happened as told."""
    with tempfile.TemporaryDirectory() as workdir:
        story = Demo(args, Path(workdir) / "orders.sqlite")
        try:
            await story.tell()
        except DemoFailed as exc:
            say(f"-- demo FAILED: {exc}")
            return 1
        finally:
            await story.stop()
    say("-- done: both consumers got orders 1001 and 1003, never 1002")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="run the whole story as subprocesses")
    run_demo.add_argument("--timeout", type=float, default=90, help="seconds per step")
    pay_order = commands.add_parser("pay", help="pay one order as a transaction")
    pay_order.add_argument("order")
    pay_order.add_argument("--amount", default="42.00")
    pay_order.add_argument("--crash", choices=("after-prepare", "after-local-commit"))
    serve_checks = commands.add_parser("serve", help="answer check-backs until interrupted")
    for command in (run_demo, pay_order):
        command.add_argument("--check-delay", type=int, default=3, help="seconds to 1st check")
    for command in (pay_order, serve_checks):
        command.add_argument("--db", required=True, help="the order service's SQLite file")
    consumer = commands.add_parser("consumer", help="print paid orders")
    consumer.add_argument("name")
    args = parser.parse_args()
    handlers = {"demo": demo, "pay": pay, "serve": serve, "consumer": consume}
    try:
        return asyncio.run(handlers[args.command](args)) or 0
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
