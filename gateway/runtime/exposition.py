"""The Prometheus text exposition format (version 0.0.4), written out for our own metrics.

The daemon used ``prometheus_client`` for this alone: building metric families
at scrape time and rendering them with ``generate_latest``. Importing that
package loads its HTTP server, WSGI, gzip and process-collector modules too,
about 1.3 MB resident in a daemon that idles near 45 MB (issue 8, "Memory").
These families keep the constructor and ``add_metric`` shapes of
``prometheus_client.metrics_core`` (counters get their ``_total`` suffix,
histograms ``_bucket``/``_count``/``_sum``), and ``exposition_text`` writes the bytes
``generate_latest`` writes for them (labels sorted, values as Go prints
floats); ``tests/unit/test_exposition.py`` compares the two byte for byte.
The ``status --live`` view still parses with ``prometheus_client.parser``.

Format: https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(slots=True)
class Metric:
    """One metric family: its name (without ``_total``), help text, type and samples."""

    name: str
    documentation: str
    type: str
    samples: list[Sample] = field(default_factory=list)


class _LabelledFamily(Metric):
    """A family of one sample per label set, named ``name`` + ``SUFFIX``."""

    TYPE: ClassVar[str] = ""
    SUFFIX: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        value: float | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        super().__init__(name.removesuffix(self.SUFFIX), documentation, self.TYPE)
        self._labelnames = tuple(labels or ())
        if value is not None:
            self.add_metric([], value)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        pairs = tuple(zip(self._labelnames, labels, strict=True))
        self.samples.append(Sample(self.name + self.SUFFIX, pairs, value))


class CounterMetricFamily(_LabelledFamily):
    """A counter: one ``{name}_total`` sample per label set."""

    TYPE = "counter"
    SUFFIX = "_total"


class GaugeMetricFamily(_LabelledFamily):
    """A gauge: one sample per label set."""

    TYPE = "gauge"


class HistogramMetricFamily(Metric):
    """A histogram without labels: cumulative ``(le, count)`` buckets ending in ``+Inf``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[tuple[str, float]],
        sum_value: float,
    ) -> None:
        super().__init__(name, documentation, "histogram")
        for bound, count in buckets:
            self.samples.append(Sample(name + "_bucket", (("le", bound),), count))
        self.samples.append(Sample(name + "_count", (), buckets[-1][1]))
        self.samples.append(Sample(name + "_sum", (), sum_value))


def exposition_text(families: Iterable[Metric]) -> bytes:
    """The exposition text of ``families``, in order."""
    out: list[str] = []
    for family in families:
        name = family.name + "_total" if family.type == "counter" else family.name
        out.append(f"# HELP {name} {_escape_help(family.documentation)}\n")
        out.append(f"# TYPE {name} {family.type}\n")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(sample.labels))
            braces = "{" + labels + "}" if labels else ""
            out.append(f"{sample.name}{braces} {go_float(sample.value)}\n")
    return "".join(out).encode("utf-8")


def go_float(value: float) -> str:
    """A float as Go's ``strconv`` prints it, which Prometheus expects (``+Inf``, ``1e+06``)."""
    number = float(value)
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if math.isnan(number):
        return "NaN"
    text = repr(number)
    dot = text.find(".")
    if number > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
