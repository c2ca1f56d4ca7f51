"""The GitOps loop end to end, run the way the workflow runs it.

A temporary git repository has `main` (already deployed) and a pull request branch. The
composite action's own steps run (action_runner) with the `GITHUB_*` variables and event payload
files Actions sets, against the GitHub double on 127.0.0.1, with the in-memory target so it is
fast: plan + sticky comment + artifact on the pull request, then fetch + apply on the merge.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import git
import pytest
from action_runner import ACTION, ActionRun, run_action
from github_double import GitHubDouble
from mlops_shim import install_shim
from support import make_project, memory_manifest

MANIFEST = memory_manifest("shop", {"shop-api": 8001})
TOKEN = "ghs_test_token_0123456789"


class Loop:
    """One repository, one GitHub double, and the helpers to play pull requests and merges."""

    def __init__(self, tmp: Path, bin_dir: Path, double: GitHubDouble):
        self.tmp, self.double = tmp, double
        self.dir = tmp / "repo"
        self.dir.mkdir()
        make_project(self.dir, MANIFEST)
        self.repo = git.Repo(self.dir)
        self.repo.git.branch("-M", "main")
        self.state = tmp / "memory-state.pickle"
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    "MLOPS_TEST_MEMORY_STATE": str(self.state)}
        for key in [k for k in self.env if k.startswith("GITHUB_")]:
            del self.env[key]

    def mlops(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["mlops", *args], cwd=self.dir, env=self.env, capture_output=True, text=True,
                              timeout=120)

    def commit(self, path: str, text: str, message: str) -> str:
        (self.dir / path).write_text(text)
        self.repo.git.add(path)
        self.repo.index.commit(message)
        return self.repo.head.commit.hexsha

    def run(self, event_name: str, event: Mapping[str, Any], sha: str, ref: str, **inputs: str) -> ActionRun:
        temp = self.tmp / f"runner-{event_name}-{sha[:8]}"
        temp.mkdir(exist_ok=True)
        event_path = temp / "event.json"
        event_path.write_text(json.dumps(event))
        self.summary = temp / "step-summary.md"
        env = {**self.env, "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": self.double.repository,
               "GITHUB_API_URL": self.double.url, "GITHUB_EVENT_NAME": event_name,
               "GITHUB_EVENT_PATH": str(event_path), "GITHUB_SHA": sha, "GITHUB_REF": ref,
               "GITHUB_STEP_SUMMARY": str(self.summary), "GITHUB_WORKSPACE": str(self.dir)}
        github = {"event_name": event_name, "event": event, "sha": sha, "ref": ref, "token": TOKEN,
                  "repository": self.double.repository, "action_path": str(ACTION.parent)}
        return run_action(inputs=inputs, github=github, env=env, cwd=self.dir, temp=temp, uses=self._uses,
                          skip={"Install mlops"})

    def _uses(self, action: str, with_: Mapping[str, str]) -> None:
        if action.startswith("actions/setup-python@"):
            return
        if action.startswith("actions/upload-artifact@"):
            path = Path(with_["path"])
            blob = io.BytesIO()
            with zipfile.ZipFile(blob, "w") as archive:
                archive.write(path, path.name)
            head = with_["name"].rsplit("-", 1)[1]
            self.double.add_artifact(with_["name"], blob.getvalue(), head_sha=head)
            return
        raise AssertionError(f"the test does not emulate {action}")

    def pull_request(self, number: int, branch: str) -> ActionRun:
        """Actions checks out refs/pull/N/merge: the branch merged into main, detached."""
        head = self.repo.commit(branch).hexsha
        base = self.repo.commit("main").hexsha
        self.repo.git.checkout("--detach", "main")
        self.repo.git.merge("--no-ff", "--no-edit", branch)
        merge = self.repo.head.commit.hexsha
        event = {"action": "synchronize", "number": number,
                 "pull_request": {"number": number, "head": {"sha": head, "ref": branch},
                                  "base": {"sha": base, "ref": "main"}},
                 "repository": {"full_name": self.double.repository, "default_branch": "main"}}
        try:
            return self.run("pull_request", event, merge, f"refs/pull/{number}/merge")
        finally:
            self.repo.git.checkout(branch)

    def merge(self, number: int, branch: str) -> ActionRun:
        head = self.repo.commit(branch).hexsha
        self.repo.git.checkout("main")
        self.repo.git.merge("--no-ff", "--no-edit", "-m", f"Merge pull request #{number}", branch)
        sha = self.repo.head.commit.hexsha
        self.double.pulls[sha] = [{"number": number, "merged_at": "2026-01-01T00:00:00Z", "head": {"sha": head}}]
        event = {"after": sha, "ref": "refs/heads/main",
                 "repository": {"full_name": self.double.repository, "default_branch": "main"}}
        return self.run("push", event, sha, "refs/heads/main")

    def plan_comments(self, number: int) -> list[str]:
        return [c["body"] for c in self.double.comments.get(number, []) if c["body"].startswith("<!-- mlops:plan")]

    def break_service(self, name: str) -> None:
        """Change the live service behind the tool's back (as a crash would)."""
        saved = pickle.loads(self.state.read_bytes())
        for services in saved["state"].values():
            if name in services:
                live = services[name]
                services[name] = type(live)(live.address, live.spec, "Failed", live.target, live.provider,
                                            live.details)
        self.state.write_bytes(pickle.dumps(saved))


