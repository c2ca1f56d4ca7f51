"""The local engines' apply lock lives in the project's data folder: two checkouts of one project on
this machine (which share its local services) never apply at the same time."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from planner.core.errors import CancelledError, ProviderError
from providers.local.projectlock import project_lock

ROOT = Path(__file__).resolve().parents[2]

HOLD = """\
import sys, time
from pathlib import Path
from providers.local.projectlock import project_lock
with project_lock(Path(sys.argv[1]), "mlops apply", Path(sys.argv[2])):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def held_elsewhere(tmp_path: Path):
    """Checkout A's apply, in another process, holding the project's lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "data"), str(tmp_path / "checkout-a")],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_checkout_waits_then_says_who_holds_it(tmp_path: Path, held_elsewhere):
    with pytest.raises(ProviderError) as caught, \
            project_lock(tmp_path / "data", "mlops apply", tmp_path / "checkout-b", wait_s=0.3):
        pytest.fail("two applies of one project's local services at once")
    assert f"mlops apply from {tmp_path / 'checkout-a'}, pid {held_elsewhere.pid}" in str(caught.value)


def test_cancel_stops_the_wait(tmp_path: Path, held_elsewhere):
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(CancelledError), \
            project_lock(tmp_path / "data", "mlops apply", tmp_path / "checkout-b", cancel, wait_s=30):
        pass


def test_it_is_taken_once_per_process_and_freed_when_its_holder_dies(tmp_path: Path, held_elsewhere):
    held_elsewhere.kill()
    held_elsewhere.wait()
    with project_lock(tmp_path / "data", "mlops apply", tmp_path, wait_s=5), \
            project_lock(tmp_path / "data", "mlops apply", tmp_path, wait_s=0.1):   # a second local target
        assert (tmp_path / "data" / "apply.lock.json").exists()
    assert not (tmp_path / "data" / "apply.lock.json").exists()
    with project_lock(tmp_path / "data", "mlops apply", tmp_path, wait_s=0.1):
        pass
