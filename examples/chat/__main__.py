"""``python -m examples.chat --user alice --friends bob,carol [--assign URL | --host H
--port P]``: chat from a terminal (or any stdin/stdout)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator

import aiohttp

from roost.client import ClientError

from .placement import NodeAddress, assigned, given
from .session import Chat


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.chat",
        description="Chat with friends through a Roost cluster. Type '@friend message'; "
        "/quit or end of input leaves (friends then see you offline).",
    )
    parser.add_argument("--user", required=True, help="your name (one word)")
    parser.add_argument("--friends", default="", help="comma-separated names to follow")
    parser.add_argument(
        "--assign",
        metavar="URL",
        help="a node's HTTP listener (http://HOST:PORT): it says which node to use",
    )
    parser.add_argument("--host", default="127.0.0.1", help="node to connect to directly")
    parser.add_argument("--port", type=int, default=1883)
    return parser.parse_args(argv)


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of standard input, read without blocking the event loop."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line.decode(errors="replace")


def say(text: str) -> None:
    print(text, flush=True)


async def main(args: argparse.Namespace) -> int:
    chat = Chat(args.user, [name for name in args.friends.split(",") if name], say)
    try:
        node: NodeAddress
        if args.assign:
            node = await assigned(args.assign, f"chat-{args.user}")
        else:
            node = given(args.host, args.port)
        return await chat.run(node, stdin_lines())
    except (OSError, ClientError, aiohttp.ClientError) as exc:
        say(f"! cannot chat: {exc}")
        return 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except ValueError as exc:  # a bad user name
        sys.exit(f"! {exc}")
