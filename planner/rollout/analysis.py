"""Judging a candidate from the runtime's own metrics: pure functions, no I/O, no clock.

Input is Prometheus text as the scoring runtime serves it on its probe port (``mlops_requests_total``
by version and status class, ``mlops_request_duration_seconds_bucket`` by version and bound). Two
scrapes make an interval; counters that went down mean the instance restarted, and the later
scrape counts from zero (Prometheus' ``increase()`` does the same). The p99 is interpolated within
its bucket exactly as ``histogram_quantile`` does. A verdict is one of pass, fail (one line naming
the metric and the values) or inconclusive (too few requests: hold, never promote on no data).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .spec import Analysis

REQUESTS = "mlops_requests_total"
BUCKETS = "mlops_request_duration_seconds_bucket"
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+([^ \t]+)(?:[ \t]+[^ \t]+)?\Z', re.DOTALL)
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*,?', re.DOTALL)
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True)
class VersionStats:
    """One version's cumulative figures at one scrape."""

    codes: Mapping[str, float] = field(default_factory=dict)            # "2xx" -> count
    buckets: Mapping[float, float] = field(default_factory=dict)        # upper bound -> cumulative count

    @property
    def requests(self) -> float:
        return sum(self.codes.values())


Scrape = Mapping[str, VersionStats]
"""Version label -> its figures."""


Instances = Mapping[str, VersionStats]
"""One version's figures per instance (the ``instance`` label a target adds to each pod's series; "" without one)."""


def parse_instances(text: str) -> dict[str, dict[str, VersionStats]]:
    """The two metric families per version and instance; other lines (comments, other metrics) are ignored.

    A target that concatenates several instances of a version (``SplitsTraffic.metrics``: one text
    per pod) labels each instance's series ``instance="..."``, so two scrapes are differenced per
    instance: a summed counter would drop when one pod is missing from a scrape, and the drop would
    read as a reset (the whole history counted as one interval). Series repeated within one
    instance are summed.

    Malformed lines are skipped rather than fatal: a scrape is evidence, and a half-written line
    must not be read as a verdict.
    """
    codes: dict[tuple[str, str], dict[str, float]] = {}
    buckets: dict[tuple[str, str], dict[float, float]] = {}
    for line in text.split("\n"):      # the format's only line end (splitlines() would cut labels)
        line = line.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match or match.group(1) not in (REQUESTS, BUCKETS):
            continue
        labels = _labels(match.group(2) or "")
        value = _float(match.group(3))
        version = labels.get("version")
        if version is None or value is None or value < 0 or math.isnan(value):
            continue
        key = (version, labels.get("instance", ""))
        if match.group(1) == REQUESTS and "code" in labels:
            mine = codes.setdefault(key, {})
            mine[labels["code"]] = mine.get(labels["code"], 0.0) + value
        elif match.group(1) == BUCKETS and "le" in labels:
            bound = _float(labels["le"])
            if bound is not None and not math.isnan(bound):
                series = buckets.setdefault(key, {})
                series[bound] = series.get(bound, 0.0) + value
    out: dict[str, dict[str, VersionStats]] = {}
    for version, instance in sorted(set(codes) | set(buckets)):
        out.setdefault(version, {})[instance] = VersionStats(codes.get((version, instance), {}),
                                                             buckets.get((version, instance), {}))
    return out


def total(instances: Instances) -> VersionStats:
    """The instances' figures summed, as Prometheus' ``sum by (version)`` would."""
    codes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for stats in instances.values():
        for k, v in stats.codes.items():
            codes[k] = codes.get(k, 0.0) + v
        for b, v in stats.buckets.items():
            buckets[b] = buckets.get(b, 0.0) + v
    return VersionStats(codes, buckets)


def parse_metrics(text: str) -> dict[str, VersionStats]:
    """Each version's figures, its instances summed (see ``parse_instances``)."""
    return {version: total(instances) for version, instances in parse_instances(text).items()}


def delta_instances(before: Instances, after: Instances) -> VersionStats:
    """What happened between two scrapes of one version's instances: each instance's own difference
    (its own reset detected on its own), summed. A named instance missing from either scrape counts
    nothing this interval (it did not answer, or its history is older than the interval); the
    unnamed one (a target with one instance per version) is counted whole when it first appears,
    since its series start with its first request."""
    return total({i: delta(before.get(i), stats) for i, stats in after.items() if i in before or i == ""})


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if not match:
            return {}
        out[match.group(1)] = re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], match.group(2))
        pos = match.end()
    return out


def _float(text: str) -> float | None:
    try:
        return float(text)   # accepts +Inf, -Inf, NaN as Prometheus writes them
    except ValueError:
        return None


