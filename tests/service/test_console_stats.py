"""The console's summary of the Prometheus histograms: quantiles as histogram_quantile computes them."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram

from service.api.console import histogram, quantile, summary
from service.metrics import collected


def test_quantiles_interpolate_within_buckets_like_prometheus():
    reg = CollectorRegistry()
    h = Histogram("t_seconds", "t", ["route"], buckets=(1, 2, 4), registry=reg)
    for v in (0.5, 1.5, 1.5, 3.0):
        h.labels("a").observe(v)
    h.labels("b").observe(10)  # +Inf bucket
    fams = collected(reg)  # read once, as the console does
    buckets, count, total = histogram(fams, "t_seconds")
    assert buckets == [(1.0, 1.0), (2.0, 3.0), (4.0, 4.0), (math.inf, 5.0)] and count == 5 and total == 16.5
    assert quantile(buckets, 0.5) == 1 + (2.5 - 1) / 2  # rank 2.5 in (1, 2]
    assert quantile(buckets, 0.99) == 4.0  # in +Inf: the highest finite bound
    assert quantile([], 0.5) is None
    only_a = summary(fams, "t_seconds", route="a")
    assert only_a["count"] == 4 and only_a["mean"] == 6.5 / 4 and only_a["p50"] == 1.5
