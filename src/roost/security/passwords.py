"""The password file: who may log in, with a slow salted hash of each password.

One user per line, ``#`` comments and blank lines allowed (docs/authentication.md)::

    NAME:ARGON2ID-HASH:SCRAM-VERIFIER
    alice:$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA:SCRAM-SHA-256$4096:c2FsdA==$U3Q=:U2U=

The argon2id hash (PHC string) checks the password of a CONNECT; the SCRAM-SHA-256
verifier (RFC 5803 form, see :mod:`roost.security.scram`) serves MQTT 5 enhanced
authentication, which cannot work from an argon2 hash. Neither contains ":" after the
user name, so a line splits at its first two colons; a user name cannot contain ":".

:class:`PasswordFile` holds the users of one file and reloads it on demand, keeping the
users it had when the new text is broken. :func:`write_text` replaces a file atomically
with mode 0600. Checking a password is deliberately slow: run :meth:`PasswordFile.check`
in a worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import tempfile
import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from roost.errors import ConfigError
from roost.security.scram import DEFAULT_ITERATIONS, ScramVerifier

log = logging.getLogger("roost.security.passwords")

# argon2id at the OWASP minimum (19 MiB, 2 passes, 1 lane): about 20-50 ms per check.
HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
ARGON2_PREFIX = "$argon2id$"
FILE_MODE = 0o600


class PasswordFileError(ConfigError):
    """The password file cannot be read or has a bad line (the message names both)."""


@dataclass(frozen=True, slots=True)
class UserEntry:
    """One line of the password file."""

    name: str
    password_hash: str  # argon2id PHC string
    scram: ScramVerifier

    def line(self) -> str:
        return f"{self.name}:{self.password_hash}:{self.scram}"


UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})  # control, format, line/paragraph
BOM = "\ufeff"


def check_user_name(name: str) -> None:
    """Raise ValueError unless ``name`` reads back as itself from the file: not empty, no
    ":", no control, format or line/paragraph separator characters (Unicode Cc, Cf, Zl,
    Zp), no space at either end, no "#" first (a comment), and not longer than MQTT
    allows."""
    if not name:
        raise ValueError("empty user name")
    if ":" in name:
        raise ValueError(f"user name {name!r} contains ':'")
    if any(unicodedata.category(char) in UNSAFE_CATEGORIES for char in name):
        raise ValueError(f"user name {name!r} contains a control or separator character")
    if name != name.strip():
        raise ValueError(f"user name {name!r} starts or ends with a space")
    if name.startswith("#"):
        raise ValueError(f"user name {name!r} starts with '#' (a comment in the file)")
    if len(name.encode()) > 65_535:
        raise ValueError("user name longer than 65535 bytes")


def file_lines(text: str) -> list[str]:
    """The lines of a password file: split at "\n" only (a "\r" before it is dropped), not
    at the other line breaks ``str.splitlines`` knows; a leading byte order mark is not
    part of the first line."""
    lines = text.removeprefix(BOM).split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line.removesuffix("\r") for line in lines]


def make_entry(
    name: str,
    password: str,
    hasher: PasswordHasher = HASHER,
    scram_iterations: int = DEFAULT_ITERATIONS,
) -> UserEntry:
    """The line of ``name`` with ``password``: a fresh argon2id hash of its UTF-8 bytes
    (what a client sends at CONNECT) and SCRAM verifiers (raises ValueError for a bad name
    or a password SASLprep refuses)."""
    check_user_name(name)
    if not password:
        raise ValueError("empty password")
    scram = ScramVerifier.from_password(password, iterations=scram_iterations)
    return UserEntry(name, hasher.hash(password.encode()), scram)


def parse_line(text: str) -> UserEntry | None:
    """The entry on one line; None for a blank line or comment (raises ValueError)."""
    stripped = text.strip(" \t")
    if not stripped or stripped.startswith("#"):
        return None
    parts = stripped.split(":", 2)
    if len(parts) != 3:
        raise ValueError("expected NAME:ARGON2ID-HASH:SCRAM-VERIFIER")
    name, password_hash, scram = parts
    check_user_name(name)
    if not password_hash.startswith(ARGON2_PREFIX):
        raise ValueError(f"password hash does not start with {ARGON2_PREFIX}")
    try:
        extract_parameters(password_hash)
    except InvalidHashError:
        raise ValueError("password hash is not a valid argon2id hash") from None
    return UserEntry(name, password_hash, ScramVerifier.parse(scram))


def parse_text(text: str, source: str) -> dict[str, UserEntry]:
    """The users of a whole file; ``source`` names it in errors."""
    users: dict[str, UserEntry] = {}
    for number, line in enumerate(file_lines(text), 1):
        try:
            entry = parse_line(line)
        except ValueError as exc:
            raise PasswordFileError(f"password file {source} line {number}: {exc}") from None
        if entry is None:
            continue
        if entry.name in users:
            raise PasswordFileError(
                f"password file {source} line {number}: user {entry.name!r} appears twice"
            )
        users[entry.name] = entry
    return users


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as exc:
        raise PasswordFileError(f"cannot read password file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PasswordFileError(f"password file {path} is not UTF-8 text") from None


def with_entry(text: str, name: str, entry: UserEntry | None) -> str:
    """``text`` of a password file with the line of ``name`` replaced by ``entry`` (added
    at the end if new, removed if ``entry`` is None); other lines stay as they are."""
    lines: list[str] = []
    placed = entry is None
    for line in file_lines(text):
        current = line.strip(" \t")
        if not current.startswith("#") and current.split(":", 1)[0] == name:
            if entry is not None and not placed:
                lines.append(entry.line())
                placed = True
            continue
        lines.append(line)
    if not placed:
        assert entry is not None
        lines.append(entry.line())
    return "".join(line + "\n" for line in lines)


def write_text(path: str, text: str) -> None:
    """Replace the file at ``path`` with ``text`` atomically (a temporary file in the same
    directory, flushed to disk, then renamed), with mode 0600."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".roost-passwd-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), FILE_MODE)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class PasswordFile:
    """The users of one password file, as last read successfully."""

    def __init__(self, path: str, users: dict[str, UserEntry], text: str = "") -> None:
        self.path = path
        self._users = users
        # Made at load, not at the first unknown user (which would be slower than the rest).
        self._dummy_hash = _dummy_hash(users)
        # Keys the made-up SCRAM salts of unknown users: stable across restarts while the
        # file is unchanged, unknown to whoever does not have the file.
        self.scram_secret = hashlib.sha256(b"roost made-up SCRAM salts\0" + text.encode()).digest()
        # The iteration count an unknown user is shown: that of the file's first user.
        self.scram_iterations = next(
            (entry.scram.iterations for entry in users.values()), DEFAULT_ITERATIONS
        )

    @classmethod
    def load(cls, path: str) -> PasswordFile:
        """Read ``path``; raises PasswordFileError naming the file (and line)."""
        text = read_text(path)
        return cls(path, parse_text(text, path), text)

    def reload(self) -> bool:
        """Read the file again. If it cannot be read or has a bad line, log why and keep
        the users from before; returns whether the new users are in force."""
        try:
            fresh = PasswordFile.load(self.path)
        except PasswordFileError as exc:
            log.error("%s; keeping the %d users loaded before", exc, len(self._users))
            return False
        self._users = fresh._users
        self._dummy_hash = fresh._dummy_hash
        self.scram_secret = fresh.scram_secret
        self.scram_iterations = fresh.scram_iterations
        log.info("password file %s reloaded: %d users", self.path, len(self._users))
        return True

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, name: str) -> bool:
        return name in self._users

    def scram_verifier(self, name: str) -> ScramVerifier | None:
        entry = self._users.get(name)
        return None if entry is None else entry.scram

    def check(self, name: str, password: bytes) -> bool:
        """Whether ``password`` is the password of user ``name``. Slow on purpose, and as
        slow for a user that does not exist (checked against a dummy hash made with the
        parameters of the file's first user)."""
        entry = self._users.get(name)
        password_hash = entry.password_hash if entry is not None else self._dummy_hash
        try:
            matched = HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return matched and entry is not None


def _dummy_hash(users: dict[str, UserEntry]) -> str:
    """A hash of a random password with the parameters of the first user's hash."""
    hasher = HASHER
    for entry in users.values():
        hasher = PasswordHasher.from_parameters(extract_parameters(entry.password_hash))
        break
    return hasher.hash(secrets.token_bytes(16))
