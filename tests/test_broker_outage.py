"""A broker killed and restarted under load, then stopped cleanly and restarted, in one run.

A private broker server (Redis with append-only persistence fsynced on every write, so it keeps
what it acknowledged; or a RabbitMQ node of its own), the real ``dramatiq`` command (2 processes x
4 threads, fork) under ``opentelemetry-instrument`` with the ``dramatiq_prometheus`` endpoint and an
OTLP receiver, and a sender (this process, instrumented, spans in memory) at a steady rate. Mid-run
the broker is SIGKILLed and started again a few seconds later; later it is stopped with SIGTERM and
started again. The figures asserted here are those of docs/reliability-outages.md; the test
prints them (``pytest -s``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families

from opentelemetry_instrumentation_dramatiq_cfg.queue_state import reader_for_broker
from opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry import DEFAULT_INTERVAL, redis_key

from .conftest import unique
from .otlp_receiver import Receiver
from .prometheus_server import free_port
from .test_monitoring_page import URL
from .test_prometheus_processes import BIN, ROOT, command_env, running, scraped_sum

#: Messages per second the sender sends.
RATE = 20
#: Seconds the broker stays down in each outage: longer than redis-py's default retries of a
#: command on a refused connection (redis-py 8: 10 retries, jittered backoff from 10 ms capped at
#: 1 s, about 5 s at most), so some sends fail on Redis too.
DOWN = 8.0
#: Seconds of load before the first outage, between the two and after the second.
STEADY = 5.0
#: The queue gauges are read at most once a second (queue_metrics_interval) and exported every
#: second: from this long after the broker went away, no scrape may carry them.
GAUGES_SILENT_AFTER = 3.0
#: Stated bound: the health view answers ``healthy`` within this many seconds of the broker's return.
HEALTHY_WITHIN = 15.0
#: Stated bound: lines per second per worker process in its log during an outage (Dramatiq's own
#: connection errors included); none of them from this package.
LOG_LINES_PER_SECOND = 10.0
OUR_LOGGER = "opentelemetry_instrumentation_dramatiq_cfg"
LOG_LINE = re.compile(
    r"^\[(?P<at>[\d-]+ [\d:,]+)\] \[PID (?P<pid>\d+)\] \[[^]]*\] \[(?P<logger>[^]]*)\] \[(?P<level>\w+)\]"
)


@dataclass
class Sent:
    seq: int
    at: float
    message_id: str
    took: float
    error: BaseException | None = None


@dataclass
class Scrape:
    at: float
    ok: bool
    queue_series: bool = False


@dataclass
class Outage:
    how: str
    down_at: float
    up_at: float = 0.0
    health_down: Any = None
    page_down: str = ""
    healthy_after: float = 0.0
    workers_back_after: float = 0.0
    page_up: str = ""


@dataclass
class Background:
    """The sender and the scraper, threads of this process, until ``stop``."""

    actor: Any
    metrics_url: str
    namespace: str
    sent: list[Sent] = field(default_factory=list)
    scrapes: list[Scrape] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._send), threading.Thread(target=self._scrape)]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def _send(self) -> None:
        seq, next_at = 0, time.monotonic()
        while not self.stopping.is_set():
            seq += 1
            message = self.actor.message(seq)
            started = time.time()
            try:
                self.actor.broker.enqueue(message)
                self.sent.append(Sent(seq, started, message.message_id, time.time() - started))
            except Exception as exc:  # the sender's view of a failed send
                self.sent.append(Sent(seq, started, message.message_id, time.time() - started, exc))
            next_at += 1 / RATE
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def _scrape(self) -> None:
        while not self.stopping.wait(0.5):
            at = time.time()
            try:
                with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=5) as response:
                    body = response.read().decode()
            except Exception:
                self.scrapes.append(Scrape(at, ok=False))
                continue
            series = any(
                sample.labels.get("queue_name") == self.namespace
                for family in text_string_to_metric_families(body)
                if family.name == "dramatiq_queue_depth"
                for sample in family.samples
            )
            self.scrapes.append(Scrape(at, ok=True, queue_series=series))


def wait_until(predicate: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.1)
    return value


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def sender_broker(kind: str, port: int, namespace: str) -> dramatiq.Broker:
    if kind == "redis":
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(host="127.0.0.1", port=port, namespace=namespace)
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    return RabbitmqBroker(host="127.0.0.1", port=port, confirm_delivery=True)


def workers_attached(kind: str, broker: dramatiq.Broker, port: int, namespace: str, since: float) -> bool:
    """Both worker processes are back: registry beats written after ``since`` (Redis), or two
    consumers on the queue (RabbitMQ, which has no registry)."""
    if kind == "redis":
        try:
            records = redis.Redis(port=port).hgetall(redis_key(namespace))
        except redis.RedisError:
            return False
        return sum(json.loads(raw)["last_seen"] > since for raw in records.values()) == 2
    try:
        (queue,) = reader_for_broker(broker, timeout=1.0).read([namespace]).queues
    except Exception:
        return False
    return queue.consumers == 2


def first_beats_after(port: int, namespace: str, since: float) -> float:
    """Seconds from ``since`` to the later of the two workers' first registry beat after it."""
    first: dict[bytes, float] = {}
    client = redis.Redis(port=port)

    def both() -> bool:
        for worker_id, raw in client.hgetall(redis_key(namespace)).items():
            last_seen = json.loads(raw)["last_seen"]
            if last_seen > since:
                first.setdefault(worker_id, last_seen)
        return len(first) == 2

    wait_until(both, what="registry beats after the restart")
    return max(first.values()) - since


