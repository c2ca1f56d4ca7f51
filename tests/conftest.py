"""Fixtures shared by every test folder; the helpers themselves live in support.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One virtualenv cache for the whole session, so each environment is built once."""
    path = Path(os.environ.get("MLOPS_TEST_CACHE") or tmp_path_factory.mktemp("mlops-cache"))
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(shared_cache, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("MLOPS_CACHE_DIR", str(shared_cache))
    # The embedded registry is per user: each test gets its own, so versions start at 1.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data")))


@pytest.fixture
def memory_target():
    """The in-memory test provider, registered as kind ``memory`` for one test."""
    from memory_provider import STATE, MemoryProvider

    from providers import registry

    registry.register("memory", MemoryProvider)
    yield MemoryProvider
    registry.unregister("memory")
    STATE.clear()
