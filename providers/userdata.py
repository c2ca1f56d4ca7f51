"""The per-user data folder of a project: what every checkout of it on this machine shares.

The embedded model registry, the local engines' records (instances, logs, port keepers) and the
service keys live here, not in the checkout: a second checkout of the same project (a new folder,
no ``.mlops/``) sees the same versions and the same running services, and a later apply from either
takes them over (same port, same keys). The key is the project's name, as in ``ml.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """Per-user data folder: $XDG_DATA_HOME/mlops or ~/.local/share/mlops."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mlops"


def project_data_dir(project: str) -> Path:
    """``<data home>/<project>``: the folder every checkout of ``project`` on this machine shares."""
    return data_home() / project
