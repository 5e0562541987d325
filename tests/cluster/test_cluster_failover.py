"""A node dies (SIGKILL): nothing the cluster acknowledged is lost. The session it held is
adopted by a surviving node with what was on its way to it; what a publisher on it had
PUBACKed reaches the subscribers; what waited in its inbox for a shared group reaches one
live member of the group; the wills of its clients are published once."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis

from clusterproc import NODE_TIMEOUT_MS, Cluster, wait_for_log, wait_routed, without_probes
from paho_helpers import Clients, Conn, wait_until
from rawmqtt import RawFactory
from roost.cluster import keys

EXPIRY = 300
NODE_TIMEOUT = NODE_TIMEOUT_MS / 1000
# A session offline for seconds while messages stream in: room for all of them (a full
# queue drops new messages by design, see Session.enqueue).
ROOMY_QUEUES = ("--max-queued-messages", "100000")


class Publisher:
    """Publishes numbered QoS 1 messages from a thread until stopped; remembers which
    were PUBACKed."""

    def __init__(self, conn: Conn, topic: str) -> None:
        self.conn = conn
        self.topic = topic
        self.acknowledged: set[bytes] = set()
        self._payload_of: dict[int, bytes] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        conn.client.on_publish = self._on_publish

    def _on_publish(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        with self._lock:
            payload = self._payload_of.pop(mid, None)
            if payload is None:
                self._early.add(mid)  # acknowledged before publish() returned its mid
            else:
                self.acknowledged.add(payload)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            payload = f"m{number}".encode()
            # Not under self._lock: paho calls _on_publish holding its own lock, and
            # publish() takes that lock too.
            info = self.conn.client.publish(self.topic, payload, qos=1)
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self.acknowledged.add(payload)
                else:
                    self._payload_of[info.mid] = payload
            number += 1
            time.sleep(0.002)  # a steady stream rather than one burst

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def stop(self) -> set[bytes]:
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            return set(self.acknowledged)


def connect_when_possible(clients: Clients, node: Any, client_id: str, **options: Any) -> Conn:
    """Connect, retrying while the cluster still sorts out the death of a node."""
    deadline = time.monotonic() + 10 * NODE_TIMEOUT
    while True:
        conn = clients.connect(node, client_id, expect_success=False, **options)
        if conn.connack_rc == 0:
            return conn
        conn.stop()
        assert time.monotonic() < deadline, f"{client_id} could not connect"


def stream_to_a_stored_session(
    clients: Clients, nodes: list[Any], client_id: str, acknowledged: int
) -> tuple[Conn, Publisher]:
    """A persistent subscriber on node 0, and a publisher on node 1 streaming to it until
    ``acknowledged`` messages are PUBACKed."""
    subscriber = clients.connect(nodes[0], client_id, clean=False, session_expiry=EXPIRY)
    subscriber.sub(f"{client_id}/#", qos=1)
    wait_routed(clients, nodes[1], subscriber, f"{client_id}/probe")
    publisher = Publisher(clients.connect(nodes[1], "writer"), f"{client_id}/log").start()
    wait_until(lambda: len(publisher.acknowledged) >= acknowledged, what="a stream of PUBACKs")
    return subscriber, publisher


def every_acknowledged_arrives(publisher: Publisher, first: Conn, resumed: Conn) -> None:
    """Stop publishing; every PUBACKed message reaches the subscriber, through its first
    connection or the one that resumed the session. The backlog grows with the time the
    cluster took to recover (slower on a loaded machine): the wait grows with it, at a
    rate far below what a node delivers."""
    acknowledged = publisher.stop()
    before = set(first.payloads())
    wait_until(
        lambda: acknowledged <= before | set(resumed.payloads()),
        timeout=20 + len(acknowledged) / 200,
        what=f"every PUBACKed message ({len(acknowledged)})",
    )


def test_the_session_of_a_killed_node_resumes_elsewhere_with_every_acknowledged_message(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(3, *ROOMY_QUEUES)
    keeper, publisher = stream_to_a_stored_session(clients, nodes, "keeper", 100)
    nodes[0].kill()
    # Publishing goes on while the cluster notices the death and adopts the session.
    wait_for_log(nodes[1], "node n0 is dead", timeout=10 * NODE_TIMEOUT)
    wait_until(lambda: len(publisher.acknowledged) >= 300, what="PUBACKs after the death")
    resumed = connect_when_possible(clients, nodes[2], "keeper", clean=False, session_expiry=EXPIRY)
    every_acknowledged_arrives(publisher, keeper, resumed)


def test_what_a_killed_publishers_node_acknowledged_reaches_the_subscribers(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(2)
    reader = clients.connect(nodes[1], "reader")
    reader.sub("burst/#", qos=1)
    wait_routed(clients, nodes[0], reader, "burst/probe")
    publisher = Publisher(clients.connect(nodes[0], "burster"), "burst/x").start()
    wait_until(lambda: len(publisher.acknowledged) >= 200, what="a stream of PUBACKs")
    nodes[0].kill()
    acknowledged = publisher.stop()
    wait_until(lambda: acknowledged <= set(reader.payloads()), what="every PUBACKed message")


def test_the_wills_of_a_killed_nodes_clients_are_published_once(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(3)
    watcher = clients.connect(nodes[1], "watcher")
    watcher.sub("status/#", qos=1)
    wait_routed(clients, nodes[0], watcher, "status/probe")
    clients.connect(nodes[0], "volatile", will=("status/volatile", b"gone", 1, False))
    clients.connect(
        nodes[0],
        "stored",
        session_expiry=EXPIRY,
        will=("status/stored", b"gone", 1, False),
    )
    nodes[0].kill()
    wait_until(
        lambda: "took over node n0" in "".join(nodes[1].log + nodes[2].log),
        timeout=10 * NODE_TIMEOUT,
        what="the adoption to finish",
    )
    wait_until(lambda: len(watcher.by_payload(b"gone")) >= 2, what="both wills")
    topics = sorted(m.topic for m in watcher.by_payload(b"gone"))
    assert topics == ["status/stored", "status/volatile"]


@contextlib.contextmanager
def frozen_and_adopted(nodes: list[Any]) -> Iterator[Any]:
    """Freeze node 0 (SIGSTOP: alive, but silent past its timeout) until another node has
    taken over what it held; yields that node, and wakes node 0 after the block, which
    then finds itself cut off."""
    process = nodes[0].process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        wait_until(
            lambda: any("took over node n0" in "".join(node.log) for node in nodes[1:]),
            timeout=10 * NODE_TIMEOUT,
            what="the frozen node's clients to be adopted",
        )
        yield next(node for node in nodes[1:] if "took over node n0" in "".join(node.log))
    finally:
        os.kill(process.pid, signal.SIGCONT)
    # Whichever it notices first, a failed beat or its expired record: it is cut off. A
    # process woken on a loaded machine may wait for the CPU: as long as a death takes.
    wait_for_log(nodes[0], "cut off from the cluster", timeout=10 * NODE_TIMEOUT)


def test_a_frozen_node_that_was_adopted_stops_serving_when_it_wakes(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(3, *ROOMY_QUEUES)
    sleeper, publisher = stream_to_a_stored_session(clients, nodes, "sleeper", 50)
    with frozen_and_adopted(nodes):
        pass
    wait_until(lambda: sleeper.disconnected.is_set(), what="the frozen node to drop its client")
    resumed = connect_when_possible(
        clients, nodes[2], "sleeper", clean=False, session_expiry=EXPIRY
    )
    every_acknowledged_arrives(publisher, sleeper, resumed)


def test_a_woken_node_cannot_overwrite_a_session_it_lost_while_frozen(
    cluster: Cluster, clients: Clients, raw: RawFactory
) -> None:
    """An offline persistent session on node 0 gets a stream from a publisher on node 1
    and one from a publisher on node 0 itself. Node 0 freezes and the cluster adopts the
    session, which goes on filling on its adopter. On waking, node 0 reads what was sent
    to it meanwhile and writes it to the session it had, but Redis refuses those writes
    (fencing): they would overwrite the adopter's queued messages. Taken over on the
    third node, the session has every PUBACKed message.

    A raw client publishes while node 0 is frozen, so that node 0 has something to read
    on waking whatever the streams were doing when it froze: paho stops writing with 20
    messages unacknowledged, which node 0 may have read before it froze, and node 0 drops
    the inbox read that its freeze timed out. Node 0 must not acknowledge that publish."""
    nodes = cluster.start(3, *ROOMY_QUEUES)
    sleeper = clients.connect(nodes[0], "sleeper", clean=False, session_expiry=EXPIRY)
    sleeper.sub("sleeper/#", qos=1)
    wait_routed(clients, nodes[1], sleeper, "sleeper/probe")
    sleeper.stop()
    late, _ = raw.connected(nodes[0], "late")
    remote = Publisher(clients.connect(nodes[1], "remote"), "sleeper/remote").start()
    local = Publisher(clients.connect(nodes[0], "local"), "sleeper/local").start()
    wait_until(lambda: len(local.acknowledged) >= 50, what="a stream of PUBACKs")
    with frozen_and_adopted(nodes) as adopter:
        late.publish("sleeper/late", b"late", qos=1, packet_id=1)  # in node 0's socket
    wait_for_log(nodes[0], "no longer owns client sleeper (and 0 more): its writes were refused")
    assert late.wait_closed() == [], "node 0 acknowledged a publish for a session it lost"
    remote_acknowledged, local_acknowledged = remote.stop(), local.stop()
    third = next(node for node in nodes[1:] if node is not adopter)
    resumed = connect_when_possible(clients, third, "sleeper", clean=False, session_expiry=EXPIRY)
    acknowledged = remote_acknowledged | local_acknowledged
    wait_until(
        lambda: acknowledged <= set(resumed.payloads()),
        timeout=20 + len(acknowledged) / 200,
        what=f"every PUBACKed message ({len(acknowledged)})",
    )


def test_the_sessions_of_a_node_that_stops_are_adopted_at_once(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(2)
    away = clients.connect(nodes[0], "away", clean=False, session_expiry=EXPIRY)
    away.sub("away/#", qos=1)
    wait_routed(clients, nodes[1], away, "away/probe")
    away.stop()
    assert nodes[0].terminate() == 0  # SIGTERM: a clean stop
    wait_for_log(nodes[1], "took over node n0", timeout=10 * NODE_TIMEOUT)
    publisher = clients.connect(nodes[1], "sender")
    for number in range(20):
        publisher.pub("away/news", f"a{number}".encode(), qos=1)
    back = clients.connect(nodes[1], "away", clean=False, session_expiry=EXPIRY)
    assert back.session_present[-1] is True
    wanted = [f"a{number}".encode() for number in range(20)]
    wait_until(lambda: [p for p in back.payloads() if p in wanted] == wanted, what="the news")


def test_a_node_stopped_while_adopting_lets_another_node_adopt_at_once(cluster: Cluster) -> None:
    """Its adoption lock goes with it: the dead node is adopted within a few node timeouts,
    not once the lock expires (20 node timeouts)."""
    nodes = cluster.start(3)
    nodes[2].kill()
    adopter = wait_until_any(nodes[:2], "adopts the clients of dead node n2")
    survivor = nodes[1] if adopter is nodes[0] else nodes[0]
    assert adopter.terminate() == 0  # SIGTERM, while it waits out its grace period
    wait_for_log(survivor, "took over node n2", timeout=10 * NODE_TIMEOUT)


def test_a_node_finishes_an_adoption_its_former_run_left_unfinished(cluster: Cluster) -> None:
    """A run of n0 that died while adopting a node left the adoption lock under n0; the
    next run of n0 takes it over at once (one run of a node id is alive at a time)."""
    store = redis.Redis.from_url(cluster.redis_server.url)
    try:
        store.sadd(keys.NODES, "gone")
        store.set(keys.adopter("gone"), "n0", px=600_000)
        (node,) = cluster.start(1)
        wait_for_log(node, "took over node gone", timeout=10 * NODE_TIMEOUT)
        assert not store.sismember(keys.NODES, "gone")
    finally:
        store.close()


def wait_until_any(nodes: list[Any], text: str) -> Any:
    """The first of ``nodes`` whose log says ``text``."""
    wait_until(lambda: any(text in "".join(node.log) for node in nodes), what=repr(text))
    return next(node for node in nodes if text in "".join(node.log))


def test_group_messages_held_in_a_killed_nodes_inbox_reach_one_live_member_each(
    cluster: Cluster, clients: Clients, raw: RawFactory
) -> None:
    # n0 reads its inbox only as fast as its plain subscriber "stuck" takes messages: one
    # in flight and two queued, then never (it may hold the inbox for as long as the test
    # runs). What n1 sends n0 afterwards, the shared group's turns included, waits there.
    n0 = cluster.add_node(
        "n0", "--max-inflight", "1", "--max-queued-messages", "4", "--inbox-hold-ms", "600000"
    )
    n1, n2 = cluster.add_node("n1"), cluster.add_node("n2")
    cluster.wait_all_joined()
    members = [clients.connect(node, f"worker-{index}") for index, node in enumerate(cluster.nodes)]
    for member in members:
        member.sub("$share/workers/jobs/#", qos=1)
    for member in members:  # the group is dealt to n0, n1, n2 in turn
        wait_routed(clients, n1, member, "jobs/probe")
    stuck, _ = raw.connected(n0, "stuck")
    assert stuck.subscribe(1, [("jobs/#", 1)]).reason_codes == [1]
    prober = clients.connect(n1, "prober")

    def stuck_is_routed() -> bool:
        prober.pub("jobs/probe", b"probe-stuck")  # QoS 0: nothing for stuck to acknowledge
        return any(packet.name == "PUBLISH" for packet in stuck.until_pingresp())

    wait_until(stuck_is_routed, what="stuck's subscription to reach n1")
    writer = clients.connect(n1, "writer")
    sent = [f"j{number}".encode() for number in range(30)]
    for payload in sent:
        writer.pub("jobs/work", payload, qos=1)  # PUBACKed: in the inbox of each node it goes to
    # stuck has the first messages; the others wait in n0's inbox, a third of them for the group.
    inbox = redis.Redis.from_url(cluster.redis_server.url).xlen("roost:{node:n0}:inbox")
    assert inbox >= 20, inbox
    n0.kill()
    wait_until(
        lambda: "took over node n0" in "".join(n1.log + n2.log),
        timeout=10 * NODE_TIMEOUT,
        what="the adoption of n0",
    )
    live = members[1:]
    wait_until(
        lambda: set(sent) <= {p for member in members for p in member.payloads()},
        what="every acknowledged message to reach a member of the group",
    )
    got = [payload for member in live for payload in without_probes(member.payloads())]
    assert len(got) == len(set(got)), "a message reached live members more than once"
