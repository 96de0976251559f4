"""The worker registry's store in the Django database (``django-db``), for brokers without a Redis of
their own (RabbitMQ): the table of :class:`~.models.WorkerRecord` (``migrate`` creates it).

Chosen with ``DRAMATIQ_HEALTH["REGISTRY_DATABASE"] = True`` (in the web processes and the workers,
which must run the Django project, e.g. ``rundramatiq``). The Django app registers it from ``ready()``
(:func:`register`) through
:func:`~opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry_store.register_store_factory`,
so the OTel-free registry chooses it without knowing Django: after a Redis URL
(``OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL``), the Redis broker's own Redis and the StubBroker's memory.

Cost per worker process and beat: one transaction holding one upsert (``INSERT ... ON CONFLICT DO
UPDATE``) plus the beat contributors' writes (each in a savepoint: one that fails undoes only its
own); a ``DELETE`` of rows unseen for an hour once a minute; a
``DELETE`` on a clean stop. Each runs on the beat thread's own connection (re-opened when unusable,
e.g. after a database restart), with a statement timeout on PostgreSQL (``SET LOCAL
statement_timeout``); a failure is logged at debug level by the registry and never reaches the worker.
"""

from __future__ import annotations

from typing import Any, Final

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from ..queue_state import registry_store
from ..queue_state.registry_store import STORE_DJANGO_DB, Beat

#: Milliseconds a statement of the store may run (PostgreSQL).
STATEMENT_TIMEOUT_MS: Final = 2000


class DjangoStore:
    """Registry records in the ``WorkerRecord`` table of database ``using``."""

    name = STORE_DJANGO_DB

    def __init__(self, using: str = DEFAULT_DB_ALIAS) -> None:
        self.using = using

    def __repr__(self) -> str:
        return f"DjangoStore(using={self.using!r})"

    @property
    def model(self) -> Any:
        from .models import WorkerRecord

        return WorkerRecord

    def _connection(self) -> Any:
        connection = connections[self.using]
        connection.close_if_unusable_or_obsolete()
        return connection

    def _bounded(self, connection: Any) -> None:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")

    def beat(self, worker_id: str, record: dict[str, Any], now: float) -> None:
        connection = self._connection()
        with transaction.atomic(using=self.using):
            self._bounded(connection)
            self.model.objects.using(self.using).bulk_create(
                [self.model(worker_id=worker_id, last_seen=now, record=record)],
                update_conflicts=True,
                unique_fields=["worker_id"],
                update_fields=["last_seen", "record"],
            )
            beat = Beat(self, worker_id, now, connection=connection)
            registry_store.contribute(beat, lambda: transaction.atomic(using=self.using))

    def delete(self, worker_id: str) -> None:
        connection = self._connection()
        with transaction.atomic(using=self.using):
            self._bounded(connection)
            self.model.objects.using(self.using).filter(worker_id=worker_id).delete()

    def read(self) -> dict[str, dict[str, Any]]:
        connection = self._connection()
        with transaction.atomic(using=self.using):
            self._bounded(connection)
            rows = self.model.objects.using(self.using).values_list("worker_id", "record")
            return {worker_id: record for worker_id, record in rows if isinstance(record, dict)}

    def prune(self, before: float) -> None:
        connection = self._connection()
        with transaction.atomic(using=self.using):
            self._bounded(connection)
            self.model.objects.using(self.using).filter(last_seen__lt=before).delete()

    def close_thread(self) -> None:
        """Close this thread's connection (the registry calls it when its beat thread ends)."""
        connections[self.using].close()


def django_store(broker: Any) -> DjangoStore | None:
    """The store factory the app registers: the default database when ``DRAMATIQ_HEALTH`` says
    ``REGISTRY_DATABASE`` (read at each choice, so a changed setting is followed), else none."""
    from .conf import health_settings

    return DjangoStore() if health_settings().REGISTRY_DATABASE else None


def register() -> None:
    registry_store.register_store_factory(django_store)
