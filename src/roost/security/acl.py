"""Authorization by an ACL file, in the manner of Mosquitto's ``acl_file`` (docs/acl.md).

The file grants three rights on topics: READ (receive a message), WRITE (publish one) and
SUBSCRIBE (place a subscription). Rules come in sections: the ones before any ``user`` or
``client`` line are for anonymous clients, ``user NAME`` and ``client ID`` start the rules
of one user name / one client id, and ``pattern`` lines apply to every client with ``%u``
(user name) and ``%c`` (client id) put in. A deny rule that applies wins over every grant;
what no rule grants is denied.

:func:`parse_acl` and :class:`AclRules` are pure (text in, decisions out); :class:`Acl` is
the thin file-backed part that reads the file and reloads it.

The rules that apply to one client are compiled once into :class:`ClientRules` (its
identity does not change while its session lives; the broker keeps them with the session
and compiles them again after a reload), indexed by the first level of their filter, so a
delivery checks only the rules that can match its topic. Nothing is cached per topic: no
client can make the ACL hold memory by publishing to many or long topics.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from enum import IntFlag
from typing import TypeVar

from roost.errors import ConfigError

log = logging.getLogger("roost.acl")


class Right(IntFlag):
    READ = 1  # receive messages of a topic
    WRITE = 2  # publish to a topic
    SUBSCRIBE = 4  # place a subscription to a filter


NONE = Right(0)  # a deny rule grants nothing

# The access word of a rule -> what it grants. ``read`` lets a client subscribe to what it
# may read, as in Mosquitto; ``subscribe`` alone lets it place a subscription whose
# messages are still delivered only where it has READ.
ACCESS_WORDS: dict[str, Right] = {
    "read": Right.READ | Right.SUBSCRIBE,
    "write": Right.WRITE,
    "readwrite": Right.READ | Right.WRITE | Right.SUBSCRIBE,
    "subscribe": Right.SUBSCRIBE,
    "deny": NONE,
}
DEFAULT_ACCESS = "readwrite"  # a rule without an access word, as in Mosquitto

USERNAME = "%u"
CLIENT_ID = "%c"
MARKER = re.compile("%[uc]")  # what a pattern puts a user name or client id in for
UNSAFE_IN_PATTERN = ("+", "#", "/")  # a user name or client id with these gets no grant
# from a pattern that puts it in (it could reach other clients' topics)


class AclSyntaxError(ConfigError):
    """A line of an ACL file cannot be understood; the message names the file and line."""


Levels = tuple[str, ...]
T = TypeVar("T")


class Rule:
    """One ``topic`` or ``pattern`` line: a topic filter (maybe with %u / %c) and what it
    grants (nothing for deny)."""

    __slots__ = ("access", "line", "pattern", "topic")

    def __init__(self, topic: str, access: Right, line: int, pattern: bool = False) -> None:
        self.topic = topic
        self.access = access
        self.line = line
        self.pattern = pattern

    def __repr__(self) -> str:
        kind = "pattern" if self.pattern else "topic"
        return f"Rule({kind} {self.access!r} {self.topic!r}, line {self.line})"

    def for_client(self, username: str | None, client_id: str) -> str | None:
        """The rule's filter for one client, or None if it does not apply to it.

        The markers of the pattern are replaced in one pass, so a ``%c`` in a user name (or
        a ``%u`` in a client id) stays as it is. A pattern needing a user name does not
        apply to an anonymous client. A grant does not apply where a value put in is empty
        or holds ``+``, ``#`` or ``/``, or where it makes the filter start with ``$`` (a
        user named ``$SYS`` gets nothing from ``%u/#``); a deny always applies, with the
        values put in as they are (that can only widen it).
        """
        topic = self.topic
        if not self.pattern:
            return topic
        values = {USERNAME: username, CLIENT_ID: client_id}
        for marker in set(MARKER.findall(topic)):
            value = values[marker]
            if value is None:
                return None
            if self.access and (not value or any(c in value for c in UNSAFE_IN_PATTERN)):
                return None
        filled = MARKER.sub(lambda found: values[found.group()] or "", topic)
        if self.access and filled[:1] == "$" and topic[:1] != "$":
            return None
        return filled


class ClientRules:
    """The denies and grants that apply to one client, as split topic filters; those that
    start with a literal level are also indexed by it."""

    __slots__ = (
        "_deny_index",
        "_grant_index",
        "denies",
        "generation",
        "grants",
    )

    def __init__(
        self, denies: tuple[Levels, ...], grants: tuple[tuple[Levels, Right], ...], generation: int
    ) -> None:
        self.denies = denies
        self.grants = grants
        self.generation = generation  # of the Acl rules it was compiled from
        self._deny_index = _index(denies, lambda levels: levels)
        self._grant_index = _index(grants, lambda grant: grant[0])

    def allows(self, topic: str, right: Right) -> bool:
        """Whether the client may READ or WRITE the topic name ``topic``: no applicable
        deny rule matches it, and a rule granting ``right`` does."""
        levels = topic.split("/")
        first = levels[0]
        denies = self._deny_index
        if denies:
            for deny in (*denies.get(first, ()), *denies.get(WILDCARD_FIRST, ())):
                if _matches(deny, levels):
                    return False
        grants = self._grant_index
        for rule, access in (*grants.get(first, ()), *grants.get(WILDCARD_FIRST, ())):
            if access & right and _matches(rule, levels):
                return True
        return False

    def allows_filter(self, topic_filter: str, right: Right, strict: bool = False) -> bool:
        """Whether one rule granting ``right`` covers every topic of ``topic_filter``
        (rule ``a/#`` covers ``a/+``; ``a/+`` does not cover ``a/#``), and no deny rule
        covers it all (``strict``: touches any of its topics)."""
        levels = tuple(topic_filter.split("/"))
        refuses = _overlaps if strict else _covers
        if any(refuses(deny, levels) for deny in self.denies):
            return False
        return any(access & right and _covers(rule, levels) for rule, access in self.grants)

    def may_read(self, topic: str) -> bool:
        return self.allows(topic, Right.READ)

    def may_write(self, topic: str) -> bool:
        return self.allows(topic, Right.WRITE)

    def may_subscribe(self, topic_filter: str) -> bool:
        return self.allows_filter(topic_filter, Right.SUBSCRIBE)

    def may_write_all(self, topic_filter: str) -> bool:
        """Whether the client may WRITE every topic of ``topic_filter``."""
        return self.allows_filter(topic_filter, Right.WRITE, strict=True)


WILDCARD_FIRST = "+"  # the index key of filters that start with "+" or "#"


def _index(items: tuple[T, ...], levels_of: Callable[[T], Levels]) -> dict[str, tuple[T, ...]]:
    """``items`` by the first level of their filter (those starting with a wildcard under
    WILDCARD_FIRST), in their order."""
    index: dict[str, list[T]] = {}
    for item in items:
        first = levels_of(item)[0]
        index.setdefault(WILDCARD_FIRST if first in ("+", "#") else first, []).append(item)
    return {key: tuple(found) for key, found in index.items()}


class AclRules:
    """The rules of one ACL file (never changed: a reload makes a new one)."""

    def __init__(
        self,
        anonymous: Iterable[Rule] = (),
        users: dict[str, list[Rule]] | None = None,
        clients: dict[str, list[Rule]] | None = None,
        patterns: Iterable[Rule] = (),
    ) -> None:
        self.anonymous = tuple(anonymous)
        self.users = {name: tuple(rules) for name, rules in (users or {}).items()}
        self.clients = {name: tuple(rules) for name, rules in (clients or {}).items()}
        self.patterns = tuple(patterns)

    def __len__(self) -> int:
        sections = (*self.users.values(), *self.clients.values())
        return len(self.anonymous) + len(self.patterns) + sum(map(len, sections))

    def for_client(self, username: str | None, client_id: str, generation: int = 0) -> ClientRules:
        """The rules that apply to one client (``generation`` tells the rules apart)."""
        section = self.anonymous if username is None else self.users.get(username, ())
        denies: list[Levels] = []
        grants: list[tuple[Levels, Right]] = []
        for rule in (*section, *self.clients.get(client_id, ()), *self.patterns):
            topic = rule.for_client(username, client_id)
            if topic is None:
                continue
            levels = tuple(topic.split("/"))
            if rule.access:
                grants.append((levels, rule.access))
            else:
                denies.append(levels)
        return ClientRules(tuple(denies), tuple(grants), generation)

    def allows(self, username: str | None, client_id: str, topic: str, right: Right) -> bool:
        """:meth:`ClientRules.allows` for one client, compiled for this call."""
        return self.for_client(username, client_id).allows(topic, right)

    def allows_filter(
        self,
        username: str | None,
        client_id: str,
        topic_filter: str,
        right: Right,
        strict: bool = False,
    ) -> bool:
        """:meth:`ClientRules.allows_filter` for one client, compiled for this call."""
        return self.for_client(username, client_id).allows_filter(topic_filter, right, strict)


def _matches(rule: Levels, topic: list[str]) -> bool:
    """Whether the topic name (as levels) matches the rule's filter [MQTT 4.7]: ``#`` also
    matches its parent level; a wildcard first level does not match a ``$`` topic."""
    if topic[0][:1] == "$" and rule[0] in ("+", "#"):
        return False
    count = len(topic)
    for index, level in enumerate(rule):
        if level == "#":
            return True
        if index >= count or (level != "+" and level != topic[index]):
            return False
    return len(rule) == count


def _covers(outer: Levels, inner: Levels) -> bool:
    """Whether every topic the filter ``inner`` matches is matched by ``outer``."""
    if inner[0][:1] == "$" and outer[0] in ("+", "#"):
        return False
    for index, level in enumerate(outer):
        if level == "#":
            return True
        if index >= len(inner):
            return False
        part = inner[index]
        if part == "#" or (level != "+" and (part == "+" or part != level)):
            return False
    return len(outer) == len(inner)


def _overlaps(first: Levels, second: Levels) -> bool:
    """Whether some topic is matched by both filters."""
    for one, other in ((first, second), (second, first)):
        if one[0] in ("+", "#") and other[0][:1] == "$":
            return False
    for index in range(min(len(first), len(second))):
        a, b = first[index], second[index]
        if a == "#" or b == "#":
            return True
        if a != "+" and b != "+" and a != b:
            return False
    if len(first) == len(second):
        return True
    shorter, longer = (first, second) if len(first) < len(second) else (second, first)
    return longer[len(shorter)] == "#"  # "a/#" matches "a"


def parse_acl(text: str, source: str) -> AclRules:
    """The rules of an ACL file's text; ``source`` names the file in errors.

    Lines: ``# comment``, ``user NAME``, ``client ID``, ``topic [ACCESS] TOPIC`` and
    ``pattern [ACCESS] TOPIC``, where ACCESS is one of ACCESS_WORDS (default readwrite).
    """
    anonymous: list[Rule] = []
    users: dict[str, list[Rule]] = {}
    clients: dict[str, list[Rule]] = {}
    patterns: list[Rule] = []
    section = anonymous
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()

        def fail(why: str, number: int = number, line: str = line) -> AclSyntaxError:
            return AclSyntaxError(f"{source}, line {number}: {why}: {line!r}")

        if keyword in ("user", "client"):
            if not rest:
                raise fail(f"'{keyword}' needs a name")
            sections = users if keyword == "user" else clients
            section = sections.setdefault(rest, [])
        elif keyword in ("topic", "pattern"):
            word, _, topic = rest.partition(" ")
            if word in ACCESS_WORDS and topic.strip():
                access, topic = ACCESS_WORDS[word], topic.strip()
            else:
                access, topic = ACCESS_WORDS[DEFAULT_ACCESS], rest
            if not topic:
                raise fail(f"'{keyword}' needs a topic")
            problem = _filter_problem(topic)
            if problem:
                raise fail(problem)
            if keyword == "pattern":
                patterns.append(Rule(topic, access, number, pattern=True))
            else:
                section.append(Rule(topic, access, number))
        else:
            raise fail(f"unknown keyword {keyword!r} (topic, pattern, user or client)")
    return AclRules(anonymous, users, clients, patterns)


def _filter_problem(topic: str) -> str | None:
    """Why ``topic`` is not a valid topic filter (None if it is)."""
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "'#' must be a whole level, and the last"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def read_acl(path: str) -> AclRules:
    """Read and parse the ACL file at ``path`` (ConfigError naming it if it cannot be)."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError(f"cannot read acl_file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"acl_file {path} is not UTF-8: {exc}") from exc
    return parse_acl(text, path)


class Acl:
    """The rules of an ACL file, reloadable: the broker asks it for the rules of each
    client (:meth:`rules_for`), and again when ``generation`` has changed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rules = read_acl(path)
        self.generation = 0  # counts the reloads that put new rules in force
        log.info("acl_file %s: %d rules", path, len(self.rules))

    def reload(self) -> bool:
        """Read the file again; if it cannot be read or parsed, keep the rules in force
        and log why (the bad line). Returns whether the new rules are in force."""
        try:
            rules = read_acl(self.path)
        except ConfigError as exc:
            log.error("acl_file not reloaded, the previous rules stay in force: %s", exc)
            return False
        self.rules = rules
        self.generation += 1
        log.info("acl_file %s reloaded: %d rules", self.path, len(rules))
        return True

    def rules_for(self, username: str | None, client_id: str) -> ClientRules:
        """The rules in force for one client, compiled."""
        return self.rules.for_client(username, client_id, self.generation)

    @property
    def has_user_rules(self) -> bool:
        """Whether rules depend on the user name (a ``user`` section or a ``%u`` pattern)."""
        rules = self.rules
        return bool(rules.users) or any(USERNAME in rule.topic for rule in rules.patterns)
