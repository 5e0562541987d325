"""The login back-off per address and user name (roost.security.backoff), by a hand-moved
clock."""

from __future__ import annotations

from brokerthread import ManualClock
from roost.security.backoff import LoginBackoff, login_key


def failing(backoff: LoginBackoff, address: str, times: int) -> None:
    for _ in range(times):
        assert backoff.wait_left(address) == 0
        backoff.failed(address)


def test_free_failures_then_doubling_waits_up_to_the_cap() -> None:
    clock = ManualClock()
    backoff = LoginBackoff(clock, free_failures=3, max_delay=5)
    failing(backoff, "10.0.0.1", 3)
    assert backoff.wait_left("10.0.0.1") == 1
    assert backoff.wait_left("10.0.0.2") == 0  # other addresses are not affected
    waits = []
    for _ in range(4):
        clock.now += backoff.wait_left("10.0.0.1")
        failing(backoff, "10.0.0.1", 1)
        waits.append(backoff.wait_left("10.0.0.1"))
    assert waits == [2, 4, 5, 5]
    clock.now += 4.5
    assert backoff.wait_left("10.0.0.1") == 0.5


def test_success_forgets_that_key_only() -> None:
    clock = ManualClock()
    backoff = LoginBackoff(clock, free_failures=2, max_delay=60)
    guessed, own = login_key("10.0.0.1", "alice"), login_key("10.0.0.1", "mallory")
    failing(backoff, guessed, 2)
    failing(backoff, own, 1)
    backoff.succeeded(own)  # a login that works at the same address ...
    assert backoff.wait_left(guessed) == 1  # ... does not lift the wait of the others
    clock.now += 1
    backoff.succeeded(guessed)
    failing(backoff, guessed, 2)  # two free failures again
    assert backoff.wait_left(guessed) == 1


def test_keys_tell_addresses_and_names_apart_and_stay_small() -> None:
    keys = {
        login_key("10.0.0.1", "alice"),
        login_key("10.0.0.2", "alice"),
        login_key("10.0.0.1", "alice2"),
        login_key("10.0.0.1", "x" * 65_535),
    }
    assert len(keys) == 4
    assert max(map(len, keys)) < 64


def test_quiet_addresses_are_forgotten() -> None:
    clock = ManualClock()
    backoff = LoginBackoff(clock, free_failures=1, max_delay=10)
    failing(backoff, "a", 1)
    clock.now += 99
    backoff.failed("b")
    assert len(backoff) == 2
    clock.now += 2  # "a" has been quiet for 101 s > 10 * max_delay
    backoff.failed("b")
    assert len(backoff) == 1


def test_table_is_bounded() -> None:
    backoff = LoginBackoff(ManualClock(), free_failures=1, max_delay=60, max_entries=3)
    for address in "abcd":
        backoff.failed(address)
    assert len(backoff) == 3
    assert backoff.wait_left("a") == 0  # the oldest went first
    assert backoff.wait_left("d") == 1


def test_zero_max_delay_turns_it_off() -> None:
    backoff = LoginBackoff(ManualClock(), free_failures=1, max_delay=0)
    failing(backoff, "a", 10)
