"""Worker ids stay unique across hosts that share a hostname and a pid (issue 27, part 3).

Three "hosts" on this machine, as replicas with a fixed ``hostname:`` get them: each its own network
namespace (a veth pair into a bridge of this test's own, on a private /24), its own UTS and PID
namespaces (``unshare --uts --pid --fork``), the same hostname, and address-space randomisation off
(``setarch -R``), so the worker process has the same pid on each and ``id(worker)`` was the same too:
the old ids ``host:pid:id(worker)`` collided. The broker is a redis-server of this test's own bound
to the bridge's address; nothing else is reached. Every namespace, link and process made here is
removed at the end, whatever happens. Needs root (CI runs as root).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from .conftest import unique
from .servers import closed_port, server_binary

ROOT = Path(__file__).resolve().parent.parent
HOSTS = 3

pytestmark = pytest.mark.slow


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


@pytest.fixture
def network() -> Iterator[dict[str, object]]:
    """A bridge with a private /24 and HOSTS namespaces plugged into it; all removed afterwards."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "unshare", "setarch")):
        pytest.fail("needs root with ip, unshare and setarch (CI runs as root)")
    tag = f"{random.randrange(16**4):04x}"
    subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
    bridge = f"otb{tag}"
    made: list[tuple[str, ...]] = []
    try:
        run("ip", "link", "add", bridge, "type", "bridge")
        made.append(("ip", "link", "del", bridge))
        run("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
        run("ip", "link", "set", bridge, "up")
        namespaces = []
        for index in range(HOSTS):
            name, veth = f"otn{tag}{index}", f"otv{tag}{index}"
            run("ip", "netns", "add", name)
            made.append(("ip", "netns", "del", name))
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            made.append(("ip", "link", "del", veth))
            run("ip", "link", "set", veth, "master", bridge)
            run("ip", "link", "set", veth, "up")
            run("ip", "netns", "exec", name, "ip", "addr", "add", f"{subnet}.{10 + index}/24", "dev", "eth0")
            run("ip", "netns", "exec", name, "ip", "link", "set", "eth0", "up")
            run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
            namespaces.append(name)
        yield {"bridge_address": f"{subnet}.1", "namespaces": namespaces}
    finally:
        for command in reversed(made):
            subprocess.run(command, capture_output=True)


@pytest.fixture
def bridge_redis(network: dict[str, object], tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own, bound to the bridge's address only."""
    address = str(network["bridge_address"])
    port = closed_port()
    command = [server_binary("redis-server"), "--port", str(port), "--bind", address, "--save", ""]
    command += ["--appendonly", "no", "--dir", str(tmp_path), "--protected-mode", "no"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        client = redis.Redis(host=address, port=port, socket_timeout=2)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "the bridge's redis-server never answered"
                time.sleep(0.05)
        yield f"{address}:{port}"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


@pytest.fixture
def replicas(
    network: dict[str, object], bridge_redis: str
) -> Iterator[tuple[list[subprocess.Popen[bytes]], str]]:
    """One ``dramatiq`` command (1 process, 1 thread) per namespace, hostname ``replica``, ASLR off."""
    namespace = unique("otel-netns")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NETNS_REDIS": bridge_redis, "NETNS_NAMESPACE": namespace}
    dramatiq_bin = str(Path(sys.executable).parent / "dramatiq")
    machine = os.uname().machine
    processes = []
    try:
        for name in network["namespaces"]:  # type: ignore[attr-defined]
            script = (
                f"hostname replica && exec setarch {machine} -R {dramatiq_bin} tests.netns_app "
                "--processes 1 --threads 1"
            )
            processes.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", name, "unshare", "--uts", "--pid", "--fork", "sh", "-c", script],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        yield processes, namespace
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def registry(address: str, namespace: str) -> dict[str, dict[str, object]]:
    host, port = address.split(":")
    raw = redis.Redis(host=host, port=int(port), socket_timeout=2).hgetall(f"{namespace}:__otel_workers__")
    return {key.decode(): json.loads(value) for key, value in raw.items()}


def wait_for(predicate, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return value


def test_replicas_with_the_same_hostname_and_pid_have_distinct_ids_and_a_clean_stop_removes_only_its_own(
    replicas, bridge_redis
):
    processes, namespace = replicas
    entries = wait_for(lambda: len(r := registry(bridge_redis, namespace)) == HOSTS and r)

    # The conditions of the collision: one hostname, one pid, on every host.
    assert {(e["host"], e["pid"]) for e in entries.values()} == {
        ("replica", entries[next(iter(entries))]["pid"])
    }
    assert all(worker_id.startswith(f"replica:{entries[worker_id]['pid']}:") for worker_id in entries)

    # A clean stop of one replica (SIGTERM to its dramatiq command, which forwards it to its worker
    # process) removes its entry only. The command is the child of `unshare --fork`.
    (command,) = Path(f"/proc/{processes[0].pid}/task/{processes[0].pid}/children").read_text().split()
    os.kill(int(command), signal.SIGTERM)
    processes[0].wait(60)
    left = wait_for(lambda: len(r := registry(bridge_redis, namespace)) == HOSTS - 1 and r)
    assert set(left) < set(entries)
