"""Reading what really runs: registry entries and every target's services, targets in parallel.

Each live service keeps the provider that read it, so deleting or calling it never guesses a
kind or rebuilds a target's settings. Targets are read concurrently (bounded): a plan over 16
targets costs about one target's latency, not sixteen. Problems are never hidden: an
unreachable target fails the read with one line per target, and one address live on two targets
is reported (the first read does not silently win).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from providers.base import ensure_connected

from .addresses import Address
from .errors import MlopsError, TargetsUnreachable, Unreachable
from .resources import Live

READ_PARALLELISM = 8


@dataclass
class LiveState:
    """What the targets answered: one Live per address, who read it, and any address seen twice."""

    resources: dict[Address, Live] = field(default_factory=dict)
    readers: dict[Address, object] = field(default_factory=dict)
    duplicates: dict[Address, list[Live]] = field(default_factory=dict)

    def add(self, live: Live, reader: object | None) -> None:
        if live.address in self.resources:
            self.duplicates.setdefault(live.address, [self.resources[live.address]]).append(live)
            return
        self.resources[live.address] = live
        if reader is not None:
            self.readers[live.address] = reader

    def check_unique(self) -> None:
        """One line per address found on more than one target."""
        if not self.duplicates:
            return
        lines = []
        for address, found in sorted(self.duplicates.items()):
            where = ", ".join(f"{lv.target or '?'} ({lv.provider or '?'})" for lv in found)
            lines.append(f"{address} is live on {len(found)} targets ({where}); an interrupted move left a copy: "
                         f"remove the one that is not on its declared target (e.g. `mlops destroy --target "
                         f"{address}` on a manifest that declares that target), then plan again")
        raise MlopsError("\n".join(lines))


def read_live(
    registry_reads: list[Callable[[], list[Live]]],
    providers: Mapping[str, object],
    orphan_reads: list[Callable[[], list[tuple[object, Live]]]],
    *,
    parallelism: int = READ_PARALLELISM,
) -> LiveState:
    """Run every read at once (bounded); collect unreachable targets into one error."""

    def read_target(provider) -> list[Live]:
        ensure_connected(provider)
        return provider.read()

    state = LiveState()
    with ThreadPoolExecutor(max_workers=max(1, parallelism), thread_name_prefix="read") as pool:
        registry = [pool.submit(fn) for fn in registry_reads]
        targets = {name: pool.submit(read_target, p) for name, p in sorted(providers.items())}
        orphans = [pool.submit(fn) for fn in orphan_reads]
        for fut in registry:
            for live in fut.result():
                state.add(live, None)
        problems: list[str] = []
        for name, fut in targets.items():
            try:
                found = fut.result()
            except Unreachable as exc:
                problems.append(f"{providers[name].describe()} is unreachable: {exc}")
                continue
            except MlopsError as exc:
                problems.append(f"{providers[name].describe()} could not be read: {exc}")
                continue
            for live in found:
                state.add(live, providers[name])
        for fut in orphans:
            for reader, live in fut.result():
                if live.target in providers:
                    continue   # a declared target answered for itself already
                state.add(live, reader)
    if problems:
        raise TargetsUnreachable(problems)
    return state
