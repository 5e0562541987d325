"""The password file (roost.security.passwords): its line format, errors naming file and
line, password checks, reload keeping the old users when the new file is broken, and the
atomic 0600 write."""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

import pytest

from roost.errors import ConfigError
from roost.security.passwords import (
    PasswordFile,
    PasswordFileError,
    make_entry,
    parse_line,
    parse_text,
    with_entry,
    write_text,
)
from roost.security.scram import ScramServer, ScramVerifier

ALICE = make_entry("alice", "wonderland")
BOB = make_entry("bob", "builder")


def write(path: Path, *lines: str) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_line_format_round_trips() -> None:
    line = ALICE.line()
    name, argon2_hash, scram = line.split(":", 2)
    assert name == "alice"
    assert argon2_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert scram.startswith("SCRAM-SHA-256$4096:")
    assert parse_line(line) == ALICE
    assert parse_line("  # a comment") is None
    assert parse_line("   ") is None


def test_check_password(tmp_path: Path) -> None:
    passwords = PasswordFile.load(write(tmp_path / "pw", "# users", "", ALICE.line()))
    assert passwords.check("alice", b"wonderland")
    assert not passwords.check("alice", b"Wonderland")
    assert not passwords.check("alice", b"")
    assert not passwords.check("nobody", b"wonderland")
    assert passwords.scram_verifier("alice") == ALICE.scram
    assert passwords.scram_verifier("nobody") is None
    assert len(passwords) == 1


def test_scram_verifier_matches_the_password() -> None:
    derived = ScramVerifier.from_password("wonderland", ALICE.scram.salt, 4096)
    assert derived == ALICE.scram


@pytest.mark.parametrize(
    ("bad_line", "why"),
    [
        ("carol", "expected NAME:ARGON2ID-HASH:SCRAM-VERIFIER"),
        ("carol:$2y$10$abc:" + str(ALICE.scram), r"password hash does not start with \$argon2id"),
        ("carol:$argon2id$v=19$bad:" + str(ALICE.scram), "password hash is not a valid argon2"),
        ("carol:" + ALICE.password_hash + ":SCRAM-SHA-256$1", "SCRAM verifier"),
        (":" + ALICE.password_hash + ":" + str(ALICE.scram), "empty user name"),
        (ALICE.line(), "user 'alice' appears twice"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, bad_line: str, why: str) -> None:
    path = write(tmp_path / "pw", "# users", ALICE.line(), bad_line)
    with pytest.raises(PasswordFileError, match=f"password file {re.escape(path)} line 3: {why}"):
        PasswordFile.load(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read password file .*/absent"):
        PasswordFile.load(str(tmp_path / "absent"))


def test_reload_takes_a_good_file_and_keeps_the_old_users_on_a_broken_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "pw", ALICE.line())
    passwords = PasswordFile.load(path)
    write(tmp_path / "pw", BOB.line(), "bob2:not-a-hash:x")
    with caplog.at_level(logging.ERROR, "roost.security.passwords"):
        assert not passwords.reload()
    assert f"password file {path} line 2" in caplog.text
    assert "keeping the 1 users" in caplog.text
    assert passwords.check("alice", b"wonderland")
    assert "bob" not in passwords
    os.remove(path)
    assert not passwords.reload()  # a vanished file keeps them too
    assert "alice" in passwords
    write(tmp_path / "pw", BOB.line())
    assert passwords.reload()
    assert passwords.check("bob", b"builder")
    assert not passwords.check("alice", b"wonderland")


def test_with_entry_replaces_adds_and_deletes_keeping_other_lines() -> None:
    text = f"# users\n{ALICE.line()}\n\n{BOB.line()}\n"
    alice2 = make_entry("alice", "again")
    changed = with_entry(text, "alice", alice2)
    assert changed == f"# users\n{alice2.line()}\n\n{BOB.line()}\n"
    carol = make_entry("carol", "c")
    assert with_entry(text, "carol", carol) == text + carol.line() + "\n"
    assert with_entry(text, "alice", None) == f"# users\n\n{BOB.line()}\n"


def test_write_text_is_0600_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("old\n")
    path.chmod(0o644)
    write_text(str(path), ALICE.line() + "\n")
    assert path.read_text() == ALICE.line() + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["pw"]  # no temporary file left behind


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a:b",
        "tab\there",
        "#\u2028admin",  # a line separator: the line would read back as "admin"
        "a\u2029b",  # paragraph separator
        "a\x85b",  # next line (Cc)
        "ad\u200bmin",  # zero width space (Cf): looks like "admin"
        "\ufeffalice",  # byte order mark (Cf)
        " root",  # would read back as "root"
        "root ",
        "#ops",  # would be a comment
    ],
)
def test_bad_user_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        make_entry(name, "pw")


def test_lines_split_at_newlines_only_and_a_bom_is_not_a_name() -> None:
    text = "\ufeff" + ALICE.line() + "\r\n# a note \u2028" + BOB.line() + "\n"
    assert list(parse_text(text, "f")) == ["alice"]  # the note stays one comment line
    assert with_entry(text, "alice", None) == "# a note \u2028" + BOB.line() + "\n"


def test_empty_password_is_refused() -> None:
    with pytest.raises(ValueError, match="empty password"):
        make_entry("dave", "")


def test_unknown_users_look_alike_across_restarts(tmp_path: Path) -> None:
    """An unknown SCRAM user gets the same made-up salt from a restarted broker (the same
    file), and the iteration count of the file's users; the dummy hash is ready at load."""
    slow = make_entry("carol", "c", scram_iterations=5000)
    path = write(tmp_path / "pw", slow.line())

    def server_first(passwords: PasswordFile) -> bytes:
        server = ScramServer(
            passwords.scram_verifier,
            passwords.scram_secret,
            made_up_iterations=passwords.scram_iterations,
        )
        return server.server_first(b"n,,n=nobody,r=abc").split(b",", 1)[1]

    first, restarted = PasswordFile.load(path), PasswordFile.load(path)
    assert server_first(first) == server_first(restarted)
    assert server_first(first).endswith(b",i=5000")
    assert first._dummy_hash.startswith("$argon2id$")
