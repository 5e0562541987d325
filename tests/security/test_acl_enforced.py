"""The ACL file enforced by a real broker on real paho 3.1.1 and 5.0 clients: subscribe,
publish, delivery through wildcard and shared subscriptions, retained messages, wills and
sessions (docs/acl.md).

A marker published after the messages under test, by the same publisher on a topic the
receiver may read, shows that nothing else is on its way once it has arrived."""

from __future__ import annotations

import logging

import pytest

from aclclients import broker_with_acl, connect_as, publish_code
from paho_helpers import V5, V311
from roost.errors import ConfigError
from roost.security.passwords import make_entry, write_text

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]
NOT_AUTHORIZED = 0x87

ACL = """\
# anonymous clients: the marker topic only
topic readwrite marker

user writer
topic write #
topic write marker

user reader
topic read a/#
topic deny a/secret
topic read sh/#
topic read marker

user browser
topic subscribe #
topic read a/+
topic deny a/secret
topic read marker

user reader2
topic read sh/open
topic subscribe sh/#
topic read marker
"""


@pytest.fixture
def acl_broker(make_broker, tmp_path):
    return broker_with_acl(make_broker, tmp_path, ACL)


def received_before_marker(conn):
    conn.wait_for_payload(b"marker")
    return [(m.topic, m.payload) for m in conn.before(b"marker")]


@pytest.mark.parametrize("version", VERSIONS)
def test_subscribe_refused_per_filter(acl_broker, clients, version):
    reader = connect_as(clients, acl_broker, "reader", "r", version)
    codes = reader.sub_many([("a/x", 1), ("b/x", 1), ("a/secret", 1), ("a/#", 0)])
    refused = NOT_AUTHORIZED if version == V5 else 0x80
    assert codes == [1, refused, refused, 0]


@pytest.mark.parametrize("version", VERSIONS)
def test_publish_refused(acl_broker, clients, raw, version):
    """3.1.1: acknowledged as usual and dropped; 5.0: PUBACK / PUBREC 0x87. Nothing is
    routed nor retained."""
    listener = connect_as(clients, acl_broker, "writer", "listener", V5)
    assert listener.sub("#", 1) == [NOT_AUTHORIZED]  # writer may not subscribe
    reader = connect_as(clients, acl_broker, "reader", "r", V5)
    assert reader.sub("a/#", 1) == [1]
    assert reader.sub("marker", 1) == [1]
    publisher = connect_as(clients, acl_broker, "reader", "p", version)  # may not write
    expected = NOT_AUTHORIZED if version == V5 else 0
    assert publish_code(publisher, "a/x", b"denied-1", 1) == expected
    if version == V311:
        assert publish_code(publisher, "a/x", b"denied-2", 2, retain=True) == 0
    else:  # paho reports the PUBCOMP of the PUBREL it sends anyway: read the PUBREC
        anonymous, _ = raw.connected(acl_broker, "raw", 5)
        anonymous.publish("a/x", b"denied-2", 2, packet_id=7, retain=True)
        pubrec = anonymous.expect("PUBREC")
        assert (pubrec.packet_id, pubrec.reason_code) == (7, NOT_AUTHORIZED)
    publisher.client.publish("a/x", b"denied-0", 0)
    writer = connect_as(clients, acl_broker, None, "anon", version)
    assert publish_code(writer, "a/x", b"denied-anon", 1) == expected
    assert publish_code(publisher, "marker", b"ok", 1) == expected  # reader: read only
    assert publish_code(writer, "marker", b"marker", 1) == 0
    assert received_before_marker(reader) == []
    late = connect_as(clients, acl_broker, "reader", "late", V5)
    late.sub("a/x", 1)
    assert publish_code(writer, "marker", b"marker", 1) == 0
    late.sub("marker", 1)
    assert publish_code(writer, "marker", b"marker", 1) == 0
    assert received_before_marker(late) == []  # no retained message either


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcard_subscriptions_receive_only_readable_topics(acl_broker, clients, version):
    browser = connect_as(clients, acl_broker, "browser", "b", version)
    assert browser.sub("#", 1) == [1]  # "subscribe #" lets it subscribe to everything
    reader = connect_as(clients, acl_broker, "reader", "r", version)
    assert reader.sub("a/+", 1) == [1]
    assert reader.sub("marker", 1) == [1]
    writer = connect_as(clients, acl_broker, "writer", "w", version)
    for topic in ("a/x", "b/x", "a/secret", "a/x/y", "a/y"):
        writer.pub(topic, topic.encode(), 1)
    writer.pub("marker", b"marker", 1)
    assert received_before_marker(browser) == [("a/x", b"a/x"), ("a/y", b"a/y")]
    assert received_before_marker(reader) == [("a/x", b"a/x"), ("a/y", b"a/y")]


