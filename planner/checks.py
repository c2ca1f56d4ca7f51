"""What a provider answered must describe what it was asked to do: checked before apply trusts it.

Its own module so both apply and the rollout driver (which apply calls) check answers the same way.
"""

from __future__ import annotations

from .core.errors import MlopsError
from .core.plan import changed_paths
from .core.resources import Live, Resource, spec_fingerprint

__all__ = ["ProviderBug", "check_returned"]


class ProviderBug(MlopsError):
    """A provider answered something that cannot be true of what it was asked to do."""


def check_returned(provider: object, verb: str, desired: Resource, live: object) -> Live:
    """What ``create``/``update`` returned must describe what was asked: that service, on that target,
    running that spec (one of its versions at least). Anything else is a provider bug, said in words."""
    problems = []
    want = spec_fingerprint(desired.spec)
    if not isinstance(live, Live):
        problems.append(f"returned {type(live).__name__} instead of the service's live state")
    else:
        if live.address != desired.address:
            problems.append(f"returned the live state of {live.address}")
        if live.target != desired.target:
            problems.append(f"says it runs on target {live.target!r}, not {desired.target!r}")
        if spec_fingerprint(live.spec) != want:
            paths = changed_paths(live.spec, desired.spec) or ["(its whole spec)"]
            shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
            problems.append(f"reports a spec that differs from the one asked for at {shown}")
        if not live.versions:
            problems.append("reports no running version")
        elif all(v.spec_fingerprint != want for v in live.versions):
            problems.append(f"reports {len(live.versions)} running version(s), none of them with the spec asked for")
    if problems:
        cls = type(provider)
        where = provider.describe() if hasattr(provider, "describe") else cls.__name__
        raise ProviderBug(f"{desired.address}: provider bug in {where} ({cls.__module__}.{cls.__qualname__}): "
                          f"{verb} {'; '.join(problems)}. What runs may have changed anyway: `mlops plan` reads it "
                          "again; report this to the provider's maintainers")
    return live  # type: ignore[return-value]
