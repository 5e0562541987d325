"""The transactions documentation runs: the paho-mqtt script of docs/transactions.md and the
order-paid demo of examples/order_payment.py, each as a process against a real broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- example: paho -->"


def documented_example() -> str:
    """The first ```python block after the example marker of docs/transactions.md."""
    text = (ROOT / "docs" / "transactions.md").read_text()
    assert MARKER in text, f"{MARKER} missing from docs/transactions.md"
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert block is not None, f"no python block after {MARKER}"
    return block.group(1)


def run(broker: Any, *command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROOST_HOST": broker.host, "ROOST_PORT": str(broker.port)}
    result = subprocess.run(
        [sys.executable, *command], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def test_paho_example_in_the_docs_runs(make_broker: Callable[..., Any], tmp_path: Path) -> None:
    script = tmp_path / "paho_example.py"
    script.write_text(documented_example())
    lines = run(make_broker(), str(script), timeout=60).stdout.splitlines()
    assert len(lines) == 4, lines
    assert lines[0] == "delivered: order 1001 paid"
    assert lines[1].startswith("$tx/rollback ") and "PUBACK 0x83" in lines[1]
    assert lines[1].endswith("is already committed")
    assert lines[2] == "check 1 of 'order 1002 paid': commit"
    assert lines[3] == "delivered: order 1002 paid"


def test_order_payment_demo(make_broker: Callable[..., Any]) -> None:
    broker = make_broker(
        transaction_timeout=1, transaction_check_interval=1, transaction_check_max=5
    )
    demo = str(ROOT / "examples" / "order_payment.py")
    command = (demo, "--host", broker.host, "--port", str(broker.port), "demo", "--timeout", "30")
    output = run(broker, *command, timeout=120).stdout
    for expected in (
        "restarted: check 1 for order 1001: COMMIT",
        "logistics: received order 1001",
        "loyalty: received order 1001",
        "restarted: check 1 for order 1002: ROLLBACK",
        "done: both consumers got orders 1001 and 1003, never 1002",
    ):
        assert expected in output, output
