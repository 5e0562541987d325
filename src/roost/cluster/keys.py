"""Names of the Redis keys and channels of a cluster, the one place they are spelled (the
cluster's store, :mod:`roost.store.redis`, names its keys here too). Every key of one node,
and every key of one client id, shares a hash tag, so that the same code runs on a Redis
Cluster: what a Lua script touches lies in one slot. ``prefix`` (``roost``) sets a store's
keys apart from another's in one Redis (tests); a cluster uses the default."""

from __future__ import annotations

PREFIX = "roost"
NODES = f"{PREFIX}:nodes"  # set of node ids that have joined


def client(client_id: str, part: str, prefix: str = PREFIX) -> str:
    """Key ``part`` of a client id: its ``owner``, and the ``session``, ``subs``, ``out``
    and ``qos2`` of its stored session, all under the hash tag ``{c:ID}``. A client id
    holding ``}`` ends the tag early, which only puts it in a slot with other clients:
    its keys stay distinct, as no part holds ``}``."""
    return f"{prefix}:{{c:{client_id}}}:{part}"


def retained(prefix: str = PREFIX) -> str:
    """Hash: retained messages by topic."""
    return f"{prefix}:{{retained}}"


def transactions(part: str, prefix: str = PREFIX) -> str:
    """Key ``part`` of the pending transactions: ``half`` (hash: half messages), ``settled``
    (sorted set: outcomes), ``home`` (hash: the node of each)."""
    return f"{prefix}:{{tx}}:{part}"


TRANSACTION_HOMES = transactions("home")  # hash: pending transaction id -> its node


def node(node_id: str) -> str:
    """Hash: the node's heartbeat record (expires when the node stops beating)."""
    return f"{PREFIX}:{{node:{node_id}}}"


def routes(node_id: str) -> str:
    """Set: the topic filters the node has subscribers of."""
    return f"{node(node_id)}:routes"


def routes_version(node_id: str) -> str:
    """Counter: moves on with every change of the node's route set."""
    return f"{node(node_id)}:routes-version"


ROUTES_CHANNEL_SUFFIX = ":routes-changed"


def routes_channel(node_id: str) -> str:
    """Sharded pub/sub channel announcing changes of the node's route set."""
    return node(node_id) + ROUTES_CHANNEL_SUFFIX


def node_of_routes_channel(channel: str) -> str:
    """The node id in a name made by :func:`routes_channel`."""
    return channel.removeprefix(node("")[:-1]).removesuffix("}" + ROUTES_CHANNEL_SUFFIX)


def inbox(node_id: str) -> str:
    """Stream: batches of records sent to the node, in order."""
    return f"{node(node_id)}:inbox"


def owner(client_id: str) -> str:
    """Hash: the node that owns the client id's session, and the claim's epoch."""
    return client(client_id, "owner")


def clients(node_id: str) -> str:
    """Set: the client ids the node claimed (some may have moved on since)."""
    return f"{node(node_id)}:clients"


def adopter(node_id: str) -> str:
    """String: the node taking over what a dead node held (a lock with a time limit)."""
    return f"{node(node_id)}:adopter"
