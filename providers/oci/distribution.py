"""A remote OCI registry over the distribution API, with the standard library only.

Why hand-written: the model registry needs push by digest, the exact manifest bytes back,
digest-verified downloads, tag listing with ``Link`` paging and fast failure; the Python ORAS
SDK hides or lacks these and retries a down registry for minutes. Credentials come from the
environment (``MLOPS_REGISTRY_USERNAME`` / ``MLOPS_REGISTRY_PASSWORD``, as for image pushes),
are used as Basic auth or exchanged for a Bearer token when the registry asks for one, and
never appear in a message. Plain HTTP is used for loopback registries only.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import tempfile
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner.errors import ProviderError, Unreachable
from planner.redact import REDACTOR

from .repository import CHUNK, MANIFEST_TYPE, no_lock

USER_ENV, PASSWORD_ENV = "MLOPS_REGISTRY_USERNAME", "MLOPS_REGISTRY_PASSWORD"
ACCEPT = f"{MANIFEST_TYPE}, application/vnd.oci.image.index.v1+json"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
TIMEOUT_S = 30.0
URL_RE = re.compile(r"^oci://(?P<host>[A-Za-z0-9.\-]+(?::\d{1,5})?|\[[0-9a-fA-F:]+\](?::\d{1,5})?)"
                    r"/(?P<repo>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)\Z")


def parse_url(url: str) -> tuple[str, str]:
    """``oci://HOST[:PORT]/REPO`` -> (host, repository); ValueError says what is wrong."""
    match = URL_RE.match(url)
    if not match:
        raise ValueError("expected oci://HOST[:PORT]/REPOSITORY (repository in lowercase letters, digits, "
                         "'.', '_', '-' and '/')")
    return match["host"], match["repo"]


