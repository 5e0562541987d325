"""The per-address login back-off (roost.security.backoff), by a hand-moved clock."""

from __future__ import annotations

from brokerthread import ManualClock
from roost.security.backoff import LoginBackoff


def failing(backoff: LoginBackoff, address: str, times: int) -> None:
    for _ in range(times):
        assert backoff.wait_left(address) == 0
        backoff.attempt(address)


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


def test_success_forgets_the_address() -> None:
    clock = ManualClock()
    backoff = LoginBackoff(clock, free_failures=2, max_delay=60)
    failing(backoff, "a", 2)
    clock.now += 1
    backoff.attempt("a")
    backoff.succeeded("a")
    failing(backoff, "a", 2)  # two free failures again
    assert backoff.wait_left("a") == 1


def test_quiet_addresses_are_forgotten() -> None:
    clock = ManualClock()
    backoff = LoginBackoff(clock, free_failures=1, max_delay=10)
    failing(backoff, "a", 1)
    clock.now += 99
    backoff.attempt("b")
    assert len(backoff) == 2
    clock.now += 2  # "a" has been quiet for 101 s > 10 * max_delay
    backoff.attempt("b")
    assert len(backoff) == 1


def test_table_is_bounded() -> None:
    backoff = LoginBackoff(ManualClock(), free_failures=1, max_delay=60, max_addresses=3)
    for address in "abcd":
        backoff.attempt(address)
    assert len(backoff) == 3
    assert backoff.wait_left("a") == 0  # the oldest went first
    assert backoff.wait_left("d") == 1


def test_zero_max_delay_turns_it_off() -> None:
    backoff = LoginBackoff(ManualClock(), free_failures=1, max_delay=0)
    failing(backoff, "a", 10)
