"""A local HTTP double of the GitHub REST endpoints the GitOps loop uses, on 127.0.0.1.

What it emulates (and nothing more): issue comments (list with ``per_page``/``page`` and a
``Link`` header, create, update, delete), commit statuses (create, validated as GitHub does),
the pull requests of a commit, artifacts by name, and an
artifact download that redirects to a storage URL on the same server which rejects any request
carrying an Authorization header (as a signed storage URL would not need one). Every API call
must carry ``Authorization: Bearer <token>``; a wrong token gets GitHub's 401. Failures can be
scripted per call (status, headers, body) to test retries and errors.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Call:
    method: str
    path: str
    authorization: str | None
    body: Any = None


@dataclass
class Failure:
    method: str
    path_prefix: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "scripted failure"


class GitHubDouble:
    def __init__(self, *, repository: str = "acme/models", token: str = "test-token-123", page_size: int = 30):
        self.repository = repository
        self.token = token
        self.page_size = page_size
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.pulls: dict[str, list[dict[str, Any]]] = {}
        self.artifacts: list[dict[str, Any]] = []
        self.blobs: dict[int, bytes] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.failures: list[Failure] = []
        self.calls: list[Call] = []
        self._next_id = 1000
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> GitHubDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- seeding ---------------------------------------------------------------------------------
    def add_comment(self, number: int, body: str, user: str = "someone") -> dict[str, Any]:
        with self._lock:
            return self._create(number, body, user)

    def add_artifact(self, name: str, blob: bytes, *, head_sha: str, expired: bool = False) -> None:
        with self._lock:
            artifact_id = self._new_id()
            self.blobs[artifact_id] = blob
            self.artifacts.insert(0, {
                "id": artifact_id, "name": name, "expired": expired, "size_in_bytes": len(blob),
                "archive_download_url": f"{self.url}/repos/{self.repository}/actions/artifacts/{artifact_id}/zip",
                "workflow_run": {"id": 77, "head_sha": head_sha},
            })

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _create(self, number: int, body: str, user: str) -> dict[str, Any]:
        comment_id = self._new_id()
        comment = {"id": comment_id, "body": body, "user": {"login": user},
                   "html_url": f"https://github.invalid/{self.repository}/pull/{number}#issuecomment-{comment_id}"}
        self.comments.setdefault(number, []).append(comment)
        return comment

    def _find(self, comment_id: int) -> dict[str, Any] | None:
        for comments in self.comments.values():
            for c in comments:
                if c["id"] == comment_id:
                    return c
        return None

    # -- serving ---------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True   # headers and body are separate writes: no delayed-ACK stall

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                auth = self.headers.get("Authorization")
                with double._lock:
                    double.calls.append(Call(method, self.path, auth, body))
                    status, headers, payload = double._route(method, self.path, auth, body)
                data = payload if isinstance(payload, bytes) else (json.dumps(payload).encode()
                                                                   if payload is not None else b"")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _route(self, method: str, target: str, auth: str | None, body: Any) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        if path.startswith("/storage/"):
            if auth is not None:
                return 400, {}, b"<Error>Only one auth mechanism allowed</Error>"
            return 200, {"Content-Type": "application/zip"}, self.blobs[int(path.rsplit("/", 1)[1])]
        for i, failure in enumerate(self.failures):
            if failure.method == method and path.startswith(failure.path_prefix):
                del self.failures[i]
                return failure.status, failure.headers, {"message": failure.message}
        if auth != f"Bearer {self.token}":
            return 401, {}, {"message": "Bad credentials"}
        prefix = f"/repos/{self.repository}"
        if not path.startswith(prefix + "/"):
            return 404, {}, {"message": "Not Found"}
        rest = path[len(prefix):].strip("/").split("/")
        if rest[:1] == ["issues"] and len(rest) == 3 and rest[2] == "comments":
            number = int(rest[1])
            if method == "GET":
                return self._page(number, query)
            if method == "POST":
                return 201, {}, self._create(number, body["body"], "github-actions[bot]")
        if rest[:2] == ["issues", "comments"] and len(rest) == 3:
            comment = self._find(int(rest[2]))
            if comment is None:
                return 404, {}, {"message": "Not Found"}
            if method == "PATCH":
                comment["body"] = body["body"]
                return 200, {}, comment
            if method == "DELETE":
                for comments in self.comments.values():
                    if comment in comments:
                        comments.remove(comment)
                return 204, {}, None
        if rest[:1] == ["commits"] and len(rest) == 3 and rest[2] == "pulls" and method == "GET":
            return 200, {}, self.pulls.get(rest[1], [])
        if rest[:1] == ["statuses"] and len(rest) == 2 and method == "POST":
            if body.get("state") not in ("error", "failure", "pending", "success") or \
                    len(body.get("description") or "") > 140:
                return 422, {}, {"message": "Validation Failed"}
            self.statuses.setdefault(rest[1], []).append(body)
            return 201, {}, {"id": self._new_id(), **body}
        if rest[:2] == ["actions", "artifacts"] and len(rest) == 2 and method == "GET":
            name = (query.get("name") or [""])[0]
            found = [a for a in self.artifacts if a["name"] == name]
            return 200, {}, {"total_count": len(found), "artifacts": found}
        if rest[:2] == ["actions", "artifacts"] and len(rest) == 4 and rest[3] == "zip" and method == "GET":
            return 302, {"Location": f"{self.url}/storage/{rest[2]}"}, None
        return 404, {}, {"message": "Not Found"}

    def _page(self, number: int, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        per_page = min(int((query.get("per_page") or [self.page_size])[0]), self.page_size)
        page = int((query.get("page") or ["1"])[0])
        comments = self.comments.get(number, [])
        chunk = comments[(page - 1) * per_page: page * per_page]
        headers = {}
        base = f"{self.url}/repos/{self.repository}/issues/{number}/comments"
        links = []
        if page * per_page < len(comments):
            links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
        last = max(1, -(-len(comments) // per_page))
        links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
        headers["Link"] = ", ".join(links)
        return 200, headers, chunk
