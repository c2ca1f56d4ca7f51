"""Models and environment records of one project in one OCI repository (remote or embedded).

A model version is an OCI artifact (``artifactType: application/vnd.mlops.model.v1``, empty config,
one layer per file titled with its path, annotations: name, content sha256, source path, git commit
and dirty, creation time), pushed by digest; blobs are uploaded only when the registry lacks them.
Its number comes from the tag log (see ``versions``) and, once final, is also written as an alias
tag ``m.<key>.v<N>`` for people and tools. What the project currently uses is a small pointer
artifact per model (``m.<key>.current``); an environment's recorded spec is one per environment
(``e.<key>.current``), and the targets the project applied to are one more (``p.applied-targets``).
Everything a plan compares is read from here, so any machine that can read the registry plans the
same as the machine that applied.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from planner.errors import ProviderError
from planner.hashing import ContentHasher, canonical_json, iter_files

from . import versions as v
from .repository import EMPTY_BYTES, EMPTY_CONFIG, MANIFEST_TYPE, Repository, sha256_digest

MODEL_TYPE = "application/vnd.mlops.model.v1"
CURRENT_TYPE = "application/vnd.mlops.model.current.v1"
ENVIRONMENT_TYPE = "application/vnd.mlops.environment.v1"
TARGETS_TYPE = "application/vnd.mlops.applied-targets.v1"
TARGETS_TAG = "p.applied-targets"
FILE_TYPE = "application/vnd.mlops.model.file.v1"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
REVISION = "org.opencontainers.image.revision"
A = "dev.mlops."
RETRIES = 5
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
READ_PARALLELISM = 8


def _manifest(artifact_type: str, layers: list[dict[str, Any]], annotations: Mapping[str, str]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": artifact_type,
                       "config": EMPTY_CONFIG, "layers": layers, "annotations": dict(annotations)},
                      separators=(",", ":"), sort_keys=True).encode()


def _git(git: Mapping[str, Any]) -> dict[str, str]:
    return {REVISION: str(git.get("commit") or ""), A + "git.dirty": "true" if git.get("dirty") else "false"}


@dataclass(frozen=True)
class VersionInfo:
    number: int | None          # None: pending (registered inside the settle window)
    sha256: str
    created: str
    tag: str


class ModelRegistry:
    """Register, number, list and fetch model versions; record environments."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self._tags: list[str] | None = None
        self._entries: dict[str, list[v.Entry]] = {}
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------------------------
    def tags(self, *, refresh: bool = False) -> list[str]:
        with self._lock:
            if self._tags is None or refresh:
                self._tags = self.repo.tags()
                self._entries = v.entries_by_key(self._tags)
            return list(self._tags)

    def _model_entries(self, name: str, *, refresh: bool = False) -> list[v.Entry]:
        self.tags(refresh=refresh)
        with self._lock:
            return list(self._entries.get(v.model_key(name), []))

    def _manifest_json(self, reference: str) -> dict[str, Any] | None:
        data = self.repo.get_manifest(reference)
        if data is None:
            return None
        try:
            found = json.loads(data)
            if not isinstance(found, dict) or not isinstance(found.get("annotations", {}), dict):
                raise ValueError
            return found
        except ValueError:
            raise ProviderError(f"{self.repo.display}: {reference} is not an OCI manifest (garbage answer)") from None

    def numbering(self, name: str, *, refresh: bool = False) -> v.Numbering:
        return v.derive(self._model_entries(name, refresh=refresh), datetime.now(UTC), self.repo.settle_s)

    def planned_version(self, name: str, sha256: str) -> int:
        return self.numbering(name).number_or_next(sha256)

    def versions(self, name: str) -> list[VersionInfo]:
        numbering = self.numbering(name)
        out = []
        for sha, entry in sorted(numbering.entries.items(), key=lambda kv: (kv[1].stamp, kv[0])):
            out.append(VersionInfo(numbering.numbers.get(sha), sha, entry.stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                                   entry.tag))
        return out

    def version_details(self, info: VersionInfo) -> dict[str, str]:
        manifest = self._manifest_json(info.tag) or {}
        return {str(k): str(val) for k, val in (manifest.get("annotations") or {}).items()}

    def _pointers(self, prefix: str, suffix: str, *, removed: bool = False) -> list[dict[str, Any]]:
        """Every pointer artifact whose tag matches, read in parallel (bounded); tombstones only if asked."""
        wanted = sorted(t for t in self.tags() if t.startswith(prefix) and t.endswith(suffix))
        if not wanted:
            return []
        with ThreadPoolExecutor(max_workers=min(READ_PARALLELISM, len(wanted))) as pool:
            found = list(pool.map(self._manifest_json, wanted))
        return [m for m in found if m and (removed or (m.get("annotations") or {}).get(A + "removed") != "true")]

    def removed_models(self) -> list[str]:
        """Models that left the project (a tombstone pointer) but whose versions the registry still holds."""
        names = []
        for manifest in self._pointers("m.", ".current", removed=True):
            ann = manifest.get("annotations") or {}
            if ann.get(A + "removed") == "true" and isinstance(ann.get(A + "model.name"), str):
                names.append(ann[A + "model.name"])
        return sorted(names)

    def current_models(self) -> list[dict[str, Any]]:
        """What each model currently is: its pointer's annotations plus the derived version number."""
        out = []
        for manifest in self._pointers("m.", ".current"):
            ann = manifest.get("annotations") or {}
            name, sha = ann.get(A + "model.name"), ann.get(A + "model.sha256")
            if not isinstance(name, str) or not isinstance(sha, str):
                continue
            try:
                tags = json.loads(ann.get(A + "model.tags", "{}"))
            except ValueError:
                tags = {}
            out.append({"name": name, "sha256": sha, "version": self.numbering(name).number_or_next(sha),
                        "source": ann.get(A + "model.source"), "tags": tags if isinstance(tags, dict) else {},
                        "description": ann.get(A + "model.description", ""),
                        "git": {"commit": ann.get(REVISION) or None, "dirty": ann.get(A + "git.dirty") == "true"},
                        "updated": ann.get(CREATED)})
        return sorted(out, key=lambda m: m["name"])

    def environments(self) -> list[dict[str, Any]]:
        out = []
        for manifest in self._pointers("e.", ".current"):
            ann = manifest.get("annotations") or {}
            try:
                spec = json.loads(ann.get(A + "environment.spec", ""))
            except ValueError:
                continue
            name = ann.get(A + "environment.name")
            if isinstance(name, str) and isinstance(spec, dict):
                out.append({"name": name, "spec": spec,
                            "git": {"commit": ann.get(REVISION) or None, "dirty": ann.get(A + "git.dirty") == "true"}})
        return sorted(out, key=lambda e: e["name"])

    def applied_targets(self) -> dict[str, Any] | None:
        """The project's record of the targets it applied to (see planner.applied_targets); None: no record."""
        manifest = self._manifest_json(TARGETS_TAG)
        if manifest is None:
            return None
        try:
            record = json.loads((manifest.get("annotations") or {}).get(A + "targets", ""))
            if not isinstance(record, dict):
                raise ValueError
        except ValueError:
            raise ProviderError(f"{self.repo.display}: {TARGETS_TAG} is not a record of applied targets "
                                "(garbage answer)") from None
        return record

    # -- registering ----------------------------------------------------------------------------
    def _layers(self, source: Path) -> tuple[list[dict[str, Any]], list[tuple[str, Path, int]], str]:
        """One layer per file (title = its path under the source's parent) and the content hash."""
        hasher = ContentHasher()
        base = source.parent
        tree_base = source if source.is_dir() else source.parent
        layers, files = [], []
        tree = hashlib.sha256()
        for f in iter_files(source):
            file_sha = hasher.file_hash(f)
            size = f.stat().st_size
            tree.update(f.relative_to(tree_base).as_posix().encode() + b"\0" + file_sha.encode() + b"\n")
            digest = "sha256:" + file_sha
            layers.append({"mediaType": FILE_TYPE, "digest": digest, "size": size,
                           "annotations": {TITLE: f.relative_to(base).as_posix()}})
            files.append((digest, f, size))
        return layers, files, tree.hexdigest()

    def register(self, name: str, source: Path, sha256: str, source_rel: str, git: Mapping[str, Any],
                 *, progress: Any = None) -> int:
        """Upload what is missing, log the registration, wait out the settle window; the final number."""
        layers, files, tree = self._layers(source)
        if tree != sha256:
            raise ProviderError(f"model.{name}: {source} changed after it was planned; run `mlops plan` again")
        uploaded = 0
        for digest, path, _size in files:
            if not self.repo.has_blob(digest):
                self.repo.put_blob(digest, path=path)
                uploaded += 1
        if not self.repo.has_blob(EMPTY_CONFIG["digest"]):
            self.repo.put_blob(EMPTY_CONFIG["digest"], data=EMPTY_BYTES)
        if progress:
            progress(f"{uploaded} of {len(files)} file(s) uploaded, the rest already in the registry")
        key = v.model_key(name)
        annotations = {A + "model.name": name, A + "model.sha256": sha256, A + "model.source": source_rel,
                       **_git(git)}
        for _attempt in range(RETRIES):
            with self.repo.exclusive():
                numbering = self.numbering(name, refresh=True)
                existing = numbering.entries.get(sha256)
                if existing is not None:
                    stamp = existing.stamp
                    break
                newest = max((e.stamp for e in numbering.entries.values()), default=None)
                stamp = datetime.now(UTC)
                if newest is not None and stamp <= newest:
                    stamp = newest + timedelta(microseconds=1)
                manifest = _manifest(MODEL_TYPE, layers, {**annotations,
                                                          CREATED: stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
                digest = sha256_digest(manifest)
                started = time.monotonic()
                self.repo.put_manifest(digest, manifest)
                self.repo.put_manifest(v.entry_tag(key, stamp, sha256), manifest)
                took = time.monotonic() - started
            if self.repo.settle_s and took > self.repo.settle_s / 4:
                # Too slow: a reader may already have numbered entries after ours. Withdraw, retry.
                self.repo.delete_manifest(digest)
                continue
            break
        else:
            raise ProviderError(f"{self.repo.display}: registering model {name} took longer than a quarter of the "
                                f"settle window {RETRIES} times; raise registry.settle_seconds in ml.yaml")
        wait = (stamp - datetime.now(UTC)).total_seconds() + self.repo.settle_s
        if wait > 0:
            if progress:
                progress(f"waiting {wait:.1f}s for concurrent registrations to settle")
            time.sleep(wait)
        numbering = self.numbering(name, refresh=True)
        for _ in range(RETRIES):
            if sha256 in numbering.numbers:
                break
            time.sleep(max(0.05, self.repo.settle_s / 4))   # an older entry of another writer is still pending
            numbering = self.numbering(name, refresh=True)
        number = numbering.numbers.get(sha256)
        if number is None:
            raise ProviderError(f"{self.repo.display}: model {name} is registered but its version number is still "
                                "pending (a clock far ahead of this one?); run `mlops plan` again in a minute")
        alias = v.alias_tag(key, number)
        if alias not in self.tags():
            manifest_bytes = self.repo.get_manifest(numbering.entries[sha256].tag)
            if manifest_bytes is not None:
                self.repo.put_manifest(alias, manifest_bytes)
        return number

    def set_current(self, name: str, sha256: str, *, source_rel: str, tags: Mapping[str, str], description: str,
                    git: Mapping[str, Any]) -> None:
        """Point the model at a registered content (last apply wins, as for any live setting)."""
        annotations = {A + "model.name": name, A + "model.sha256": sha256, A + "model.source": source_rel,
                       A + "model.tags": canonical_json(dict(tags)), A + "model.description": description,
                       **_git(git)}
        self._put_pointer(v.current_tag(v.model_key(name)), CURRENT_TYPE, annotations)

    def remove_current(self, name: str) -> None:
        """The model leaves the project: a tombstone pointer (tag deletion is not portable); versions stay."""
        self._put_pointer(v.current_tag(v.model_key(name)), CURRENT_TYPE,
                          {A + "model.name": name, A + "removed": "true"})

    def set_environment(self, name: str, spec: Mapping[str, Any], git: Mapping[str, Any]) -> None:
        self._put_pointer(v.environment_tag(v.model_key(name)), ENVIRONMENT_TYPE,
                          {A + "environment.name": name, A + "environment.spec": canonical_json(dict(spec)),
                           **_git(git)})

    def remove_environment(self, name: str) -> None:
        self._put_pointer(v.environment_tag(v.model_key(name)), ENVIRONMENT_TYPE,
                          {A + "environment.name": name, A + "removed": "true"})

    def set_applied_targets(self, record: Mapping[str, Any]) -> None:
        """Replace the record of applied targets (the caller holds ``repo.exclusive()`` around its read)."""
        self._put_pointer(TARGETS_TAG, TARGETS_TYPE, {A + "targets": canonical_json(dict(record))})

    def _put_pointer(self, tag: str, artifact_type: str, annotations: Mapping[str, str]) -> None:
        manifest = _manifest(artifact_type, [], annotations)
        if self.repo.get_manifest(tag) == manifest:
            return
        if not self.repo.has_blob(EMPTY_CONFIG["digest"]):
            self.repo.put_blob(EMPTY_CONFIG["digest"], data=EMPTY_BYTES)
        self.repo.put_manifest(tag, manifest)
        with self._lock:
            if self._tags is not None and tag not in self._tags:
                self._tags.append(tag)

    # -- fetching -------------------------------------------------------------------------------
    def fetch(self, name: str, sha256: str, dest: Path) -> Path:
        """The files of one content in ``dest`` (a per-user cache keyed by content), pulled by digest."""
        if dest.is_dir():
            return dest
        entry = self.numbering(name).entries.get(sha256) or self.numbering(name, refresh=True).entries.get(sha256)
        if entry is None:
            raise ProviderError(f"model {name} content {sha256[:12]} is not in the {self.repo.display}; "
                                "apply the model first")
        manifest = self._manifest_json(entry.tag) or {}
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".fetch-"))
        try:
            for layer in manifest.get("layers") or []:
                title = str((layer.get("annotations") or {}).get(TITLE, ""))
                rel = PurePosixPath(title)
                if not title or rel.is_absolute() or ".." in rel.parts:
                    raise ProviderError(f"{self.repo.display}: model {name} holds an unsafe file name {title[:80]!r}")
                digest = str(layer.get("digest"))
                if not DIGEST_RE.match(digest):
                    raise ProviderError(f"{self.repo.display}: model {name} names a malformed blob digest "
                                        f"{digest[:80]!r}")
                self.repo.fetch_blob(digest, staging.joinpath(*rel.parts))
            roots = [p for p in staging.iterdir()]
            if len(roots) != 1 or ContentHasher().tree_hash(roots[0]) != sha256:
                raise ProviderError(f"{self.repo.display}: model {name} {sha256[:12]} arrived with other content")
            try:
                os.replace(staging, dest)
            except OSError:
                if not dest.is_dir():   # another process fetched it at the same time: theirs is as good
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dest
