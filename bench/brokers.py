"""Broker subprocesses for the benchmark: Roost, Mosquitto and a trivial null broker.

Every broker runs as a child process on a free ephemeral port of 127.0.0.1, pinned to one
core (``os.sched_setaffinity`` in the child before ``exec``) with a raised open-file limit.
Brokers are always stopped: by the caller's ``try``/``finally`` and, as a last resort, by an
``atexit`` hook that kills whatever is still registered.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"
NOFILE_TARGET = 65536
NOFILE_SPARE = 4096  # open files a broker needs beyond one per client
REPO = Path(__file__).resolve().parent.parent

# Limits given to both brokers so that neither drops or throttles in the throughput tests.
MAX_QUEUED_MESSAGES = 100_000
MAX_INFLIGHT = 1024
MAX_CONNECTIONS = 20_000
SPARE_CONNECTIONS = 1000  # over the clients of a run, when they are more than MAX_CONNECTIONS
MAX_KEEPALIVE = 65535

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_live: set[BrokerProcess] = set()


def raise_nofile(target: int = NOFILE_TARGET) -> int:
    """Raise RLIMIT_NOFILE towards ``target`` (the hard limit too when allowed: it takes
    CAP_SYS_RESOURCE); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if hard != unlimited and hard < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return target
    want = target if hard == unlimited else min(target, hard)
    if soft != unlimited and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_plan() -> tuple[set[int], set[int]]:
    """(broker cores, generator cores): the first allowed core for the broker, the rest
    for the load generator. With a single core both share it."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) == 1:
        return {cpus[0]}, {cpus[0]}
    return {cpus[0]}, set(cpus[1:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def mosquitto_version(path: str) -> str:
    try:
        proc = subprocess.run([path, "-h"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(r"version\s+(\S+)", proc.stdout + proc.stderr)
    return match.group(1) if match else "unknown"


def roost_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def src_env() -> dict[str, str]:
    """The environment with this checkout's ``src`` first on PYTHONPATH, absolute (brokers
    run in their own temporary directory), so that ``roost serve`` runs the code of this
    tree even when the shared .venv has an editable install of another checkout."""
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO / "src") + (os.pathsep + old if old else "")
    return env


def hard_nofile() -> int:
    """The hard open-file limit: what no process started from here can exceed without
    CAP_SYS_RESOURCE."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return sys.maxsize if hard == resource.RLIM_INFINITY else int(hard)


def proc_nofile(pid: int) -> int:
    """The soft open-file limit of a running process (0 when it has gone)."""
    try:
        with open(f"/proc/{pid}/limits") as fh:
            for line in fh:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    return sys.maxsize if soft == "unlimited" else int(soft)
    except OSError:
        pass
    return 0


def _child_setup(cpus: set[int], nofile: int) -> Callable[[], None]:
    def setup() -> None:
        os.sched_setaffinity(0, cpus)
        raise_nofile(nofile)

    return setup


