"""The GitHub REST calls the GitOps loop needs: the sticky plan comment and the PR's plan artifact.

Plain ``urllib`` (no extra dependency): a handful of JSON requests. Transient failures (429, 5xx,
a 403 that carries Retry-After, connection errors) are retried with ``tenacity``, honouring
Retry-After; nothing else is retried. 401/403/404 become one clear line that says what to fix.
The token goes only into the Authorization header, never into a message, and never to a host
other than the API's (pagination links and redirects to storage are checked or stripped).
"""

from __future__ import annotations

import io
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from . import __version__
from .render_markdown import parse_part
from .retrying import PermanentError, TransientError, call_with_retries
from .retrying import retry_after as _retry_after

DEFAULT_API_URL = "https://api.github.com"


class GitHubError(PermanentError):
    """GitHub refused a request in a way that retrying cannot fix."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    data: Any


@dataclass(frozen=True)
class ActionsContext:
    """Where we run, as GitHub Actions describes it in the environment and the event payload."""

    api_url: str
    repository: str
    token: str = field(repr=False)
    event_name: str = ""
    pr_number: int | None = None
    sha: str | None = None
    event: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ActionsContext:
        repository = env.get("GITHUB_REPOSITORY", "")
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
            raise GitHubError("GITHUB_REPOSITORY is not set to OWNER/REPO (set by GitHub Actions; "
                              "outside Actions pass --repo OWNER/REPO)")
        token = env.get("GITHUB_TOKEN", "")
        if not token:
            raise GitHubError("GITHUB_TOKEN is not set: add `env: GITHUB_TOKEN: ${{ github.token }}` to the step")
        event: dict[str, Any] = {}
        path = env.get("GITHUB_EVENT_PATH")
        if path:
            try:
                with open(path, encoding="utf-8") as fh:
                    event = json.load(fh)
            except (OSError, ValueError) as exc:
                raise GitHubError(f"GITHUB_EVENT_PATH={path}: cannot read the event payload ({exc})") from None
        number = (event.get("pull_request") or {}).get("number") or (event.get("issue") or {}).get("number")
        return cls(api_url=(env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/"), repository=repository,
                   token=token, event_name=env.get("GITHUB_EVENT_NAME", ""),
                   pr_number=int(number) if number else None, sha=env.get("GITHUB_SHA"), event=event)


class GitHub:
    """A small REST client bound to one repository."""

    def __init__(self, api_url: str, repository: str, token: str, *, attempts: int = 5,
                 sleep: Callable[[float], None] = time.sleep, timeout: float = 30.0):
        self.api_url = api_url.rstrip("/")
        self.repository = repository
        self._token = token
        self._attempts = attempts
        self._sleep = sleep
        self._timeout = timeout
        self._host = urllib.parse.urlsplit(self.api_url).netloc

    @classmethod
    def from_context(cls, ctx: ActionsContext, **kwargs: Any) -> GitHub:
        return cls(ctx.api_url, ctx.repository, ctx.token, **kwargs)

    # -- comments -------------------------------------------------------------------------------
    def comments(self, number: int) -> Iterator[dict[str, Any]]:
        """Every comment of an issue or pull request, following the Link header's pages."""
        url: str | None = f"{self._repo_url()}/issues/{number}/comments?per_page=100"
        while url:
            response = self.request("GET", url)
            yield from response.data
            url = _next_link(response.headers.get("Link", ""))
            if url and urllib.parse.urlsplit(url).netloc != self._host:
                raise GitHubError(f"GitHub's pagination link points at another host ({url}); refusing to follow")

    def create_comment(self, number: int, body: str) -> dict[str, Any]:
        return self.request("POST", f"{self._repo_url()}/issues/{number}/comments", {"body": body}).data

    def update_comment(self, comment_id: int, body: str) -> dict[str, Any]:
        return self.request("PATCH", f"{self._repo_url()}/issues/comments/{comment_id}", {"body": body}).data

    def delete_comment(self, comment_id: int) -> None:
        self.request("DELETE", f"{self._repo_url()}/issues/comments/{comment_id}")

    # -- the reviewed plan ----------------------------------------------------------------------
    def pulls_for_commit(self, sha: str) -> list[dict[str, Any]]:
        """The pull requests a commit belongs to (for a merge commit: the one that was merged)."""
        return list(self.request("GET", f"{self._repo_url()}/commits/{sha}/pulls").data)

    def artifacts(self, name: str) -> list[dict[str, Any]]:
        """Unexpired artifacts of this repository with exactly this name, newest first."""
        query = urllib.parse.urlencode({"name": name, "per_page": 100})
        found = self.request("GET", f"{self._repo_url()}/actions/artifacts?{query}").data.get("artifacts", [])
        return [a for a in found if a.get("name") == name and not a.get("expired")]

    def download(self, url: str) -> bytes:
        """An artifact's zip; GitHub redirects to storage, which must not receive our token."""
        return self.request("GET", url, raw=True).data

    # -- commit statuses ------------------------------------------------------------------------
    def create_status(self, sha: str, state: str, context: str, description: str) -> dict[str, Any]:
        """Set ``context``'s status on a commit (GitHub keeps the latest per context)."""
        body = {"state": state, "context": context, "description": description[:140]}
        return self.request("POST", f"{self._repo_url()}/statuses/{sha}", body).data

    # -- transport ------------------------------------------------------------------------------
    def request(self, method: str, url: str, body: Any = None, *, raw: bool = False) -> Response:
        if not url.startswith(("http://", "https://")):
            url = self.api_url + url
        try:
            return call_with_retries(lambda: self._once(method, url, body, raw), what=f"GitHub {method} {_path(url)}",
                                     attempts=self._attempts, sleep=self._sleep)
        except GitHubError:
            raise
        except PermanentError as exc:
            raise GitHubError(f"{exc} (re-run the job later)") from None

    def _once(self, method: str, url: str, body: Any, raw: bool) -> Response:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/vnd.github+json")
        req.add_header("X-GitHub-Api-Version", "2022-11-28")
        req.add_header("User-Agent", f"mlops/{__version__}")
        # Unredirected: a redirect to artifact storage must not carry the token along.
        req.add_unredirected_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as reply:
                payload = reply.read()
                headers = dict(reply.headers.items())
                status = reply.status
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            _raise_for(method, url, exc.code, dict(exc.headers.items()), payload)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransientError(f"cannot reach {urllib.parse.urlsplit(url).netloc}: {reason}") from None
        if raw:
            return Response(status, headers, payload)
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            raise TransientError(f"HTTP {status} with a body that is not JSON") from None
        return Response(status, headers, parsed)

    def _repo_url(self) -> str:
        return f"{self.api_url}/repos/{self.repository}"


