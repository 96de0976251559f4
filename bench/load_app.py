"""The actor module the load benchmark starts with the real ``dramatiq`` command.

Configured by environment variables (set by ``bench/load.py``): ``LOAD_BROKER`` (``redis`` or
``rabbitmq``), ``LOAD_NAMESPACE`` (Redis namespace and RabbitMQ queue name), ``LOAD_REDIS_URL``,
``LOAD_INSTRUMENTED`` (check the trace context), ``LOAD_MINIMAL`` (add ``bench.minimal``'s middleware),
``LOAD_MINIMAL_ATTRIBUTES`` (its spans with this package's attributes), ``LOAD_MINIMAL_METRICS`` (it
records this package's default metrics too).
Bookkeeping goes to Redis in every case: one ``SADD`` of the message id (processed exactly once?),
one ``INCR`` of a leak counter when the trace context seen by the actor is not the message's own
(sampled or not, see :func:`own_context`).
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.middleware import CurrentMessage
from opentelemetry import trace

NAMESPACE = os.environ.get("LOAD_NAMESPACE", "otel-load")
REDIS_URL = os.environ.get("LOAD_REDIS_URL", "redis://127.0.0.1:6379/0")
INSTRUMENTED = os.environ.get("LOAD_INSTRUMENTED") == "1"

if os.environ.get("LOAD_BROKER", "redis") == "rabbitmq":
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker: dramatiq.Broker = RabbitmqBroker(host="127.0.0.1", port=5672, heartbeat=30)
else:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
broker.add_middleware(CurrentMessage())
if os.environ.get("LOAD_MINIMAL") == "1":  # the reference mode: bare span calls instead of this package
    from bench.minimal import MinimalMiddleware
    from opentelemetry_instrumentation_dramatiq_cfg.metrics import instruments_for

    attributes = os.environ.get("LOAD_MINIMAL_ATTRIBUTES") == "1"
    instruments = instruments_for(None) if os.environ.get("LOAD_MINIMAL_METRICS") == "1" else None
    broker.middleware.insert(
        0,
        MinimalMiddleware(trace.get_tracer("bench.minimal"), attributes=attributes, instruments=instruments),
    )
dramatiq.set_broker(broker)
bookkeeping = redis.Redis.from_url(REDIS_URL)


class CpuAtExit(dramatiq.Middleware):  # type: ignore[misc]
    """Writes the worker process's CPU time to Redis when it stops, after every other shutdown hook.

    First in the list, so its after-hooks run last: after the instrumentation's flush of the spans
    still queued, whose encoding and export then count in the CPU per message ``bench/load.py`` reports.
    """

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        bookkeeping.hset(f"{NAMESPACE}:cpu", str(os.getpid()), repr(time.process_time()))


broker.middleware.insert(0, CpuAtExit())


def own_context(span: trace.Span, sent_by: list[str]) -> bool:
    """Whether the current span is this message's process span (``sent_by``: its traceparent fields).

    Sampled: a span whose parent is the message's send span. Not sampled (head sampling): a
    non-recording span of the message's trace, not sampled, as its traceparent said.
    """
    if span.is_recording():
        parent = getattr(span, "parent", None)
        return parent is not None and f"{parent.span_id:016x}" == sent_by[2]
    context = span.get_span_context()
    return (
        context.is_valid
        and f"{context.trace_id:032x}" == sent_by[1]
        and not context.trace_flags.sampled
        and not int(sent_by[3], 16) & 1  # the sampled bit of the trace flags (SDKs may set others)
    )


@dramatiq.actor(queue_name=NAMESPACE, max_retries=0)
def load_task(i: int) -> None:
    message = CurrentMessage.get_current_message()
    pipe = bookkeeping.pipeline(transaction=False)
    pipe.sadd(f"{NAMESPACE}:done", message.message_id)
    if INSTRUMENTED:
        span = trace.get_current_span()
        sent_by = str(message.options.get("traceparent", "")).split("-")
        if len(sent_by) != 4 or not own_context(span, sent_by):
            pipe.incr(f"{NAMESPACE}:leaks")
    pipe.execute()
