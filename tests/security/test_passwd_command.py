"""``roost passwd`` as a real process: create, add, change, delete, refusals; the file it
writes is mode 0600 and is what the broker reads."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from roost.security.passwords import PasswordFile


def passwd(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roost", "passwd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_create_add_change_delete(tmp_path: Path) -> None:
    path = str(tmp_path / "passwords")
    created = passwd("-c", "--password-stdin", path, "alice", stdin="wonderland\n")
    assert created.returncode == 0, created.stderr
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    with open(path, "a") as file:
        file.write("# the builders\n")
    assert passwd("--password-stdin", path, "bob", stdin="builder\n").returncode == 0
    users = PasswordFile.load(path)
    assert users.check("alice", b"wonderland") and users.check("bob", b"builder")
    assert passwd(path, "--password-stdin", "alice", stdin="looking-glass").returncode == 0
    users = PasswordFile.load(path)
    assert users.check("alice", b"looking-glass") and not users.check("alice", b"wonderland")
    assert passwd("-D", path, "bob").returncode == 0
    users = PasswordFile.load(path)
    assert "bob" not in users and "alice" in users
    assert "# the builders" in Path(path).read_text()  # other lines stay
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    recreated = passwd("-c", "--password-stdin", path, "carol", stdin="c\n")
    assert recreated.returncode == 0
    assert Path(path).read_text().startswith("carol:")
    assert len(PasswordFile.load(path)) == 1


def test_prompted_twice(tmp_path: Path) -> None:
    path = str(tmp_path / "passwords")
    # Without a terminal, getpass reads the prompts' answers from stdin.
    assert passwd("-c", path, "alice", stdin="wonderland\nwonderland\n").returncode == 0
    assert PasswordFile.load(path).check("alice", b"wonderland")
    mismatch = passwd(path, "alice", stdin="one\ntwo\n")
    assert mismatch.returncode == 1
    assert "passwords do not match" in mismatch.stderr
    assert PasswordFile.load(path).check("alice", b"wonderland")  # unchanged


def test_refusals(tmp_path: Path) -> None:
    path = str(tmp_path / "passwords")
    missing = passwd("--password-stdin", path, "alice", stdin="pw\n")
    assert missing.returncode == 1 and "use -c to create it" in missing.stderr
    assert passwd("-c", "--password-stdin", path, "alice", stdin="pw\n").returncode == 0
    before = Path(path).read_text()
    unknown = passwd("-D", path, "nobody")
    assert unknown.returncode == 1 and "user 'nobody' is not in" in unknown.stderr
    colon = passwd("--password-stdin", path, "a:b", stdin="pw\n")
    assert colon.returncode == 1 and "contains ':'" in colon.stderr
    empty = passwd("--password-stdin", path, "dave", stdin="\n")
    assert empty.returncode == 1 and "empty password" in empty.stderr
    assert passwd("-c", "-D", path, "alice").returncode == 2  # usage error
    assert Path(path).read_text() == before
    Path(path).write_text(before + "broken line\n")
    broken = passwd("--password-stdin", path, "erin", stdin="pw\n")
    assert broken.returncode == 1 and f"password file {path} line 2" in broken.stderr


def test_password_stdin_takes_a_crlf_line_without_its_cr(tmp_path: Path) -> None:
    path = str(tmp_path / "passwords")
    assert passwd("-c", "--password-stdin", path, "dos", stdin="secret\r\n").returncode == 0
    users = PasswordFile.load(path)
    assert users.check("dos", b"secret") and not users.check("dos", b"secret\r")
