"""MQTT 5 Request Problem Information: a client that sets it to 0 gets no reason strings
in acknowledgements [MQTT-3.1.2-29]."""

from __future__ import annotations

from typing import Any

import pytest

from rawmqtt import RawClient
from roost.codec import MQTT_5, Properties, PubAck, Publish


@pytest.mark.parametrize(("requested", "expect_reason"), [(None, True), (0, False), (1, True)])
def test_reason_string_only_when_problem_information_is_wanted(
    broker: Any, requested: int | None, expect_reason: bool
) -> None:
    client = RawClient(broker.host, broker.port)
    try:
        client.connect(
            "problems", level=MQTT_5, properties=Properties(request_problem_information=requested)
        )
        # A decision on an unknown transaction is refused with 0x83 and a reason string.
        client.send_packet(Publish("$tx/commit", b"no-such-id", qos=1, packet_id=7))
        ack = client.recv_packet()
        assert isinstance(ack, PubAck)
        assert ack.reason_code == 0x83
        assert (ack.properties.reason_string is not None) is expect_reason
    finally:
        client.close()
