"""What this package knows about the processes of the ``dramatiq`` command.

* A worker process of the command (the only place Dramatiq emits ``after_process_boot``) ends with
  ``os._exit`` when it was forked: the SDK's ``atexit`` shutdown never runs there, so buffered
  metrics must be flushed at worker shutdown. Anywhere else (a ``Worker`` started in code, a web
  process) ``atexit`` does it, and a flush at each worker stop would only hurt: the OTel Prometheus
  exporter queues a flushed collection and repeats every series on its next scrape.
* The standard ``prometheus`` metrics exporter cannot serve the worker processes of the command:
  started in the main process before the fork, its HTTP server thread does not survive into the
  workers (fork), or every worker tries to bind the same port and loses its SDK (spawn,
  forkserver). :func:`warn_about_standard_prometheus` says so, once per process, naming
  ``dramatiq_prometheus``.
"""

from __future__ import annotations

import logging
import os
import sys

_logger = logging.getLogger(__name__)

_state = {"worker_process": False, "warned": False}


def mark_worker_process() -> None:
    """Called from ``after_process_boot``: this is a worker process of the ``dramatiq`` command."""
    _state["worker_process"] = True


def is_worker_process() -> bool:
    return _state["worker_process"]


def is_dramatiq_command() -> bool:
    """Whether this process runs the ``dramatiq`` command (its main process or one of its workers)."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if program == "dramatiq" or (program == "__main__.py" and "dramatiq" in sys.argv[0]):
        return True
    return is_worker_process()


def standard_prometheus_configured() -> bool:
    names = os.environ.get("OTEL_METRICS_EXPORTER", "")
    return "prometheus" in (name.strip() for name in names.split(","))


def warn_about_standard_prometheus() -> None:
    """Log one WARNING in this process if the standard Prometheus exporter runs under the command."""
    if _state["warned"] or not standard_prometheus_configured() or not is_dramatiq_command():
        return
    _state["warned"] = True
    _logger.warning(
        "OTEL_METRICS_EXPORTER=prometheus under the dramatiq command: the worker processes' metrics are "
        "not served (its HTTP server runs in the main process only, which processes no message; with "
        "--use-spawn or forkserver every worker fails to bind the port and starts without an SDK). "
        "Use OTEL_METRICS_EXPORTER=dramatiq_prometheus for one endpoint serving every worker process."
    )


def _forget_in_child() -> None:
    _state["warned"] = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
