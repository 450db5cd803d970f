"""/metrics: the Metrics' families in the Prometheus text format, via prometheus_client.

Nothing is counted here: a custom collector turns `Metrics.families()` into metric
families at scrape time, so /metrics and /varz always show the same counters.
"""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)
from prometheus_client.exposition import CONTENT_TYPE_LATEST


def _families(families):
    for name, kind, text, samples in families:
        if kind == "histogram":
            family = HistogramMetricFamily(name, text)
            for _labels, histogram in samples:
                buckets = [(_bound(bound), count) for bound, count in histogram.cumulative()]
                family.add_metric([], buckets, histogram.sum)
            yield family
            continue
        labels = sorted(samples[0][0]) if samples else []
        if kind == "counter":
            # prometheus_client names a counter without `_total` and adds it itself.
            family = CounterMetricFamily(name.removesuffix("_total"), text, labels=labels)
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


def exposition(families):
    """The text exposition of `families` (as Metrics.families returns them)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families))
    return generate_latest(registry)


def render_metrics(metrics, facts):
    """(body, content type) of /metrics."""
    return exposition(metrics.families(facts)), CONTENT_TYPE_LATEST.encode("ascii")
