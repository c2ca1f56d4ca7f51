"""Repositories for registry tests: the embedded OCI layout, and a fresh repository of the real
`docker-registry` named by MLOPS_TEST_REGISTRY (started by `.ci/docker-up.sh`).

Imported by name (not a conftest), like tests/docker/docker_fixtures.py.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from providers.oci.distribution import RemoteRepository
from providers.oci.layout import LayoutRepository


def registry_host() -> str:
    value = os.environ.get("MLOPS_TEST_REGISTRY")
    if not value:
        pytest.skip("no local registry: MLOPS_TEST_REGISTRY is not set (run .ci/docker-up.sh)")
    return value


def remote_url() -> str:
    """A repository no other test uses."""
    return f"oci://{registry_host()}/mlops-test/r{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["embedded", "remote"])
def repo(request, tmp_path: Path):
    """Each backend in turn: the same code path must work on both."""
    if request.param == "embedded":
        return LayoutRepository(tmp_path / "layout")
    return RemoteRepository(remote_url(), settle_s=0.5)


class Counting:
    """Wraps a repository and counts the blob uploads it is asked for."""

    def __init__(self, inner):
        self.inner = inner
        self.uploads: list[str] = []

    def put_blob(self, digest, path=None, data=None):
        self.uploads.append(digest)
        return self.inner.put_blob(digest, path=path, data=data)

    def __getattr__(self, name):
        return getattr(self.inner, name)
