"""Inside GitHub Actions, `mlops reconcile` also reports transitions as the commit status
``mlops/reconcile`` of GITHUB_SHA (through the real client, against the GitHub double on
127.0.0.1): failure, pending and success follow the cycle; steady cycles post nothing; the
description is one line of names and counts (no error text, no secret); a missing token or a
failing API never stops reconciling."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

import pytest
from memory_provider import STATE, MemoryProvider
from support import ROOT, make_project, memory_manifest, run_cli

from planner.project import Project
from providers import registry
from providers.base import ProviderError

sys.path.insert(0, str(ROOT / "tests" / "gitops"))
from github_double import Failure, GitHubDouble  # noqa: E402

SHA = "0123456789abcdef0123456789abcdef01234567"
SECRET = "hunter2-do-not-show"
MANIFEST = memory_manifest("demo")


class BreakableProvider(MemoryProvider):
    kind: ClassVar[str] = "memory"
    BROKEN: ClassVar[bool] = False

    def create(self, desired, events):
        if BreakableProvider.BROKEN:
            raise ProviderError(f"{desired.address}: node refused password={SECRET}")
        return super().create(desired, events)


@pytest.fixture(autouse=True)
def _provider():
    registry.register("memory", BreakableProvider)
    BreakableProvider.BROKEN = False
    yield
    registry.unregister("memory")
    STATE.clear()


@pytest.fixture
def github():
    with GitHubDouble() as double:
        yield double


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = make_project(tmp_path, MANIFEST)
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    return path


@pytest.fixture
def actions(monkeypatch, github):
    """The variables GitHub Actions sets, pointing the API at the double."""
    for name, value in {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": github.repository, "GITHUB_SHA": SHA,
                        "GITHUB_TOKEN": github.token, "GITHUB_API_URL": github.url}.items():
        monkeypatch.setenv(name, value)
    return github


def kill(manifest: Path, name: str) -> None:
    Project.load(manifest).providers["mem"].kill(name)


def reconcile(manifest: Path, *extra: str):
    return run_cli("reconcile", "--once", "--backoff", "0", *extra, "-f", str(manifest))


def posted(github: GitHubDouble) -> list[tuple[str, str]]:
    out = [(s["state"], s["description"]) for s in github.statuses.get(SHA, [])]
    github.statuses.clear()
    return out


def test_transitions_set_the_commit_status_and_steady_cycles_post_nothing(manifest: Path, actions):
    assert reconcile(manifest).code == 0
    assert posted(actions) == []                         # in sync from the start: no transition

    kill(manifest, "one-api")
    observed = reconcile(manifest)
    assert observed.code == 2
    [(state, description)] = posted(actions)
    assert state == "failure" and "one-api" in description and "1/2 in sync" in description

    assert reconcile(manifest).code == 2
    assert posted(actions) == []                         # still drifted: no news, no status

    healed = reconcile(manifest, "--mode", "heal")
    assert healed.code == 0, healed.err
    assert posted(actions) == [("success", "heal: 2/2 in sync")]
    calls = [c for c in actions.calls if "/statuses/" in c.path]
    assert {c.path for c in calls} == {f"/repos/{actions.repository}/statuses/{SHA}"}
    assert all(c.authorization == f"Bearer {actions.token}" and c.body["context"] == "mlops/reconcile"
               for c in calls)


def test_a_change_pending_from_git_is_a_pending_status(manifest: Path, actions):
    manifest.write_text(manifest.read_text().replace("port: 8002", "port: 8003"))
    assert reconcile(manifest).code == 2
    [(state, description)] = posted(actions)
    assert state == "pending" and "out of sync: two-api" in description


def test_a_failed_heal_is_a_failure_whose_description_holds_no_error_text(manifest: Path, actions):
    kill(manifest, "one-api")
    BreakableProvider.BROKEN = True
    result = reconcile(manifest, "--mode", "heal")
    assert result.code == 1
    [(state, description)] = posted(actions)
    assert state == "failure" and "heal failed: service.one-api" in description
    assert "\n" not in description and len(description) <= 140
    assert SECRET not in description and "refused" not in description
    assert actions.token not in result.out + result.err


def test_outside_github_actions_nothing_is_posted(manifest: Path, actions, monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS")
    kill(manifest, "one-api")
    assert reconcile(manifest).code == 2
    assert actions.calls == []


def test_no_commit_status_turns_it_off(manifest: Path, actions):
    kill(manifest, "one-api")
    assert reconcile(manifest, "--no-commit-status").code == 2
    assert actions.calls == []


def test_without_a_token_it_reconciles_and_says_why_once(manifest: Path, actions, monkeypatch):
    monkeypatch.delenv("GITHUB_TOKEN")
    kill(manifest, "one-api")
    result = reconcile(manifest, "--mode", "heal")
    assert result.code == 0, result.err
    [line] = [x for x in result.err.splitlines() if "commit status" in x]
    assert "GITHUB_TOKEN is not set" in line
    assert actions.calls == []


def test_a_failing_api_is_logged_and_never_stops_reconciling(manifest: Path, actions):
    actions.failures += [Failure("POST", f"/repos/{actions.repository}/statuses/", 401, message="Bad credentials")]
    kill(manifest, "one-api")
    result = reconcile(manifest, "--mode", "heal")
    assert result.code == 0, result.err
    [failed] = [x for x in result.out.splitlines() if '"notify_failed"' in x]
    assert "mlops/reconcile" in failed and "401" in failed
    assert actions.token not in result.out + result.err
    assert posted(actions) == []
