"""Tools the tests need from Debian packages (HAProxy, Chromium, Node.js with npm): found on
PATH (or /usr/sbin), else installed with apt-get, once for all parallel test workers (a file
lock). If the install fails, the test fails: nothing is skipped."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

INSTALL_LOCK = Path("/tmp/roost-tests-apt.lock")
APT_TIMEOUT = 900  # seconds


def _find(binary: str) -> str | None:
    return shutil.which(binary, path=f"{os.environ.get('PATH', '')}:/usr/sbin")


def ensure_binary(binary: str, *packages: str) -> str:
    """The path of ``binary``, installing ``packages`` (default: one named like it) first
    if it is missing."""
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _find(binary)
        if found is None:
            wanted = " ".join(packages or (binary,))
            subprocess.run(
                f"apt-get update && apt-get install -y {wanted}",
                shell=True,
                check=True,
                timeout=APT_TIMEOUT,
                stdout=subprocess.DEVNULL,
            )
            found = _find(binary)
    assert found is not None, f"apt-get installed no {binary}"
    return found
