"""Fixtures shared by every test folder; the helpers themselves live in support.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engines  # noqa: E402  (needs the path above)

_STARTED: list[engines.Engine] = []


def pytest_configure(config):
    """Start the Docker engine (and the other servers the suite needs) unless the run has them."""
    if not hasattr(config, "workerinput"):
        _STARTED.extend(engines.start_missing())


def pytest_unconfigure(config):
    engines.stop(_STARTED)
    _STARTED.clear()


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One virtualenv cache, kept between runs (entries are keyed by content, so reuse is safe): each
    environment is built once per machine, not once per run. MLOPS_TEST_CACHE overrides it."""
    given = os.environ.get("MLOPS_TEST_CACHE")
    if given:
        return Path(given)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "mlops-tests" / "venvs"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return tmp_path_factory.mktemp("mlops-cache")
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
