"""OpenTelemetry set-up of the "+ OTel" rows: the SDK, spans batched to an exporter that
drops them (what a real exporter costs is not ours to measure), metrics aggregated in
memory (or, for the "spans only" rows, not recorded: the no-op meter provider)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def providers(metrics: bool = True) -> tuple[Any, Any]:
    """A tracer provider and a meter provider for one process (`metrics=False`: a meter
    provider that records nothing, for spans alone)."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Drop()))
    if not metrics:
        return tracer_provider, NoOpMeterProvider()
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return tracer_provider, meter_provider
