"""Upstream repro (plain Dramatiq + redis-py, none of this package): a fetch whose reply is lost
strands its messages in the worker's ack set.

Dramatiq's Redis consumer fetches with one Lua script call (``dispatch`` with ``fetch``) that pops
message ids from the queue and adds them to the worker's ack set. If the connection drops after
Redis ran the script and before the reply arrives (a broker killed or restarted at that moment),
redis-py retries the command on a new connection (its default ``Retry``), which runs the script
again and fetches the *next* messages: the first ones are neither in the queue nor in the worker's
hands. They stay in that worker's ack set until the worker stops and its heartbeat is older than
``heartbeat_timeout`` (60 s); then another worker's maintenance requeues them. Not lost, but held up
for as long as the worker lives. ``tests/test_broker_outage.py`` met it once in about six runs.

Here a TCP proxy between the broker and Redis forwards the first ``fetch`` and drops the
connection instead of relaying its reply. Run: ``python tests/upstream_redis_fetch_retry.py``
(Redis on 127.0.0.1:6379). Prints the stranded ids and exits 0 when the behaviour shows.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import uuid

import dramatiq
from dramatiq.brokers.redis import RedisBroker


class DropFirstFetchReply:
    """127.0.0.1:<port> -> Redis; closes the client connection that sent the first fetch, after
    forwarding that command to Redis and before relaying its reply."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.dropped = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.server.accept()
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, to_redis: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if to_redis and b"fetch" in data and not self.dropped.is_set():
                    self.dropped.set()
                    source.shutdown(socket.SHUT_RDWR)  # the reply will never reach the client
                    return
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()


def main() -> int:
    namespace = f"repro-{uuid.uuid4().hex[:8]}"
    proxy = DropFirstFetchReply(("127.0.0.1", 6379))
    broker = RedisBroker(host="127.0.0.1", port=proxy.port, namespace=namespace)
    direct = RedisBroker(host="127.0.0.1", port=6379, namespace=namespace)
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=namespace)
    def work(i: int) -> None:
        pass

    try:
        for i in range(6):
            direct.enqueue(work.message(i))
        consumer = broker.consume(namespace, prefetch=2, timeout=1000)
        first = next(consumer)  # the first fetch's reply is dropped; redis-py retries the fetch
        acks = [
            key.decode()
            for key in direct.client.scan_iter(match=f"{namespace}:__acks__.*")
            if direct.client.scard(key)
        ]
        held = {m.decode() for key in acks for m in direct.client.smembers(key)}
        handed = {
            first.options["redis_message_id"],
            *(m.options["redis_message_id"] for m in [next(consumer)]),
        }
        stranded = held - handed
        print(
            f"fetch reply dropped: {proxy.dropped.is_set()}; ack set holds {len(held)}, consumer got "
            f"{len(handed)}; stranded (held by this worker, never handed to it): {sorted(stranded)}"
        )
        return 0 if proxy.dropped.is_set() and stranded else 1
    finally:
        keys = list(direct.client.scan_iter(match=f"{namespace}:*"))
        if keys:
            direct.client.delete(*keys)


if __name__ == "__main__":
    sys.exit(main())