@pytest.fixture
def loop(tmp_path: Path):
    with GitHubDouble(token=TOKEN) as double:
        lp = Loop(tmp_path, install_shim(tmp_path), double)
        deployed = lp.mlops("apply", "--auto-approve")
        assert deployed.returncode == 0, deployed.stderr
        yield lp


def ok(run: ActionRun) -> ActionRun:
    failed = [s for s in run.steps if s.code != 0]
    assert not failed, run.log
    return run


def test_pull_request_plan_comment_then_apply_on_merge(loop: Loop):
    loop.repo.git.checkout("-b", "faster-api")
    loop.commit("src/score.py", "import json\n\ndef init():\n    pass\n\ndef run(raw):\n    return json.loads(raw)\n",
                "score: no model prefix")
    first = ok(loop.pull_request(12, "faster-api"))
    assert first.outputs["plan"]["outputs"]["has-changes"] == "true"
    [comment] = loop.plan_comments(12)
    assert "**Plan: 0 to add, 1 to change, 0 to destroy.**" in comment
    assert "- `service.shop-api`: `src/score.py` changed" in comment
    assert TOKEN not in first.log

    # A second push updates the same comment: it now also explains the model change.
    loop.commit("model.txt", "v2\n", "model v2")
    ok(loop.pull_request(12, "faster-api"))
    [updated] = loop.plan_comments(12)
    assert "- `model.m`: `model.txt` changed: new version" in updated
    assert "model `m` changed" in updated
    assert len(loop.double.comments[12]) == 1
    assert sum(1 for c in loop.double.calls if c.method == "POST") == 1

    merged = ok(loop.merge(12, "faster-api"))
    assert "Fetched the plan reviewed on pull request #12" in merged.log
    assert "Applying the reviewed plan" in merged.log, merged.log
    assert "Apply complete! Resources: 0 added, 2 changed, 0 destroyed." in merged.log
    summary = loop.summary.read_text()
    assert "Applying the reviewed plan" in summary and "| `shop-api` | mem | Healthy | memory://shop-api |" in summary
    assert loop.mlops("plan", "--detailed-exitcode").returncode == 0


def test_stale_reviewed_plan_is_replanned_and_said(loop: Loop):
    loop.repo.git.checkout("-b", "bump")
    loop.commit("model.txt", "v3\n", "model v3")
    ok(loop.pull_request(3, "bump"))
    loop.break_service("shop-api")        # live state moves after the review
    merged = ok(loop.merge(3, "bump"))
    assert "could not be applied as reviewed" in merged.log
    assert "service.shop-api changed since the plan was made" in merged.log
    assert "Planned again" in loop.summary.read_text()
    assert loop.mlops("plan", "--detailed-exitcode").returncode == 0


def test_a_push_without_a_pull_request_plans_again(loop: Loop):
    sha = loop.commit("model.txt", "direct\n", "direct push")
    event = {"after": sha, "repository": {"full_name": loop.double.repository, "default_branch": "main"}}
    run = ok(loop.run("push", event, sha, "refs/heads/main"))
    assert "is not the merge of a pull request" in run.log
    assert "No reviewed plan was found" in run.log
    assert loop.mlops("plan", "--detailed-exitcode").returncode == 0


def test_apply_requires_a_clean_tree_on_the_branch(loop: Loop):
    (loop.dir / "notes.txt").write_text("scratch\n")
    dirty = loop.mlops("apply", "--auto-approve", "--require-clean")
    assert dirty.returncode == 1
    assert "--require-clean: the work tree has uncommitted changes (notes.txt)" in dirty.stderr
    (loop.dir / "notes.txt").unlink()
    loop.repo.git.checkout("-b", "side")
    loop.commit("model.txt", "side\n", "side change")
    elsewhere = loop.mlops("apply", "--auto-approve", "--require-clean", "--branch", "main")
    assert elsewhere.returncode == 1 and "is not on branch 'main'" in elsewhere.stderr
    assert loop.mlops("apply", "--auto-approve", "--require-clean", "--branch", "side").returncode == 0


def test_a_forbidden_comment_fails_the_step_with_one_clear_line(loop: Loop):
    from github_double import Failure

    loop.repo.git.checkout("-b", "fork")
    loop.commit("model.txt", "fork\n", "from a fork")
    loop.double.failures.append(Failure("POST", "/repos/acme/models/issues/8/comments", 403,
                                        message="Resource not accessible by integration"))
    run = loop.pull_request(8, "fork")
    failed = [s for s in run.steps if s.code != 0]
    assert [s.name for s in failed] == ["Comment the plan on the pull request"]
    assert failed[0].err.strip().splitlines() == [
        "Error: GitHub refused POST /repos/acme/models/issues/8/comments (403 Resource not accessible by "
        "integration): the token lacks permission; give the job `permissions: {pull-requests: write, "
        "actions: read}` (pull requests from forks only get a read-only token)"]
