"""A service's ``rollout:`` block as frozen data, and the rules the JSON Schema cannot say.

The schema checks shapes; here are the relations (weights increasing, a mirror only up to 50%, a
step list only for a canary) and the conversion of ``30s``/``2m`` and ``1%`` into numbers. Every
problem is one ``(where, message)`` pair that the manifest loader turns into ``file:line:col``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STRATEGIES = ("canary", "blue_green", "shadow")
SPLITTING = frozenset({"canary", "shadow"})
"""Strategies that need the target to split or copy requests between two versions."""
ON_FAILURE = ("rollback", "pause")
MAX_MIRROR_PERCENT = 50
"""Azure ML's limit, kept: mirroring more than half the traffic doubles the load for little gain."""
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)\Z")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PERCENT = re.compile(r"^([0-9]+(?:\.[0-9]+)?) ?%\Z")

DEFAULT_INTERVAL = 30.0
DEFAULT_MIN_REQUESTS = 20
DEFAULT_FAILURE_LIMIT = 1
DEFAULT_HOLD = 60.0
DEFAULT_PROGRESS_DEADLINE = 600.0


@dataclass(frozen=True)
class Step:
    weight: float        # percent of requests to the candidate, (0, 100]
    hold: float          # seconds


@dataclass(frozen=True)
class Mirror:
    percent: float       # percent of requests copied to the candidate, (0, 50]
    hold: float


@dataclass(frozen=True)
class Analysis:
    interval: float
    min_requests: int
    max_error_rate: float | None = None       # a fraction: 0.01 is 1%
    max_p99_ms: float | None = None
    max_relative_p99: float | None = None
    failure_limit: int = DEFAULT_FAILURE_LIMIT


