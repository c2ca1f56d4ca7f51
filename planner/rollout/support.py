"""Validation of every service's ``rollout:`` block, placed at its line by the manifest loader.

Whether a target can split traffic is the provider class's capability (``SplitsTraffic``) and the
strategies it says it can run with the target's settings (``rollout_strategies``), so a third-party
kind opts in without the planner knowing its name.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from planner.plan import Change

from .spec import STRATEGIES, Rollout, parse

Manifest = Any
"""A ``planner.manifest.Manifest`` (not imported: the manifest loader imports this module)."""

Where = tuple[str | int, ...]


def strategies_of(variant: type, config: Mapping[str, Any]) -> frozenset[str]:
    """What a provider class can run with these target settings; blue_green only (the bake window)
    without ``SplitsTraffic``."""
    from providers.base import SplitsTraffic

    if issubclass(variant, SplitsTraffic):
        return frozenset(variant.rollout_strategies(config))
    return frozenset({"blue_green"})


def splitting_kinds(strategy: str = "canary") -> list[str]:
    """Installed target kinds whose provider (or one of its variants) splits traffic and runs ``strategy``
    (asked with default settings)."""
    from providers.registry import available

    kinds = []
    for kind, cls in sorted(available().items()):
        try:
            if any(strategy != "blue_green" and strategy in strategies_of(v, {}) for v in cls.variants()):
                kinds.append(kind)
        except Exception:   # a broken plugin is reported where its target is used
            continue
    return kinds


def _target_strategies(manifest: Manifest, target: str) -> tuple[frozenset[str], str] | None:
    """(the strategies it can run, kind) for a declared target; None if its kind is unknown (reported
    elsewhere). A target without ``SplitsTraffic`` runs blue_green only (the bake window)."""
    from providers.base import variant_of
    from providers.registry import available

    config = manifest.targets.get(target)
    kind = config.get("provider") if isinstance(config, Mapping) else None
    cls = available().get(kind) if isinstance(kind, str) else None
    if cls is None:
        return None
    try:
        return strategies_of(variant_of(cls, config), config), str(kind)
    except Exception:
        return None


def rollout_problems(manifest: Manifest) -> Iterator[tuple[Where, str]]:
    for name, service in manifest.section("services").items():
        block = service.get("rollout")
        if not isinstance(block, Mapping):
            continue
        base: Where = ("services", name, "rollout")
        policy, problems = parse(block)
        for p in problems:
            if p.shape:
                continue   # the JSON Schema said it already, at the same line
            yield (*base, *p.where), f"services.{name}.rollout.{'.'.join(map(str, p.where))}: {p.message}"
        strategy = block.get("strategy")
        mirrored = isinstance(block.get("mirror"), Mapping)
        target = manifest.service_target(service)
        if strategy not in STRATEGIES or not isinstance(target, str):
            continue
        found = _target_strategies(manifest, target)
        if found is None:
            continue
        able_here, kind = found
        if strategy not in able_here:
            what, where, needed = f"strategy {strategy}", ("strategy",), str(strategy)
        elif mirrored and "shadow" not in able_here:
            what, where, needed = "a mirror phase", ("mirror",), "shadow"
        else:
            continue
        able = ", ".join(splitting_kinds(needed)) or "none installed"
        splits_here = bool(able_here - {"blue_green"})
        does = "mirrors requests" if needed == "shadow" and splits_here else "splits traffic"
        yield (*base, *where), (f"services.{name}.rollout.{where[0]}: {what} needs a target that {does}; "
                                f"target {target!r} ({kind}) cannot (targets that can: {able}); "
                                "use strategy blue_green with analysis there")


def policy_of(service: Mapping[str, Any]) -> Rollout | None:
    """The parsed policy of a validated service, or None without a ``rollout:`` block."""
    block = service.get("rollout")
    if not isinstance(block, Mapping):
        return None
    policy, problems = parse(block)
    if problems:   # validation refused these already; reaching here is a bug
        raise ValueError(problems[0].message)
    return policy


def rollout_json(service: Mapping[str, Any]) -> dict[str, Any] | None:
    """The policy as plain data for a desired service's inputs (and from there the plan), or None."""
    policy = policy_of(service)
    return policy.to_json() if policy else None


def weight_warnings(changes: Sequence[Change], cannot_split: Collection[str]) -> list[str]:
    """Plan warnings for updates whose strategy splits traffic on a target that cannot (named in
    ``cannot_split``): say up front that such a rollout runs as a blue-green bake (never a canary
    silently ignored)."""
    out = []
    for change in changes:
        if change.after_target not in cannot_split:
            continue
        if change.rollout and Rollout.from_json(change.rollout).splits_traffic:
            out.append(f"{change.address}: target {change.after_target!r} does not set rollout weights or mirrors "
                       f"yet: this {change.rollout.get('strategy')} runs as a blue-green bake (the new version takes "
                       "every request while it is watched, and is rolled back on failure)")
    return out
