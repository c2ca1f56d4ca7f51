"""The targets a project has applied to, remembered beside its state.

Removing a target from ``ml.yaml`` must not abandon what runs there: its settings (secret ones
left out: they are never written down) are remembered after every apply, the next plan reads the
services still there and plans their deletion, and a remembered target that cannot be read then
(gone, or it needs a secret setting) is named in the plan, never silently forgotten. A target is
forgotten once none of this project's services are left on it.

The record lives in the project's state folder (``applied-targets.json``); with a shared registry
(every runner reading the same state) it should move there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FILE = "applied-targets.json"


def load(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Remembered target name -> its settings (without secret ones); {} when nothing was applied yet."""
    try:
        data = json.loads((state_dir / FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("provider"), str)}


def shareable(config: Mapping[str, Any], secret: Iterable[str]) -> dict[str, Any]:
    """A target's settings as they may be written down: secret settings left out."""
    hidden = set(secret)
    return {k: v for k, v in config.items() if k not in hidden}


def remember(state_dir: Path, declared: Mapping[str, Mapping[str, Any]], still_used: Iterable[str]) -> None:
    """Declared targets, plus remembered ones that still run services of this project."""
    used = set(still_used)
    kept = {name: cfg for name, cfg in load(state_dir).items() if name not in declared and name in used}
    record = {**kept, **{name: dict(cfg) for name, cfg in declared.items()}}
    if not record and not (state_dir / FILE).exists():
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, state_dir / FILE)
