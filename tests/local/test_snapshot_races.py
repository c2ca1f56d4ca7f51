"""Services sharing one source folder are snapshotted in parallel by one apply's threads.

A copy that becomes its snapshot (renamed from ``.staging-*``) between another thread's listing of
the staging folders and its look at their age must not fail that thread (the status page test's
three services failed an apply with FileNotFoundError that way).
"""

from __future__ import annotations

import threading
from pathlib import Path

from planner.hashing import ContentHasher
from providers.local.snapshots import snapshot


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    (src / "pkg" / "util.py").write_text("X = 1\n")
    return src


def test_a_staging_folder_gone_between_listing_and_look_is_skipped(tmp_path: Path):
    src = _source(tmp_path)
    state = tmp_path / "state"
    (state / "sources").mkdir(parents=True)
    # What another thread's copy looks like once it was renamed into place after our listing:
    # a name the listing returns whose stat() finds nothing.
    (state / "sources" / ".staging-renamed").symlink_to(state / "sources" / "gone")
    digest = ContentHasher().tree_hash(src)
    app = snapshot(src, digest[:12], state)
    assert (app / "score.py").read_text().startswith("def init")
    assert (app.parent / ".complete").read_text().strip() == digest


def _copy_at_once(src: Path, digest: str, state: Path, threads: int) -> tuple[list[Path], list[BaseException]]:
    """``threads`` snapshots of ``src`` into one state folder, released together."""
    errors: list[BaseException] = []
    apps: list[Path] = []
    start = threading.Barrier(threads)

    def copy() -> None:
        start.wait()
        try:
            apps.append(snapshot(src, digest[:12], state))
        except BaseException as exc:   # noqa: BLE001 (the test reports whatever a thread raised)
            errors.append(exc)

    running = [threading.Thread(target=copy) for _ in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    return apps, errors


def test_parallel_snapshots_of_one_folder_all_succeed(tmp_path: Path):
    src = _source(tmp_path)
    digest = ContentHasher().tree_hash(src)
    for round_ in range(20):
        state = tmp_path / f"state{round_}"
        apps, errors = _copy_at_once(src, digest, state, 6)
        assert not errors, errors
        assert len(set(apps)) == 1 and (apps[0] / "pkg" / "util.py").read_text() == "X = 1\n"
        assert not list((state / "sources").glob(".staging-*"))