def log_lines(path: Path) -> list[tuple[float, int, str, str]]:
    """(time, pid, logger, level) of each line of the command's log; a line without the Dramatiq
    prefix (a traceback) belongs to the record above it."""
    lines, last = [], None
    for text in path.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(text)
        if match:
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            last = (at, int(match["pid"]), match["logger"], match["level"])
        if last is not None:
            lines.append(last)
    return lines


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_a_broker_killed_then_stopped_under_load_loses_nothing_and_recovers(
    kind, private_server_factory, tmp_path, instrument, span_exporter, client, django_user_model, health
):
    server = (
        private_server_factory("redis", appendonly=True) if kind == "redis" else private_server_factory(kind)
    )
    namespace = unique("otel-outage")
    instrument()
    broker = sender_broker(kind, server.port, namespace)

    def work(seq: int) -> None:  # run by the workers (tests/outage_app.py), never here
        raise AssertionError("the sender does not process")

    actor = dramatiq.actor(work, actor_name="work", queue_name=namespace, broker=broker)
    health(DETAILS="public", BROKER=broker, TIMEOUT=1.0)
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True, is_superuser=True))

    out = tmp_path / "processed"
    out.mkdir()
    receiver = Receiver("grpc")
    port = free_port()
    env = command_env(
        namespace,
        "dramatiq_prometheus",
        port,
        OUTAGE_BROKER=kind,
        OUTAGE_PORT=str(server.port),
        OUTAGE_DIR=str(out),
        OTEL_SERVICE_NAME="worker",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="500",
        OTEL_PYTHON_DRAMATIQ_QUEUE_METRICS_INTERVAL="1",
    )
    command = [str(BIN / "opentelemetry-instrument"), str(BIN / "dramatiq"), "tests.outage_app"]
    command += ["--processes", "2", "--threads", "4"]
    log_path = tmp_path / "workers.log"
    metrics_url = f"http://127.0.0.1:{port}"
    load = Background(actor, metrics_url, namespace)
    outages: list[Outage] = []
    try:
        with running(command, env, log_path, namespace) as workers:
            wait_until(lambda: workers_attached(kind, broker, server.port, namespace, 0), what="worker boot")
            wait_until(lambda: answers(metrics_url), what="the metrics endpoint")
            load.start()
            for how in ("kill", "stop"):
                time.sleep(STEADY)
                outages.append(outage(how, server, kind, broker, namespace, client))
                assert workers.poll() is None, "the workers exited during the outage"
            time.sleep(STEADY)
            load.stop()
            planted = plant_stranded(broker, actor, namespace) if kind == "redis" else None
            figures = settle(load, out, metrics_url, kind, broker, namespace)
            workers.send_signal(signal.SIGTERM)  # a clean stop flushes the last spans
            workers.wait(60)
            assert workers.returncode == 0, log_path.read_text()[-3000:]
        if figures["stranded"] or planted:
            rescue(
                command,
                env,
                tmp_path,
                namespace,
                out,
                [*figures["stranded"], *([PLANTED] if planted else [])],
            )
        runs = processed(out)
        receiver.wait_for(lambda r: len(r.named(f"process {namespace}")) >= sum(runs.values()), timeout=30)
        if planted:  # it ran once, in the second run; sent by no one, it has no send span
            assert runs.pop(PLANTED) == 1
        figures["lost"] = len({sent.seq for sent in load.sent if sent.error is None} - set(runs))
        figures["executions"] = sum(runs.values())
        process_spans = [
            span
            for span in receiver.named(f"process {namespace}")
            if span.attributes["messaging.message.id"] != planted
        ]
    finally:
        load.stop()
        receiver.stop()
    if figures["lost"]:
        for record in outages:
            figures[f"{record.how}_window"] = (record.down_at, record.up_at)
        ids = {detail["message_id"] for detail in figures["lost_detail"]["messages"].values()}
        figures["lost_spans"] = [
            (span.name, span.attributes, span.status_code)
            for span in process_spans
            if span.attributes.get("messaging.message.id") in ids
        ]
        figures["lost_send_spans"] = [
            (span.name, dict(span.attributes), span.status.status_code.name, span.start_time)
            for span in span_exporter.get_finished_spans()
            if span.attributes.get("messaging.message.id") in ids
        ]
        raise AssertionError(f"acknowledged and never run: {figures}")
    figures.update(check_spans(load, span_exporter, process_spans, namespace, runs))
    figures.update(check_outages(outages, load, kind))
    figures.update(check_logs(log_path, outages))
    print(f"\nOUTAGE FIGURES {kind}: {json.dumps(figures, sort_keys=True)}")


