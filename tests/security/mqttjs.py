"""MQTT.js (npm package ``mqtt``, pinned in tests/js/package.json) for the WebSocket tests:
installed into tests/js/node_modules on first use (``npm ci``, under a file lock so
parallel test workers install it once; ``make test`` installs it too). Node.js and npm
come from Debian's packages when missing; if they cannot be installed the test fails."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

from debian import ensure_binary

JS_DIR = Path(__file__).resolve().parent.parent / "js"
INSTALLED = JS_DIR / "node_modules" / "mqtt" / "package.json"


def ensure_mqttjs() -> Path:
    """The directory whose node_modules holds MQTT.js, installing it if needed."""
    with open(JS_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not INSTALLED.exists():
            npm = ensure_binary("npm", "nodejs", "npm")
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=JS_DIR,
                check=True,
                capture_output=True,
                timeout=300,
            )
    return JS_DIR
