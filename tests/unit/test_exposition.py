"""Our exposition writer against prometheus_client's: the same families, the same bytes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import prometheus_client.metrics_core as reference_core
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

import gateway.runtime.exposition as ours
from gateway.runtime.exposition import CONTENT_TYPE, exposition_text, go_float

AWKWARD = 'door "east"\\1\nnext, 東門'


def families(lib: ModuleType) -> list[Any]:
    """Every shape the gateway's collector uses, built with ``lib``'s family classes."""
    counter = lib.CounterMetricFamily(
        "estate_gateway_readings", "Readings by device\\and type.\nSecond line.", labels=["t", "a"]
    )
    counter.add_metric(["temperature.body", "door-east-1"], 3)
    counter.add_metric([AWKWARD, ""], 1_234_567)
    gauge = lib.GaugeMetricFamily("estate_gateway_backlog", "Rows waiting.", labels=["lane"])
    gauge.add_metric(["alarm"], 0)
    gauge.add_metric(["routine"], 12.5)
    return [
        counter,
        lib.CounterMetricFamily("estate_gateway_syncs_total", "WAL syncs.", value=7),
        gauge,
        lib.GaugeMetricFamily("estate_gateway_start_time_seconds", "Start.", value=1.7954e9),
        lib.GaugeMetricFamily("estate_gateway_big", "Large and odd.", value=float("inf")),
        lib.GaugeMetricFamily("estate_gateway_empty", "No samples.", labels=["device"]),
        lib.HistogramMetricFamily(
            "estate_gateway_puback_latency_seconds",
            "Publish to PUBACK.",
            buckets=[("0.005", 1), ("0.05", 4), ("1.0", 9), ("+Inf", 10)],
            sum_value=2.25,
        ),
    ]


def reference_text(metrics: Iterable[Any]) -> bytes:
    class Collector:
        def collect(self) -> Iterable[Any]:
            return metrics

    registry = CollectorRegistry()
    registry.register(Collector())  # type: ignore[arg-type]
    return generate_latest(registry)


def test_the_same_bytes_as_generate_latest() -> None:
    assert exposition_text(families(ours)) == reference_text(families(reference_core))


def test_content_type_is_the_text_format_0_0_4() -> None:
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

    assert CONTENT_TYPE == CONTENT_TYPE_PLAIN_0_0_4


@given(st.floats(allow_nan=False) | st.integers(min_value=0, max_value=2**63))
def test_floats_print_as_prometheus_client_prints_them(value: float) -> None:
    from prometheus_client.utils import floatToGoString

    assert go_float(value) == floatToGoString(value)


def test_nan_and_negative_infinity() -> None:
    assert go_float(math.nan) == "NaN"
    assert go_float(-math.inf) == "-Inf"


def test_label_values_must_match_the_label_names() -> None:
    family = ours.GaugeMetricFamily("x", "y", labels=["a", "b"])
    with pytest.raises(ValueError):
        family.add_metric(["only one"], 1)
