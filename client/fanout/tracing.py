"""OpenTelemetry tracing, off unless FANOUT_OTEL names an exporter.

One run is one trace: the caller's `fanout.run` opens it, every gRPC call
carries it (the `opentelemetry-instrumentation-grpc` interceptors on both
sides), and each action's spec carries its parent's span context
(`ActionSpec.trace_parent`, W3C traceparent) into the worker that runs it, so
a child's action span hangs under the parent action that called it, however
many processes and machines lie between them.

FANOUT_OTEL:
  otlp        the OTLP/gRPC exporter, configured by the standard OTEL_EXPORTER_OTLP_* variables
  console     spans printed on stderr
  file:DIR    one JSON line per span in DIR/spans-<pid>.jsonl (tests, debugging)

The packages come with the `tracing` extra (pip install 'fanout[tracing]');
without them, or with FANOUT_OTEL unset, every function here does nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

log = logging.getLogger(__name__)

ENV = "FANOUT_OTEL"
_TRACER = "fanout"
_configured: str | None = None  # the service this process was set up as, once it is


def enabled() -> bool:
    return _configured is not None


def setup(service: str) -> bool:
    """Install a tracer provider and the gRPC instrumentation for this process, if FANOUT_OTEL asks for it.

    Idempotent; returns whether tracing is on. A process forked after it keeps what it
    inherited: the file exporter names its file by the writing process, and the OTLP
    batch processor restarts its thread after a fork."""
    global _configured
    exporter_name = os.environ.get(ENV, "")
    if not exporter_name or _configured is not None:
        return _configured is not None
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.grpc import (
            GrpcAioInstrumentorClient,
            GrpcAioInstrumentorServer,
            GrpcInstrumentorClient,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
    except ImportError:
        log.warning("%s is set but the tracing packages are missing: pip install 'fanout[tracing]'", ENV)
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter_name.startswith("file:"):
        # Duck-typed: the processor calls only export, shutdown and force_flush.
        exporter = cast("SpanExporter", _JsonLinesExporter(Path(exporter_name[5:])))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif exporter_name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("%s=otlp needs opentelemetry-exporter-otlp-proto-grpc: pip install 'fanout[tracing]'", ENV)
            return False
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        log.warning("%s=%r: expected otlp, console or file:DIR; tracing stays off", ENV, exporter_name)
        return False
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    GrpcInstrumentorClient().instrument()
    _configured = service
    return True


def flush() -> None:
    """Send what is buffered (before a worker exits)."""
    if _configured is None:
        return
    from opentelemetry import trace

    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if force_flush is not None:
        force_flush(5_000)


def span(name: str, traceparent: str = "", **attributes: str) -> contextlib.AbstractContextManager[None]:
    """A span, current inside the block; under `traceparent` (a W3C header value) when given."""
    if _configured is None:
        return _NO_SPAN  # every action enters one: when tracing is off it costs nothing
    return _span(name, traceparent, attributes)


_NO_SPAN = contextlib.nullcontext()


@contextlib.contextmanager
def _span(name: str, traceparent: str, attributes: dict[str, str]) -> Iterator[None]:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent}) if traceparent else None
    with trace.get_tracer(_TRACER).start_as_current_span(name, context=parent, attributes=attributes):
        yield


def current_traceparent() -> str:
    """The current span's context as a W3C traceparent value, for a child action's spec ("" when off)."""
    if _configured is None:
        return ""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")


class _JsonLinesExporter:
    """Each span as one JSON line in a file of this process's own (no two writers share a file)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self._directory.mkdir(parents=True, exist_ok=True)
        with open(self._directory / f"spans-{os.getpid()}.jsonl", "a") as out:
            for s in spans:
                out.write(json.dumps(_as_dict(s)) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _as_dict(s: Any) -> dict[str, Any]:
    return {
        "name": s.name,
        "service": s.resource.attributes.get("service.name", ""),
        "trace_id": format(s.context.trace_id, "032x"),
        "span_id": format(s.context.span_id, "016x"),
        "parent_id": format(s.parent.span_id, "016x") if s.parent else "",
        "attributes": dict(s.attributes or {}),
    }
