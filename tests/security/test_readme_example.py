"""README's "Securing Roost" example, run as written: its shell commands, its files, its
``roost serve``, and the publishes and subscription it shows with the outcome each comment
states. Only the port numbers are changed, to free ones, so that the test never collides
with another broker on this machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from roost.cluster.localserver import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Securing Roost"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```\n", re.M | re.S)
NAMED_FILE = re.compile(r"`(secure/[\w.]+)`")
ROOST_PORTS = ("1883", "8883")


@dataclass
class Block:
    language: str
    text: str
    file: str | None  # the file the prose before the block names, for a file's content


def example_blocks() -> list[Block]:
    """The fenced blocks of the section, each with the file named last before it."""
    readme = README.read_text()
    start = readme.index(SECTION)
    section = readme[start : readme.index("\n## ", start + len(SECTION))]
    blocks, position = [], 0
    for match in BLOCK.finditer(section):
        names = NAMED_FILE.findall(section[position : match.start()])
        blocks.append(Block(match.group(1), match.group(2), names[-1] if names else None))
        position = match.end()
    return blocks


def with_free_ports(text: str, ports: dict[str, str]) -> str:
    for written, free in ports.items():
        text = re.sub(rf"\b{written}\b", free, text)
    return text


def command_env() -> dict[str, str]:
    """``roost`` and ``openssl`` on PATH, as for a user with the virtual environment on."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def serve(command: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``roost serve`` as written and wait for its TLS listener."""
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=cwd,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    log: list[str] = []
    listening = threading.Event()

    def read_log() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if "roost listening" in line:
                listening.set()

    threading.Thread(target=read_log, daemon=True).start()
    if not listening.wait(30):
        process.kill()
        raise AssertionError("roost serve did not start:\n" + "".join(log))
    return process


def run_and_check(lines: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Run each command; a comment after it says what it prints or why it is refused.
    Returns how many outcomes were checked."""
    checked = 0
    for index, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        done = subprocess.run(
            ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
        )
        comment = lines[index + 1] if index + 1 < len(lines) else ""
        if comment.startswith("# prints: "):
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == comment.removeprefix("# prints: ")
            checked += 1
        elif comment.startswith("# refused: "):
            reason = comment.removeprefix("# refused: ").split(" (")[0]
            assert done.returncode == 1, (line, done.stdout, done.stderr)
            assert reason in done.stderr.lower(), (reason, done.stderr)
            checked += 1
        else:
            assert done.returncode == 0, (line, done.stderr)
    return checked


def test_the_securing_example_of_the_readme_runs_as_written(tmp_path: Path) -> None:
    blocks = example_blocks()
    assert [block.language for block in blocks] == ["sh", "text", "toml", "sh", "sh"]
    ports = {written: str(free_port()) for written in ROOST_PORTS}
    env = command_env()
    setup, acl, config, serve_command, session = blocks

    subprocess.run(["bash", "-e", "-c", setup.text], cwd=tmp_path, env=env, check=True)
    assert (tmp_path / "secure/passwords").stat().st_mode & 0o077 == 0  # private
    for block in (acl, config):
        assert block.file is not None
        (tmp_path / block.file).write_text(with_free_ports(block.text, ports))
    assert [acl.file, config.file] == ["secure/acl.conf", "secure/roost.toml"]

    server = serve(serve_command.text.strip(), tmp_path, env)
    try:
        lines = with_free_ports(session.text, ports).splitlines()
        assert run_and_check(lines, tmp_path, env) == 3
    finally:
        server.terminate()
        assert server.wait(20) == 0