def proc_rss_kb(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process in seconds, from /proc/PID/stat (0.0 when it has gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cores_busy_seconds(cpus: set[int]) -> float:
    """Busy time (everything but idle and iowait) of ``cpus`` since boot, from /proc/stat."""
    total = 0
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *values = line.split()
                if int(name[3:]) in cpus:
                    ticks = [int(v) for v in values[:8]]
                    total += sum(ticks) - ticks[3] - ticks[4]
    except (OSError, ValueError):
        return 0.0
    return total / _CLK_TCK


def mqtt_probe(port: int, timeout: float = 1.0) -> bool:
    """True when something on ``port`` answers an MQTT 3.1.1 CONNECT with CONNACK rc 0."""
    cid = b"bench-probe"
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(bytes([0x10, len(body)]) + body)
            data = b""
            deadline = time.monotonic() + timeout
            while len(data) < 4 and time.monotonic() < deadline:
                chunk = sock.recv(4 - len(data))
                if not chunk:
                    break
                data += chunk
            ok = data[:2] == b"\x20\x02" and data[3:4] == b"\x00"
            if ok:
                sock.sendall(b"\xe0\x00")
            return ok
    except OSError:
        return False


class BrokerProcess:
    """A broker child process listening on ``port`` and pinned to ``cpus``."""

    name = "broker"
    processes = 1  # that hold client connections, each with its own open-file limit

    def __init__(self, cpus: set[int]) -> None:
        self.cpus = cpus
        self.port = free_port()
        self.load_port = self.port  # where the load generator connects
        self.cafile: str | None = None  # the CA it trusts when that is a TLS listener
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.log_path = self.tmpdir / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # The most clients a run opens (--connections may ask for more than the default
        # limits): sets the open-file limit it gets, and Roost's --max-connections.
        self.connections = MAX_CONNECTIONS

    def argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def nofile(self) -> int:
        return max(NOFILE_TARGET, self.connections + NOFILE_SPARE)

    def env(self) -> dict[str, str] | None:
        return None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 15.0) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=self.tmpdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                preexec_fn=_child_setup(self.cpus, self.nofile),
                start_new_session=True,
            )
        _live.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log()}")
            if mqtt_probe(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not accept MQTT on port {self.port}: {self.log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def log(self, limit: int = 2000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:].strip()

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)
        _live.discard(self)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> BrokerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Roost(BrokerProcess):
    name = "roost"

    def __init__(self, cpus: set[int], extra_args: list[str] | None = None) -> None:
        super().__init__(cpus)
        self.extra_args = extra_args or []

    def argv(self) -> list[str]:
        return [
            roost_python(),
            "-m",
            "roost",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--max-connections",
            str(max(MAX_CONNECTIONS, self.connections + SPARE_CONNECTIONS)),
            "--max-queued-messages",
            str(MAX_QUEUED_MESSAGES),
            "--max-inflight",
            str(MAX_INFLIGHT),
            "--max-keep-alive",
            str(MAX_KEEPALIVE),
            *self.extra_args,
        ]

    def env(self) -> dict[str, str] | None:
        return src_env()


class RoostTls(Roost):
    """Roost with a TLS listener (``--tls-port``), where the load goes; the readiness probe
    still uses the plain port. The certificate, for 127.0.0.1, comes from a throwaway
    trustme CA (ECDSA P-256 keys) written to the broker's temporary directory."""

    name = "roost-tls"

    def __init__(self, cpus: set[int], extra_args: list[str] | None = None) -> None:
        import trustme  # a dev dependency, like the rest of the bench's

        super().__init__(cpus, extra_args)
        ca = trustme.CA()
        server = ca.issue_cert(HOST)
        self.cafile = str(self.tmpdir / "ca.pem")
        certfile, keyfile = self.tmpdir / "server.pem", self.tmpdir / "server.key"
        ca.cert_pem.write_to_path(self.cafile)
        server.private_key_pem.write_to_path(str(keyfile))
        for blob in server.cert_chain_pems:
            blob.write_to_path(str(certfile), append=True)
        self.load_port = free_port()
        self.extra_args = [
            *self.extra_args,
            *("--tls-port", str(self.load_port), "--certfile", str(certfile)),
            *("--keyfile", str(keyfile)),
        ]


# Mosquitto 2.0.11 (the Debian package) loses track of queued QoS 1 messages once an online
# client's inflight quota fills: deliveries collapse and acknowledged messages are never sent
# (consistent with the inflight-quota fixes of 2.0.13, eclipse-mosquitto/mosquitto#2362).
# With 0 (no limit) it delivers everything, so that is the default; --mosquitto-inflight
# overrides it.
MOSQUITTO_INFLIGHT = 0

# set_tcp_nodelay defaults to false (Nagle on), Mosquitto's stock setting; see --mosquitto-nodelay.
MOSQUITTO_CONF = """\
# generated by bench/brokers.py
listener {port} {host}
allow_anonymous true
persistence false
max_queued_messages {max_queued}
max_queued_bytes 0
max_inflight_messages {max_inflight}
max_keepalive {max_keepalive}
set_tcp_nodelay {nodelay}
sys_interval 0
log_dest stderr
log_type error
log_type warning
"""


class Mosquitto(BrokerProcess):
    name = "mosquitto"

    def __init__(
        self,
        cpus: set[int],
        path: str,
        nodelay: bool = False,
        inflight: int = MOSQUITTO_INFLIGHT,
    ) -> None:
        super().__init__(cpus)
        self.path = path
        self.conf = self.tmpdir / "mosquitto.conf"
        self.conf.write_text(
            MOSQUITTO_CONF.format(
                port=self.port,
                host=HOST,
                max_queued=MAX_QUEUED_MESSAGES,
                max_inflight=inflight,
                max_keepalive=MAX_KEEPALIVE,
                nodelay="true" if nodelay else "false",
            )
        )
        # Mosquitto started as root drops to the "mosquitto" user: let it read its config.
        os.chmod(self.tmpdir, 0o755)
        os.chmod(self.conf, 0o644)

    def argv(self) -> list[str]:
        return [self.path, "-c", str(self.conf)]


class NullBroker(BrokerProcess):
    """``bench.nullbroker``: answers CONNECT/SUBSCRIBE and then either discards everything
    (``sink``) or blasts pre-encoded PUBLISH packets (``source``) at C speed. Used to
    measure the load generator's own ceiling."""

    name = "null"

    def __init__(self, cpus: set[int], mode: str, qos: int = 0) -> None:
        super().__init__(cpus)
        self.mode = mode
        self.qos = qos

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bench.nullbroker",
            self.mode,
            str(self.port),
            str(self.qos),
        ]

    def env(self) -> dict[str, str] | None:
        env = dict(os.environ)
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + old if old else "")
        return env


def stop_all() -> None:
    for broker in list(_live):
        with contextlib.suppress(Exception):
            broker.stop()


atexit.register(stop_all)
