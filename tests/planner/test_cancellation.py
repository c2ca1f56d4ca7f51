"""One error tree: transient and permanent failures are ProviderErrors; a cancel stays a cancel,
whether it comes during a retry's backoff or while waiting for a target's lock."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import memory_provider
import pytest
from support import make_project

from planner.addresses import Address
from planner.apply import apply_plan
from planner.errors import CancelledError, ProviderError
from planner.planning import make_plan
from planner.project import Project
from planner.retrying import PermanentError, TransientError, call_with_retries
from providers import registry
from providers.base import as_events

API = Address("service", "one-api")
MANIFEST = (
    "version: 1\nproject: cancel\ntargets:\n  mem: {provider: flaky}\n"
    "models:\n  m: {path: model.txt}\nenvironments:\n  e: {python: \"3.11\"}\n"
    "services:\n  one-api: {models: [m], environment: e, source_dir: src, entry_script: score.py}\n"
)


class FlakyProvider(memory_provider.MemoryProvider):
    """Its API always answers 503: every create retries with backoff until it gives up or is cancelled."""

    kind = "flaky"
    backoff_started = threading.Event()

    @classmethod
    def schema(cls):
        target = {"type": "object", "properties": {"provider": {"const": "flaky"}}}
        return dataclasses.replace(super().schema(), target=target)

    def create(self, desired, events):
        events = as_events(events)

        def once():
            FlakyProvider.backoff_started.set()
            raise TransientError("HTTP 503: try again", retry_after=60)

        return call_with_retries(once, what="creating one-api", cancel=events.cancel)


@pytest.fixture
def flaky():
    registry.register("flaky", FlakyProvider)
    FlakyProvider.backoff_started.clear()
    yield FlakyProvider
    registry.unregister("flaky")
    memory_provider.STATE.clear()


def test_transient_and_permanent_failures_are_provider_errors_and_a_cancel_is_not():
    assert issubclass(TransientError, ProviderError) and issubclass(PermanentError, ProviderError)
    assert not issubclass(CancelledError, ProviderError)


def test_ctrl_c_during_a_retry_backoff_raises_cancelled():
    cancel = threading.Event()
    calls = []

    def once():
        calls.append(1)
        cancel.set()              # Ctrl-C arrives while the call waits for its retry
        raise TransientError("HTTP 429", retry_after=60)

    with pytest.raises(CancelledError, match="cancelled while waiting to retry"):
        call_with_retries(once, what="GET /x", cancel=cancel)
    assert calls == [1]


def test_apply_reports_a_change_cancelled_in_a_backoff_as_cancelled_not_failed(tmp_path: Path, flaky):
    path = make_project(tmp_path, MANIFEST)
    project = Project.load(path)
    desired, live = project.desired(), project.live()
    plan = make_plan(project, desired=desired, live=live)
    cancel = threading.Event()
    threading.Thread(target=lambda: FlakyProvider.backoff_started.wait(30) and cancel.set(), daemon=True).start()
    outcomes = apply_plan(project, plan, desired, live, cancel=cancel)
    service = next(o for o in outcomes if o.change.address == API)
    assert service.cancelled and not service.ok, service
    assert "failed" not in (service.error or ""), service.error
