"""Figures apply measures itself: the sample request sent N times over an interval.

Used where the target reports no per-version metrics (the bake window on ACI, IoT Edge, a
rollout whose target only answers calls). Each answer counts by status class and latency in the
runtime's own histogram bounds, so the judge reads sampled and scraped figures alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from planner.core.events import Events

from .analysis import VersionStats

LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                  float("inf"))
"""The runtime's histogram bounds."""


def sample_calls(send: Callable[[], tuple[int, float]], count: int, seconds: float, events: Events) -> VersionStats:
    """Call ``send`` (-> status, seconds taken) ``count`` times spread evenly over ``seconds``.

    A status outside 100-599 (no answer) counts as a server error. Cancellation is checked
    before each call and the waits between calls end at once on cancel.
    """
    codes: dict[str, float] = {}
    buckets = dict.fromkeys(LATENCY_BOUNDS, 0.0)
    started = time.monotonic()
    gap = seconds / max(1, count)
    for i in range(count):
        events.check()
        status, took = send()
        cls = f"{status // 100}xx" if 100 <= status < 600 else "5xx"
        codes[cls] = codes.get(cls, 0.0) + 1
        for bound in LATENCY_BOUNDS:
            if took <= bound:
                buckets[bound] += 1
        events.sleep(max(0.0, started + gap * (i + 1) - time.monotonic()))
    return VersionStats(codes, buckets)
