"""instrument()/uninstrument() leave no patch behind (wrapt 2 proxies are not wrapt.ObjectProxy)."""

from __future__ import annotations

import dramatiq
import dramatiq.broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor, OpenTelemetryMiddleware


def is_wrapped(function: object) -> bool:
    return hasattr(function, "__wrapped__")


def test_uninstrument_restores_every_patch_and_removes_the_middleware(tracer_provider):
    instrumentor = DramatiqInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    stub, redis_broker = StubBroker(), RedisBroker(namespace="never-used")
    dramatiq.set_broker(stub)
    assert all(
        is_wrapped(f)
        for f in (dramatiq.set_broker, dramatiq.broker.set_broker, StubBroker.enqueue, RedisBroker.enqueue)
    )
    assert isinstance(stub.middleware[0], OpenTelemetryMiddleware)

    instrumentor.uninstrument()

    assert not any(
        is_wrapped(f)
        for f in (
            dramatiq.set_broker,
            dramatiq.broker.set_broker,
            dramatiq.Broker.__init__,
            StubBroker.enqueue,
            RedisBroker.enqueue,
        )
    )
    assert not any(isinstance(m, OpenTelemetryMiddleware) for b in (stub, redis_broker) for m in b.middleware)
    assert not any(isinstance(m, OpenTelemetryMiddleware) for m in StubBroker().middleware)
