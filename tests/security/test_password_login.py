"""Logins against a password file on a real broker: paho 3.1.1 / 5.0 and raw clients with
the right and wrong password, unknown users, anonymous clients with and without
allow_anonymous, the per-address back-off (broker time moved by hand), password checks off
the event loop, reload, and start-up refused for a bad password file."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from brokerproc import BrokerProcess
from brokerthread import ManualClock
from paho_helpers import V5, V311, Clients, Conn, make_client, start, wait_until
from proxyheaders import v2
from rawmqtt import LEVELS, RawClient, RawFactory
from roost.broker import Broker
from roost.config import Settings
from roost.errors import ConfigError
from roost.protocol import CONNECT_TIMEOUT
from roost.security.authenticator import HASH_WORKERS, TURNS_PER_ADDRESS
from roost.security.passwords import UserEntry, make_entry, with_entry, write_text

ALICE = make_entry("alice", "wonderland")
BAD_LOGIN = {5: 0x86, 4: 4}  # Bad user name or password
LOCKED_OUT = {5: 0x87, 4: 5}  # Not authorized


def password_file(tmp_path: Path, *entries: UserEntry) -> str:
    path = str(tmp_path / "passwords")
    write_text(path, "# test users\n" + "".join(entry.line() + "\n" for entry in entries))
    return path


@pytest.fixture
def secured(make_broker: Any, tmp_path: Path) -> Any:
    """A broker with a password file holding alice (password "wonderland")."""
    return make_broker(password_file=password_file(tmp_path, ALICE))


def paho_login(
    clients: Clients,
    broker: Any,
    client_id: str,
    version: int,
    username: str | None,
    password: str | None = None,
) -> Conn:
    """A paho client that CONNECTs with ``username``/``password`` and has its CONNACK,
    whatever it says (and never reconnects on its own)."""
    client, collector = make_client(client_id, version)
    client.reconnect_delay_set(min_delay=60, max_delay=120)
    if username is not None:
        client.username_pw_set(username, password)
    conn = Conn(client, collector)
    clients.all.append(conn)
    start(client, collector, broker, client_id, version)
    return conn


def raw_login(
    raw: RawFactory,
    broker: Any,
    level: int,
    username: str | None,
    password: bytes | None,
    source: str | None = None,
) -> int:
    """The CONNACK code a raw client gets (from address ``source``, named by a PROXY
    header, on a ``proxy_protocol`` listener); a refused one is then closed by the broker."""
    client = raw(broker, level)
    if source is not None:
        client.send(v2(source))
    connack = client.connect("raw", username=username, password=password)
    assert connack is not None and connack.name == "CONNACK", connack
    if connack.reason_code:
        assert client.wait_closed() == []
    return connack.reason_code


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_paho_right_password_in_wrong_password_and_unknown_user_out(
    secured: Any, clients: Clients, version: int
) -> None:
    alice = paho_login(clients, secured, "alice-1", version, "alice", "wonderland")
    assert alice.connack_rc == 0
    alice.sub("t/#", 1)
    alice.pub("t/1", b"hello", 1)
    assert alice.wait_for_payload(b"hello").topic == "t/1"
    wrong = paho_login(clients, secured, "alice-2", version, "alice", "Wonderland")
    unknown = paho_login(clients, secured, "mallory-1", version, "mallory", "wonderland")
    assert wrong.connack_rc == unknown.connack_rc == 0x86  # paho reports 3.1.1's 4 as 0x86
    assert not wrong.client.is_connected() and not unknown.client.is_connected()


@LEVELS
def test_wrong_password_and_unknown_user_get_the_same_code(
    secured: Any, raw: RawFactory, level: int
) -> None:
    assert raw_login(raw, secured, level, "alice", b"wonderland") == 0
    assert raw_login(raw, secured, level, "alice", b"nope") == BAD_LOGIN[level]
    assert raw_login(raw, secured, level, "alice", None) == BAD_LOGIN[level]
    assert raw_login(raw, secured, level, "nobody", b"wonderland") == BAD_LOGIN[level]


@LEVELS
def test_anonymous_refused_when_a_password_file_is_set(
    secured: Any, raw: RawFactory, level: int
) -> None:
    assert raw_login(raw, secured, level, None, None) == BAD_LOGIN[level]


@LEVELS
def test_allow_anonymous_lets_clients_without_user_name_in(
    make_broker: Any, tmp_path: Path, raw: RawFactory, level: int
) -> None:
    broker = make_broker(password_file=password_file(tmp_path, ALICE), allow_anonymous=True)
    assert raw_login(raw, broker, level, None, None) == 0
    assert raw_login(raw, broker, level, "alice", b"nope") == BAD_LOGIN[level]  # still checked
    assert raw_login(raw, broker, level, "alice", b"wonderland") == 0


def test_without_password_file_anyone_connects(broker: Any, raw: RawFactory) -> None:
    assert broker.broker.passwords is None
    assert raw_login(raw, broker, 5, None, None) == 0
    assert raw_login(raw, broker, 4, "anyone", b"anything") == 0


@LEVELS
def test_failed_logins_of_a_user_back_off_and_success_resets(
    make_broker: Any, tmp_path: Path, raw: RawFactory, clock: ManualClock, level: int
) -> None:
    broker = make_broker(
        clock=clock,
        password_file=password_file(tmp_path, ALICE),
        auth_backoff_after=3,
        auth_backoff_max=8,
    )
    for _ in range(3):
        assert raw_login(raw, broker, level, "alice", b"guess") == BAD_LOGIN[level]
    # The 4th attempt is refused at once, even with the right password, for 1 s ...
    assert raw_login(raw, broker, level, "alice", b"wonderland") == LOCKED_OUT[level]
    broker.advance(0.5)
    assert raw_login(raw, broker, level, "alice", b"guess") == LOCKED_OUT[level]
    broker.advance(0.5)
    assert raw_login(raw, broker, level, "alice", b"guess") == BAD_LOGIN[level]
    # ... then 2 s after that 4th failure (doubling, up to 8 s).
    broker.advance(1.75)
    assert raw_login(raw, broker, level, "alice", b"wonderland") == LOCKED_OUT[level]
    broker.advance(0.25)
    assert raw_login(raw, broker, level, "alice", b"wonderland") == 0
    # Success forgot alice's failures: three free failures again.
    for _ in range(3):
        assert raw_login(raw, broker, level, "alice", b"guess") == BAD_LOGIN[level]
    assert raw_login(raw, broker, level, "alice", b"guess") == LOCKED_OUT[level]


def test_a_valid_account_does_not_lift_the_back_off_of_another(
    make_broker: Any, tmp_path: Path, raw: RawFactory, clock: ManualClock
) -> None:
    """Guessing bob's password from an address where mallory logs in with her own password
    stays slowed down; and bob's failures do not lock mallory out."""
    mallory, bob = make_entry("mallory", "mine"), make_entry("bob", "builder")
    broker = make_broker(
        clock=clock, password_file=password_file(tmp_path, mallory, bob), auth_backoff_after=2
    )
    for _ in range(2):
        assert raw_login(raw, broker, 5, "bob", b"guess") == 0x86
        assert raw_login(raw, broker, 5, "mallory", b"mine") == 0
    assert raw_login(raw, broker, 5, "bob", b"builder") == 0x87  # still waiting
    assert raw_login(raw, broker, 5, "mallory", b"mine") == 0
    broker.advance(1)
    assert raw_login(raw, broker, 5, "bob", b"builder") == 0


