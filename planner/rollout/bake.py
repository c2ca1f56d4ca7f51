"""The bake window: after an update, apply watches the new version and puts the old one back if it fails.

Works on every target: where the target reports a metrics address for the new version (the
runtime's ``/metrics`` on its probe port: local process and docker), the interval's figures are
the difference of two scrapes of the candidate's own counters, so real traffic is judged;
elsewhere apply sends the sample request ``min_requests`` times per interval and judges what it
saw (status class and latency of each answer). Too few requests is inconclusive: the window holds
until ``progress_deadline`` and is never passed on no data.

A failure (``failure_limit`` failed intervals, the deadline, Ctrl-C/SIGTERM) applies
``on_failure``: ``rollback`` re-applies the previous version (``previous.previous_resource``) and
raises ``RolledBack`` (its own exit code); ``pause`` leaves the candidate serving and raises
``RolloutPaused``. Either says, in one line, which metric failed with which values.
"""

from __future__ import annotations

import dataclasses
import http.client
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from planner.errors import CancelledError, MlopsError
from planner.events import Events
from planner.plan import Change
from planner.resources import Live, Resource, spec_fingerprint
from providers.base import ensure_connected

from .analysis import Instances, Tally, Verdict, VersionStats, delta_instances, judge, parse_instances
from .previous import NoPrevious, previous_resource
from .sampling import sample_calls
from .spec import Rollout


class RolloutFailed(MlopsError):
    """The candidate failed its analysis (or its deadline, or the user stopped it)."""


class RolledBack(RolloutFailed):
    """…and the previous version serves again."""


class RolloutPaused(RolloutFailed):
    """…and, as ``on_failure: pause`` asks, the candidate keeps serving for a person to decide."""


class RollbackFailed(RolloutFailed):
    """…and putting the previous version back failed too: the candidate still serves."""


def rollout_result(exc: RolloutFailed) -> str:
    """How a failed rollout ended, as apply's outcome records it."""
    if isinstance(exc, RolledBack):
        return "rolled_back"
    if isinstance(exc, RolloutPaused):
        return "paused"
    return "rollback_failed"


class Unreadable(MlopsError):
    """An interval the target could not measure (a failed scrape or health read): inconclusive, never a
    verdict; the next scrape's difference covers the gap and ``progress_deadline`` ends one that stays so."""


@dataclass
class Sampler:
    """Figures for one interval: a scrape of the candidate's metrics, or the sample request sent N times."""

    version: str
    metrics_url: str | None
    send: Callable[[], tuple[int, float]] | None
    per_interval: int
    _last: Instances | None = None

    def start(self) -> None:
        if self.metrics_url:
            try:
                self._last = self._scrape()
            except Unreadable:
                self._last = None   # the first interval takes the baseline (inconclusive)

    def interval(self, events: Events, seconds: float) -> VersionStats:
        """Wait one interval (sampling meanwhile when there is no metrics address); the interval's figures."""
        if self.metrics_url:
            events.sleep(seconds)
            now = self._scrape()
            last, self._last = self._last, now
            if last is None:
                raise Unreadable("no earlier scrape to compare with; measuring from now")
            return delta_instances(last, now)
        assert self.send is not None, "a sampler has a metrics address or a way to send"
        return sample_calls(self.send, self.per_interval, seconds, events)

    def _scrape(self) -> Instances:
        assert self.metrics_url
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as reply:   # noqa: S310 (target's own URL)
                text = reply.read(4 * 1024 * 1024).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            raise Unreadable(f"cannot read the new version's metrics at {self.metrics_url}: {exc}") from None
        return parse_instances(text).get(self.version, {})


