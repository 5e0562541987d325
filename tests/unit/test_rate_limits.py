"""The abuse limits' parts, with time given by hand: token buckets, the paused clients and
their grace, connection rates per address (bounded memory), connections per user, and
the settings that turn them on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.config import Settings, load_settings
from roost.errors import ConfigError
from roost.security.limits import (
    AddressRates,
    ClientRate,
    Limits,
    Throttles,
    TokenBucket,
    UserConnections,
    peer_address,
)

# -- the token bucket ---------------------------------------------------------------------


def test_a_bucket_starts_full_and_refuses_once_empty() -> None:
    bucket = TokenBucket(rate=2, capacity=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.49)  # one token takes half a second
    assert bucket.take(0.5)


def test_a_bucket_refills_no_further_than_its_capacity() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=0.0)
    for _ in range(5):
        bucket.take(0.0)
    assert bucket.full_at() == pytest.approx(0.5)
    taken = sum(bucket.take(100.0) for _ in range(10))
    assert taken == 5


def test_spending_into_debt_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=10, capacity=10, now=0.0)
    assert bucket.spend(10, 0.0) == 0.0
    assert bucket.spend(5, 0.0) == pytest.approx(0.5)  # 5 tokens owed at 10 a second
    assert bucket.spend(0, 0.3) == pytest.approx(0.2)  # 3 of them paid back
    assert bucket.spend(0, 0.5) == 0.0


def test_time_going_backwards_takes_nothing_back() -> None:
    bucket = TokenBucket(rate=1, capacity=1, now=5.0)
    assert bucket.take(5.0)
    assert not bucket.take(4.0)
    assert bucket.take(6.0)


@given(
    rate=st.integers(1, 50),
    burst=st.integers(0, 50),
    steps=st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=200),
)
def test_a_bucket_never_admits_more_than_its_capacity_plus_its_rate_over_time(
    rate: int, burst: int, steps: list[float]
) -> None:
    bucket = TokenBucket(rate, rate + burst, now=0.0)
    now = 0.0
    taken = 0
    for step in steps:
        now += step
        taken += bucket.take(now)
    assert taken <= rate + burst + rate * now + 1e-9


@given(
    rate=st.integers(1, 50),
    sizes=st.lists(st.integers(0, 100), min_size=1, max_size=100),
)
def test_a_client_that_waits_as_told_sends_at_its_rate_in_the_long_run(
    rate: int, sizes: list[int]
) -> None:
    """Each wait is the time its debt takes to pay back: waiting exactly that long,
    whatever was sent is what the capacity and the elapsed time allow."""
    capacity = rate
    bucket = TokenBucket(rate, capacity, now=0.0)
    now = 0.0
    for size in sizes:
        now += bucket.spend(size, now)
    assert sum(sizes) <= capacity + rate * now + 1e-6


def test_client_rate_waits_for_the_slower_of_its_buckets() -> None:
    rate = ClientRate(TokenBucket(10, 10, 0.0), TokenBucket(100, 100, 0.0))
    assert rate.spend(50, 0.0) == 0.0
    assert rate.spend(150, 0.0) == pytest.approx(1.0)  # 100 bytes owed at 100 B/s
    only_messages = ClientRate(TokenBucket(1, 1, 0.0), None)
    assert only_messages.spend(10**9, 0.0) == 0.0
    assert only_messages.spend(0, 0.0) == pytest.approx(1.0)


# -- paused clients -------------------------------------------------------------------------


def test_a_paused_client_is_resumed_by_the_first_sweep_after_its_debt_is_paid() -> None:
    throttles: Throttles[str] = Throttles(grace=10)
    throttles.hold("a", until=1.2, now=1.0)
    assert throttles.sweep(1.0) == ([], [])
    assert throttles.is_paused("a")
    assert throttles.sweep(1.25) == (["a"], [])
    assert not throttles.is_paused("a")


def test_a_client_paused_at_every_sweep_is_disconnected_after_the_grace_time() -> None:
    throttles: Throttles[str] = Throttles(grace=2)
    throttles.hold("a", until=0.2, now=0.0)
    now = 0.0
    for _ in range(7):  # resumed and paused again at once, seven times
        now += 0.25
        resume, expel = throttles.sweep(now)
        assert (resume, expel) == (["a"], []), now
        throttles.hold("a", until=now + 0.1, now=now)
    assert throttles.sweep(2.0) == ([], ["a"])
    assert len(throttles) == 0 and not throttles.is_paused("a")


def test_a_client_that_reads_through_a_sweep_starts_its_grace_afresh() -> None:
    throttles: Throttles[str] = Throttles(grace=2)
    throttles.hold("a", until=0.25, now=0.0)
    assert throttles.sweep(1.5) == (["a"], [])
    assert throttles.sweep(1.75) == ([], [])  # not paused again: back within its rate
    assert len(throttles) == 0
    throttles.hold("a", until=2.0, now=1.8)
    assert throttles.sweep(2.0) == (["a"], [])  # 0.2 s over, not 2


def test_a_single_debt_longer_than_the_grace_time_disconnects() -> None:
    throttles: Throttles[str] = Throttles(grace=3)
    throttles.hold("a", until=100.0, now=0.0)
    assert throttles.sweep(2.75) == ([], [])
    assert throttles.sweep(3.0) == ([], ["a"])


def test_grace_zero_only_pauses() -> None:
    throttles: Throttles[str] = Throttles(grace=0)
    throttles.hold("a", until=1000.0, now=0.0)
    assert throttles.sweep(999.0) == ([], [])
    assert throttles.sweep(1000.0) == (["a"], [])


def test_a_paused_client_can_only_be_held_longer_not_shorter() -> None:
    throttles: Throttles[str] = Throttles(grace=0)
    throttles.hold("a", until=5.0, now=0.0)
    throttles.hold("a", until=1.0, now=0.5)
    assert throttles.sweep(1.0) == ([], [])
    assert throttles.sweep(5.0) == (["a"], [])


def test_a_forgotten_client_leaves_nothing_behind() -> None:
    throttles: Throttles[str] = Throttles(grace=1)
    throttles.hold("a", until=9.0, now=0.0)
    throttles.forget("a")
    assert len(throttles) == 0
    assert throttles.sweep(10.0) == ([], [])


# -- connections per address ----------------------------------------------------------------


def test_an_address_over_its_connection_rate_is_refused_until_it_refills() -> None:
    rates = AddressRates(rate=2, burst=1)
    assert [rates.admits("10.0.0.1", 0.0) for _ in range(4)] == [True, True, True, False]
    assert rates.admits("10.0.0.2", 0.0)  # another address has its own bucket
    assert not rates.admits("10.0.0.1", 0.25)
    assert rates.admits("10.0.0.1", 0.5)


def test_addresses_whose_bucket_refilled_are_forgotten() -> None:
    rates = AddressRates(rate=10, burst=0)
    for n in range(100):
        rates.admits(f"10.0.0.{n}", 0.0)
    assert len(rates) == 100
    rates.admits("10.0.1.1", 0.05)  # a tenth of a second later: not refilled yet
    assert len(rates) == 101
    rates.admits("10.0.1.2", 0.1)  # the first hundred have refilled
    assert len(rates) == 2


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=500))
def test_the_address_table_never_grows_past_its_cap(addresses: list[int]) -> None:
    rates = AddressRates(rate=1, burst=0, max_addresses=16)
    for n in addresses:
        rates.admits(f"10.0.{n // 256}.{n % 256}", 0.0)
        assert len(rates) <= 16


def test_the_least_recently_seen_address_makes_room() -> None:
    rates = AddressRates(rate=1, burst=0, max_addresses=2)
    assert rates.admits("a", 0.0)
    assert rates.admits("b", 0.0)
    assert not rates.admits("a", 0.0)  # "a" is now the most recently seen
    assert rates.admits("c", 0.0)  # "b" goes
    assert not rates.admits("a", 0.0)  # still remembered, still empty


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("192.0.2.7:51234", "192.0.2.7"),
        ("::1:40000", "::1"),
        ("[2001:db8::1]:1883", "2001:db8::1"),
        ("?", "?"),
    ],
)
def test_the_address_of_a_peer(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_ports_of_one_address_share_its_rate() -> None:
    limits = Limits(Settings(address_connection_rate=1))
    assert limits.admits_connection("192.0.2.7:1000", 0.0)
    assert not limits.admits_connection("192.0.2.7:1001", 0.0)
    assert limits.admits_connection("192.0.2.8:1000", 0.0)


# -- connections per user -------------------------------------------------------------------


def test_a_user_is_held_to_its_maximum_and_a_take_over_counts_once() -> None:
    users = UserConnections(maximum=2)
    for client_id in ("one", "two"):
        assert users.admits("alice", client_id)
        users.add("alice", client_id)
    assert not users.admits("alice", "three")
    assert users.admits("alice", "two")  # the same client id: it replaces itself
    assert users.admits("bob", "three")
    users.remove("alice", "one")
    assert users.admits("alice", "three")
    assert users.count("alice") == 1


def test_without_a_maximum_or_a_user_name_nothing_is_counted() -> None:
    unlimited = UserConnections(maximum=0)
    unlimited.add("alice", "one")
    assert unlimited.count("alice") == 0
    limited = UserConnections(maximum=1)
    limited.add(None, "anonymous")
    assert limited.admits(None, "another")


def test_a_user_with_no_connection_left_is_forgotten() -> None:
    users = UserConnections(maximum=1)
    users.add("alice", "one")
    users.remove("alice", "one")
    users.remove("alice", "one")  # twice: no harm
    assert users.count("alice") == 0
    assert users._clients == {}


# -- settings -------------------------------------------------------------------------------


def test_every_limit_is_off_by_default() -> None:
    limits = Limits(Settings())
    assert limits.client_rate(0.0) is None
    assert limits.addresses is None
    assert limits.users.maximum == 0


def test_a_client_gets_only_the_buckets_that_are_on() -> None:
    rate = Limits(Settings(client_byte_rate=1000, client_byte_burst=500)).client_rate(0.0)
    assert rate is not None and rate.messages is None
    assert rate.bytes is not None and rate.bytes.capacity == 1500


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("client_message_rate", -1),
        ("client_byte_burst", -5),
        ("rate_limit_grace", 86_401),
        ("address_connection_rate", -1),
        ("max_connections_per_user", -1),
    ],
)
def test_limits_out_of_range_stop_start_up(name: str, value: int) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize(
    ("burst", "rate"),
    [
        ("client_message_burst", "client_message_rate"),
        ("client_byte_burst", "client_byte_rate"),
        ("address_connection_burst", "address_connection_rate"),
    ],
)
def test_a_burst_without_its_rate_stops_start_up(burst: str, rate: str) -> None:
    with pytest.raises(ConfigError, match=f"{burst}.*{rate}"):
        load_settings({burst: 10})
    assert getattr(load_settings({burst: 10, rate: 5}), burst) == 10


def test_limits_are_read_from_the_environment() -> None:
    settings = load_settings(env={"ROOST_MAX_CONNECTIONS_PER_USER": "3"})
    assert settings.max_connections_per_user == 3
