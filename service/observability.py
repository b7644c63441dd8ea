"""structlog JSON logs (readable on a terminal) and OpenTelemetry tracing from OTEL_* variables."""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import sys
import time
from urllib.parse import quote

import msgspec
import structlog

from service.config import Config, configured_secrets


_encoder = msgspec.json.Encoder(enc_hook=str)
FLUSH_EVERY = 0.2   # seconds: the most a log line waits in the buffer (and what a kill -9 can lose)


def _dumps(obj, **_) -> bytes:
    return _encoder.encode(obj)


class BufferedLines:
    """A structlog logger writing JSON lines to a buffer, flushed when it is 64 KiB or
    FLUSH_EVERY old (checked on each line and by `flush_periodically`), and at exit.
    One write system call per request was a tenth of the service's CPU."""

    def __init__(self, fd: int):
        self._fd = fd
        self._buffer = bytearray()
        self._since = 0.0

    def msg(self, line: bytes) -> None:
        if not self._buffer:
            self._since = time.monotonic()
        self._buffer += line
        self._buffer += b"\n"
        if len(self._buffer) >= 65536 or time.monotonic() - self._since >= FLUSH_EVERY:
            self.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg

    def flush(self) -> None:
        while self._buffer:
            try:
                written = os.write(self._fd, self._buffer)
            except BlockingIOError:
                return
            del self._buffer[:written]


_lines: BufferedLines | None = None


async def flush_periodically() -> None:
    """Lines written just before a quiet spell must not wait for the next one."""
    import asyncio

    while True:
        await asyncio.sleep(FLUSH_EVERY)
        flush_logs()


def flush_logs() -> None:
    """Write out the buffered log lines now: what is printed next must come after them."""
    if _lines is not None:
        _lines.flush()


_second = -1
_second_text = ""


def _timestamp(_, __, event: dict) -> dict:
    """ISO 8601 UTC with milliseconds; the date part is formatted once a second, not per line."""
    global _second, _second_text
    now = time.time()
    second = int(now)
    if second != _second:
        _second, _second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    event["timestamp"] = f"{_second_text}.{int((now - second) * 1000):03d}Z"
    return event


# --- secrets are redacted from every log line ---------------------------------------------------
# Text that reaches a log line is often not ours: a provider's error message may quote the key it was
# sent, an exception may carry a URL with credentials. So the finished line is redacted, whatever
# wrote it: secrets of known shapes, and the values of the secrets this process was configured with.

_SHAPES = [
    (r"tl-[A-Za-z0-9_-]{16,}", "tl-[redacted]"),                         # Threadline API keys
    (r"whsec_[A-Za-z0-9+/=]{16,}", "whsec_[redacted]"),                   # webhook signing secrets
    (r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", "[redacted JWT]"),  # OIDC bearer tokens
    (r"\b((?i:bearer|basic))(\s+)[A-Za-z0-9._~+/=-]{8,}", r"\1\2[redacted]"),  # credentials in a header
    (r"://([^/\s:@\"']+):[^@\s/\"']+@", r"://\1:[redacted]@"),              # passwords in URLs
]
class Redactor:
    def __init__(self, values: set[str] = frozenset()):
        forms = {form for v in values for form in (v, quote(v, safe=""), json.dumps(v)[1:-1])}
        literal = sorted(forms, key=len, reverse=True)    # the longest form first when one contains another
        self._shapes = [(re.compile(p), r) for p, r in _SHAPES]
        self._literal = re.compile("|".join(map(re.escape, literal))) if literal else None
        self._any = re.compile("|".join([p for p, _ in _SHAPES] + [re.escape(v) for v in literal]))
        self._any_bytes = re.compile(self._any.pattern.encode())   # JSON lines are bytes: no decode per line

    def __call__(self, text: str) -> str:
        if not self._any.search(text):      # the common case: one search, no copy
            return text
        if self._literal is not None:
            text = self._literal.sub("[redacted]", text)
        for pattern, replacement in self._shapes:
            text = pattern.sub(replacement, text)
        return text

    def processor(self, _, __, line):
        """The last structlog processor: the rendered line, redacted."""
        if isinstance(line, bytes):
            return self(line.decode("utf-8", "replace")).encode() if self._any_bytes.search(line) else line
        return self(line)


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, redact: Redactor):
        super().__init__(fmt)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


def configure_logging(fmt: str = "auto") -> None:
    global _lines
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    redact = Redactor(configured_secrets())
    processors = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level]
    if console:
        processors += [structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.dev.ConsoleRenderer(),
                       redact.processor]
        factory = structlog.PrintLoggerFactory(sys.stderr)
    else:
        processors += [_timestamp, structlog.processors.format_exc_info,
                       structlog.processors.JSONRenderer(serializer=_dumps), redact.processor]
        sys.stderr.flush()
        _lines = BufferedLines(sys.stderr.fileno())
        atexit.register(_lines.flush)
        factory = lambda *_: _lines  # noqa: E731
    structlog.configure(processors=processors, logger_factory=factory, cache_logger_on_first_use=True)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter("%(name)s %(levelname)s %(message)s", redact))


_tracing = False


def configure_tracing(config: Config) -> None:
    """Spans for requests and appends, exported as the OTEL_* variables say (when they send spans
    anywhere: `Config.tracing`). Must run before the aiohttp app is created."""
    global _tracing
    if not config.tracing:
        return
    from opentelemetry import trace
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    class RedactingSpans(SpanProcessor):
        """Spans are redacted as log lines are: a request's URL attributes would otherwise carry an
        EventSource stream's `?api_key=`. Runs first, while the span can still be changed."""

        def __init__(self, redact: Redactor):
            self._redact = redact

        def on_start(self, span, parent_context=None) -> None:
            for name, value in list((span.attributes or {}).items()):
                if isinstance(value, str):
                    clean = self._redact(value)
                    if clean is not value:
                        span.set_attribute(name, clean)

    provider = TracerProvider(resource=Resource.create({"service.name": config.otel_service_name}))
    provider.add_span_processor(RedactingSpans(Redactor(configured_secrets())))
    if config.otel_traces_exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AioHttpServerInstrumentor().instrument()
    _tracing = True


def current_trace_id() -> str | None:
    """The active span's trace id (None without tracing)."""
    if _tracing:
        from opentelemetry import trace
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            return format(ctx.trace_id, "032x")
    return None


def client_trace_id(traceparent: str | None) -> str | None:
    """The trace id of a caller's W3C `traceparent`, if it is well formed."""
    if traceparent and len(traceparent) >= 55 and traceparent[2] == "-":
        trace_id = traceparent[3:35]
        if all(c in "0123456789abcdef" for c in trace_id) and trace_id != "0" * 32:
            return trace_id
    return None
