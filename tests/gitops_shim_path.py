"""Where the `mlops` shim of tests/gitops lives, for tests outside that folder."""

from __future__ import annotations

import sys
from pathlib import Path


def install(tmp_path: Path) -> Path:
    """Install the shim (in-memory targets kept between processes) and return its path."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "gitops"))
    from mlops_shim import install_shim

    return install_shim(tmp_path) / "mlops"