class RemoteRepository:
    """One repository of a registry reached over HTTP(S)."""

    def __init__(self, url: str, *, settle_s: float, credentials: tuple[str, str] | None = None):
        self.host, self.repo = parse_url(url)
        self.display = f"model registry {url}"
        self.settle_s = settle_s
        hostname = self.host.rsplit(":", 1)[0] if not self.host.startswith("[") else self.host.split("]")[0] + "]"
        self.scheme = "http" if hostname in LOOPBACK else "https"
        if credentials is None:
            user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
            credentials = (user, password) if user and password else None
        self._credentials = credentials
        if credentials:
            REDACTOR.add(credentials[1])
        self._auth: str | None = None
        self._guard = threading.Lock()
        self._blob_locks: dict[str, threading.RLock] = {}
        self._uploaded: set[str] = set()

    # -- HTTP -----------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.repo}/{path}"

    def _fail(self, what: str, detail: str) -> ProviderError:
        return ProviderError(f"{self.display}: {what}: {detail}")

    def _send(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, body: Any = None,
              auth: bool = True) -> http.client.HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parts.netloc, timeout=TIMEOUT_S)
        all_headers = {"User-Agent": "mlops", **(headers or {})}
        if auth and self._auth:
            all_headers["Authorization"] = self._auth
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(method, target, body=body, headers=all_headers)
            return conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            if isinstance(exc, socket.timeout | TimeoutError):
                why = f"no answer within {TIMEOUT_S:.0f}s"
            raise Unreachable(f"{self.display} is unreachable ({why}): start it, or fix registry.url in ml.yaml"
                              ) from None

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, body: Any = None,
                ok: tuple[int, ...] = (200,), missing_ok: bool = False) -> tuple[int, bytes, Mapping[str, str]]:
        """One request (authenticating once on 401); non-``ok`` statuses are one-line errors."""
        for attempt in (0, 1):
            if hasattr(body, "seek"):
                body.seek(0)
            resp = self._send(method, url, headers=headers, body=body)
            status = resp.status
            data = resp.read() if method != "HEAD" else b""
            reply_headers = {k.lower(): v for k, v in resp.getheaders()}
            if status == 401 and attempt == 0 and self._login(reply_headers.get("www-authenticate", "")):
                continue
            break
        if status in ok or (missing_ok and status == 404):
            return status, data, reply_headers
        raise self._refused(method, status, data)

    def _refused(self, method: str, status: int, data: bytes) -> ProviderError:
        if status in (401, 403):
            how = ("the credentials in MLOPS_REGISTRY_USERNAME / MLOPS_REGISTRY_PASSWORD were refused"
                   if self._credentials else f"set {USER_ENV} and {PASSWORD_ENV} for it")
            return ProviderError(f"{self.display} refused access (HTTP {status}): {how}")
        code = ""
        try:
            errors = json.loads(data).get("errors") or []
            code = "; ".join(f"{e.get('code')}: {str(e.get('message'))[:120]}" for e in errors[:2]
                             if isinstance(e, dict))
        except (ValueError, AttributeError):
            pass
        return self._fail(f"{method} refused with HTTP {status}", code or "no explanation given")

    def _login(self, challenge: str) -> bool:
        """Answer a 401: Basic with the credentials, or a Bearer token from the realm it names."""
        if not self._credentials:
            return False
        user, password = self._credentials
        basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if challenge.lower().startswith("basic"):
            self._auth = basic
            return True
        if not challenge.lower().startswith("bearer"):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            return False
        query = {k: params[k] for k in ("service", "scope") if k in params}
        query.setdefault("scope", f"repository:{self.repo}:pull,push")
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        resp = self._send("GET", url, headers={"Authorization": basic}, auth=False)
        data = resp.read()
        if resp.status != 200:
            raise self._refused("token", resp.status, data)
        try:
            answer = json.loads(data)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise self._fail("token service", "its answer holds no token")
        REDACTOR.add(token)
        self._auth = f"Bearer {token}"
        return True

    # -- blobs ----------------------------------------------------------------------------------
    def _one_at_a_time(self, digest: str) -> threading.RLock:
        """This process's threads ask about and upload one blob in turn. Apply's threads all need the same
        empty config on a fresh repository, and docker's registry (filesystem storage) rewrites a blob's
        link on every upload of it: a HEAD or a manifest PUT naming the blob meanwhile gets HTTP 500
        ("invalid checksum digest format") or "blob unknown"."""
        with self._guard:
            return self._blob_locks.setdefault(digest, threading.RLock())

    def has_blob(self, digest: str) -> bool:
        with self._one_at_a_time(digest):
            status, _, _ = self.request("HEAD", self._url(f"blobs/{digest}"), missing_ok=True)
            return status == 200

    def put_blob(self, digest: str, path: Path | None = None, data: bytes | None = None) -> None:
        """Monolithic upload: POST opens a session, PUT sends the bytes with their digest. Skipped when
        another thread of this process uploaded the blob while this one waited (and it is still there)."""
        with self._one_at_a_time(digest):
            if digest in self._uploaded and self.has_blob(digest):
                return
            self._upload(digest, path, data)
            self._uploaded.add(digest)

    def _upload(self, digest: str, path: Path | None, data: bytes | None) -> None:
        _, _, headers = self.request("POST", self._url("blobs/uploads/"), ok=(202,), body=b"",
                                     headers={"Content-Length": "0"})
        location = headers.get("location")
        if not location:
            raise self._fail("upload", "the registry gave no upload location")
        location = urllib.parse.urljoin(self._url(""), location)
        url = location + ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        if path is not None:
            size = path.stat().st_size
            with path.open("rb") as fh:
                self.request("PUT", url, body=fh, ok=(201,), headers={
                    "Content-Type": "application/octet-stream", "Content-Length": str(size)})
        else:
            self.request("PUT", url, body=data or b"", ok=(201,), headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(len(data or b""))})

    def fetch_blob(self, digest: str, dest: Path) -> None:
        """Stream one blob to ``dest``, refusing bytes whose digest differs (redirects followed)."""
        url = self._url(f"blobs/{digest}")
        for _ in range(5):
            resp = self._send("GET", url, auth=urllib.parse.urlsplit(url).netloc == self.host)
            if resp.status == 401 and self._login(resp.getheader("WWW-Authenticate") or ""):
                resp.read()
                continue
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                resp.read()
                url = urllib.parse.urljoin(url, resp.getheader("Location") or "")
                continue
            break
        if resp.status != 200:
            raise self._refused("GET blob", resp.status, resp.read())
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := resp.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            if "sha256:" + h.hexdigest() != digest:
                raise self._fail("download", f"blob {digest[:19]}… arrived with other content; try again")
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- manifests and tags ---------------------------------------------------------------------
    def get_manifest(self, reference: str) -> bytes | None:
        status, data, _ = self.request("GET", self._url(f"manifests/{reference}"), headers={"Accept": ACCEPT},
                                       missing_ok=True)
        return data if status == 200 else None

    def put_manifest(self, reference: str, data: bytes) -> None:
        self.request("PUT", self._url(f"manifests/{reference}"), body=data, ok=(201,),
                     headers={"Content-Type": MANIFEST_TYPE, "Content-Length": str(len(data))})

    def delete_manifest(self, digest: str) -> None:
        self.request("DELETE", self._url(f"manifests/{digest}"), ok=(202, 200), missing_ok=True)

    def tags(self) -> list[str]:
        """Every tag, following ``Link`` paging; an unknown repository has none."""
        out: list[str] = []
        url = self._url("tags/list?n=1000")
        for _ in range(10_000):
            status, data, headers = self.request("GET", url, missing_ok=True)
            if status == 404:
                return out
            try:
                page = json.loads(data)
                tags = page.get("tags") or []
                if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                    raise ValueError
            except (ValueError, AttributeError):
                raise self._fail("tag list", "the answer is not a registry's tag list (is the URL a registry?)"
                                 ) from None
            out.extend(tags)
            link = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', headers.get("link", ""))
            if not link:
                return out
            url = urllib.parse.urljoin(url, link.group(1))
        return out

    def exclusive(self):
        """A remote registry has no lock: the numbering scheme is safe without one (see versions.py)."""
        return no_lock()