def test_correct_logins_at_the_same_moment_from_one_address_all_get_in(
    make_broker: Any, tmp_path: Path, raw: RawFactory
) -> None:
    """A gateway reconnecting its 20 devices at once (auth_backoff_after = 5): logins being
    checked are not failures, and those beyond the address's turns wait, not refused."""
    broker = make_broker(password_file=password_file(tmp_path, ALICE))
    devices = [raw(broker, 5) for _ in range(20)]
    for number, device in enumerate(devices):
        device.send_connect(f"device-{number}", username="alice", password=b"wonderland")
    codes = [device.expect("CONNACK").reason_code for device in devices]
    assert codes == [0] * 20


def test_a_password_check_does_not_stall_other_clients(
    make_broker: Any, tmp_path: Path, raw: RawFactory
) -> None:
    """While a deliberately slow hash is checked, the broker answers another client."""
    slow_hasher = PasswordHasher(time_cost=60, memory_cost=19_456, parallelism=1)
    slow = make_entry("slow", "tortoise", hasher=slow_hasher)
    broker = make_broker(password_file=password_file(tmp_path, ALICE, slow), allow_anonymous=True)
    other, _ = raw.connected(broker, "other", 5)
    logging_in = raw(broker, 5)
    logging_in.send_connect("slow", username="slow", password=b"tortoise")
    for _ in range(3):
        other.ping()  # answered while the hash runs ...
        readable, _, _ = select.select([logging_in.sock], [], [], 0)
        assert not readable, "CONNACK before the other client's PINGRESP"
    assert logging_in.expect("CONNACK").reason_code == 0  # ... which then succeeds


