"""The chat demo (``python -m examples.chat``) as a real process: lines in on stdin,
lines out on stdout, waited for by pattern."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from paho_helpers import TIMEOUT, wait_until

REPO = Path(__file__).parent.parent


class ChatProcess:
    """One user's chat; ``where`` is ``--assign URL`` or ``--host H --port P``."""

    def __init__(self, user: str, friends: list[str], *where: str) -> None:
        self.user = user
        self.lines: list[str] = []
        self._seen = 0  # lines already matched by expect()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
        command = [sys.executable, "-m", "examples.chat", "--user", user]
        self.process = subprocess.Popen(
            [*command, "--friends", ",".join(friends), *where],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """The first line after those already expected that matches ``pattern``."""
        regex = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            for index in range(self._seen, len(self.lines)):
                match = regex.search(self.lines[index])
                if match:
                    self._seen = index + 1
                    found.append(match)
                    return True
            return False

        wait_until(seen, timeout, what=f"{pattern!r} from {self.user}: {self.lines}")
        return found[0]

    def quit(self) -> int:
        """/quit; the exit status."""
        self.type("/quit")
        return self.process.wait(TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
