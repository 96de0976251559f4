"""The health answer of a Dramatiq broker, without Django: a command, a WSGI app and an ASGI app.

No Django and no OpenTelemetry here; the Django view and ``dramatiq_health`` command answer through
the same code (:mod:`.answer`, :mod:`.config`).

- ``dramatiq-health redis://localhost:6379/0`` (:mod:`.cli`): the JSON, and exit 0 healthy, 1 degraded,
  2 unhealthy, 3 bad arguments.
- :func:`.wsgi.make_wsgi_app` and :func:`.asgi.make_asgi_app`: the JSON over HTTP, to mount in Flask,
  FastAPI or any framework (:mod:`.http`).
- :class:`.probe.Probe`: the answer in code; :class:`.config.HealthConfig`: the thresholds, from the
  ``DRAMATIQ_HEALTH_*`` variables (:func:`.config.from_environment`).
"""
