"""Waiting for another runner's Lease stops at Ctrl-C (it ignored cancellation and waited lock_timeout_s)."""

from __future__ import annotations

import threading
from pathlib import Path

import k8s_fixtures
import pytest
from k8s_fixtures import make_provider

from planner.errors import CancelledError
from providers.kubernetes.lease import LeaseLock

api_double = k8s_fixtures.api_double


def test_waiting_for_a_held_lease_stops_when_cancelled(api_double, tmp_path: Path):
    provider = make_provider(api_double, tmp_path, project="waits")
    provider._ensure_namespace()
    first = LeaseLock(provider.cluster, "ml", "waits", "mlops apply (runner 1)", timeout_s=1, target=provider.target)
    cancel = threading.Event()
    with first.held():
        provider.config["lock_timeout_s"] = 3600
        waiting = provider.apply_lock("mlops apply (runner 2)", cancel)   # the target's lock, as apply takes it
        found: list[BaseException] = []

        def take() -> None:
            try:
                with waiting:
                    pass
            except BaseException as exc:   # noqa: BLE001 - what the waiter ended with is the result
                found.append(exc)

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        waiter.join(timeout=2)             # it is still waiting: the Lease is held for the hour
        assert waiter.is_alive() and not found
        cancel.set()
        waiter.join(timeout=30)            # a bound against a hang, not a timing assertion
        assert not waiter.is_alive(), "the wait for the Lease ignored the cancellation"
    assert len(found) == 1 and isinstance(found[0], CancelledError), found
    assert "cancelled while waiting for the cluster lock" in str(found[0]) and "runner 1" in str(found[0])
    holder = LeaseLock(provider.cluster, "ml", "waits", "x", timeout_s=3600)
    second = LeaseLock(provider.cluster, "ml", "waits", "y", timeout_s=3600)
    with holder.held(cancel), pytest.raises(CancelledError), second.held(cancel):   # cancelled: no wait at all
        pass
