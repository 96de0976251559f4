"""Faults: an OTLP endpoint that is down or hangs; a Redis or RabbitMQ that hangs, stops and comes back
under the health view (servers of the tests' own, never the shared ones)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from .conftest import process_all


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1/traces"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


@pytest.mark.parametrize("endpoint_state", ["down", "hanging"])
def test_an_unreachable_otlp_endpoint_never_reaches_the_tasks(
    instrument, queue_name, endpoint_state, request
):
    endpoint = (
        f"http://127.0.0.1:{closed_port()}/v1/traces"
        if endpoint_state == "down"
        else request.getfixturevalue("hanging_endpoint")
    )
    processor = BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint, timeout=1),
        max_queue_size=64,
        max_export_batch_size=32,
        schedule_delay_millis=50,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    instrument(tracer_provider=provider)
    broker = StubBroker()
    dramatiq.set_broker(broker)
    done = []

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def work(i):
        done.append(i)

    for i in range(300):
        work.send(i)
    process_all(broker, queue_name)

    assert sorted(done) == list(range(300))  # every task ran, none saw an exception
    # The SDK's queue (its attribute moved between releases) holds at most max_queue_size spans.
    queue = processor.queue if hasattr(processor, "queue") else processor._batch_processor._queue
    assert len(queue) <= 64
    provider.shutdown()


class PrivateServer:
    """A broker server of the test's own, on free ports, that the test may pause, stop and restart.

    The shared services the other tests use are never touched. The server runs in a session of its
    own, so ``pause()`` (SIGSTOP: it accepts connections and never answers) and ``stop()`` reach all
    of its processes.
    """

    def __init__(self, name: str, command: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.name, self.command, self.port, self.env = name, command, port, env
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
        while True:  # both servers listen only once they are ready
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
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
        deadline = time.monotonic() + 30
        while True:  # the process group's last members may outlive the leader briefly
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                break
            assert time.monotonic() < deadline, f"{self.name} still listening after stop"
            time.sleep(0.1)
        self.process = None


def _server_binary(*candidates: str) -> str:
    for candidate in candidates:
        found = shutil.which(candidate)  # a path is checked as it is, a name is looked up on PATH
        if found:
            return found
    message = f"{candidates[-1]} is not installed"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateServer]:
    """A redis-server of this test's own on a free port."""
    binary = _server_binary("redis-server")
    port = closed_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = PrivateServer("redis-server", [*command, "--dir", str(tmp_path)], port)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_rabbitmq(tmp_path) -> Iterator[PrivateServer]:
    """A RabbitMQ node of this test's own: its own node name, ports, data, cookie and no plugins.

    Started with the node script itself rather than Debian's ``/usr/sbin`` wrapper, which switches to
    the ``rabbitmq`` user when run as root (and could not write this test's directory).
    """
    binary = _server_binary("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server")
    port, dist_port = closed_port(), closed_port()
    (tmp_path / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{port}\n")
    (tmp_path / "enabled_plugins").write_text("[].\n")
    (tmp_path / "rabbitmq-env.conf").write_text("")
    env = {
        **os.environ,
        "HOME": str(tmp_path),  # a cookie of its own
        "RABBITMQ_NODENAME": f"otel-faults-{port}@localhost",
        "RABBITMQ_CONF_ENV_FILE": str(tmp_path / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(tmp_path / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(tmp_path / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(tmp_path / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(tmp_path / "mnesia"),
        "RABBITMQ_LOG_BASE": str(tmp_path / "log"),
        "RABBITMQ_PID_FILE": str(tmp_path / "rabbitmq.pid"),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }
    server = PrivateServer("rabbitmq-server", [binary], port, env)
    server.start()
    yield server
    server.stop()


def _redis_broker(port: int) -> dramatiq.Broker:
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(host="127.0.0.1", port=port, namespace="faults")


def _rabbitmq_broker(port: int) -> dramatiq.Broker:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    return RabbitmqBroker(host="127.0.0.1", port=port)


@pytest.mark.parametrize(
    ("server_fixture", "make_broker"),
    [("private_redis", _redis_broker), ("private_rabbitmq", _rabbitmq_broker)],
    ids=["redis", "rabbitmq"],
)
def test_the_health_view_follows_the_broker_hanging_going_away_and_coming_back(
    client, settings, request, server_fixture, make_broker
):
    server: PrivateServer = request.getfixturevalue(server_fixture)
    settings.DRAMATIQ_HEALTH = {"TIMEOUT": 0.5, "MIN_WORKERS": 0}
    broker = make_broker(server.port)
    broker.declare_queue("faults")
    dramatiq.set_broker(broker)

    def health() -> tuple[int, str, str]:
        """(HTTP status, health status, error) of one call of the view."""
        response = client.get("/health/")
        body = response.json()
        return response.status_code, body["status"], body.get("error", "")

    address = f"127.0.0.1:{server.port}"
    assert health() == (200, "healthy", "")

    server.pause()  # accepts connections and never answers: the read gives up after TIMEOUT
    try:
        code, status, error = health()
    finally:
        server.resume()
    assert (code, status) == (500, "unhealthy") and address in error
    assert health() == (200, "healthy", "")  # resumed: healthy again, nothing to reset

    server.stop()
    code, status, error = health()
    assert (code, status) == (500, "unhealthy") and address in error

    server.start()  # the same data directory: the same server coming back
    assert health() == (200, "healthy", "")
    broker.close()
