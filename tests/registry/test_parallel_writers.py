"""The writes of one apply, made in parallel threads on a fresh registry, all arrive and are all read back.

Embedded: the first writer creates the layout (``index.json``). Creating it used to happen outside the
writers' lock, so a writer could replace an index another had just recorded an environment in with an
empty one, and the next plan added that environment again (the flaky apply-then-plan test).
Remote (docker's registry): every artifact names the same empty config blob, and uploading it from
several threads at once made the registry answer HTTP 500 or "blob unknown" to one of them.
"""

from __future__ import annotations

import fcntl
import functools
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_fixtures import remote_url

from planner.hashing import ContentHasher
from providers.base import ProjectContext
from providers.oci.distribution import RemoteRepository
from providers.oci.layout import LayoutRepository
from providers.oci.models import ModelRegistry
from providers.oci.repository import Repository
from providers.store import Store

WRITERS = 4


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every 0.1 ms (default 5 ms), so a stress round interleaves the writers finely."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _recorded(root: Path) -> set[str]:
    """What a fresh reader (another process, the next plan) finds."""
    return {e["name"] for e in ModelRegistry(LayoutRepository(root)).environments()}


def _held_by_someone(root: Path) -> bool:
    with (root / ".lock").open("a") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(probe, fcntl.LOCK_UN)
        return False


class CreatesTheIndexSlowly(LayoutRepository):
    """A layout whose first writer, having found no index, lets ``meanwhile`` run before writing one: as
    far as the writers' lock allows, to completion (the worst interleaving a loaded machine produces)."""

    def __init__(self, root: Path, meanwhile: threading.Thread):
        super().__init__(root)
        self.meanwhile = meanwhile

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        if not manifests and not self.meanwhile.is_alive() and self.meanwhile.ident is None:
            blocked = _held_by_someone(self.root)    # then the other writer waits for us: let it queue up
            self.meanwhile.start()
            if not blocked:
                self.meanwhile.join(timeout=60)
        super()._write_index(manifests)


def test_a_record_made_while_another_writer_creates_the_layout_is_kept(tmp_path: Path):
    root = tmp_path / "registry"
    errors: list[BaseException] = []

    def other_writer() -> None:
        try:
            ModelRegistry(LayoutRepository(root)).set_environment("e", {"python": "3.11"}, {})
        except BaseException as exc:   # reported below, not lost in the thread
            errors.append(exc)

    other = threading.Thread(target=other_writer)
    first = CreatesTheIndexSlowly(root, other)
    ModelRegistry(first).set_environment("f", {"python": "3.11", "pip": ["numpy"]}, {})
    assert other.ident is not None, "the interleaving was not forced: the layout was never created"
    other.join(timeout=60)
    assert not errors and not other.is_alive()
    assert _recorded(root) == {"e", "f"}


def _at_once(actions: list[Callable[[], Any]]) -> list[Any]:
    """Run each action in its own thread, all released at the same moment; their results (errors raised)."""
    start = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(i: int) -> None:
        try:
            start.wait(timeout=60)
            results[i] = actions[i]()
        except BaseException as exc:   # raised below, not lost in the thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def _fresh(kind: str, where: Path) -> Repository:
    return LayoutRepository(where / "registry") if kind == "embedded" else RemoteRepository(remote_url(), settle_s=0.2)


# Rounds and writers: enough that the old code failed every run on a loaded 2-core machine (1 to 15 % a round).
@pytest.mark.parametrize(("kind", "rounds", "writers"), [("embedded", 300, WRITERS), ("remote", 12, 8)])
def test_parallel_writers_on_a_fresh_registry_lose_nothing(kind: str, rounds: int, writers: int, tmp_path: Path,
                                                           frequent_thread_switches):
    # Each round: a fresh registry and the writes of one apply, released at once through one registry (as
    # apply's threads share the project's store): a model version and environments; then the record of
    # applied targets. A fresh reader (the next plan) must find all of them.
    names = [f"env{n}" for n in range(writers - 1)]
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 100)
    sha = ContentHasher().tree_hash(model)
    for round_ in range(rounds):
        repo = _fresh(kind, tmp_path / f"r{round_}")
        registry = ModelRegistry(repo)
        _at_once([functools.partial(registry.register, "m", model, sha, "model.bin", {}),
                  *[functools.partial(registry.set_environment, name, {"python": "3.11", "name": name}, {})
                    for name in names]])
        registry.set_applied_targets({"mem": {"provider": "memory"}})
        reader = ModelRegistry(repo if kind == "remote" else LayoutRepository(repo.root))
        assert {e["name"] for e in reader.environments()} == set(names), f"round {round_} lost an environment"
        assert reader.numbering("m").numbers == {sha: 1}, f"round {round_} lost the model version"
        assert reader.applied_targets() == {"mem": {"provider": "memory"}}


def test_the_store_opens_one_registry_when_threads_ask_at_once(tmp_path: Path, monkeypatch,
                                                               frequent_thread_switches):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    context = ProjectContext(project="demo", root=tmp_path, state_dir=tmp_path / ".mlops",
                             cache_dir=tmp_path / "cache")
    for _round in range(500):
        store = Store(context)
        seen = _at_once([functools.partial(getattr, store, "registry")] * WRITERS)
        assert len({id(r) for r in seen}) == 1