def outage(how: str, server: Any, kind: str, broker: Any, namespace: str, client: Any) -> Outage:
    """Take the broker away (SIGKILL or SIGTERM), look at the health view and the page while it is
    down, start it again and time the recovery."""
    record = Outage(how, down_at=time.time())
    server.kill() if how == "kill" else server.stop()
    time.sleep(GAUGES_SILENT_AFTER)
    record.health_down = client.get("/health/")
    record.page_down = client.get(URL).content.decode()
    time.sleep(max(0.0, DOWN - (time.time() - record.down_at)))
    server.start()
    record.up_at = time.time()

    def healthy() -> bool:
        response = client.get("/health/")
        return response.status_code == 200 and response.json()["status"] == "healthy"

    wait_until(healthy, timeout=HEALTHY_WITHIN, what="healthy after the restart")
    record.healthy_after = time.time() - record.up_at
    record.page_up = client.get(URL).content.decode()
    if kind == "redis":
        record.workers_back_after = first_beats_after(server.port, namespace, record.up_at)
    else:
        wait_until(lambda: workers_attached(kind, broker, server.port, namespace, record.up_at))
        record.workers_back_after = time.time() - record.up_at
    return record


def processed(out: Path) -> collections.Counter[int]:
    runs: collections.Counter[int] = collections.Counter()
    for path in out.glob("processed-*.txt"):
        runs.update(int(line) for line in path.read_text().split())
    return runs


def where(kind: str, broker: Any, namespace: str, ids: dict[str, int]) -> dict[str, Any]:
    """Where the broker holds these messages (Redis, by message id): its queue, or which worker's
    ack set (Dramatiq keys them by the ``redis_message_id`` of their payload)."""
    if kind != "redis":
        return {}
    client = broker.client
    by_redis_id: dict[str, int] = {}
    for redis_id, raw in client.hgetall(f"{namespace}:{namespace}.msgs").items():
        with contextlib.suppress(ValueError):
            message_id = json.loads(raw).get("message_id")
            if message_id in ids:
                by_redis_id[redis_id.decode()] = ids[message_id]
    queued = {raw.decode() for raw in client.lrange(f"{namespace}:{namespace}", 0, -1)}
    found: dict[str, Any] = {
        "payload_kept": sorted(by_redis_id.values()),
        "queued": sorted(seq for redis_id, seq in by_redis_id.items() if redis_id in queued),
        "acks": {},
        "dead_lettered": client.zcard(f"{namespace}:{namespace}.XQ"),
    }
    for key in client.scan_iter(match=f"{namespace}:__acks__.*"):
        held = {raw.decode() for raw in client.smembers(key)} & set(by_redis_id)
        if held:
            found["acks"][key.decode()] = sorted(by_redis_id[redis_id] for redis_id in held)
    found["heartbeats"] = dict(client.zrange(f"{namespace}:__heartbeats__", 0, -1, withscores=True))
    return found


#: Sequence number of the message planted in a worker's ack set (Redis), the state a fetch whose
#: reply was lost leaves (tests/upstream_redis_fetch_retry.py): the second run must run it.
PLANTED = 10**6


