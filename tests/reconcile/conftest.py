"""Reconcile tests decide themselves whether they run "inside GitHub Actions": the suite's own CI
job sets GITHUB_ACTIONS=true, and a reconciler there would try to set a commit status on it."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _not_in_github_actions(monkeypatch):
    for name in ("GITHUB_ACTIONS", "GITHUB_TOKEN", "GITHUB_SHA", "GITHUB_REPOSITORY", "GITHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