def _raise_for(method: str, url: str, status: int, headers: Mapping[str, str], payload: bytes) -> NoReturn:
    message = _message(payload)
    retry_after = _retry_after(headers)
    where = f"{method} {_path(url)}"
    if status == 429 or status >= 500 or (status == 403 and retry_after is not None):
        raise TransientError(f"HTTP {status} {message}".strip(), retry_after)
    if status == 403 and headers.get("X-RateLimit-Remaining", headers.get("x-ratelimit-remaining")) == "0":
        raise TransientError("HTTP 403 rate limit exhausted", _reset_wait(headers))
    if status == 401:
        raise GitHubError(f"GitHub rejected the token for {where} (401 {message}): pass the workflow's token "
                          "as `env: GITHUB_TOKEN: ${{ github.token }}`")
    if status == 403:
        raise GitHubError(f"GitHub refused {where} (403 {message}): the token lacks permission; give the job "
                          "`permissions: {pull-requests: write, actions: read}` (pull requests from forks only "
                          "get a read-only token)")
    if status == 404:
        raise GitHubError(f"GitHub has no {where} (404 {message}): check GITHUB_REPOSITORY, the pull request "
                          "number, and that the token can see this repository")
    raise GitHubError(f"GitHub answered {where} with HTTP {status} {message}".rstrip())


