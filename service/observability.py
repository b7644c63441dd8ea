"""structlog JSON logs (readable on a terminal) and OpenTelemetry tracing from OTEL_* variables."""

from __future__ import annotations

import logging
import os
import sys

import msgspec
import structlog


_encoder = msgspec.json.Encoder(enc_hook=str)


def _dumps(obj, **_) -> str:
    return _encoder.encode(obj).decode()


def configure_logging(fmt: str = "auto") -> None:
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer(serializer=_dumps)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")


_tracing = False


def tracing_configured() -> bool:
    """Tracing costs a quarter of a request's CPU, so it is on only when spans go somewhere."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "")
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or exporter in ("otlp", "console"))


def configure_tracing() -> None:
    """Spans for requests and appends, exported as the OTEL_* variables say. Must run before the
    aiohttp app is created."""
    global _tracing
    if not tracing_configured():
        return
    from opentelemetry import trace
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    os.environ.setdefault("OTEL_SERVICE_NAME", "threadline")
    provider = TracerProvider(resource=Resource.create())
    if os.environ.get("OTEL_TRACES_EXPORTER") == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AioHttpServerInstrumentor().instrument()
    _tracing = True


def current_trace_id(traceparent: str | None = None) -> str | None:
    """The active span's trace id; without tracing, the caller's W3C `traceparent` trace id."""
    if _tracing:
        from opentelemetry import trace
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            return format(ctx.trace_id, "032x")
    if traceparent and len(traceparent) >= 55 and traceparent[2] == "-":
        trace_id = traceparent[3:35]
        if all(c in "0123456789abcdef" for c in trace_id) and trace_id != "0" * 32:
            return trace_id
    return None
