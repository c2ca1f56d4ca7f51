"""The sticky plan comment and the reviewed-plan download, against a GitHub double on 127.0.0.1."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from github_double import Failure, GitHubDouble

from planner.github import ActionsContext, GitHub, GitHubError, fetch_reviewed_plan, upsert_comments
from planner.render_markdown import marker

TOKEN = "test-token-123"


@pytest.fixture
def double():
    with GitHubDouble(token=TOKEN, page_size=5) as d:
        yield d


def client(double: GitHubDouble, sleeps: list[float] | None = None, token: str = TOKEN) -> GitHub:
    record = sleeps if sleeps is not None else []
    return GitHub(double.url, double.repository, token, sleep=record.append)


def body(text: str, manifest: str = "ml.yaml", part: int = 1) -> str:
    return f"{marker(manifest, part)}\n{text}\n"


def test_first_run_creates_and_second_updates_the_same_comment(double: GitHubDouble):
    # Enough other comments that ours is past the first page: pagination must be followed.
    for i in range(12):
        double.add_comment(7, f"looks good {i}")
    gh = client(double)
    first = upsert_comments(gh, 7, "ml.yaml", [body("plan one")])
    assert [(p.action, p.part) for p in first] == [("created", 1)]
    second = upsert_comments(gh, 7, "ml.yaml", [body("plan two")])
    assert [(p.action, p.comment_id) for p in second] == [("updated", first[0].comment_id)]
    ours = [c for c in double.comments[7] if c["body"].startswith("<!-- mlops:plan")]
    assert len(ours) == 1 and ours[0]["body"] == body("plan two")
    assert len(double.comments[7]) == 13
    pages = [c.path for c in double.calls if c.method == "GET"]
    assert any("page=3" in p for p in pages), pages
    # Every API call carried the token; nothing else about it is visible.
    assert all(c.authorization == f"Bearer {TOKEN}" for c in double.calls)


def test_unchanged_plan_is_not_rewritten(double: GitHubDouble):
    gh = client(double)
    upsert_comments(gh, 7, "ml.yaml", [body("same")])
    again = upsert_comments(gh, 7, "ml.yaml", [body("same")])
    assert [p.action for p in again] == ["unchanged"]
    assert [c.method for c in double.calls].count("PATCH") == 0


def test_one_sticky_comment_per_manifest(double: GitHubDouble):
    gh = client(double)
    upsert_comments(gh, 7, "ml.yaml", [body("a")])
    upsert_comments(gh, 7, "prod/ml.yaml", [body("b", "prod/ml.yaml")])
    upsert_comments(gh, 7, "ml.yaml", [body("a2")])
    bodies = sorted(c["body"] for c in double.comments[7])
    assert bodies == sorted([body("a2"), body("b", "prod/ml.yaml")])


def test_a_shorter_plan_removes_the_parts_it_no_longer_needs(double: GitHubDouble):
    gh = client(double)
    created = upsert_comments(gh, 7, "ml.yaml", [body("1", part=1), body("2", part=2), body("3", part=3)])
    assert [p.action for p in created] == ["created"] * 3
    shorter = upsert_comments(gh, 7, "ml.yaml", [body("only", part=1)])
    assert [(p.part, p.action) for p in shorter] == [(1, "updated"), (2, "deleted"), (3, "deleted")]
    assert [c["body"] for c in double.comments[7]] == [body("only")]


def test_502_then_200_is_retried(double: GitHubDouble):
    double.failures.append(Failure("POST", "/repos/acme/models/issues/7/comments", 502, message="Server Error"))
    sleeps: list[float] = []
    posted = upsert_comments(client(double, sleeps), 7, "ml.yaml", [body("x")])
    assert [p.action for p in posted] == ["created"]
    assert len(double.comments[7]) == 1 and len(sleeps) == 1


def test_retry_after_is_honoured(double: GitHubDouble):
    double.failures.append(Failure("GET", "/repos/acme/models/issues/7/comments", 429, {"Retry-After": "3"}))
    double.failures.append(Failure("GET", "/repos/acme/models/issues/7/comments", 403,
                                   {"Retry-After": "2"}, "You have exceeded a secondary rate limit"))
    sleeps: list[float] = []
    upsert_comments(client(double, sleeps), 7, "ml.yaml", [body("x")])
    assert sleeps == [3.0, 2.0]


def test_persistent_5xx_gives_up_with_a_clear_error(double: GitHubDouble):
    for _ in range(5):
        double.failures.append(Failure("GET", "/repos/acme/models/issues/7/comments", 503))
    with pytest.raises(GitHubError, match=r"GET /repos/acme/models/issues/7/comments failed after 5 attempts"):
        upsert_comments(client(double), 7, "ml.yaml", [body("x")])


def test_403_is_a_clear_error_naming_the_permission(double: GitHubDouble):
    double.failures.append(Failure("POST", "/repos/acme/models/issues/7/comments", 403,
                                   message="Resource not accessible by integration"))
    with pytest.raises(GitHubError) as info:
        upsert_comments(client(double), 7, "ml.yaml", [body("x")])
    text = str(info.value)
    assert "403 Resource not accessible by integration" in text and "pull-requests: write" in text
    assert "\n" not in text and TOKEN not in text


def test_401_and_404_are_clear_errors(double: GitHubDouble):
    with pytest.raises(GitHubError, match="rejected the token.*401 Bad credentials"):
        upsert_comments(client(double, token="wrong-token"), 7, "ml.yaml", [body("x")])
    gh = GitHub(double.url, "acme/missing", TOKEN, sleep=lambda s: None)
    with pytest.raises(GitHubError, match="has no GET /repos/acme/missing/issues/7/comments .404 Not Found"):
        upsert_comments(gh, 7, "ml.yaml", [body("x")])


def test_context_from_the_actions_environment(tmp_path: Path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 42, "head": {"sha": "abc"}}}))
    ctx = ActionsContext.from_env({"GITHUB_REPOSITORY": "acme/models", "GITHUB_TOKEN": TOKEN,
                                   "GITHUB_EVENT_PATH": str(event), "GITHUB_API_URL": "http://127.0.0.1:1/",
                                   "GITHUB_EVENT_NAME": "pull_request"})
    assert (ctx.pr_number, ctx.api_url, ctx.repository) == (42, "http://127.0.0.1:1", "acme/models")
    assert TOKEN not in repr(ctx)
    with pytest.raises(GitHubError, match="GITHUB_TOKEN is not set"):
        ActionsContext.from_env({"GITHUB_REPOSITORY": "acme/models"})
    with pytest.raises(GitHubError, match="GITHUB_REPOSITORY"):
        ActionsContext.from_env({"GITHUB_TOKEN": TOKEN})


def _zip(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(name, data)
    return out.getvalue()


def test_reviewed_plan_is_found_from_the_merge_commit(double: GitHubDouble):
    double.pulls["merge1"] = [{"number": 9, "merged_at": "2026-01-01T00:00:00Z", "head": {"sha": "head2"}}]
    double.add_artifact("mlops-plan-ml.yaml-head1", _zip("plan.json", b'{"old": true}'), head_sha="head1")
    double.add_artifact("mlops-plan-ml.yaml-head2", _zip("plan.json", b'{"reviewed": true}'), head_sha="head2")
    found = fetch_reviewed_plan(client(double), "merge1", "mlops-plan-ml.yaml-")
    assert not isinstance(found, str)
    assert (found.number, found.head_sha, found.plan) == (9, "head2", b'{"reviewed": true}')
    # The storage request (after the redirect) carried no token: the double refuses one.
    storage = [c for c in double.calls if c.path.startswith("/storage/")]
    assert storage and all(c.authorization is None for c in storage)


def test_no_reviewed_plan_says_why(double: GitHubDouble):
    assert "is not the merge of a pull request" in fetch_reviewed_plan(client(double), "direct", "p-")
    double.pulls["m"] = [{"number": 3, "merged_at": "x", "head": {"sha": "h"}}]
    assert "has no artifact p-h" in fetch_reviewed_plan(client(double), "m", "p-")
