"""Broker servers of a test's own (never the shared ones): a redis-server or a RabbitMQ node on free
ports, which the test may pause, stop, kill and start again on the same data.

Fixtures: ``private_redis`` and ``private_rabbitmq`` (started, stopped after the test), and the
factories ``private_redis_factory(appendonly=...)`` and ``private_rabbitmq_factory(management=...)``
for tests that need a setting of their own.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def closed_port() -> int:
    """A port nothing listens on now, below the kernel's ephemeral range.

    Not the OS's choice of a free port: that comes from the ephemeral range, from which clients also
    take their local ports. While a server is down, a client reconnecting to it many times a second
    can be given the server's port as its own local port and connect to itself (a TCP
    self-connect), which keeps the server from listening there again (RabbitMQ then exits with
    ``could_not_start_listener``).
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(10_000, max(10_001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # nothing free down there: the OS's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """A broker server of the test's own, on free ports, that the test may pause, stop and restart.

    The shared services the other tests use are never touched. The server runs in a session of its
    own, so ``pause()`` (SIGSTOP: it accepts connections and never answers), ``stop()`` and ``kill()``
    reach all of its processes. ``start()`` after either starts it again on the same data directory.
    """

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        env: dict[str, str] | None = None,
        extra_ports: dict[str, int] | None = None,
    ) -> None:
        self.name, self.command, self.port, self.env = name, command, port, env
        self.extra_ports = extra_ports or {}  # e.g. {"management": 15673}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        for port in (self.port, *self.extra_ports.values()):
            while True:  # both servers listen only once they are ready
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert self.process.poll() is None, f"{self.name} exited with {self.process.returncode}"
                    assert time.monotonic() < deadline, f"{self.name} did not start"
                    time.sleep(0.1)

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, no shutdown: what it had not made durable is gone."""
        if self.process is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        self.process.wait()
        self._wait_closed()
        self._wait_group_gone()
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.resume()
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait()
        self._wait_closed()
        self._wait_group_gone()
        self.process = None

    def _wait_group_gone(self) -> None:
        """Every process of its group has exited: RabbitMQ's script can exit and its listener close
        while the Erlang VM still writes its stores, and a node started then finds its name taken."""
        assert self.process is not None
        deadline, killed = time.monotonic() + 30, False
        while True:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            if time.monotonic() > deadline:
                assert not killed, f"{self.name}: processes of its group outlived SIGKILL"
                self._signal(signal.SIGKILL)
                deadline, killed = time.monotonic() + 10, True
            time.sleep(0.05)

    def _wait_closed(self) -> None:
        deadline = time.monotonic() + 30
        while True:  # the process group's last members may outlive the leader briefly
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                break
            assert time.monotonic() < deadline, f"{self.name} still listening after stop"
            time.sleep(0.1)


def server_binary(*candidates: str) -> str:
    for candidate in candidates:
        found = shutil.which(candidate)  # a path is checked as it is, a name is looked up on PATH
        if found:
            return found
    message = f"{candidates[-1]} is not installed"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def redis_server(directory: Path, *, appendonly: bool = False) -> PrivateServer:
    """A redis-server (not started) on a free port, its data in ``directory``.

    ``appendonly=True``: every write is fsynced before the reply, so what it acknowledged survives
    a SIGKILL.
    """
    binary = server_binary("redis-server")
    port = closed_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(directory)]
    command += ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else ["--appendonly", "no"]
    return PrivateServer("redis-server", command, port)


def rabbitmq_server(directory: Path, *, management: bool = False) -> PrivateServer:
    """A RabbitMQ node (not started): its own node name, ports, data, cookie; no plugins, or only
    ``rabbitmq_management`` (its HTTP API on ``extra_ports["management"]``, guest/guest).

    Started with the node script itself rather than Debian's ``/usr/sbin`` wrapper, which switches to
    the ``rabbitmq`` user when run as root (and could not write this test's directory).
    """
    binary = server_binary("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server")
    port, dist_port = closed_port(), closed_port()
    config = f"listeners.tcp.local = 127.0.0.1:{port}\n"
    extra_ports: dict[str, int] = {}
    if management:
        extra_ports["management"] = closed_port()
        config += f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {extra_ports['management']}\n"
        config += "loopback_users = none\n"
        config += "collect_statistics_interval = 500\n"  # the API's figures refresh every 0.5 s, not 5 s
    (directory / "rabbitmq.conf").write_text(config)
    (directory / "enabled_plugins").write_text("[rabbitmq_management].\n" if management else "[].\n")
    (directory / "rabbitmq-env.conf").write_text("")
    env = {
        **os.environ,
        "HOME": str(directory),  # a cookie of its own
        "RABBITMQ_NODENAME": f"otel-test-{port}@localhost",
        "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_CRASH_DUMP": str(directory / "erl_crash.dump"),  # never in the working directory
    }
    return PrivateServer("rabbitmq-server", [binary], port, env, extra_ports)


def _started(make: Callable[[], PrivateServer]) -> Iterator[PrivateServer]:
    server = make()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateServer]:
    """A redis-server of this test's own on a free port (nothing persisted)."""
    yield from _started(lambda: redis_server(tmp_path))


@pytest.fixture
def private_rabbitmq(tmp_path: Path) -> Iterator[PrivateServer]:
    """A RabbitMQ node of this test's own, no plugins."""
    yield from _started(lambda: rabbitmq_server(tmp_path))


@pytest.fixture
def private_server_factory(tmp_path: Path) -> Iterator[Callable[..., PrivateServer]]:
    """``private_server_factory("redis", appendonly=True)`` / ``("rabbitmq", management=True)``:
    started servers of this test's own, each in its own directory, all stopped after the test."""
    servers: list[PrivateServer] = []

    def make(kind: str, **options: bool) -> PrivateServer:
        directory = tmp_path / f"{kind}-{len(servers)}"
        directory.mkdir()
        server = (redis_server if kind == "redis" else rabbitmq_server)(directory, **options)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
