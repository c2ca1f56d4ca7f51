"""An `mlops` command on PATH whose in-memory targets persist between processes, for workflow tests.

The workflow runs `mlops` as separate processes (plan, comment, fetch-plan, apply); the in-memory
provider keeps services in a dict, so this shim loads that dict before the command and saves it
after, which makes a plan on the pull request and an apply on merge see the same "live" state.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent

SHIM = f'''#!{sys.executable}
import os, pickle, sys
sys.path[:0] = [{str(TESTS)!r}, {str(ROOT)!r}]
import memory_provider
from providers import registry
registry.register("memory", memory_provider.MemoryProvider)
path = os.environ["MLOPS_TEST_MEMORY_STATE"]
if os.path.exists(path):
    with open(path, "rb") as fh:
        saved = pickle.load(fh)
    memory_provider.STATE.update(saved["state"])
    memory_provider._instances = saved["instances"]
from planner.cli import main
try:
    code = main(sys.argv[1:])
finally:
    with open(path, "wb") as fh:
        pickle.dump({{"state": dict(memory_provider.STATE), "instances": memory_provider._instances}}, fh)
sys.exit(code)
'''


def install_shim(tmp_path: Path) -> Path:
    """A folder holding the `mlops` shim; put it first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    shim = folder / "mlops"
    shim.write_text(SHIM)
    shim.chmod(0o755)
    return folder
