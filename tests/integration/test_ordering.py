"""Per-publisher message order: what one client sends reaches every subscriber in the order
it was sent, for every QoS, and for messages queued while a subscriber was offline.

Subscribers use QoS 1 so that paho hands messages to ``on_message`` in arrival order (it holds
QoS 2 deliveries back until PUBREL)."""

from __future__ import annotations

from collections import defaultdict

from paho_helpers import V5, V311

PUBLISHERS = 3
PER_PUBLISHER = 3000


def sequences(payloads: list[bytes]) -> dict[int, list[int]]:
    """Group ``b"publisher:seq"`` payloads by publisher, keeping arrival order."""
    out: dict[int, list[int]] = defaultdict(list)
    for payload in payloads:
        publisher, seq = payload.decode().split(":")
        out[int(publisher)].append(int(seq))
    return out


def test_per_publisher_order_with_mixed_qos(make_broker, clients):
    """3 publishers x 3,000 messages with QoS cycling 0, 1, 2 reach 2 subscribers (one 3.1.1,
    one 5.0) complete and in per-publisher order. Limits are raised so that flow control does
    not get in the way: paho ignores the server's Receive Maximum."""
    broker = make_broker(receive_maximum=65535, max_inflight=65535, max_queued_messages=1_000_000)
    subs = [clients.connect(broker, "sub-a", V311), clients.connect(broker, "sub-b", V5)]
    for s in subs:
        assert s.sub("order/#", 1) == [1]
    pubs = [clients.connect(broker, f"pub{i}", V5 if i else V311) for i in range(PUBLISHERS)]
    infos = []
    for seq in range(PER_PUBLISHER):
        for i, p in enumerate(pubs):
            infos.append(p.client.publish(f"order/{i}", f"{i}:{seq}".encode(), seq % 3))
    total = PUBLISHERS * PER_PUBLISHER
    for s in subs:
        s.wait_for_messages(total, timeout=45)
    for info in infos:
        if info.mid and info.rc == 0:
            info.wait_for_publish(10)
    expected = list(range(PER_PUBLISHER))
    for s in subs:
        msgs = s.wait_for_messages(total)
        assert len(msgs) == total, f"{len(msgs)} messages, expected {total} (duplicates?)"
        got = sequences([m.payload for m in msgs])
        for i in range(PUBLISHERS):
            seqs = got[i]
            if seqs != expected:
                first_bad = next(
                    (k for k, (a, b) in enumerate(zip(seqs, expected, strict=False)) if a != b),
                    min(len(seqs), len(expected)),
                )
                raise AssertionError(
                    f"publisher {i} at subscriber {s.client._client_id!r}: {len(seqs)} messages,"
                    f" first deviation at index {first_bad}:"
                    f" {seqs[max(0, first_bad - 3) : first_bad + 3]}"
                )
        for m in msgs:
            publisher = int(m.payload.split(b":")[0])
            assert m.topic == f"order/{publisher}"
            seq = int(m.payload.split(b":")[1])
            assert m.qos == min(seq % 3, 1), (m.payload, m.qos)


def test_order_of_messages_queued_for_offline_session(broker, clients):
    """Messages queued while a persistent subscriber is offline arrive in publish order on
    reconnect, followed by live messages."""
    s = clients.connect(broker, "offline-sub", V5, clean=False, session_expiry=300)
    s.sub("q/#", 1)
    s.stop()
    p = clients.connect(broker, "pub", V5)
    for seq in range(300):
        p.pub("q/t", f"0:{seq}".encode(), 1 + seq % 2)
    s2 = clients.connect(broker, "offline-sub", V5, clean=False, session_expiry=300)
    assert s2.session_present == [True]
    p.pub("q/t", b"0:300", 1)
    msgs = s2.wait_for_messages(301)
    assert sequences([m.payload for m in msgs])[0] == list(range(301))
