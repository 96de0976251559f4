"""examples/docker-compose.yml, parsed: it cannot run here (no container engine), so its wiring is checked.

Services and their pinned images, the ports a user opens, every mounted file, the OTLP and Prometheus
wiring between services, the commands (the ones tests/test_example_project.py runs) and the image
versions the docs say were last checked.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_example_project import WEB, WORKER

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
IMAGES = {
    "redis": "redis",
    "jaeger": "jaegertracing/jaeger",  # Jaeger v2: one image taking OTLP itself
    "prometheus": "prom/prometheus",
    "grafana": "grafana/grafana",
}
PUBLISHED = {"jaeger": [16686], "prometheus": [9090], "grafana": [3000], "web": [8000]}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def major(image: str) -> int:
    return int(re.match(r"v?(\d+)", image.rpartition(":")[2]).group(1))  # type: ignore[union-attr]


def test_the_services_are_the_backends_and_the_two_apps_without_a_collector(services):
    assert set(services) == {*IMAGES, "web", "worker"}


def test_every_image_is_pinned_to_a_release(services):
    for name, repository in IMAGES.items():
        image = services[name]["image"]
        assert image.rpartition(":")[0] == repository, image
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", image.rpartition(":")[2]), f"{image} is not pinned to x.y.z"
    assert major(services["jaeger"]["image"]) == 2  # v1 (all-in-one) reached end of life on 2025-12-31
    assert major(services["prometheus"]["image"]) == 3
    assert major(services["grafana"]["image"]) >= 12


def test_the_docs_name_the_versions_of_the_compose_file():
    page = (ROOT / "docs" / "operations.md").read_text()
    compose_text = (EXAMPLES / "docker-compose.yml").read_text()
    for image in re.findall(r"^\s+image: (\S+)", compose_text, re.MULTILINE):
        assert f"`{image}`" in page, f"docs/operations.md does not name {image}"


def test_the_published_ports_are_the_ones_the_docs_open(services):
    for name, service in services.items():
        ports = [int(str(port).split(":")[0]) for port in service.get("ports", [])]
        assert ports == PUBLISHED.get(name, []), name
        for port in ports:  # host:container, the same number
            assert f"{port}:{port}" in service["ports"]


def test_every_mounted_file_exists(services):
    mounts = [
        volume.split(":")[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if volume.startswith(".")
    ]
    assert len(mounts) == 4
    for mount in mounts:
        assert (EXAMPLES / mount).exists(), mount
    for service in ("web", "worker"):
        build = services[service]["build"]
        assert (EXAMPLES / build["context"] / build["dockerfile"]).is_file()


def test_dependencies_name_services(services):
    for name, service in services.items():
        assert set(service.get("depends_on", [])) <= set(services) - {name}, name


def test_the_apps_send_traces_over_otlp_to_jaeger_and_serve_metrics_to_prometheus(services):
    config = yaml.safe_load((EXAMPLES / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "dramatiq"  # what DramatiqMetricsEndpointDown watches
    (targets,) = [group["targets"] for group in job["static_configs"]]
    dockerfile = (EXAMPLES / "Dockerfile").read_text()
    extras = set(re.search(r"/src\[([\w,]+)\]", dockerfile).group(1).split(","))  # type: ignore[union-attr]
    assert {"instruments", "redis", "django", "otlp", "prometheus", "sdk"} <= extras
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert env["OTEL_TRACES_EXPORTER"] == "otlp"
        host, port = re.fullmatch(r"http://([\w-]+):(\d+)", env["OTEL_EXPORTER_OTLP_ENDPOINT"]).groups()  # type: ignore[union-attr]
        assert (host, port, env["OTEL_EXPORTER_OTLP_PROTOCOL"]) == ("jaeger", "4317", "grpc")
        assert env["OTEL_METRICS_EXPORTER"] == "dramatiq_prometheus"
        assert env["OTEL_EXPORTER_PROMETHEUS_HOST"] == "0.0.0.0"
        assert f"{name}:{env['OTEL_EXPORTER_PROMETHEUS_PORT']}" in targets
    assert services["jaeger"]["environment"]["JAEGER_LISTEN_HOST"] == "0.0.0.0"  # not only localhost
    assert services["web"]["environment"]["OTEL_PYTHON_DRAMATIQ_QUEUE_METRICS_ENABLED"] == "false"
    assert services["worker"]["environment"]["OTEL_PYTHON_DRAMATIQ_QUEUE_METRICS_ENABLED"] == "true"
    assert len(targets) == 2


def test_grafana_data_sources_point_at_the_compose_services(services):
    sources = yaml.safe_load(
        (EXAMPLES / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    )
    urls = {source["type"]: source["url"] for source in sources["datasources"]}
    assert urls == {"prometheus": "http://prometheus:9090", "jaeger": "http://jaeger:16686"}
    assert {"prometheus", "jaeger"} <= set(services)


def test_the_apps_run_the_commands_the_example_project_test_runs(services):
    worker = shlex.split(services["worker"]["command"])
    assert worker == WORKER
    web = services["web"]["command"]
    inner = shlex.split(shlex.split(web)[2])  # sh -c "migrate && <command>"
    command = inner[inner.index("&&") + 1 :]
    assert command == [part.replace("127.0.0.1:{port}", "0.0.0.0:8000") for part in WEB]


def compose_shell(command: str) -> str:
    """A ``CMD-SHELL`` string as compose hands it to the shell (``$$`` is compose's escaped ``$``)."""
    return command.replace("$$", "$")


def test_the_worker_healthcheck_runs_the_health_command_on_the_apps_redis(services, namespace):
    """The healthcheck's very command, run by a shell as compose runs it, on a Redis namespace of this
    test's own: degraded (exit 1) with no worker, healthy (exit 0) once one beats in the registry."""
    import json
    import os
    import subprocess
    import sys
    import time

    import redis

    from opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry import redis_key

    from .conftest import REDIS, require_service

    check = services["worker"]["healthcheck"]
    kind, command = check["test"]
    assert kind == "CMD-SHELL" and shlex.split(command)[0] == "dramatiq-health"
    assert {"interval", "timeout", "retries", "start_period"} <= set(check)
    script = re.search(r'^dramatiq-health = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert script and script.group(1).endswith("health.cli:run")  # installed in the image with the package
    require_service("Redis", REDIS)
    bin_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        # what the worker service's environment holds, with this test's Redis and namespace
        "REDIS_URL": services["worker"]["environment"]["REDIS_URL"].replace(
            "redis:6379", f"{REDIS[0]}:{REDIS[1]}"
        ),
        "DRAMATIQ_NAMESPACE": namespace,
    }

    def run() -> tuple[int, dict[str, Any]]:
        result = subprocess.run(
            ["sh", "-c", compose_shell(command)], env=env, capture_output=True, text=True, timeout=120
        )
        return result.returncode, json.loads(result.stdout)

    client = redis.Redis(*REDIS)
    try:
        code, body = run()
        assert (code, body["status"], body["active_workers"]) == (1, "degraded", 0)
        record = {"host": "worker", "pid": 8, "queues": ["default"], "threads": 4, "last_seen": time.time()}
        client.hset(redis_key(namespace), "w1", json.dumps(record))
        code, body = run()
        assert (code, body["status"], body["active_workers"]) == (0, "healthy", 1)
    finally:
        client.delete(redis_key(namespace))


def test_the_docs_show_the_compose_healthcheck(services):
    page = (ROOT / "docs" / "health-probe.md").read_text()
    shown = [
        yaml.safe_load(block)["healthcheck"]
        for block in re.findall(r"```yaml\n(.*?)```", page, re.DOTALL)
        if block.startswith("healthcheck:")
    ]
    assert shown == [services["worker"]["healthcheck"]]
