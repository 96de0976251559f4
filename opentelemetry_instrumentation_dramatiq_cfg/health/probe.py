"""The broker a probe reads, and the probe: the health answer of one broker, outside Django.

A broker is given as an object, a URL (``redis://``, ``rediss://``, ``unix://``: a ``RedisBroker``;
``amqp://``, ``amqps://``: a ``RabbitmqBroker``), or ``module:attribute`` / ``module`` as the
``dramatiq`` command takes it (``module`` alone: the broker that importing it set). A broker built from
a URL has no middleware and declares no queue; the queues read are, in this order: the ones named,
else the ones the broker declared (its actors were imported), else the ones found on the broker
(:mod:`..queue_state.discovery`: Redis keys and registry, RabbitMQ's management API).
"""

from __future__ import annotations

import importlib
import os
import sys
import urllib.parse
from collections.abc import Iterable
from typing import Any, Final

from ..queue_state import BrokerUnavailable, QueueStateReader, reader_for_broker, redact
from ..queue_state.discovery import check_discoverable, discover_queues
from .answer import answer, describe, read
from .config import BROKER_URL_ENV, ConfigError, HealthConfig, from_environment

REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
RABBITMQ_SCHEMES: Final = ("amqp", "amqps")


def broker_from_url(url: str, *, namespace: str | None = None) -> Any:
    """A broker for ``url``, without middleware; raises :class:`ConfigError` (no credentials shown)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme not in REDIS_SCHEMES + RABBITMQ_SCHEMES:
        shown = f"scheme {scheme!r}" if scheme else redact(repr(url))
        raise ConfigError(
            f"not a broker URL ({shown}): use redis://, rediss://, unix:// (Redis) or amqp://, amqps:// "
            "(RabbitMQ), or --broker module:attribute"
        )
    if namespace is not None and scheme in RABBITMQ_SCHEMES:
        raise ConfigError("--namespace is a Redis broker's; RabbitMQ has none")
    try:
        if scheme in REDIS_SCHEMES:
            from dramatiq.brokers.redis import RedisBroker

            return RedisBroker(url=url, middleware=[], namespace=namespace or "dramatiq")  # type: ignore[no-untyped-call]
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url, middleware=[])
    except ImportError as exc:
        extra = "redis" if scheme in REDIS_SCHEMES else "rabbitmq"
        raise ConfigError(
            f"{scheme}:// needs the {exc.name} package: pip install "
            f"'opentelemetry-instrumentation-dramatiq-cfg[{extra}]'"
        ) from None
    except Exception as exc:  # the client library refused the URL
        raise ConfigError(f"bad broker URL: {describe(exc)}") from None


def broker_from_path(path: str) -> Any:
    """The broker of ``module:attribute`` (a broker, or a callable that sets the global one) or of
    ``module`` (the global broker importing it set), as the ``dramatiq`` command finds it; the current
    directory is importable, as there. Raises :class:`ConfigError`."""
    import dramatiq.broker

    module_name, _, attribute = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
        for name in attribute.split(".") if attribute else ():
            target = getattr(target, name)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raised
        raise ConfigError(f"--broker {path}: {describe(exc)}") from None
    if attribute and callable(target) and not isinstance(target, dramatiq.broker.Broker):
        target()
        target = dramatiq.broker.global_broker
    elif not attribute:
        target = dramatiq.broker.global_broker  # never get_broker(): it would create one
    if not isinstance(target, dramatiq.broker.Broker):
        raise ConfigError(f"--broker {path}: {type(target).__name__} is not a Dramatiq broker")
    return target


def resolve_broker(target: Any = None, *, namespace: str | None = None) -> Any:
    """A broker object from an object, a URL, ``module:attribute``, or ``None`` (the URL in
    ``DRAMATIQ_HEALTH_BROKER_URL``)."""
    if target is None:
        target = os.environ.get(BROKER_URL_ENV, "").strip()
        if not target:
            raise ConfigError(f"no broker: give its URL, --broker module:attribute, or set {BROKER_URL_ENV}")
    if not isinstance(target, str):
        if namespace is not None:
            raise ConfigError("--namespace goes with a redis:// URL (a broker object has its own)")
        return target
    if "://" in target:
        return broker_from_url(target, namespace=namespace)
    if namespace is not None:
        raise ConfigError("--namespace goes with a redis:// URL (a broker object has its own)")
    return broker_from_path(target)


class Probe:
    """The health answer of one broker: ``Probe(broker).check(details=True) -> (http_status, body)``.

    ``broker``: anything :func:`resolve_broker` takes. ``queues``: the queues to read (default: see the
    module's docstring). ``config``: the thresholds (default: the ``DRAMATIQ_HEALTH_*`` variables).
    Raises :class:`ConfigError` for a bad broker, bad settings, or a RabbitMQ broker whose queues
    can be neither named nor listed. Thread-safe; the reader (and its connection) is made once and kept.
    """

    def __init__(
        self,
        broker: Any = None,
        *,
        queues: Iterable[str] | None = None,
        config: HealthConfig | None = None,
        namespace: str | None = None,
    ) -> None:
        self.config = config if config is not None else from_environment()
        from_url = broker is None or (isinstance(broker, str) and "://" in broker)
        self.broker = resolve_broker(broker, namespace=namespace)
        self.queues = tuple(queues) if queues else None
        if from_url and self.queues is None:  # nothing will ever declare a queue on this broker
            try:
                check_discoverable(self.broker, rabbitmq_management_url=self.config.RABBITMQ_MANAGEMENT_URL)
            except ValueError as exc:  # QueuesUnknown, or a bad management URL
                raise ConfigError(
                    f"{exc} (the command: --queue NAME, or --rabbitmq-management-url URL or "
                    "DRAMATIQ_HEALTH_RABBITMQ_MANAGEMENT_URL)"
                ) from None
        self.reader = self._make_reader()

    def _make_reader(self) -> QueueStateReader:
        """The broker's reader, made once (no I/O): kept, so its connection is reused."""
        try:
            return reader_for_broker(
                self.broker,
                timeout=self.config.TIMEOUT,
                worker_timeout=self.config.WORKER_TIMEOUT,
                stall_timeout=self.config.STALL_TIMEOUT,
                rabbitmq_management_url=self.config.RABBITMQ_MANAGEMENT_URL,
            )
        except (TypeError, ValueError) as exc:  # a broker no reader reads, a bad management URL
            raise ConfigError(describe(exc)) from None

    def queue_names(self) -> list[str] | None:
        """The queues to read now: the named ones, else ``None`` (the broker's declared ones, if it
        has some: an application's actors may be imported after the probe is made), else the ones
        found on the broker."""
        if self.queues is not None:
            return list(self.queues)
        if self.broker.get_declared_queues():
            return None
        return discover_queues(
            self.broker,
            timeout=self.config.TIMEOUT,
            rabbitmq_management_url=self.config.RABBITMQ_MANAGEMENT_URL,
        )

    def check(self, *, details: bool) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body), as the Django view answers; never raises for a broker fault."""
        if not self.config.ENABLED:
            return answer(self.config, None, None, details=details)
        try:
            names = self.queue_names()
        except BrokerUnavailable as exc:
            return answer(self.config, None, str(exc), details=details)
        except Exception as exc:  # a bug or a misconfiguration: an answer, never a traceback
            return answer(self.config, None, describe(exc), details=details)
        snapshot, error = read(self.reader, names)
        return answer(self.config, snapshot, error, details=details)