def plant_stranded(broker: Any, actor: Any, namespace: str) -> str:
    """Store a message and put its id in the ack set of a worker that beats and will never ask for
    it, atomically (no worker can fetch it in between); return its message id."""
    message = actor.message(PLANTED).copy(options={"redis_message_id": str(uuid.uuid4())})
    redis_id, holder = message.options["redis_message_id"], f"planted-{uuid.uuid4()}"
    pipe = broker.client.pipeline(transaction=True)
    pipe.hset(f"{namespace}:{namespace}.msgs", redis_id, message.encode())
    pipe.sadd(f"{namespace}:__acks__.{holder}.{namespace}", redis_id)
    pipe.zadd(f"{namespace}:__heartbeats__", {holder: int(time.time() * 1000)})
    pipe.execute()
    return str(message.message_id)


def rescue(
    command: list[str], env: dict[str, str], tmp_path: Path, namespace: str, out: Path, seqs: list[int]
) -> None:
    """Run the workers again (Redis): the messages a stopped worker still held in its ack set are
    requeued by Dramatiq's maintenance once that worker's heartbeat is older than the heartbeat
    timeout (2 s here, 60 s by default), and run."""
    env = {
        **env,
        "OUTAGE_HEARTBEAT_TIMEOUT_MS": "2000",
        "OUTAGE_MAINTENANCE_CHANCE": "1000000",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port()),
    }
    started = time.time()
    with (tmp_path / "rescue.log").open("w") as log:  # a session of its own: nothing outlives the test
        workers = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(
            lambda: set(seqs) <= set(processed(out)), timeout=60, what="held messages run by a new worker"
        )
        # Both worker processes booted: the main process installs its SIGTERM handler only once every
        # worker is ready, and a SIGTERM before that kills it (the worker's spans are then lost).
        port = int(env["OUTAGE_PORT"])
        wait_until(lambda: workers_attached("redis", None, port, namespace, started), what="rescue boot")
        workers.send_signal(signal.SIGTERM)  # to the main process only: it stops its workers cleanly
        workers.wait(60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(workers.pid, signal.SIGKILL)  # a worker process the main one left behind
        workers.wait()


def settle(
    load: Background, out: Path, metrics_url: str, kind: str, broker: Any, namespace: str
) -> dict[str, Any]:
    """Wait until every acknowledged message ran and the endpoint counted every run; nothing lost."""
    acknowledged = {sent.seq for sent in load.sent if sent.error is None}
    failed = {sent.seq for sent in load.sent if sent.error is not None}
    with contextlib.suppress(AssertionError):  # asserted at the end, with what the spans say
        wait_until(
            lambda: acknowledged <= set(processed(out)), timeout=45, what="every acknowledged message run"
        )
    missing = sorted(acknowledged - set(processed(out)))
    lost_at = {
        sent.seq: {"sent_at": sent.at, "message_id": sent.message_id, "took": sent.took}
        for sent in load.sent
        if sent.seq in missing
    }
    held = where(kind, broker, namespace, {sent["message_id"]: seq for seq, sent in lost_at.items()})
    stranded = sorted(seq for seqs in held.get("acks", {}).values() for seq in seqs)
    runs = processed(out)
    executions = sum(runs.values())
    wait_until(
        lambda: (
            scraped_sum(metrics_url, "dramatiq_tasks_total", task_name="work", status="success") == executions
        ),
        timeout=30,
        what="dramatiq_tasks_total equal to the runs",
    )
    assert scraped_sum(metrics_url, "dramatiq_tasks_total", task_name="work") == executions  # no other status
    ran_though_failed = set(runs) & failed
    assert set(runs) <= acknowledged | failed  # nothing that was never sent
    assert failed, "no send failed: the outages were not felt"
    left = None
    if kind == "redis":  # delivered, ran, and still unacknowledged (an ack that failed)
        (queue,) = reader_for_broker(broker).read([namespace]).queues
        left = queue.in_flight
    errors = collections.Counter(
        f"{type(sent.error).__module__}.{type(sent.error).__qualname__}" for sent in load.sent if sent.error
    )
    return {
        "lost_detail": {"messages": lost_at, "broker": held} if missing else None,
        "stranded": stranded,
        "left_in_flight": left,
        "send_errors": dict(errors),
        "send_took_max_s": round(max(sent.took for sent in load.sent), 1),
        "sent": len(load.sent),
        "acknowledged": len(acknowledged),
        "failed_sends": len(failed),
        "lost": len(missing),
        "executions": executions,
        "duplicate_runs": executions - len(runs),
        "ran_though_send_failed": len(ran_though_failed),
    }


def check_spans(
    load: Background,
    span_exporter: Any,
    process_spans: list[Any],
    namespace: str,
    runs: collections.Counter[int],
) -> dict[str, Any]:
    sends = {
        span.attributes["messaging.message.id"]: span
        for span in span_exporter.get_finished_spans()
        if span.name == f"send {namespace}"
    }
    assert len(sends) == len(load.sent)  # one send span per send, failed ones included
    for sent in load.sent:
        span = sends[sent.message_id]
        if sent.error is None:
            assert span.status.status_code == StatusCode.UNSET
            continue
        # the sender sees the broker's exception (its client's or Dramatiq's), never one of ours
        assert type(sent.error).__module__.split(".")[0] in ("redis", "dramatiq", "pika"), repr(sent.error)
        assert span.status.status_code == StatusCode.ERROR
        assert span.status.description == str(sent.error)
        assert (
            span.attributes["error.type"] == f"{type(sent.error).__module__}.{type(sent.error).__qualname__}"
        )
        (event,) = [event for event in span.events if event.name == "exception"]
        assert event.attributes["exception.message"] == str(sent.error)
    seq_of = {sent.message_id: sent.seq for sent in load.sent}
    for span in process_spans:
        send = sends[span.attributes["messaging.message.id"]]
        assert span.trace_id == f"{send.context.trace_id:032x}"
        assert span.parent_span_id == f"{send.context.span_id:016x}"
    # one process span per run of each message, duplicates included: our code dropped none
    spans_per_seq = collections.Counter(
        seq_of[span.attributes["messaging.message.id"]] for span in process_spans
    )
    assert spans_per_seq == runs, (spans_per_seq - runs, runs - spans_per_seq)
    return {"process_spans": len(process_spans), "send_spans_error": sum(1 for s in load.sent if s.error)}


def check_outages(outages: list[Outage], load: Background, kind: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    assert load.scrapes and all(scrape.ok for scrape in load.scrapes)  # the endpoint answered every scrape
    for record in outages:
        silent = [s for s in load.scrapes if record.down_at + GAUGES_SILENT_AFTER <= s.at <= record.up_at]
        stale = [round(s.at - record.down_at, 1) for s in silent if s.queue_series]
        assert silent and not stale, (record.how, stale)  # no series: not zero, not the last value
        assert any(s.queue_series for s in load.scrapes if s.at > record.up_at + GAUGES_SILENT_AFTER)
        assert record.health_down.status_code == 500
        body = record.health_down.json()
        assert body["status"] == "unhealthy" and body["broker_connection"] is False
        assert "could not be" in body["error"] and "127.0.0.1" in body["error"]
        assert (
            'class="dramatiq-status unhealthy"' in record.page_down
            and 'id="broker-error"' in record.page_down
        )
        assert 'class="dramatiq-status healthy"' in record.page_up
        assert record.healthy_after <= HEALTHY_WITHIN
        if kind == "redis":  # the registry is back within two beats of the broker's return
            assert record.workers_back_after <= 2 * DEFAULT_INTERVAL
        figures[f"{record.how}_healthy_after_s"] = round(record.healthy_after, 1)
        figures[f"{record.how}_workers_back_after_s"] = round(record.workers_back_after, 1)
        figures[f"{record.how}_silent_scrapes"] = len(silent)
    figures["scrapes"] = len(load.scrapes)
    return figures


def check_logs(log_path: Path, outages: list[Outage]) -> dict[str, Any]:
    lines = log_lines(log_path)
    ours = [line for line in lines if line[2].startswith(OUR_LOGGER) and line[3] != "DEBUG"]
    assert ours == [], ours[:5]
    worst = 0.0
    for record in outages:
        window = [line for line in lines if record.down_at <= line[0] <= record.up_at]
        per_pid = collections.Counter(line[1] for line in window)
        rate = max(per_pid.values(), default=0) / (record.up_at - record.down_at)
        worst = max(worst, rate)
    assert worst <= LOG_LINES_PER_SECOND
    during = collections.Counter(
        f"{re.sub(r'[(].*', '', line[2])} {line[3]}"
        for line in lines
        if any(record.down_at <= line[0] <= record.up_at for record in outages)
    )
    return {
        "log_lines_per_s_per_process_max": round(worst, 1),
        "log_lines_from_this_package": len(ours),
        "log_records_during_outages": dict(during),
    }