def _message(payload: bytes) -> str:
    try:
        data = json.loads(payload)
    except ValueError:
        return ""
    text = str(data.get("message", "")) if isinstance(data, dict) else ""
    return text.replace("\n", " ")[:200]


def _reset_wait(headers: Mapping[str, str]) -> float | None:
    reset = next((v for k, v in headers.items() if k.lower() == "x-ratelimit-reset"), None)
    return max(0.0, float(reset) - time.time()) if reset and reset.isdigit() else None


def _next_link(link: str) -> str | None:
    for part in link.split(","):
        match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
        if match:
            return match[1]
    return None


def _path(url: str) -> str:
    return urllib.parse.urlsplit(url).path


# -- the reviewed plan -----------------------------------------------------------------------------

MAX_PLAN_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ReviewedPlan:
    """The plan file a pull request's plan job uploaded, found from the commit that merged it."""

    number: int
    head_sha: str
    plan: bytes = field(repr=False)


def fetch_reviewed_plan(gh: GitHub, sha: str, prefix: str) -> ReviewedPlan | str:
    """The merged pull request's saved plan (artifact ``prefix + head SHA``), or why there is none.

    Named by the head SHA so that only the plan of the pull request's last commit, the one the
    reviewers saw, can be picked up.
    """
    pulls = gh.pulls_for_commit(sha)
    merged = [p for p in pulls if p.get("merged_at")] or pulls
    if not merged:
        return f"commit {sha[:12]} is not the merge of a pull request"
    pr = merged[0]
    head = str((pr.get("head") or {}).get("sha") or "")
    name = prefix + head
    found = gh.artifacts(name)
    if not head or not found:
        return (f"pull request #{pr.get('number')} has no artifact {name} "
                "(its plan job did not upload one, or it expired)")
    blob = gh.download(str(found[0]["archive_download_url"]))
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            members = [i for i in archive.infolist() if i.filename.endswith(".json")]
            if len(members) != 1 or members[0].file_size > MAX_PLAN_BYTES:
                return f"artifact {name} does not hold exactly one plan file"
            data = archive.read(members[0])
    except zipfile.BadZipFile:
        return f"artifact {name} is not a zip archive"
    return ReviewedPlan(int(pr["number"]), head, data)


# -- the sticky comment ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Posted:
    """What happened to one part of the sticky comment."""

    part: int
    action: str            # "created", "updated", "unchanged", "deleted"
    comment_id: int
    url: str | None = None


def upsert_comments(gh: GitHub, number: int, manifest: str, parts: Sequence[str]) -> list[Posted]:
    """Make the PR's plan comments for ``manifest`` read ``parts``: update in place, never add per push.

    Existing comments are found by their hidden marker; a part that no longer exists (the plan
    got shorter) is deleted, so the thread never shows a stale tail.
    """
    existing: dict[int, dict[str, Any]] = {}
    for comment in gh.comments(number):
        part = parse_part(comment.get("body") or "", manifest)
        if part is not None and part not in existing:
            existing[part] = comment
    done: list[Posted] = []
    for index, body in enumerate(parts, start=1):
        old = existing.get(index)
        if old is None:
            new = gh.create_comment(number, body)
            done.append(Posted(index, "created", int(new["id"]), new.get("html_url")))
        elif old.get("body") == body:
            done.append(Posted(index, "unchanged", int(old["id"]), old.get("html_url")))
        else:
            new = gh.update_comment(int(old["id"]), body)
            done.append(Posted(index, "updated", int(old["id"]), new.get("html_url") or old.get("html_url")))
    for index in sorted(p for p in existing if p > len(parts)):
        gh.delete_comment(int(existing[index]["id"]))
        done.append(Posted(index, "deleted", int(existing[index]["id"])))
    return done
