"""``dramatiq-health`` (or ``python -m opentelemetry_instrumentation_dramatiq_cfg.health``): the health
JSON of a Dramatiq broker, for container probes, without Django.

Prints the JSON of the Django health view (with ``queues`` and ``workers``) and exits as
``manage.py dramatiq_health`` does: **0** healthy (or disabled), **1** degraded, **2** unhealthy (the
broker could not be read in time: the error also goes to stderr, on one line). **3**: the command
could not run (a bad URL, option or ``DRAMATIQ_HEALTH_*`` variable: one line on stderr, no JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Final, NoReturn

from .answer import UNHEALTHY, exit_code
from .config import BROKER_URL_ENV, ConfigError, from_environment
from .probe import Probe, broker_from_url

#: Exit status when the command could not run (bad arguments or settings).
USAGE_ERROR: Final = 3
#: The ``DRAMATIQ_HEALTH_*`` keys the command takes as options too (``--min-workers`` ...).
OPTIONS: Final = {
    "MIN_WORKERS": int,
    "TIMEOUT": float,
    "WORKER_TIMEOUT": float,
    "STALL_TIMEOUT": float,
    "RABBITMQ_MANAGEMENT_URL": str,
}


def option_name(key: str) -> str:
    return "--" + key.lower().replace("_", "-")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    cli = _Parser(
        prog="dramatiq-health",
        description="Print the health JSON of a Dramatiq broker; exit 0 healthy or disabled, 1 degraded, "
        "2 unhealthy, 3 bad arguments or settings.",
        epilog="Every option also reads DRAMATIQ_HEALTH_<NAME> (e.g. DRAMATIQ_HEALTH_MIN_WORKERS); "
        "the option wins.",
    )
    where = cli.add_mutually_exclusive_group()
    where.add_argument(
        "url",
        nargs="?",
        help=f"the broker's URL: redis://, rediss://, unix://, amqp://, amqps:// (default: {BROKER_URL_ENV})",
    )
    where.add_argument(
        "--broker",
        metavar="MODULE[:ATTRIBUTE]",
        help="import the application's broker, as the dramatiq command does (its queues are read)",
    )
    cli.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="NAME",
        help="a queue to read (repeat it); default: the broker's declared queues, else the ones found on it",
    )
    cli.add_argument("--namespace", help="the RedisBroker's namespace (default: dramatiq)")
    for key, kind in OPTIONS.items():
        cli.add_argument(option_name(key), dest=key, type=kind, metavar=kind.__name__.upper())
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    options = parser().parse_args(argv)
    try:
        overrides = {key: getattr(options, key) for key in OPTIONS}
        config = from_environment(overrides=overrides)
        if options.url is not None and "://" not in options.url:
            broker_from_url(options.url)  # a URL, never a module: says a scheme is missing
        target = options.url if options.url is not None else options.broker  # else the variable's URL
        probe = Probe(target, queues=options.queues, config=config, namespace=options.namespace)
    except ConfigError as exc:
        print(f"dramatiq-health: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    _, body = probe.check(details=True)
    print(json.dumps(body, indent=2, sort_keys=True))
    if body["status"] == UNHEALTHY:
        print(f"dramatiq-health: unhealthy: {body['error']}", file=sys.stderr)
    return exit_code(body)


def run() -> Any:
    """The console script's entry point."""
    sys.exit(main())
