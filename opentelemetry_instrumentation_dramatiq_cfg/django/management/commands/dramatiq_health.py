"""``python manage.py dramatiq_health``: the health view's JSON, for container probes.

Exit status: 0 healthy (or disabled), 1 degraded, 2 unhealthy. Queue details are always included.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand

from ....health.answer import exit_code
from ...service import TaskService


class Command(BaseCommand):
    help = "Print the Dramatiq health JSON; exit 0 healthy or disabled, 1 degraded, 2 unhealthy."

    def handle(self, *args: Any, **options: Any) -> None:
        _, body = TaskService().health(details=True)
        self.stdout.write(json.dumps(body, indent=2, sort_keys=True))
        code = exit_code(body)
        if code:
            sys.exit(code)