def delta(before: VersionStats | None, after: VersionStats) -> VersionStats:
    """What happened between two scrapes of one version. A series that went down restarted: the
    later value is the increase (the instance counted from zero since)."""
    old_codes = before.codes if before else {}
    old_buckets = before.buckets if before else {}
    reset = any(after.codes.get(k, 0.0) < v for k, v in old_codes.items()) or \
        any(after.buckets.get(k, 0.0) < v for k, v in old_buckets.items())
    if reset:
        return after
    return VersionStats({k: v - old_codes.get(k, 0.0) for k, v in after.codes.items()},
                        {k: v - old_buckets.get(k, 0.0) for k, v in after.buckets.items()})


def error_rate(stats: VersionStats) -> float | None:
    """The 5xx share of answered requests; None with no requests."""
    total = stats.requests
    return stats.codes.get("5xx", 0.0) / total if total > 0 else None


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """``histogram_quantile(q, ...)`` over cumulative buckets (upper bound -> count), in seconds.

    Linear interpolation inside the bucket that holds the rank; the lowest bucket starts at 0; a
    rank in the +Inf bucket answers the highest finite bound. None with no observations.
    """
    if not buckets or math.inf not in buckets:
        return None
    bounds = sorted(buckets)
    counts = [buckets[b] for b in bounds]
    for i in range(1, len(counts)):          # cumulative counts never decrease (Prometheus' fix-up)
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if bounds[i] == math.inf:
        return bounds[-2] if len(bounds) > 1 else None
    lower = bounds[i - 1] if i > 0 else 0.0
    below = counts[i - 1] if i > 0 else 0.0
    inside = counts[i] - below
    if inside <= 0:
        return bounds[i]
    return lower + (bounds[i] - lower) * (rank - below) / inside


@dataclass(frozen=True)
class Verdict:
    """The result of one interval: ``pass``, ``fail`` (``reason`` names metric and values) or
    ``inconclusive`` (too few requests)."""

    result: str
    reason: str
    requests: int = 0

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    @property
    def failed(self) -> bool:
        return self.result == "fail"


def judge(policy: Analysis, candidate: VersionStats, stable: VersionStats | None = None) -> Verdict:
    """One interval's verdict from the candidate's (and the stable version's) deltas.

    ``stable`` None: no stable version serves alongside (a blue-green bake), so ``max_relative_p99``
    is not compared; a stable version with too few requests makes the interval inconclusive.
    """
    n = int(candidate.requests)
    if n < policy.min_requests:
        return Verdict("inconclusive", f"{n} requests, fewer than min_requests {policy.min_requests}: holding", n)
    rate = error_rate(candidate) or 0.0
    if policy.max_error_rate is not None and rate > policy.max_error_rate:
        return Verdict("fail", f"error rate {_pct(rate)} > max_error_rate {_pct(policy.max_error_rate)} "
                               f"({int(candidate.codes.get('5xx', 0))} of {n} requests answered 5xx)", n)
    p99 = quantile(0.99, candidate.buckets)
    if policy.max_p99_ms is not None and p99 is not None and p99 * 1000 > policy.max_p99_ms:
        return Verdict("fail", f"p99 {p99 * 1000:.0f}ms > max_p99_ms {policy.max_p99_ms:g} ({n} requests)", n)
    if policy.max_relative_p99 is not None and p99 is not None:
        base = quantile(0.99, stable.buckets) if stable is not None and stable.requests >= policy.min_requests \
            else None
        if base is None and stable is not None:
            return Verdict("inconclusive", "max_relative_p99: the stable version answered too few requests "
                                           "to compare with: holding", n)
        if base is not None and base > 0 and p99 / base > policy.max_relative_p99:
            return Verdict("fail", f"p99 {p99 * 1000:.0f}ms is {p99 / base:.2f}x stable's {base * 1000:.0f}ms > "
                                   f"max_relative_p99 {policy.max_relative_p99:g} ({n} requests)", n)
    shown = f"error rate {_pct(rate)}" + (f", p99 {p99 * 1000:.0f}ms" if p99 is not None else "")
    return Verdict("pass", f"{shown} over {n} requests", n)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2f}%".replace(".00%", "%")


@dataclass
class Tally:
    """Failed intervals so far against ``failure_limit``: the rollout fails when it is reached."""

    failure_limit: int
    failures: int = 0
    passes: int = 0
    last_failure: str = ""

    def add(self, verdict: Verdict) -> bool:
        """Count a verdict; True once the failure limit is reached."""
        if verdict.failed:
            self.failures += 1
            self.last_failure = verdict.reason
        elif verdict.passed:
            self.passes += 1
        return self.failures >= self.failure_limit
