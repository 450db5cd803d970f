"""/metrics: the Metrics' families in the Prometheus text format, via prometheus_client.

Nothing is counted here: a custom collector turns `Metrics.families()` into metric
families at scrape time, so /metrics and /varz always show the same counters.
"""

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from health_manager.metrics import HealthFacts, Metrics

# (name, kind, help text, [(labels, value)]), as Metrics.families gives them.
Family = tuple[str, str, str, list[tuple[dict[str, Any], Any]]]


def _families(families):
    for name, kind, text, samples in families:
        if kind == "histogram":
            histograms = HistogramMetricFamily(name, text)
            for _labels, histogram in samples:
                buckets = [(_bound(bound), count) for bound, count in histogram.cumulative()]
                histograms.add_metric([], buckets, histogram.sum)
            yield histograms
            continue
        labels = sorted(samples[0][0]) if samples else []
        if kind == "counter":
            # prometheus_client names a counter without `_total` and adds it itself.
            family: CounterMetricFamily | GaugeMetricFamily = CounterMetricFamily(
                name.removesuffix("_total"), text, labels=labels)
        else:
            family = GaugeMetricFamily(name, text, labels=labels)
        for sample_labels, value in samples:
            family.add_metric([str(sample_labels[label]) for label in labels], value)
        yield family


def _bound(bound):
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _Collector:
    def __init__(self, families):
        self._families = families

    def collect(self):
        return _families(self._families)


def exposition(families: list[Family]) -> bytes:
    """The text exposition of `families` (as Metrics.families returns them)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families))
    return generate_latest(registry)


def render_metrics(metrics: "Metrics", facts: "HealthFacts") -> tuple[bytes, bytes]:
    """(body, content type) of /metrics."""
    return exposition(metrics.families(facts)), CONTENT_TYPE_LATEST.encode("ascii")
