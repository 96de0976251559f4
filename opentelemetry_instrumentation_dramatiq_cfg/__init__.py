"""OpenTelemetry instrumentation for Dramatiq (placeholder)."""
