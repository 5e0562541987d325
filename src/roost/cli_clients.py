"""``roost pub`` and ``roost sub``: command-line MQTT clients in the manner of mosquitto_pub
and mosquitto_sub (``-h`` stays help, so the host is ``-H/--host``)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import ssl
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from roost.client import ClientError, MQTTClient
from roost.codec import MQTT_3_1_1, MQTT_5, Properties, Publish

PROTOCOLS = {"5": MQTT_5, "mqttv5": MQTT_5, "311": MQTT_3_1_1, "mqttv311": MQTT_3_1_1}
NEVER_EXPIRE = 0xFFFFFFFF


class UsageError(Exception):
    """Options that argparse accepts but that do not go together."""


class CommandError(Exception):
    """A failure reported to the user as ``roost <command>: error: <message>``."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pub`` and ``sub`` subcommands."""
    pub = subparsers.add_parser(
        "pub", help="publish messages", description="Publish one message, or one per line."
    )
    _add_connection_arguments(pub)
    pub.add_argument("-t", "--topic", required=True, help="topic to publish to")
    source = pub.add_mutually_exclusive_group(required=True)
    source.add_argument("-m", "--message", help="message payload")
    source.add_argument("-f", "--file", help="send the contents of FILE as the message")
    source.add_argument("-n", "--null-message", action="store_true", help="send an empty message")
    source.add_argument(
        "-s", "--stdin-file", action="store_true", help="send all of stdin as one message"
    )
    source.add_argument(
        "-l", "--stdin-line", action="store_true", help="send each line of stdin as a message"
    )
    pub.add_argument("-r", "--retain", action="store_true", help="retain the message")
    pub.add_argument(
        "--user-property",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="MQTT 5 user property of each message (repeatable)",
    )
    pub.set_defaults(func=run_pub)

    sub = subparsers.add_parser(
        "sub", help="print received messages", description="Subscribe and print messages."
    )
    _add_connection_arguments(sub)
    sub.add_argument(
        "-t", "--topic", required=True, action="append", help="topic filter (repeatable)"
    )
    sub.add_argument(
        "-c",
        "--no-clean",
        action="store_true",
        help="persistent session (needs -i); MQTT 5 sessions never expire unless -x is given",
    )
    sub.add_argument(
        "-x", "--session-expiry", type=int, metavar="SECONDS", help="MQTT 5 session expiry"
    )
    sub.add_argument("-v", "--verbose", action="store_true", help='print "topic payload"')
    sub.add_argument("-C", "--count", type=int, metavar="N", help="exit after N messages")
    sub.add_argument(
        "-W",
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="exit after SECONDS: status 0 if any message was printed, else 1",
    )
    sub.add_argument(
        "-R", "--no-retained", action="store_true", help="do not print stale retained messages"
    )
    sub.add_argument(
        "-N", "--no-newline", action="store_true", help="no newline after each message"
    )
    sub.set_defaults(func=run_sub)


def run_pub(args: argparse.Namespace) -> int:
    """``roost pub``: 0 once every message is published, 1 on failure, 2 on bad options."""
    return _run("pub", _publish(args))


def run_sub(args: argparse.Namespace) -> int:
    """``roost sub``: 0 after -C messages or the -W timeout, 1 on failure, 2 on bad options."""
    return _run("sub", _subscribe(args))


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-H", "--host", default="127.0.0.1", help="broker host")
    parser.add_argument("-p", "--port", type=int, default=1883, help="broker port")
    parser.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=0, help="QoS")
    parser.add_argument("-i", "--id", default="", help="client identifier")
    parser.add_argument(
        "-V", "--protocol", choices=sorted(PROTOCOLS), default="5", help="MQTT version"
    )
    parser.add_argument("-k", "--keepalive", type=int, default=60, help="keep alive seconds")
    parser.add_argument("-u", "--username", help="user name")
    parser.add_argument("-P", "--password", help="password")
    parser.add_argument(
        "--cafile",
        metavar="FILE",
        help="MQTT over TLS; the server's certificate is verified against the CAs in FILE",
    )


def _run(command: str, main: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine; report failures on stderr as status 1, usage errors as 2."""
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        return 0
    except UsageError as exc:
        print(f"roost {command}: error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, ClientError, OSError) as exc:
        print(f"roost {command}: error: {exc}", file=sys.stderr)
        return 1


async def _connect(args: argparse.Namespace, **options: Any) -> MQTTClient:
    """Connect with the common options, naming the broker if it cannot be reached."""
    try:
        return await MQTTClient.connect(
            args.host,
            args.port,
            args.id,
            protocol_level=PROTOCOLS[args.protocol],
            keep_alive=args.keepalive,
            username=args.username,
            password=args.password,
            tls=None if args.cafile is None else ssl.create_default_context(cafile=args.cafile),
            **options,
        )
    except OSError as exc:
        raise CommandError(f"cannot connect to {args.host}:{args.port}: {exc}") from exc


async def _publish(args: argparse.Namespace) -> int:
    if args.user_property and PROTOCOLS[args.protocol] < MQTT_5:
        raise UsageError("--user-property needs MQTT 5")
    properties = Properties(user_properties=tuple((k, v) for k, v in args.user_property))
    payload = None if args.stdin_line else _read_payload(args)
    async with await _connect(args) as client:
        publish = functools.partial(
            client.publish, args.topic, qos=args.qos, retain=args.retain, properties=properties
        )
        if payload is not None:
            await publish(payload)
        else:
            async for line in _stdin_lines():
                await publish(line)
    return 0


def _read_payload(args: argparse.Namespace) -> bytes:
    """The single payload named by -m, -f, -s or -n."""
    if args.file is not None:
        with open(args.file, "rb") as file:
            return file.read()
    if args.stdin_file:
        return sys.stdin.buffer.read()
    if args.null_message:
        return b""
    message: str = args.message
    return message.encode()


async def _stdin_lines() -> AsyncIterator[bytes]:
    """Non-empty lines of stdin, without line endings, as they arrive."""
    while line := await asyncio.to_thread(sys.stdin.buffer.readline):
        if line := line.rstrip(b"\r\n"):
            yield line


async def _subscribe(args: argparse.Namespace) -> int:
    if args.no_clean and not args.id:
        raise UsageError("-c/--no-clean needs a client identifier (-i)")
    session_expiry = args.session_expiry
    if session_expiry is None and args.no_clean:
        session_expiry = NEVER_EXPIRE
    async with await _connect(
        args, clean_start=not args.no_clean, session_expiry=session_expiry
    ) as client:
        suback = await client.subscribe(*args.topic, qos=args.qos)
        denied = [
            f for f, code in zip(args.topic, suback.reason_codes, strict=True) if code >= 0x80
        ]
        for topic_filter in denied:
            print(f"roost sub: subscription to {topic_filter!r} denied", file=sys.stderr)
        if len(denied) == len(args.topic):
            raise CommandError("every subscription was denied")
        printed = 0
        try:
            async with asyncio.timeout(args.timeout):
                async for message in client.messages():
                    if args.no_retained and message.retain:
                        continue
                    _print_message(message, args)
                    printed += 1
                    if printed == args.count:
                        return 0
        except TimeoutError:
            return 0 if printed else 1
        raise CommandError(client.close_reason)


def _print_message(message: Publish, args: argparse.Namespace) -> None:
    out = sys.stdout.buffer
    if args.verbose:
        out.write(message.topic.encode() + b" ")
    out.write(message.payload)
    if not args.no_newline:
        out.write(b"\n")
    out.flush()
