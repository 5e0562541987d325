"""SIGHUP makes a running ``roost serve`` read its ACL file again: the new rules apply to
the next publish and subscribe of connections already open (and to what they receive); a
broken file keeps the rules in force and the log names the bad line."""

from __future__ import annotations

import pytest

from aclclients import connect_as, publish_code
from brokerproc import BrokerProcess
from paho_helpers import V5, V311

NOT_AUTHORIZED = 0x87

BEFORE = """\
user alice
topic readwrite a/#

user writer
topic write #
"""
AFTER = """\
user alice
topic readwrite b/#

user writer
topic write #
"""
BROKEN = """\
user alice
topic readwrite c/#
frobnicate c/x
"""


@pytest.fixture
def served(tmp_path):
    acl = tmp_path / "acl.conf"
    acl.write_text(BEFORE)
    process = BrokerProcess(tmp_path / "data", "--acl-file", str(acl)).start()
    yield process, acl
    process.kill()


def reload_with(process, acl, text, expected_log):
    acl.write_text(text)
    process.reload(expected_log)


@pytest.mark.parametrize("version", [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")])
def test_sighup_reloads_the_acl_for_open_connections(served, clients, version):
    process, acl = served
    alice = connect_as(clients, process, "alice", "alice", version)
    writer = connect_as(clients, process, "writer", "writer", V5)
    refused = NOT_AUTHORIZED if version == V5 else 0x80
    assert alice.sub_many([("a/#", 1), ("b/#", 1)]) == [1, refused]

    reload_with(process, acl, AFTER, "reloaded")
    assert alice.sub_many([("a/#", 1), ("b/#", 1)]) == [refused, 1]
    if version == V5:
        assert publish_code(alice, "a/x", b"mine", 1) == NOT_AUTHORIZED
        assert publish_code(alice, "b/x", b"mine", 1) == 0
    writer.pub("a/x", b"old rights", 1)  # alice's a/# subscription stays, but not her right
    writer.pub("b/x", b"marker", 1)
    alice.wait_for_payload(b"marker")
    assert b"old rights" not in [m.payload for m in alice.before(b"marker")]

    reload_with(process, acl, BROKEN, "line 3: unknown keyword")
    assert any("previous rules stay in force" in line for line in process.log)
    assert alice.sub("b/y", 1) == [1]  # the rules of AFTER are still in force
    assert alice.sub("c/y", 1) == [refused]
    assert alice.client.is_connected() and writer.client.is_connected()
