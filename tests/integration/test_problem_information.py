"""MQTT 5 Request Problem Information: a client that sets it to 0 gets no reason strings
in acknowledgements [MQTT-3.1.2-29]."""

from __future__ import annotations

from typing import Any

import pytest

from rawmqtt import RawFactory


@pytest.mark.parametrize(("requested", "expect_reason"), [(None, True), (0, False), (1, True)])
def test_reason_string_only_when_problem_information_is_wanted(
    broker: Any, raw: RawFactory, requested: int | None, expect_reason: bool
) -> None:
    props = [] if requested is None else [("RequestProblemInformation", requested)]
    client, _ = raw.connected(broker, "problems", 5, props=props)
    # A decision on an unknown transaction is refused with 0x83 and a reason string.
    client.publish("$tx/commit", b"no-such-id", qos=1, packet_id=7)
    ack = client.expect("PUBACK")
    assert ack.reason_code == 0x83
    assert ("ReasonString" in ack.props) is expect_reason