SLOW = make_entry(  # each check of its hash takes about a second
    "slow", "tortoise", hasher=PasswordHasher(time_cost=60, memory_cost=19_456, parallelism=1)
)


def slow_logins(raw: RawFactory, broker: Any, count: int, proxied: bool) -> list[RawClient]:
    """``count`` clients sending a wrong password for "slow" (from as many addresses,
    ``proxied``, else all from 127.0.0.1)."""
    clients = [raw(broker, 5) for _ in range(count)]
    for number, client in enumerate(clients):
        if proxied:
            client.send(v2(f"203.0.113.{number + 1}"))
        client.send_connect(f"guess-{number}", username="slow", password=b"guess")
    return clients


def drained(broker: Any) -> None:
    """Wait until no login is being checked or waiting for its turn."""
    authenticator, attacher = broker.broker.attacher.authenticator, broker.broker.attacher
    wait_until(lambda: authenticator.pending == 0 and attacher.attaching == 0, what="drained")


def test_a_full_check_queue_answers_busy_and_checks_of_clients_gone_are_dropped(
    make_broker: Any, tmp_path: Path, raw: RawFactory
) -> None:
    broker = make_broker(
        password_file=password_file(tmp_path, ALICE, SLOW), auth_max_pending=6, proxy_protocol=True
    )
    authenticator = broker.broker.attacher.authenticator
    guesses = slow_logins(raw, broker, 6, proxied=True)
    wait_until(lambda: authenticator.pending == 6, what="6 checks pending")
    # The queue is full: a right password is answered at once (busy), not after the flood.
    assert raw_login(raw, broker, 5, "alice", b"wonderland", "198.51.100.9") == 0x89
    assert raw_login(raw, broker, 4, "alice", b"wonderland", "198.51.100.9") == 3
    for guess in guesses:
        guess.drop()
    drained(broker)
    # Only the checks already running when their clients left were computed.
    assert authenticator.checks <= HASH_WORKERS
    assert raw_login(raw, broker, 5, "alice", b"wonderland", "198.51.100.9") == 0
    assert authenticator.checks <= HASH_WORKERS + 1


def test_logins_of_one_address_take_turns_and_those_that_leave_are_not_checked(
    make_broker: Any, tmp_path: Path, raw: RawFactory
) -> None:
    broker = make_broker(password_file=password_file(tmp_path, ALICE, SLOW))
    authenticator, attacher = broker.broker.attacher.authenticator, broker.broker.attacher
    guesses = slow_logins(raw, broker, 6, proxied=False)
    wait_until(lambda: attacher.attaching == 6, what="6 logins attaching")
    assert authenticator.pending <= TURNS_PER_ADDRESS  # the others wait for their turn
    for guess in guesses:
        guess.drop()
    drained(broker)
    assert authenticator.checks <= TURNS_PER_ADDRESS


def test_stopping_does_not_wait_for_the_checks_queued(
    make_broker: Any, tmp_path: Path, raw: RawFactory
) -> None:
    broker = make_broker(password_file=password_file(tmp_path, ALICE, SLOW), proxy_protocol=True)
    authenticator = broker.broker.attacher.authenticator
    slow_logins(raw, broker, 8, proxied=True)
    wait_until(lambda: authenticator.pending == 8, what="8 checks pending")
    broker.stop()
    assert broker.broker.attacher.attaching == 0
    assert authenticator.checks <= HASH_WORKERS  # the 6 queued behind them never ran


