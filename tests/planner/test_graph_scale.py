"""The linear dependency graph and the heap scheduler give the same edges and the same start
order as the quadratic originals they replaced (kept here as the reference)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from planner.addresses import Address
from planner.graph import edges, referenced
from planner.plan import Action, Change


def reference_edges(changes: list[Change]) -> dict[Address, set[Address]]:
    """The pre-0.2 implementation: every deletion compared with every change."""
    by_address = {c.address: c for c in changes}
    waits: dict[Address, set[Address]] = {c.address: set() for c in changes}
    for c in changes:
        if c.action in (Action.NOOP, Action.DELETE):
            continue
        waits[c.address].update(d for d in c.depends_on if d in by_address)
    for c in changes:
        if c.action is not Action.DELETE:
            continue
        for other in changes:
            if other.address != c.address and c.address in referenced(other.before) | referenced(other.after):
                waits[c.address].add(other.address)
    return waits


def reference_order(waits: dict[Address, set[Address]], parallelism: int) -> list[Address]:
    """The old scheduler's start order with changes finishing in start order (rescan all pending)."""
    pending = {a: set(w) for a, w in waits.items()}
    order: list[Address] = []
    while pending:
        batch = sorted(a for a, w in pending.items() if not w)[:parallelism]
        assert batch, f"dependency cycle among {sorted(pending)}"
        for a in batch:
            del pending[a]
            order.append(a)
        for a in batch:
            for w in pending.values():
                w.discard(a)
    return order


def heap_order(waits: dict[Address, set[Address]], parallelism: int) -> list[Address]:
    import heapq

    dependents: dict[Address, set[Address]] = {a: set() for a in waits}
    for a, ws in waits.items():
        for w in ws:
            dependents[w].add(a)
    pending = {a: set(w) for a, w in waits.items()}
    ready = [a for a, w in pending.items() if not w]
    heapq.heapify(ready)
    order: list[Address] = []
    while ready:
        batch = [heapq.heappop(ready) for _ in range(min(parallelism, len(ready)))]
        for a in batch:
            del pending[a]
            order.append(a)
        for a in batch:
            for d in dependents[a]:
                pending[d].discard(a)
                if not pending[d]:
                    heapq.heappush(ready, d)
    return order


@st.composite
def plans(draw) -> list[Change]:
    models = [f"m{i}" for i in range(draw(st.integers(1, 4)))]
    envs = [f"e{i}" for i in range(draw(st.integers(1, 3)))]
    changes = []
    kept: dict[str, list[str]] = {"model": [], "environment": []}   # what a desired service may use
    for kind, names in (("model", models), ("environment", envs)):
        for name in names:
            action = draw(st.sampled_from([Action.CREATE, Action.UPDATE, Action.DELETE, Action.NOOP]))
            changes.append(Change(Address(kind, name), action, None, None))
            if action is not Action.DELETE:
                kept[kind].append(name)
    for i in range(draw(st.integers(0, 12))):
        def spec(ms: list[str], es: list[str]) -> dict:
            return {"models": [f"{m}:1@x" for m in draw(st.lists(st.sampled_from(ms), max_size=2, unique=True))]
                    if ms else [], "environment": f"{draw(st.sampled_from(es))}@x" if es else ""}
        can_desire = bool(kept["environment"])
        action = draw(st.sampled_from(list(Action) if can_desire else [Action.DELETE]))
        before = spec(models, envs) if action is not Action.CREATE else None
        after = spec(kept["model"], kept["environment"]) if action is not Action.DELETE else None
        deps = tuple(sorted({Address("model", m.split(":")[0]) for m in (after or {}).get("models", [])}
                            | ({Address("environment", after["environment"].split("@")[0])}
                               if after and after["environment"] else set())))
        changes.append(Change(Address("service", f"s{i:02d}"), action, before, after, depends_on=deps))
    return changes


@settings(max_examples=300, deadline=None)
@given(changes=plans(), parallelism=st.integers(1, 5))
def test_same_edges_and_order_as_the_reference(changes: list[Change], parallelism: int):
    waits = edges(changes)
    assert waits == reference_edges(changes)
    assert heap_order(waits, parallelism) == reference_order(waits, parallelism)
