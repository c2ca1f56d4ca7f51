"""A target that labels what it runs with the desired fingerprint makes a difference seen by a fresh
reconciler (no memory: a new replica, a new CI checkout) a heal, not a pending change. Kubernetes
cuts label values at 63 characters, so the label holds the fingerprint's first 63 (it said
"pending" for every Deployment, whose fingerprint is 64 hex digits)."""

from __future__ import annotations

import pytest

from planner.addresses import Address
from planner.plan import Action, Change, Plan
from planner.reconcile import learn
from planner.reconcile_state import ReconcileMemory
from planner.resources import Live

WANT = "ab" * 32   # 64 hex digits, as the planner's sha256 fingerprints
ADDRESS = Address("service", "api")


def memory_after(label: str) -> ReconcileMemory:
    change = Change(ADDRESS, Action.UPDATE, before={"replicas": 0}, after={"replicas": 2}, before_target="k8s",
                    after_target="k8s", desired_fingerprint=WANT)
    plan = Plan((change,), manifest="ml.yaml", project="p", manifest_fingerprint="m", live_fingerprint="l")
    live = {ADDRESS: Live(ADDRESS, {"replicas": 0}, "Unhealthy", target="k8s", details={"fingerprint_label": label})}
    memory = ReconcileMemory()
    learn(memory, plan, live)
    return memory


@pytest.mark.parametrize("label", [WANT, WANT[:63]])
def test_a_label_with_the_whole_fingerprint_or_its_first_63_characters_counts_as_deployed(label: str):
    assert memory_after(label).resources["service.api"].deployed == WANT


@pytest.mark.parametrize("label", ["", WANT[:12], "cd" * 32, WANT[:62]])
def test_anything_else_is_not_seen_deployed(label: str):
    assert "service.api" not in memory_after(label).resources
