"""The chat's topics and payloads: what every chat client agrees on.

A user's presence is the retained message on ``chat/status/<user>``: "online" published at
connect, "offline" left as the connection's will, so it also appears when the client dies
without a word. Direct messages go to ``chat/inbox/<user>`` at QoS 1; each user's persistent
session keeps them while they are away.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

STATUS = "chat/status/"
INBOX = "chat/inbox/"
FORBIDDEN = set("/+#")  # a user name is one topic level, without wildcards


def check_user(name: str) -> str:
    """``name`` if it can be a user name, else ValueError."""
    if not name or FORBIDDEN & set(name):
        raise ValueError(f"{name!r} is not a user name (one word, no / + #)")
    return name


def status_topic(user: str) -> str:
    return STATUS + user


def inbox_topic(user: str) -> str:
    return INBOX + user


@dataclass(frozen=True, slots=True)
class Status:
    """Where a user is: ``state`` is "online" or "offline", ``node`` the node they are (or
    were last) connected to."""

    user: str
    state: str
    node: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, payload: bytes) -> Status:
        data = json.loads(payload)
        return cls(str(data["user"]), str(data["state"]), str(data["node"]))


@dataclass(frozen=True, slots=True)
class Line:
    """One direct message."""

    sender: str
    text: str

    def encode(self) -> bytes:
        return json.dumps({"from": self.sender, "text": self.text}).encode()

    @classmethod
    def decode(cls, payload: bytes) -> Line:
        data = json.loads(payload)
        return cls(str(data["from"]), str(data["text"]))
