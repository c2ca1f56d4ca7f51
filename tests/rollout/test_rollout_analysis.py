"""The analysis is pure: properties over generated scrapes, plus the runtime's own exposition."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from planner.rollout.analysis import Tally, Verdict, VersionStats, delta, error_rate, judge, parse_metrics, quantile
from planner.rollout.spec import Analysis
from providers.runtime.metrics import BUCKETS, SharedMetrics

BOUNDS = (*BUCKETS, math.inf)
counts = st.lists(st.integers(0, 10_000), min_size=len(BOUNDS), max_size=len(BOUNDS))


def cumulative(per_bucket: list[int]) -> dict[float, float]:
    out, running = {}, 0
    for bound, n in zip(BOUNDS, per_bucket, strict=True):
        running += n
        out[bound] = float(running)
    return out


def exposition(version: str, codes: dict[str, int], per_bucket: list[int]) -> str:
    lines = ["# TYPE mlops_requests_total counter"]
    lines += [f'mlops_requests_total{{version="{version}",code="{c}"}} {n}' for c, n in codes.items()]
    for bound, n in cumulative(per_bucket).items():
        le = "+Inf" if bound == math.inf else repr(bound)
        lines.append(f'mlops_request_duration_seconds_bucket{{version="{version}",le="{le}"}} {int(n)}')
    return "\n".join(lines) + "\n"


def test_parses_what_the_runtime_serves():
    shared = SharedMetrics(2, 'fp"1\\x')
    one, two = shared.recorder(0), shared.recorder(1)
    for _ in range(7):
        one.record(200, 0.003)
    two.record(503, 0.2)
    two.record(404, 0.02)
    stats = parse_metrics(shared.render().decode())
    assert set(stats) == {'fp"1\\x'}                  # the label is unescaped back
    got = stats['fp"1\\x']
    assert got.codes["2xx"] == 7 and got.codes["5xx"] == 1 and got.codes["4xx"] == 1
    assert got.requests == 9
    assert got.buckets[math.inf] == 9 and got.buckets[0.0025] == 0 and got.buckets[0.005] == 7


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])   # a busy shared machine
@given(codes=st.dictionaries(st.sampled_from(["2xx", "4xx", "5xx"]), st.integers(0, 10**9)), per_bucket=counts,
       version=st.text(st.characters(codec="utf-8", exclude_characters="\r\x85\u2028\u2029"), max_size=20))
def test_parse_round_trips_any_version_label(codes, per_bucket, version):
    escaped = version.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    stats = parse_metrics("junk line\nother_metric 3\n" + exposition(escaped, codes, per_bucket))
    got = stats[version]
    assert dict(got.codes) == {c: float(n) for c, n in codes.items()}
    assert dict(got.buckets) == cumulative(per_bucket)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])   # a busy shared machine
@given(first=counts, second=counts, codes1=st.integers(0, 1000), codes2=st.integers(0, 1000))
def test_delta_is_the_increase_or_the_later_value_after_a_reset(first, second, codes1, codes2):
    before = VersionStats({"2xx": float(codes1)}, cumulative(first))
    after_grown = VersionStats({"2xx": float(codes1 + codes2)},
                               cumulative([a + b for a, b in zip(first, second, strict=True)]))
    d = delta(before, after_grown)
    assert d.codes["2xx"] == codes2
    assert dict(d.buckets) == cumulative(second)
    # a restart: counters start again below where they were
    assume(codes1 > 0)
    restarted = VersionStats({"2xx": float(codes1 - 1)}, cumulative(second))
    assert delta(before, restarted) == restarted


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])   # a busy shared machine
@given(per_bucket=counts, q=st.floats(0.01, 1.0))
def test_quantile_lies_in_the_bucket_holding_the_rank(per_bucket, q):
    buckets = cumulative(per_bucket)
    total = buckets[math.inf]
    value = quantile(q, buckets)
    if total == 0:
        assert value is None
        return
    assert value is not None
    rank = q * total
    holding = next(b for b in BOUNDS if buckets[b] >= rank)
    if holding == math.inf:
        assert value == BOUNDS[-2]
    else:
        index = BOUNDS.index(holding)
        lower = BOUNDS[index - 1] if index else 0.0
        assert lower - 1e-12 <= value <= holding + 1e-12


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])   # a busy shared machine
@given(per_bucket=counts, a=st.floats(0.01, 1.0), b=st.floats(0.01, 1.0))
def test_quantile_is_monotonic(per_bucket, a, b):
    buckets = cumulative(per_bucket)
    assume(buckets[math.inf] > 0)
    lo, hi = sorted((a, b))
    assert quantile(lo, buckets) <= quantile(hi, buckets) + 1e-12


def test_quantile_interpolates_like_histogram_quantile():
    # 100 observations: 50 in (0, 0.1], 50 in (0.1, 0.5]: p99 is 0.1 + 0.4 * 49/50
    buckets = {0.1: 50.0, 0.5: 100.0, math.inf: 100.0}
    assert math.isclose(quantile(0.99, buckets), 0.1 + 0.4 * (99 - 50) / 50)
    assert math.isclose(quantile(0.5, buckets), 0.1)
    assert quantile(0.99, {0.1: 0.0, math.inf: 0.0}) is None


POLICY = Analysis(interval=1.0, min_requests=50, max_error_rate=0.01, max_p99_ms=500, max_relative_p99=1.5,
                  failure_limit=2)


def stats(ok: int, errors: int, seconds: float) -> VersionStats:
    n = float(ok + errors)
    buckets = {b: (n if b >= seconds else 0.0) for b in BOUNDS}
    return VersionStats({"2xx": float(ok), "5xx": float(errors)}, buckets)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])   # a busy shared machine
@given(ok=st.integers(0, 2000), errors=st.integers(0, 2000))
def test_never_promotes_on_too_little_data_and_fails_exactly_above_the_error_limit(ok, errors):
    verdict = judge(POLICY, stats(ok, errors, 0.004), stats(100, 0, 0.004))
    n = ok + errors
    if n < POLICY.min_requests:
        assert verdict.result == "inconclusive"
    elif errors / n > 0.01:
        assert verdict.failed and "error rate" in verdict.reason and "max_error_rate 1%" in verdict.reason
    else:
        assert verdict.passed
    assert "\n" not in verdict.reason


def test_latency_limits_name_the_metric_and_the_values():
    slow = judge(POLICY, stats(100, 0, 1.0), stats(100, 0, 0.004))
    assert slow.failed and slow.reason.startswith("p99 ") and "max_p99_ms 500" in slow.reason
    relative = Analysis(interval=1.0, min_requests=50, max_relative_p99=1.5)
    worse = judge(relative, stats(100, 0, 0.05), stats(100, 0, 0.01))
    assert worse.failed and "x stable's" in worse.reason and "max_relative_p99 1.5" in worse.reason
    same = judge(relative, stats(100, 0, 0.01), stats(100, 0, 0.01))
    assert same.passed
    quiet_stable = judge(relative, stats(100, 0, 0.05), stats(3, 0, 0.01))
    assert quiet_stable.result == "inconclusive"
    assert judge(relative, stats(100, 0, 0.05), None).passed   # nothing to compare with: not judged on it


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])   # a busy shared machine
@given(verdicts=st.lists(st.sampled_from(["pass", "fail", "inconclusive"]), max_size=30), limit=st.integers(1, 5))
def test_the_tally_trips_at_exactly_failure_limit_failures(verdicts, limit):
    tally = Tally(limit)
    tripped_at = None
    for i, result in enumerate(verdicts):
        if tally.add(Verdict(result, result)) and tripped_at is None:
            tripped_at = i
    fails = [i for i, r in enumerate(verdicts) if r == "fail"]
    assert tripped_at == (fails[limit - 1] if len(fails) >= limit else None)


def test_error_rate_without_requests_is_unknown():
    assert error_rate(VersionStats()) is None