@pytest.mark.parametrize("version", VERSIONS)
def test_shared_subscription_serves_only_members_that_may_read(acl_broker, clients, version):
    full = connect_as(clients, acl_broker, "reader", "full", version)
    limited = connect_as(clients, acl_broker, "reader2", "limited", version)
    for member in (full, limited):
        assert member.sub("$share/g/sh/#", 1) == [1]
        assert member.sub("marker", 1) == [1]
    writer = connect_as(clients, acl_broker, "writer", "w", version)
    for n in range(20):
        writer.pub("sh/closed", b"c%d" % n, 1)
        writer.pub("sh/open", b"o%d" % n, 1)
    writer.pub("marker", b"marker", 1)
    got_limited = received_before_marker(limited)
    got_full = received_before_marker(full)
    assert all(topic == "sh/open" for topic, _ in got_limited)
    assert got_limited, "the limited member gets its share of what it may read"
    closed = [payload for topic, payload in got_full if topic == "sh/closed"]
    assert closed == [b"c%d" % n for n in range(20)]  # all of it, to the one that may
    assert len(got_full) + len(got_limited) == 40


def test_shared_message_no_member_may_read_goes_to_nobody(acl_broker, clients):
    limited = connect_as(clients, acl_broker, "reader2", "limited", V5)
    assert limited.sub("$share/g/sh/#", 1) == [1]
    assert limited.sub("marker", 1) == [1]
    writer = connect_as(clients, acl_broker, "writer", "w", V5)
    assert publish_code(writer, "sh/closed", b"secret", 1) == 0x10  # no matching subscribers
    writer.pub("marker", b"marker", 1)
    assert received_before_marker(limited) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_messages_are_checked_on_subscribe(acl_broker, clients, version):
    writer = connect_as(clients, acl_broker, "writer", "w", version)
    writer.pub("a/open", b"open", 1, retain=True)
    writer.pub("a/secret", b"secret", 1, retain=True)
    writer.pub("marker", b"marker", 1, retain=True)
    reader = connect_as(clients, acl_broker, "reader", "r", version)
    assert reader.sub("a/#", 1) == [1]
    browser = connect_as(clients, acl_broker, "browser", "b", version)
    assert browser.sub("#", 1) == [1]
    reader.sub("marker", 1)
    assert received_before_marker(reader) == [("a/open", b"open")]
    assert received_before_marker(browser) == [("a/open", b"open")]


@pytest.mark.parametrize("version", VERSIONS)
def test_wills_need_the_write_right(acl_broker, clients, version):
    reader = connect_as(clients, acl_broker, "reader", "r", V5)
    assert reader.sub("a/#", 1) == [1]
    assert reader.sub("marker", 1) == [1]
    denied = connect_as(clients, acl_broker, "reader", "d", version, will=("a/x", b"no", 1))
    allowed = connect_as(clients, acl_broker, "writer", "w", version, will=("a/y", b"yes", 1))
    for conn in (denied, allowed):
        conn.client.loop_stop()
        conn.client.socket().close()  # no DISCONNECT: the will goes out, if allowed
    acl_broker.wait_offline("d")
    acl_broker.wait_offline("w")
    marker = connect_as(clients, acl_broker, None, "m", V5)
    marker.pub("marker", b"marker", 1)
    assert received_before_marker(reader) == [("a/y", b"yes")]


