"""Two processes register different contents for one model at the same moment: each content gets a
number of its own, and every reader derives the same numbers (embedded layout and real registry)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from registry_fixtures import remote_url

from planner.hashing import ContentHasher
from providers.oci.distribution import RemoteRepository
from providers.oci.layout import LayoutRepository
from providers.oci.models import ModelRegistry

ROUNDS = 4


def _open(spec: tuple[str, str]):
    kind, where = spec
    return LayoutRepository(Path(where)) if kind == "embedded" else RemoteRepository(where, settle_s=1.0)


def _writer(spec, folder: str, contents: list[bytes], barrier, results) -> None:
    registry = ModelRegistry(_open(spec))
    path = Path(folder) / "model.bin"
    for content in contents:
        path.write_bytes(content)
        sha = ContentHasher().tree_hash(path)
        barrier.wait(timeout=60)
        results.put((sha, registry.register("ridge", path, sha, "model.bin", {"commit": "x", "dirty": False})))


@pytest.mark.parametrize("kind", ["embedded", "remote"])
def test_racing_registrations_never_share_a_number(kind, tmp_path):
    spec = (kind, str(tmp_path / "layout")) if kind == "embedded" else (kind, remote_url())
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    writers = []
    for who in ("a", "b"):
        folder = tmp_path / who
        folder.mkdir()
        contents = [f"{who}-{n}".encode() * 100 for n in range(ROUNDS)]
        writers.append(ctx.Process(target=_writer, args=(spec, str(folder), contents, barrier, results)))
    for w in writers:
        w.start()
    told = [results.get(timeout=120) for _ in range(2 * ROUNDS)]
    for w in writers:
        w.join(timeout=60)
        assert w.exitcode == 0
    numbers = [n for _, n in told]
    assert len(set(numbers)) == len(numbers) == 2 * ROUNDS, f"one number given to two contents: {told}"
    for _reader in range(2):
        derived = ModelRegistry(_open(spec)).numbering("ridge", refresh=True)
        assert derived.numbers == dict(told) and not derived.pending
