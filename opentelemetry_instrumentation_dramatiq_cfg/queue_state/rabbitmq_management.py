"""RabbitMQ's management HTTP API (the ``rabbitmq_management`` plugin) as a source of queue counts.

AMQP's passive declare reports *ready* messages only. A Dramatiq worker takes a delayed message off
``Q.DQ`` as soon as it is delivered and holds it, unacknowledged, until it is due; it prefetches
ready messages of ``Q`` the same way. The management API also reports ``messages_unacknowledged``
per queue, so delayed messages held by workers are counted and in-flight is known.

One ``GET /api/queues/<vhost>?columns=...`` per read (every queue of the virtual host in one answer),
with a timeout, through the standard library. The URL may carry the credentials
(``http://user:password@host:15672/``); they are sent as HTTP basic auth and never appear in a
``repr``, an error or a log line. The API's figures are refreshed by the node every
``collect_statistics_interval`` (5 s by default), so they may be that old.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Final

from .base import BrokerUnavailable

#: Environment variable read when no URL is given (workers' queue gauges, the health command).
MANAGEMENT_URL_ENV: Final = "DRAMATIQ_RABBITMQ_MANAGEMENT_URL"
_COLUMNS: Final = "name,messages_ready,messages_unacknowledged,consumers"


@dataclass(frozen=True)
class ManagementCounts:
    """One queue's figures from the management API."""

    ready: int = 0
    unacknowledged: int = 0
    consumers: int = 0


@dataclass(frozen=True)
class ManagementAPI:
    """The management API of one RabbitMQ node: ``ManagementAPI.from_url(url, timeout=2)``."""

    base_url: str
    timeout: float
    #: The ``Authorization`` header value, kept out of ``repr``.
    authorization: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str, *, timeout: float) -> ManagementAPI:
        """``url`` as ``http(s)://[user:password@]host:port[/prefix]``; credentials leave the URL."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the RabbitMQ management URL must be http(s)://[user:password@]host:port/")
        authorization = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            authorization = f"Basic {token}"
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # an IPv6 literal
            netloc = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
        base_url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        return cls(base_url, timeout, authorization)

    @classmethod
    def from_environment(cls, *, timeout: float) -> ManagementAPI | None:
        url = os.environ.get(MANAGEMENT_URL_ENV, "").strip()
        return cls.from_url(url, timeout=timeout) if url else None

    def queues(self, vhost: str) -> dict[str, ManagementCounts]:
        """Every queue of ``vhost`` by name. Raises :class:`BrokerUnavailable` (without credentials)."""
        path = f"/api/queues/{urllib.parse.quote(vhost, safe='')}?columns={_COLUMNS}"
        request = urllib.request.Request(self.base_url + path, headers={"Accept": "application/json"})
        if self.authorization is not None:
            request.add_header("Authorization", self.authorization)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                rows: Any = json.load(response)
        except urllib.error.HTTPError as exc:
            raise BrokerUnavailable(f"RabbitMQ management API at {self.base_url}: HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise BrokerUnavailable(f"RabbitMQ management API at {self.base_url}: {exc!r}") from None
        if not isinstance(rows, list):
            raise BrokerUnavailable(f"RabbitMQ management API at {self.base_url}: unexpected answer")
        return {
            str(row["name"]): ManagementCounts(
                int(row.get("messages_ready") or 0),
                int(row.get("messages_unacknowledged") or 0),
                int(row.get("consumers") or 0),
            )
            for row in rows
            if isinstance(row, dict) and "name" in row
        }
