"""The embedded registry's first writes: parallel writers into a brand-new layout lose no entry.

An apply registers its model and records its environments in parallel threads; into a registry
that does not exist yet, each writer used to create the layout (and an empty index) outside the
lock, so one could wipe an entry another had just written: the next plan then showed that
environment (or model version) as new again.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from providers.oci.layout import LayoutRepository


def _write_at_once(repo: LayoutRepository, tags: list[str]) -> None:
    """Every tag written by its own thread, all released together."""
    start = threading.Barrier(len(tags))

    def write(tag: str) -> None:
        start.wait()
        repo.put_manifest(tag, json.dumps({"tag": tag}).encode())

    threads = [threading.Thread(target=write, args=(tag,)) for tag in tags]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_parallel_first_writes_into_a_new_layout_keep_every_entry(tmp_path: Path):
    tags = [f"e.env{i}.current" for i in range(8)]
    for attempt in range(30):
        repo = LayoutRepository(tmp_path / f"layout-{attempt}")
        _write_at_once(repo, tags)
        assert sorted(LayoutRepository(repo.root).tags()) == sorted(tags), f"attempt {attempt}"
        assert all(repo.get_manifest(tag) is not None for tag in tags)
