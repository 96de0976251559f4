"""The example Django project against the real Redis, with the commands docker-compose runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from .conftest import REDIS, require_service, unique

PROJECT = Path(__file__).resolve().parent.parent / "examples" / "django_project"
BIN = Path(sys.executable).parent
# The commands of examples/docker-compose.yml (web and worker services).
WORKER = ["opentelemetry-instrument", "dramatiq", "django_dramatiq.setup", "shop.tasks", "--processes", "2"]
WORKER += ["--threads", "4"]
WEB = ["opentelemetry-instrument", "python", "manage.py", "runserver", "127.0.0.1:{port}", "--noreload"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local(command: list[str]) -> list[str]:
    """The same command, with this venv's executables."""
    executables = {
        "python": sys.executable,
        "opentelemetry-instrument": str(BIN / "opentelemetry-instrument"),
    }
    executables["dramatiq"] = str(BIN / "dramatiq")
    return [executables.get(part, part) for part in command]


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(predicate, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


@pytest.mark.slow
def test_the_example_project_is_healthy_while_a_worker_runs(tmp_path):
    require_service("Redis", REDIS)
    namespace = unique("otel-example")
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "demo.settings",
        "PYTHONPATH": str(PROJECT),
        "DRAMATIQ_NAMESPACE": namespace,
        "REDIS_URL": f"redis://{REDIS[0]}:{REDIS[1]}/0",
        "DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"),
        "OTEL_SERVICE_NAME": "example",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=PROJECT, env=env, check=True)
    web_command = [part.format(port=port) for part in WEB]
    web = subprocess.Popen(local(web_command), cwd=PROJECT, env=env, stderr=subprocess.DEVNULL)
    worker = None
    log = tmp_path / "worker.log"
    client = redis.Redis(*REDIS)
    try:
        url = f"http://127.0.0.1:{port}/health/"
        wait_for(lambda: get_json(url)[0] == 200)
        status, body = get_json(url)
        assert (status, body["status"], body["active_workers"]) == (200, "degraded", 0)

        request = urllib.request.Request(f"http://127.0.0.1:{port}/enqueue/?n=3", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["sent"] == 3
        assert get_json(url)[1]["status"] == "degraded"  # the web process sent tasks: still no worker

        with log.open("w") as out:
            worker = subprocess.Popen(
                local(WORKER), cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_for(lambda: get_json(url)[1]["active_workers"] == 2)  # both worker processes registered
        status, body = get_json(url)
        assert (status, body["status"], body["active_workers"], body["total_workers"]) == (
            200,
            "healthy",
            2,
            2,
        )

        # Of data ids -1, 0, 1: -1 fails for good at once (NonRecoverableError is in `throws`), 1 after
        # its 3 retries (always locked): two permanent failures, logged with their trace and message
        # ids by the guide's LOGGING format, and one mail (one per actor per window).
        wait_for(lambda: log.read_text().count("Permanent failure of robust_task") == 2)
    finally:
        for process in (worker, web):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
        for key in client.scan_iter(match=f"{namespace}*"):
            client.delete(key)
    text = log.read_text()
    failure_lines = [line for line in text.splitlines() if "Permanent failure of robust_task" in line]
    assert len(failure_lines) == 2
    assert {"NonRecoverableError" in line for line in failure_lines} == {True, False}
    assert all("actor=robust_task" in line and "trace_id=0 " not in line for line in failure_lines)
    assert text.count("Critical Task Failure: robust_task") == 1  # mail_admins, console backend
