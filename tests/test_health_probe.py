"""``dramatiq-health``, run as a subprocess on real Redis and RabbitMQ: the Django view's JSON, the
``dramatiq_health`` exit codes, the thresholds as options and ``DRAMATIQ_HEALTH_*`` variables, a time
limit on every broker call, and one-line errors (docs/health-probe.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis

from opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry import redis_key

from .conftest import REDIS, require_service

SCRIPT = Path(sys.executable).with_name("dramatiq-health")
REDIS_URL = f"redis://{REDIS[0]}:{REDIS[1]}/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
SECRET = "hunter2-not-for-output"


def health(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, module: bool = False):
    """Run the command; (exit code, parsed JSON or None, stderr)."""
    command = (
        [sys.executable, "-m", "opentelemetry_instrumentation_dramatiq_cfg.health"]
        if module
        else [str(SCRIPT)]
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DRAMATIQ_")}
    result = subprocess.run(
        [*command, *args],
        env={**environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    body = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, body, result.stderr


def wait_for(predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return found


def register(
    namespace: str, worker_id: str, *, queue: str, seen_ago: float = 0, busy_for: float | None = None
):
    """A worker-registry record in Redis, as a worker process writes it."""
    now = time.time()
    record = {
        "host": "box",
        "pid": 7,
        "queues": [queue],
        "threads": 1,
        "last_seen": now - seen_ago,
        "processing": 1 if busy_for else 0,
        "finished": 0,
        "busy_since": now - busy_for if busy_for else None,
    }
    redis.Redis(*REDIS).hset(redis_key(namespace), worker_id, json.dumps(record))


@pytest.fixture
def redis_namespace(namespace: str):
    require_service("Redis", REDIS)
    yield namespace
    client = redis.Redis(*REDIS)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.mark.redis
@pytest.mark.parametrize("broker_kind", ["redis"])
def test_redis_url_finds_the_queues_and_a_running_worker_makes_it_healthy(broker, queue_name, start_worker):
    @dramatiq.actor(queue_name=queue_name)
    def work():
        pass

    for _ in range(3):
        work.send()
    code, body, _ = health(REDIS_URL, "--namespace", broker.namespace)

    assert (code, body["status"], body["active_workers"], body["total_pending_tasks"]) == (
        1,
        "degraded",
        0,
        3,
    )
    assert [(q["name"], q["pending"]) for q in body["queues"]] == [(queue_name, 3)]
    assert body["broker"] == "redis" and body["min_workers"] == 1 and body["workers"] == []

    start_worker()
    code, body, _ = wait_for(lambda: (r := health(REDIS_URL, "--namespace", broker.namespace))[0] == 0 and r)
    assert (body["status"], body["active_workers"], body["total_workers"]) == ("healthy", 1, 1)
    assert [q["name"] for q in body["queues"]] == [queue_name]  # drained: found through the registry
    assert body["workers"][0]["queues"] == [queue_name] and body["stalled_workers"] == 0


@pytest.mark.redis
def test_the_json_is_the_django_commands(redis_namespace, queue_name, settings):
    """Same broker state, same keys and values as ``manage.py dramatiq_health`` prints."""
    import io

    from django.core.management import call_command
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=REDIS_URL, namespace=redis_namespace)
    broker.declare_queue(queue_name)
    register(redis_namespace, "w1", queue=queue_name)
    dramatiq.set_broker(broker)
    settings.DRAMATIQ_HEALTH = {}
    out = io.StringIO()
    call_command("dramatiq_health", stdout=out)
    django_body = json.loads(out.getvalue())

    code, body, _ = health(REDIS_URL, "--namespace", redis_namespace, "--queue", queue_name)

    assert (code, body) == (0, django_body)
    assert [q["name"] for q in body["queues"]] == [queue_name] and body["status"] == "healthy"


@pytest.mark.redis
def test_thresholds_come_from_variables_and_options_win(redis_namespace, queue_name):
    def run(*options: str, **env: str):
        """The command on a worker last seen 100 s ago (written anew: runs may be slow)."""
        register(redis_namespace, "quiet-100s", queue=queue_name, seen_ago=100)
        return health(REDIS_URL, "--namespace", redis_namespace, *options, env=env)

    code, body, _ = run()  # WORKER_TIMEOUT 60 by default
    assert (code, body["status"], body["workers"][0]["status"]) == (1, "degraded", "stale")
    code, body, _ = run(DRAMATIQ_HEALTH_WORKER_TIMEOUT="3000")
    assert (code, body["status"], body["workers"][0]["status"]) == (0, "healthy", "active")
    code, body, _ = run("--worker-timeout", "30", DRAMATIQ_HEALTH_WORKER_TIMEOUT="3000")
    assert (code, body["workers"][0]["status"]) == (1, "stale")

    code, body, _ = run(DRAMATIQ_HEALTH_WORKER_TIMEOUT="3000", DRAMATIQ_HEALTH_MIN_WORKERS="2")
    assert (code, body["status"], body["min_workers"]) == (1, "degraded", 2)
    code, body, _ = run("--min-workers", "0", DRAMATIQ_HEALTH_MIN_WORKERS="2")
    assert (code, body["status"], body["min_workers"]) == (0, "healthy", 0)

    code, body, _ = run(DRAMATIQ_HEALTH_ENABLED="false")
    assert (code, body) == (0, {"status": "disabled", "message": "Task system is disabled"})


@pytest.mark.redis
def test_the_stall_timeout_decides_when_a_busy_worker_is_stalled(redis_namespace, queue_name):
    def run(*options: str, **env: str):
        """The command on a worker beating now, every thread busy for 120 s (written anew)."""
        register(redis_namespace, "stuck", queue=queue_name, busy_for=120)
        return health(REDIS_URL, "--namespace", redis_namespace, *options, env=env)

    code, body, _ = run()  # 600 s by default
    assert (code, body["status"], body["stalled_workers"]) == (0, "healthy", 0)
    code, body, _ = run(DRAMATIQ_HEALTH_STALL_TIMEOUT="60")
    assert (code, body["status"], body["stalled_workers"]) == (1, "degraded", 1)
    assert "stall timeout 60 s" in body["reason"]
    (queue,) = body["queues"]
    assert (queue["name"], queue["stalled_workers"]) == (queue_name, 1)
    code, body, _ = run("--stall-timeout", "300", DRAMATIQ_HEALTH_STALL_TIMEOUT="60")
    assert (code, body["status"]) == (0, "healthy")


@pytest.mark.redis
def test_python_dash_m_is_the_same_command(redis_namespace, queue_name):
    register(redis_namespace, "w1", queue=queue_name)
    code, body, _ = health(REDIS_URL, "--namespace", redis_namespace, module=True)
    assert (code, body["status"], [q["name"] for q in body["queues"]]) == (0, "healthy", [queue_name])


@pytest.mark.redis
def test_broker_module_attribute_reads_the_applications_declared_queues(redis_namespace, tmp_path):
    (tmp_path / "probe_app.py").write_text(
        textwrap.dedent(f"""
            import dramatiq
            from dramatiq.brokers.redis import RedisBroker

            broker = RedisBroker(url={REDIS_URL!r}, namespace={redis_namespace!r})
            dramatiq.set_broker(broker)

            @dramatiq.actor(queue_name="{redis_namespace}-declared")
            def task():
                pass
        """)
    )
    for target in ("probe_app:broker", "probe_app"):
        code, body, err = health("--broker", target, "--min-workers", "0", cwd=tmp_path)
        assert (code, [q["name"] for q in body["queues"]]) == (0, [f"{redis_namespace}-declared"]), err

    code, body, err = health("--broker", "probe_app:nothing", cwd=tmp_path)
    assert (code, body) == (3, None)
    assert err.count("\n") == 1 and "probe_app:nothing" in err and "Traceback" not in err


@pytest.mark.rabbitmq
@pytest.mark.parametrize("broker_kind", ["rabbitmq"])
def test_rabbitmq_url_with_named_queues(broker, queue_name, start_worker):
    @dramatiq.actor(queue_name=queue_name)
    def work():
        pass

    work.send()
    work.send()
    wait_for(lambda: health(RABBITMQ_URL, "--queue", queue_name)[1]["total_pending_tasks"] == 2)
    code, body, _ = health(RABBITMQ_URL, "--queue", queue_name)
    assert (code, body["status"], body["broker"], body["counts"]) == (1, "degraded", "rabbitmq", "ready")
    assert [(q["name"], q["pending"], q["consumers"]) for q in body["queues"]] == [(queue_name, 2, 0)]

    start_worker()
    code, body, _ = wait_for(lambda: (r := health(RABBITMQ_URL, "--queue", queue_name))[0] == 0 and r)
    assert (body["status"], body["active_workers"]) == ("healthy", 1)  # its consumer on the queue


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_rabbitmq_queues_are_listed_through_the_management_api(private_server_factory, queue_name):
    server = private_server_factory("rabbitmq", management=True)
    management = f"http://guest:guest@127.0.0.1:{server.extra_ports['management']}/"
    url = f"amqp://guest:guest@127.0.0.1:{server.port}/%2F"
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=url)
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue_name)
    def work():
        pass

    work.send()  # Dramatiq declares Q, Q.DQ and Q.XQ on the first send
    broker.channel.queue_declare("not-dramatiq", durable=False)  # no .DQ/.XQ siblings: left out
    env = {"DRAMATIQ_HEALTH_RABBITMQ_MANAGEMENT_URL": management}
    try:
        code, body, err = wait_for(lambda: (r := health(url, env=env))[1]["total_pending_tasks"] == 1 and r)
        assert (code, body["counts"], [(q["name"], q["pending"]) for q in body["queues"]]) == (
            1,
            "ready+unacked",
            [(queue_name, 1)],
        ), err
        code, body, err = health(url)  # neither --queue nor the API: the queues cannot be known
        assert (code, body) == (3, None)
        assert "--queue" in err and err.count("\n") == 1
    finally:
        broker.close()


@pytest.mark.parametrize(
    "url",
    ["redis://user:" + SECRET + "@127.0.0.1:1/0", "amqp://user:" + SECRET + "@127.0.0.1:1/%2F"],
    ids=["redis", "rabbitmq"],
)
def test_an_unreachable_broker_is_unhealthy_with_one_line_and_no_password(url):
    code, body, err = health(url, "--queue", "q", "--timeout", "1")

    assert (code, body["status"], body["broker_connection"]) == (2, "unhealthy", False)
    assert "127.0.0.1:1" in body["error"]
    assert err.startswith("dramatiq-health: unhealthy: ") and err.count("\n") == 1
    assert SECRET not in err + json.dumps(body) and "Traceback" not in err


@pytest.mark.parametrize("kind", ["redis", "redis-listing-queues", "rabbitmq"])
def test_a_broker_that_never_answers_is_unhealthy_within_the_timeout(private_server_factory, kind):
    """A server that accepts connections and never answers (SIGSTOP): every broker call has a time
    limit, so the command ends (the subprocess's own limit, 120 s, would fail the test) and says why."""
    server = private_server_factory(kind.partition("-")[0])
    server.pause()
    try:
        scheme = "amqp" if kind == "rabbitmq" else "redis"
        queues = [] if kind == "redis-listing-queues" else ["--queue", "q"]
        code, body, err = health(f"{scheme}://127.0.0.1:{server.port}/", *queues, "--timeout", "1")
    finally:
        server.resume()
    assert (code, body["status"]) == (2, "unhealthy")
    assert f"127.0.0.1:{server.port}" in body["error"] and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["http://127.0.0.1/"], {}, "not a broker URL (scheme 'http')"),
        (["127.0.0.1:6379"], {}, "not a broker URL ('127.0.0.1:6379')"),
        (["redis://127.0.0.1:notaport/0"], {}, "bad broker URL"),
        ([], {}, "no broker: give its URL"),
        (
            [REDIS_URL],
            {"DRAMATIQ_HEALTH_TIMEOUT": "soon"},
            "DRAMATIQ_HEALTH_TIMEOUT must be a positive number",
        ),
        ([REDIS_URL], {"DRAMATIQ_HEALTH_MIN_WORKER": "2"}, "unknown variable DRAMATIQ_HEALTH_MIN_WORKER"),
        ([REDIS_URL, "--timeout", "0"], {}, "--timeout must be a positive number of seconds, got 0.0"),
        ([REDIS_URL, "--min-workers", "two"], {}, "argument --min-workers: invalid int value"),
        ([RABBITMQ_URL], {}, "RabbitMQ cannot list its queues over AMQP"),
        ([RABBITMQ_URL, "--namespace", "x"], {}, "--namespace is a Redis broker's"),
    ],
)
def test_bad_input_is_one_line_and_exit_3(args, env, needle):
    code, body, err = health(*args, env=env)
    assert (code, body) == (3, None), err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_broker_url_may_come_from_the_environment():
    code, body, _ = health(
        "--queue", "q", "--timeout", "1", env={"DRAMATIQ_HEALTH_BROKER_URL": "redis://127.0.0.1:1/0"}
    )
    assert (code, body["status"]) == (2, "unhealthy") and "127.0.0.1:1" in body["error"]


def test_the_kubernetes_probes_of_the_docs_are_valid_commands_and_settings():
    """The docs' exec probe is a command line the command accepts, with known variables; the HTTP
    probe asks the path the docs mount the apps on."""
    import re

    import yaml

    from opentelemetry_instrumentation_dramatiq_cfg.health.cli import parser
    from opentelemetry_instrumentation_dramatiq_cfg.health.config import BROKER_URL_ENV, KEYS, env_name

    page = (Path(__file__).resolve().parent.parent / "docs" / "health-probe.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", page, re.DOTALL)]
    (deployment,) = [b for b in blocks if b.get("kind") == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["livenessProbe"]["exec"]["command"]
    assert command[0] == "dramatiq-health"
    options = parser().parse_args(command[1:])
    assert options.url is None and options.broker is None  # the URL comes from the environment
    names = {variable["name"] for variable in container["env"]}
    assert BROKER_URL_ENV in names and names <= {BROKER_URL_ENV, *map(env_name, KEYS)}
    (readiness,) = [b["readinessProbe"] for b in blocks if "readinessProbe" in b]
    assert readiness["httpGet"]["path"] == "/health/"
