"""Several instances of one version: their series are summed, as ``sum by (version)`` would."""

from __future__ import annotations

import math

from planner.rollout.analysis import delta, error_rate, parse_metrics, quantile

TWO_INSTANCES = """\
# TYPE mlops_requests_total counter
mlops_requests_total{version="cand",code="2xx",instance="a"} 90
mlops_requests_total{version="cand",code="5xx",instance="a"} 10
mlops_requests_total{version="cand",code="2xx",instance="b"} 100
mlops_requests_total{version="stab",code="2xx"} 500
mlops_request_duration_seconds_bucket{version="cand",le="0.1",instance="a"} 100
mlops_request_duration_seconds_bucket{version="cand",le="+Inf",instance="a"} 100
mlops_request_duration_seconds_bucket{version="cand",le="0.1",instance="b"} 50
mlops_request_duration_seconds_bucket{version="cand",le="+Inf",instance="b"} 100
"""


def test_repeated_series_of_one_version_are_summed():
    stats = parse_metrics(TWO_INSTANCES)
    cand = stats["cand"]
    assert cand.codes == {"2xx": 190.0, "5xx": 10.0}
    assert cand.buckets == {0.1: 150.0, math.inf: 200.0}
    assert error_rate(cand) == 0.05
    assert quantile(0.99, cand.buckets) == 0.1          # the +Inf bucket answers the highest finite bound
    assert stats["stab"].requests == 500


def test_an_instance_that_restarted_counts_from_zero_in_the_sum():
    before = parse_metrics(TWO_INSTANCES)["cand"]
    after = parse_metrics(TWO_INSTANCES.replace('code="2xx",instance="b"} 100', 'code="2xx",instance="b"} 5'))["cand"]
    assert delta(before, after).requests == after.requests      # the sum went down: a reset, counted whole