def watch(policy: Rollout, sampler: Sampler, events: Events, *, clock: Callable[[], float] = time.monotonic) -> str:
    """Judge intervals until the window passes (returns a summary) or fails (raises RolloutFailed)."""
    analysis = policy.analysis
    window = policy.bake_seconds
    if analysis is None:   # no analysis: a plain hold, the candidate serving
        events.step(f"bake window: holding {window:g}s (no analysis configured)")
        events.sleep(window)
        return f"held {window:g}s"
    tally = Tally(analysis.failure_limit)
    started = clock()
    sampler.start()
    judged = 0
    while True:
        try:
            verdict: Verdict = judge(analysis, sampler.interval(events, analysis.interval), None)
        except Unreadable as exc:
            verdict = Verdict("inconclusive", f"{exc}: holding")
        judged += 1
        elapsed = clock() - started
        events.step(f"analysis {judged}: {verdict.result}: {verdict.reason}")
        if tally.add(verdict):
            raise RolloutFailed(f"analysis failed {tally.failures} of {judged} intervals "
                                f"(failure_limit {analysis.failure_limit}): {tally.last_failure}")
        if elapsed >= window and tally.passes > 0:
            return f"analysis {tally.passes}/{judged} intervals passed over {elapsed:.0f}s"
        if elapsed >= policy.progress_deadline:
            raise RolloutFailed(f"no interval had min_requests {analysis.min_requests} requests before "
                                f"progress_deadline {policy.progress_deadline:g}s ({judged} intervals inconclusive)"
                                if tally.passes == 0 else
                                f"progress_deadline {policy.progress_deadline:g}s passed before the bake window "
                                f"of {window:g}s")


def bake(project: Any, change: Change, desired: Resource, before: Live, after: Live, provider: Any,
         events: Events) -> None:
    """Watch the version just applied; on failure apply ``on_failure`` and raise (see module doc)."""
    policy = Rollout.from_json(change.rollout or {})
    if policy.splits_traffic:
        events.step(f"{provider.describe()} does not set rollout weights yet: the new version serves every "
                    f"request while it is watched ({policy.bake_seconds:g}s)")
    try:
        sampler = _sampler(provider, desired, after, policy)
        how = "its metrics" if sampler.metrics_url else "the sample request"
        events.step(f"bake window {policy.bake_seconds:g}s: watching the new version through {how}")
        summary = watch(policy, sampler, events)
    except CancelledError:
        reason = "the apply was cancelled during the bake window"
    except RolloutFailed as exc:
        reason = str(exc)
    else:
        events.step(f"promoted: {summary}")
        return
    _on_failure(project, policy, desired, before, after, provider, events, reason)


def _on_failure(project: Any, policy: Rollout, desired: Resource, before: Live, after: Live, provider: Any,
                events: Events, reason: str) -> None:
    name = desired.address
    if policy.on_failure == "pause":
        raise RolloutPaused(f"{name}: rollout paused ({reason}); the new version still serves: "
                            f"`mlops rollout abort {name.name}` puts the previous one back")
    events.step(f"rolling back: {reason}")
    quiet = Events(events.step, threading.Event())   # a cancelled apply still finishes its rollback
    try:
        previous = previous_resource(before, desired, state_dir=project.manifest.state_dir,
                                     root=project.manifest.root, store=project.store)
        project.store.fetch_models(previous.inputs.get("models") or {})
        _as_deployed_then(provider, before).update(previous, after, quiet)
    except (NoPrevious, MlopsError) as exc:
        raise RollbackFailed(f"{name}: ROLLBACK FAILED after {reason}: {exc}; the new version still serves") from None
    raise RolledBack(f"{name}: ROLLED BACK to the previous version: {reason}")


def _as_deployed_then(provider: Any, before: Live) -> Any:
    """A provider for the same target whose records name the commit the previous version came from
    (constructing one is free: no I/O), so the restored version's provenance is its own."""
    then = before.details.get("git")
    if not isinstance(then, dict) or not then.get("commit"):
        return provider
    context = dataclasses.replace(provider.context, git={**provider.context.git, **then})
    again = type(provider)(target=provider.target, config=provider.config, context=context)
    ensure_connected(again)
    return again


def _sampler(provider: Any, desired: Resource, live: Live, policy: Rollout) -> Sampler:
    analysis = policy.analysis
    per_interval = analysis.min_requests if analysis else 1
    url = live.details.get("metrics_url")
    if isinstance(url, str) and url:
        return Sampler(spec_fingerprint(desired.spec), url, None, per_interval)   # the runtime's version label
    sample = desired.inputs.get("sample_request")
    if sample is None:
        raise RolloutFailed(f"{desired.address}: {provider.describe()} reports no metrics address, and the "
                            "service has no sample_request to measure it with; add sample_request")

    def send() -> tuple[int, float]:
        started = time.monotonic()
        try:
            status, _, _ = provider.call(live, str(sample).encode(), timeout=30)
        except MlopsError:
            status = 599   # unreachable counts as a server error
        return status, time.monotonic() - started

    return Sampler(desired.fingerprint, None, send, per_interval)
