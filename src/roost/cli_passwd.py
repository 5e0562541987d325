"""``roost passwd``: add, change or delete a user of a password file, in the manner of
mosquitto_passwd::

    roost passwd -c FILE USER          create (or overwrite) FILE with one user
    roost passwd FILE USER             add USER to FILE, or change its password
    roost passwd -D FILE USER          delete USER
    roost passwd --password-stdin FILE USER   read the password from stdin, not a prompt

The file is replaced atomically with mode 0600; other lines and comments stay as they were.
A running broker takes the change when its password file is reloaded.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from roost.security.passwords import (
    PasswordFileError,
    make_entry,
    parse_text,
    read_text,
    with_entry,
    write_text,
)
from roost.security.scram import DEFAULT_ITERATIONS, MIN_ITERATIONS


class PasswdError(Exception):
    """A failure reported as ``roost passwd: error: <message>`` with status 1."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``passwd`` subcommand."""
    parser = subparsers.add_parser(
        "passwd",
        help="manage a password file",
        description="Add a user to a password file or change its password (prompted twice, "
        "or one line of stdin with --password-stdin); -D deletes the user.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "-c", "--create", action="store_true", help="create FILE, overwriting an existing one"
    )
    mode.add_argument("-D", "--delete", action="store_true", help="delete USER from FILE")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    parser.add_argument(
        "--scram-iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        metavar="N",
        help=f"PBKDF2 iterations of the SCRAM-SHA-256 verifier (default {DEFAULT_ITERATIONS})",
    )
    parser.add_argument("file", metavar="FILE", help="the password file")
    parser.add_argument("user", metavar="USER", help="the user name")
    parser.set_defaults(func=run_passwd)


def run_passwd(args: argparse.Namespace) -> int:
    try:
        if args.scram_iterations < MIN_ITERATIONS:
            raise PasswdError(f"--scram-iterations must be at least {MIN_ITERATIONS}")
        text = "" if args.create else _existing(args.file)
        if args.delete:
            if args.user not in parse_text(text, args.file):
                raise PasswdError(f"user {args.user!r} is not in {args.file}")
            write_text(args.file, with_entry(text, args.user, None))
            return 0
        password = _read_password(args.password_stdin)
        try:
            entry = make_entry(args.user, password, scram_iterations=args.scram_iterations)
        except ValueError as exc:
            raise PasswdError(str(exc)) from None
        write_text(args.file, with_entry(text, args.user, entry))
        return 0
    except (PasswdError, PasswordFileError) as exc:
        print(f"roost passwd: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"roost passwd: error: cannot write {args.file}: {exc.strerror}", file=sys.stderr)
        return 1


def _existing(path: str) -> str:
    """The text of the file to change, checked line by line."""
    if not os.path.exists(path):
        raise PasswdError(f"{path} does not exist (use -c to create it)")
    text = read_text(path)
    parse_text(text, path)
    return text


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")  # LF or CRLF
    try:
        password = getpass.getpass("Password: ")
        again = getpass.getpass("Reenter password: ")
    except EOFError:
        raise PasswdError("no password given") from None
    if password != again:
        raise PasswdError("passwords do not match")
    return password
