"""The log line a connection's close leaves (``roost.protocol`` at level info), waited for."""

from __future__ import annotations

import pytest

from paho_helpers import wait_until


def logged_closes(caplog: pytest.LogCaptureFixture, client_id: str) -> list[str]:
    """Wait until ``client_id``'s close is logged (capture on with level info); its lines."""

    def closes() -> list[str]:
        lines = [r.getMessage() for r in caplog.records if r.name == "roost.protocol"]
        return [line for line in lines if f"{client_id} disconnected" in line]

    wait_until(lambda: bool(closes()), what=f"the log line of {client_id}'s close")
    return closes()
