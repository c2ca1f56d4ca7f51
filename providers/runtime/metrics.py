"""Per-version request metrics of one instance, in Prometheus text, summed over its workers.

What a rollout's analysis needs to compare two versions: scoring requests (``/score``) by status
class and a latency histogram, labelled with the version (the service's spec fingerprint, given
by the deployer as ``--revision`` / ``MLOPS_REVISION``). Served on the probe port only.

How the workers' figures meet: the supervisor maps one anonymous shared-memory block before it
forks (``mmap(-1)`` is ``MAP_SHARED``, so every worker sees the same pages) with one fixed-size
slot per worker. Each worker adds to its own slot only, from its event-loop thread, so there is
no lock and no system call on the hot path (a few float additions per request); whichever worker
answers ``GET /metrics`` reads every slot and sums. A replaced worker takes over its
predecessor's slot and keeps adding, so the counters never go back. Values are 8-byte doubles
(exact up to 2**53 requests), written whole, so a reader sees each one either before or after
an update; the count and the sum of one request may be one scrape apart, which Prometheus allows.
"""

from __future__ import annotations

import mmap
from bisect import bisect_left

BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
"""Upper bounds (seconds) of the latency histogram; one more bucket holds the rest (+Inf)."""
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_CLASS_AT = 0
_BUCKET_AT = len(CLASSES)
_SUM_AT = _BUCKET_AT + len(BUCKETS) + 1
_FORWARD_FAILED_AT = _SUM_AT + 1
_MIRROR_DROPPED_AT = _FORWARD_FAILED_AT + 1
SLOT_VALUES = _MIRROR_DROPPED_AT + 1
"""Doubles per worker slot: a count per status class, a count per bucket, the latency sum, and
the requests this (stable) version sent to a rollout's candidate that got no answer, and the
mirror copies dropped because too many were in flight."""
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class SharedMetrics:
    """The shared block: ``slots`` worker slots, created in the supervisor before any fork."""

    def __init__(self, slots: int, revision: str) -> None:
        self.slots = slots
        self.revision = revision
        self._memory = mmap.mmap(-1, max(slots, 1) * SLOT_VALUES * 8)
        self._values = memoryview(self._memory).cast("d")

    def recorder(self, slot: int) -> Recorder:
        """The writer of one worker's slot (the worker's own; never shared between two)."""
        if not 0 <= slot < self.slots:
            raise ValueError(f"metrics slot {slot} out of range 0..{self.slots - 1}")
        return Recorder(self._values, slot * SLOT_VALUES)

    def totals(self) -> list[float]:
        """Every slot summed: one slot's worth of values."""
        values = self._values
        sums = [0.0] * SLOT_VALUES
        for slot in range(self.slots):
            base = slot * SLOT_VALUES
            for i in range(SLOT_VALUES):
                sums[i] += values[base + i]
        return sums

    def render(self, candidate: str | None = None) -> bytes:
        """Prometheus text exposition (format 0.0.4) of the totals.

        With ``candidate`` (a rollout's candidate version this stable version splits requests
        with), the requests it sent there that got no answer are that version's 5xx: the client
        was answered by this version instead, and the analysis must still see the failure.
        """
        totals = self.totals()
        version = f'version="{_label(self.revision)}"'
        lines = [
            "# HELP mlops_requests_total Scoring requests (/score) answered, by status class.",
            "# TYPE mlops_requests_total counter",
        ]
        for i, name in enumerate(CLASSES):
            if name != "1xx" or totals[_CLASS_AT + i]:
                lines.append(f'mlops_requests_total{{{version},code="{name}"}} {_number(totals[_CLASS_AT + i])}')
        if candidate is not None:   # one family's samples stay together, as the format asks
            lines.append(f'mlops_requests_total{{version="{_label(candidate)}",code="5xx"}} '
                         f'{_number(totals[_FORWARD_FAILED_AT])}')
        lines += [
            "# HELP mlops_request_duration_seconds Scoring requests: time from arrival to the answer.",
            "# TYPE mlops_request_duration_seconds histogram",
        ]
        cumulative = 0.0
        for i, bound in enumerate((*BUCKETS, None)):
            cumulative += totals[_BUCKET_AT + i]
            le = "+Inf" if bound is None else repr(bound)
            lines.append(f'mlops_request_duration_seconds_bucket{{{version},le="{le}"}} {_number(cumulative)}')
        lines.append(f"mlops_request_duration_seconds_sum{{{version}}} {totals[_SUM_AT]!r}")
        lines.append(f"mlops_request_duration_seconds_count{{{version}}} {_number(cumulative)}")
        if candidate is not None:
            dropped = totals[_MIRROR_DROPPED_AT]
            lines += ["# HELP mlops_mirror_dropped_total Mirror copies not sent: too many in flight.",
                      "# TYPE mlops_mirror_dropped_total counter",
                      f'mlops_mirror_dropped_total{{version="{_label(candidate)}"}} {_number(dropped)}']
        return ("\n".join(lines) + "\n").encode()


class Recorder:
    """Adds one answered scoring request to a worker's slot (event-loop thread only)."""

    __slots__ = ("_values", "_base")

    def __init__(self, values: memoryview, base: int) -> None:
        self._values = values
        self._base = base

    def record(self, status: int, seconds: float) -> None:
        values, base = self._values, self._base
        cls = status // 100 - 1
        values[base + (cls if 0 <= cls < 5 else 4)] += 1
        values[base + _BUCKET_AT + bisect_left(BUCKETS, seconds)] += 1
        values[base + _SUM_AT] += seconds

    def forward_failed(self) -> None:
        """A request (or mirror copy) sent to the candidate got no answer."""
        self._values[self._base + _FORWARD_FAILED_AT] += 1

    def mirror_dropped(self) -> None:
        self._values[self._base + _MIRROR_DROPPED_AT] += 1

    def new_candidate(self) -> None:
        """Another candidate (or none): its failures count from zero (a counter reset to analysis)."""
        self._values[self._base + _FORWARD_FAILED_AT] = 0
        self._values[self._base + _MIRROR_DROPPED_AT] = 0


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _label(value: str) -> str:
    """A label value escaped as the exposition format asks (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