def test_a_session_resumes_only_for_its_owner_even_after_a_restart(make_broker, tmp_path, clients):
    broker = broker_with_acl(make_broker, tmp_path, ACL)
    reader = connect_as(clients, broker, "reader", "r", V5, clean=False, session_expiry=600)
    assert reader.sub("a/#", 1) == [1]
    reader.stop()
    broker.wait_offline("r")
    writer = connect_as(clients, broker, "writer", "w", V5)
    writer.pub("a/x", b"queued", 1)
    writer.stop()
    broker = make_broker.restart(broker)  # the owner is stored with the session
    owner = connect_as(clients, broker, "reader", "r", V5, clean=False, session_expiry=600)
    assert owner.session_present == [True]
    assert owner.wait_for_payload(b"queued").topic == "a/x"
    owner.stop()
    broker.wait_offline("r")
    writer = connect_as(clients, broker, "writer", "w", V5)
    writer.pub("a/x", b"queued again", 1)
    thief = connect_as(clients, broker, "browser", "r", V5, clean=False, session_expiry=600)
    assert thief.session_present == [False]  # another user: a new session
    assert thief.sub("marker", 1) == [1]
    writer.pub("marker", b"marker", 1)
    assert received_before_marker(thief) == []


def test_a_missing_or_broken_acl_file_stops_start_up(make_broker, tmp_path):
    missing = tmp_path / "missing.conf"
    with pytest.raises(ConfigError, match=f"cannot read acl_file {missing}"):
        make_broker(acl_file=str(missing))
    with pytest.raises(ConfigError, match=r"acl\.conf, line 2: unknown keyword"):
        broker_with_acl(make_broker, tmp_path, "topic read a\ntopics read b\n")


def test_a_clients_rules_are_compiled_once_per_session_not_per_delivery(
    make_broker, tmp_path, clients
):
    broker = broker_with_acl(
        make_broker, tmp_path, "user writer\ntopic write #\npattern read news/#\n"
    )
    core = broker.broker.core
    readers = [connect_as(clients, broker, f"reader{n}", f"r{n}") for n in range(3)]
    for reader in readers:
        assert reader.sub("news/#", 1) == [1]
    writer = connect_as(clients, broker, "writer", "w")
    writer.pub("news/0", b"first", 1)
    for reader in readers:
        reader.wait_for_payload(b"first")
    compiled = {n: core.sessions[f"r{n}"].acl_rights for n in range(3)}
    assert all(rights is not None for rights in compiled.values())
    for number in range(1, 6):
        writer.pub(f"news/{number}", b"more", 1)
    writer.pub("news/last", b"last", 1)
    for reader in readers:
        reader.wait_for_payload(b"last")
    assert all(core.sessions[f"r{n}"].acl_rights is compiled[n] for n in range(3))

    broker.on_loop(broker.broker.reload)  # new rules: compiled again, once, at the next check
    writer.pub("news/after", b"after", 1)
    readers[0].wait_for_payload(b"after")
    again = core.sessions["r0"].acl_rights
    assert again is not compiled[0] and again.generation == compiled[0].generation + 1


@pytest.mark.parametrize(
    ("acl", "with_passwords", "warned"),
    [
        ("user admin\ntopic #\n", False, True),
        ("pattern read users/%u/#\n", False, True),
        ("topic read public/#\npattern read devices/%c/#\n", False, False),
        ("user admin\ntopic #\n", True, False),
    ],
    ids=["user-section", "user-pattern", "no-user-rules", "password-file"],
)
def test_start_up_warns_when_user_rules_trust_unchecked_user_names(
    make_broker, tmp_path, caplog, acl, with_passwords, warned
):
    settings = {}
    if with_passwords:
        passwords = tmp_path / "passwords"
        write_text(str(passwords), make_entry("admin", "secret").line() + "\n")
        settings["password_file"] = str(passwords)
    with caplog.at_level(logging.WARNING, "roost.broker"):
        broker_with_acl(make_broker, tmp_path, acl, **settings)
    assert ("any client there can connect as any user" in caplog.text) is warned