@dataclass(frozen=True)
class Rollout:
    strategy: str
    steps: tuple[Step, ...] = ()
    mirror: Mirror | None = None
    analysis: Analysis | None = None
    on_failure: str = "rollback"
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE

    @property
    def splits_traffic(self) -> bool:
        return self.strategy in SPLITTING or self.mirror is not None

    @property
    def bake_seconds(self) -> float:
        """How long apply watches the new version: every hold, in order (the mirror phase first)."""
        return (self.mirror.hold if self.mirror else 0.0) + sum(s.hold for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        """Plain data for the plan file (what the plan showed is what apply runs)."""
        out: dict[str, Any] = {"strategy": self.strategy, "on_failure": self.on_failure,
                               "progress_deadline": self.progress_deadline,
                               "steps": [{"weight": s.weight, "hold": s.hold} for s in self.steps]}
        if self.mirror:
            out["mirror"] = {"percent": self.mirror.percent, "hold": self.mirror.hold}
        if self.analysis:
            a = self.analysis
            out["analysis"] = {"interval": a.interval, "min_requests": a.min_requests,
                               "max_error_rate": a.max_error_rate, "max_p99_ms": a.max_p99_ms,
                               "max_relative_p99": a.max_relative_p99, "failure_limit": a.failure_limit}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rollout:
        mirror = data.get("mirror")
        analysis = data.get("analysis")
        return cls(
            strategy=str(data["strategy"]),
            steps=tuple(Step(float(s["weight"]), float(s["hold"])) for s in data.get("steps", ())),
            mirror=Mirror(float(mirror["percent"]), float(mirror["hold"])) if mirror else None,
            analysis=Analysis(**analysis) if analysis else None,
            on_failure=str(data.get("on_failure", "rollback")),
            progress_deadline=float(data.get("progress_deadline", DEFAULT_PROGRESS_DEADLINE)),
        )


def kept(policy: Mapping[str, Any] | None) -> Rollout | None:
    """A policy as a target keeps it (``RolloutState.policy``), or None when there is none or it is damaged:
    a hand-edited annotation, label or route file must not crash a plan; the manifest's policy serves."""
    if not policy:
        return None
    try:
        found = Rollout.from_json(policy)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    numbers = [*(n for s in found.steps for n in (s.weight, s.hold)), found.progress_deadline,
               *((found.mirror.percent, found.mirror.hold) if found.mirror else ())]
    if not all(math.isfinite(n) and n >= 0 for n in numbers) or any(s.weight > 100 for s in found.steps):
        return None
    a = found.analysis
    if a is not None and not (isinstance(a.failure_limit, int) and isinstance(a.min_requests, int)
                              and isinstance(a.interval, int | float) and math.isfinite(a.interval) and a.interval > 0):
        return None
    return found


class RolloutProblem(ValueError):
    """One problem of a rollout block: where (a path below ``rollout``) and a one-line message."""

    def __init__(self, where: tuple[str | int, ...], message: str, *, shape: bool = False):
        super().__init__(message)
        self.where = where
        self.message = message
        self.shape = shape   # a type or range the JSON Schema reports too


def seconds(value: Any) -> float | None:
    """``30s`` / ``2m`` / ``1.5h`` / ``250ms`` -> seconds; a bare number is seconds; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if 0 <= value < float("inf") else None
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match:
            return float(match.group(1)) * _UNIT[match.group(2)]
    return None


def fraction(value: Any) -> float | None:
    """``1%`` or ``1`` (both percent) -> 0.01; None if neither or outside 0..100."""
    if isinstance(value, bool):
        return None
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and (match := _PERCENT.match(value.strip())):
        number = float(match.group(1))
    if number is None or not 0 <= number <= 100:
        return None
    return number / 100


def parse(block: Mapping[str, Any]) -> tuple[Rollout | None, list[RolloutProblem]]:
    """The policy, or None with every problem found (never just the first)."""
    problems: list[RolloutProblem] = []

    def problem(where: tuple[str | int, ...], message: str, *, shape: bool = False) -> None:
        problems.append(RolloutProblem(where, message, shape=shape))

    strategy = block.get("strategy")
    if strategy not in STRATEGIES:
        problem(("strategy",), f"strategy must be one of {', '.join(STRATEGIES)}", shape=True)
        return None, problems
    for where, message, seen in _shapes(block):
        problem(where, message, shape=seen)
    if problems:
        return None, problems

    def duration(where: tuple[str | int, ...], value: Any, default: float) -> float:
        if value is None:
            return default
        found = seconds(value)
        if found is None:
            problem(where, f"{value!r} is not a duration (like 30s, 2m, 1h)", shape=_schema_sees(value))
            return default
        return found

    steps: list[Step] = []
    raw_steps = block.get("steps") or []
    if strategy == "canary" and not raw_steps:
        problem(("strategy",), "a canary needs `steps` (e.g. [{weight: 10, hold: 2m}, {weight: 50, hold: 5m}])")
    if strategy == "shadow" and raw_steps:
        problem(("steps",), "a shadow rollout never moves traffic; remove `steps` (its hold is `mirror.hold`)")
    if strategy == "blue_green" and (len(raw_steps) > 1 or any(
            not isinstance(s, Mapping) or s.get("weight") != 100 for s in raw_steps)):
        problem(("steps",), "blue_green moves all traffic at once: give at most one step, "
                "{weight: 100, hold: 5m} (the hold is its bake window)")
    previous = 0.0
    for i, raw in enumerate(raw_steps if strategy != "shadow" else []):
        weight = raw.get("weight") if isinstance(raw, Mapping) else None
        if not _is_number(weight) or not 0 < weight <= 100:
            problem(("steps", i, "weight"), f"weight {weight!r} must be a percentage in (0, 100]",
                    shape=_schema_sees(weight))
            continue
        if weight <= previous:
            problem(("steps", i, "weight"), f"weight {weight:g} must be greater than the previous step's {previous:g}"
                    " (weights increase towards 100)")
        previous = max(previous, float(weight))
        steps.append(Step(float(weight), duration(("steps", i, "hold"), raw.get("hold"), DEFAULT_HOLD)))
    if strategy == "blue_green" and not steps:
        steps = [Step(100.0, DEFAULT_HOLD)]

    mirror: Mirror | None = None
    raw_mirror = block.get("mirror")
    if strategy == "shadow" and not isinstance(raw_mirror, Mapping):
        problem(("strategy",), "a shadow rollout needs `mirror: {percent: 20, hold: 5m}`")
    if isinstance(raw_mirror, Mapping):
        percent = raw_mirror.get("percent")
        if not _is_number(percent) or not 0 < percent <= MAX_MIRROR_PERCENT:
            problem(("mirror", "percent"), f"mirror percent {percent!r} must be in (0, {MAX_MIRROR_PERCENT}]",
                    shape=_schema_sees(percent))
        else:
            mirror = Mirror(float(percent), duration(("mirror", "hold"), raw_mirror.get("hold"), DEFAULT_HOLD))

    analysis: Analysis | None = None
    raw_analysis = block.get("analysis")
    if isinstance(raw_analysis, Mapping):
        rate = raw_analysis.get("max_error_rate")
        max_error_rate = None if rate is None else fraction(rate)
        if rate is not None and max_error_rate is None:
            schema_sees = _schema_sees(rate) and not (isinstance(rate, str) and _PERCENT.match(rate.strip()))
            problem(("analysis", "max_error_rate"), f"max_error_rate {rate!r} must be a percentage from 0 to 100, "
                    "like 1% or 0.5", shape=schema_sees)
        limits = [raw_analysis.get(k) for k in ("max_error_rate", "max_p99_ms", "max_relative_p99")]
        if all(v is None for v in limits):
            problem(("analysis",), "analysis needs at least one of max_error_rate, max_p99_ms, max_relative_p99")
        relative = raw_analysis.get("max_relative_p99")
        if relative is not None and strategy == "blue_green":
            problem(("analysis", "max_relative_p99"), "max_relative_p99 compares with the stable version, which "
                    "serves nothing during a blue_green bake; use max_p99_ms")
        interval = duration(("analysis", "interval"), raw_analysis.get("interval"), DEFAULT_INTERVAL)
        if interval <= 0:
            problem(("analysis", "interval"), "interval must be longer than 0s")
        analysis = Analysis(
            interval=interval,
            min_requests=int(_given(raw_analysis, "min_requests", DEFAULT_MIN_REQUESTS)),
            max_error_rate=max_error_rate,
            max_p99_ms=_number(raw_analysis.get("max_p99_ms")),
            max_relative_p99=_number(relative),
            failure_limit=int(_given(raw_analysis, "failure_limit", DEFAULT_FAILURE_LIMIT)),
        )
        holds = [s.hold for s in steps] + ([mirror.hold] if mirror else [])
        if interval > 0 and holds and max(holds) < interval:
            problem(("analysis", "interval"), f"interval {_shown(interval)} is longer than every hold "
                    f"({_shown(max(holds))}): no interval would ever be judged")

    on_failure = block.get("on_failure", "rollback")
    if on_failure not in ON_FAILURE:
        problem(("on_failure",), f"on_failure must be one of {', '.join(ON_FAILURE)}", shape=True)
    deadline = duration(("progress_deadline",), block.get("progress_deadline"), DEFAULT_PROGRESS_DEADLINE)
    if problems:
        return None, problems
    return Rollout(strategy=strategy, steps=tuple(steps), mirror=mirror, analysis=analysis,
                   on_failure=str(on_failure), progress_deadline=deadline), []


def _given(data: Mapping[str, Any], key: str, default: Any) -> Any:
    """``data[key]`` unless absent or null (``key:`` with nothing after it in YAML)."""
    value = data.get(key)
    return default if value is None else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value   # not NaN


def _schema_sees(value: Any) -> bool:
    """Whether the JSON Schema reports a bad ``value`` itself: a wrong type or a finite number out of
    range. NaN and infinity pass its range checks (every comparison with NaN is false), so they are ours."""
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def _shapes(block: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str, bool]]:
    """Wrong types and non-finite numbers; the relations are not judged then.
    Each with whether the JSON Schema reports it already (see ``_schema_sees``)."""
    out: list[tuple[tuple[str | int, ...], str, bool]] = []
    steps = block.get("steps")
    if steps is not None and (not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps)):
        out.append((("steps",), "steps must be a list of {weight, hold}", True))
    for key in ("mirror", "analysis"):
        if block.get(key) is not None and not isinstance(block.get(key), Mapping):
            out.append(((key,), f"{key} must be a mapping", True))
    analysis = block.get("analysis")
    if isinstance(analysis, Mapping):
        for key in ("min_requests", "failure_limit"):
            value = analysis.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                out.append((("analysis", key), f"{key} must be a whole number of at least 1", True))
        for key in ("max_p99_ms", "max_relative_p99"):
            value = analysis.get(key)
            if value is not None and (not _is_number(value) or not 0 < value < math.inf):
                out.append((("analysis", key), f"{key} {value!r} must be a number above 0", _schema_sees(value)))
    return out


def _number(value: Any) -> float | None:
    return None if value is None or isinstance(value, bool) else float(value)


def _shown(secs: float) -> str:
    """Seconds as a manifest would write them: ``90s`` -> ``90s``, ``120`` -> ``2m``."""
    if secs >= 60 and secs % 60 == 0:
        return f"{secs / 60:g}m"
    return f"{secs:g}s"


def describe(rollout: Rollout) -> str:
    """One line for plans: ``rollout canary 10% (2m) -> 50% (5m) -> 100%, analysis every 30s``."""
    parts: list[str] = []
    if rollout.mirror:
        parts.append(f"mirror {rollout.mirror.percent:g}% ({_shown(rollout.mirror.hold)})")
    if rollout.strategy == "canary":
        parts += [f"{s.weight:g}% ({_shown(s.hold)})" for s in rollout.steps]
        if not rollout.steps or rollout.steps[-1].weight < 100:
            parts.append("100%")
    elif rollout.strategy == "blue_green":
        parts.append(f"100% (bake {_shown(rollout.steps[0].hold)})" if rollout.steps else "100%")
    text = f"rollout {rollout.strategy} " + " -> ".join(parts)
    if rollout.analysis:
        text += f", analysis every {_shown(rollout.analysis.interval)}"
    if rollout.on_failure == "pause":
        text += ", pause on failure"
    return text