@LEVELS
def test_a_login_not_decided_within_the_connect_timeout_gets_server_unavailable(
    make_broker: Any, tmp_path: Path, raw: RawFactory, clock: ManualClock, level: int
) -> None:
    broker = make_broker(clock=clock, password_file=password_file(tmp_path, SLOW))
    client = raw(broker, level)
    client.send_connect("late", username="slow", password=b"tortoise")
    authenticator = broker.broker.attacher.authenticator
    wait_until(lambda: authenticator.pending == 1, what="the check running")
    broker.advance(CONNECT_TIMEOUT)
    (connack,) = client.wait_closed()
    assert connack.name == "CONNACK" and connack.reason_code == {5: 0x88, 4: 3}[level]


def test_reload_takes_new_users_and_keeps_them_when_the_file_breaks(
    make_broker: Any, tmp_path: Path, raw: RawFactory
) -> None:
    path = password_file(tmp_path, ALICE)
    broker = make_broker(password_file=path)
    bob = make_entry("bob", "builder")
    write_text(path, with_entry(Path(path).read_text(), "bob", bob))
    assert raw_login(raw, broker, 5, "bob", b"builder") == 0x86  # not before the reload
    passwords = broker.broker.passwords
    assert passwords.reload()
    assert raw_login(raw, broker, 5, "bob", b"builder") == 0
    Path(path).write_text("alice:broken\n")
    assert not passwords.reload()
    assert raw_login(raw, broker, 5, "bob", b"builder") == 0
    assert raw_login(raw, broker, 5, "alice", b"wonderland") == 0


def test_missing_or_broken_password_file_stops_start_up(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match=f"cannot read password file {missing}"):
        Broker(Settings(password_file=missing))
    broken = tmp_path / "broken"
    broken.write_text(ALICE.line() + "\nbob:x:y\n")
    with pytest.raises(ConfigError, match=f"password file {broken} line 2"):
        Broker(Settings(password_file=str(broken)))
    serve = subprocess.run(
        [sys.executable, "-m", "roost", "serve", "--port", "0", "--password-file", str(broken)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert serve.returncode == 1
    assert f"cannot start: password file {broken} line 2" in serve.stderr


@pytest.mark.parametrize("how", ["toml", "flag"])
def test_roost_serve_allow_anonymous_from_toml_or_flag(
    tmp_path: Path, raw: RawFactory, how: str
) -> None:
    path = password_file(tmp_path, ALICE)
    if how == "toml":
        config = tmp_path / "roost.toml"
        config.write_text(f'password_file = "{path}"\nallow_anonymous = true\n')
        extra = ["--config", str(config)]
    else:
        extra = ["--password-file", path, "--allow-anonymous"]
    process = BrokerProcess(tmp_path / "data", *extra).start()
    try:
        assert raw_login(raw, process, 4, None, None) == 0
        assert raw_login(raw, process, 4, "alice", b"nope") == 4
    finally:
        assert process.terminate() == 0


def test_sighup_reloads_the_password_file_of_a_running_node(
    tmp_path: Path, raw: RawFactory
) -> None:
    path = password_file(tmp_path, ALICE)
    process = BrokerProcess(tmp_path / "data", "--password-file", path).start()
    try:
        staying = raw(process, 5)
        connack = staying.connect("staying", username="alice", password=b"wonderland")
        assert connack is not None and connack.reason_code == 0
        write_text(path, with_entry(Path(path).read_text(), "bob", make_entry("bob", "builder")))
        assert raw_login(raw, process, 5, "bob", b"builder") == 0x86  # not before SIGHUP
        process.reload("reloaded: 2 users")
        assert raw_login(raw, process, 5, "bob", b"builder") == 0
        Path(path).write_text("alice:broken\n")  # a broken file keeps the users in force
        process.reload("line 1")  # the broken line is logged
        assert raw_login(raw, process, 4, "bob", b"builder") == 0
        staying.ping()  # the connection from before is still served
    finally:
        assert process.terminate() == 0
