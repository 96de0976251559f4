"""``python -m opentelemetry_instrumentation_dramatiq_cfg.health``: the ``dramatiq-health`` command."""

from .cli import run

if __name__ == "__main__":
    run()
