"""The targets a project has applied to, remembered in its registry where every runner reads them.

Removing a target from ``ml.yaml`` must not abandon what runs there: its settings (secret ones
left out: they are never written down) are remembered after every apply, the next plan reads the
services still there and plans their deletion, and a remembered target that cannot be read then
(gone, or it needs a secret setting) is named in the plan, never silently forgotten. A target is
forgotten once none of this project's services are left on it.

The record is a pointer artifact in the project's model registry (``providers.store``), so a
fresh runner (an empty state folder, the same registry) knows a target that another runner
applied to. A project whose registry holds no record yet is read from the state folder's
``applied-targets.json``, where earlier versions kept it; the first apply moves it over.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

FILE = "applied-targets.json"
"""The record as earlier versions kept it, in the checkout's state folder (read when the registry has none)."""


class RecordStore(Protocol):
    """The part of ``providers.store.Store`` that holds the record."""

    def applied_targets(self) -> dict[str, Any] | None: ...
    def update_applied_targets(self, update: Any) -> None: ...


def _valid(data: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(data, dict):
        return {}
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("provider"), str)}


def load_file(state_dir: Path) -> dict[str, dict[str, Any]]:
    """The record in the state folder (earlier versions); {} when there is none."""
    try:
        return _valid(json.loads((state_dir / FILE).read_text()))
    except (OSError, ValueError):
        return {}


def load(store: RecordStore, state_dir: Path) -> dict[str, dict[str, Any]]:
    """Remembered target name -> its settings (without secret ones); {} when nothing was applied yet.

    Raises what the registry raises when it cannot be read (the caller turns it into a plan warning).
    """
    record = store.applied_targets()
    return load_file(state_dir) if record is None else _valid(record)


def shareable(config: Mapping[str, Any], secret: Iterable[str]) -> dict[str, Any]:
    """A target's settings as they may be written down: secret settings left out."""
    hidden = set(secret)
    return {k: v for k, v in config.items() if k not in hidden}


def remember(store: RecordStore, state_dir: Path, declared: Mapping[str, Mapping[str, Any]],
             still_used: Iterable[str]) -> None:
    """Declared targets, plus remembered ones that still run services of this project."""
    used = set(still_used)
    old_file = state_dir / FILE

    def update(current: dict[str, Any] | None) -> dict[str, Any] | None:
        remembered = load_file(state_dir) if current is None else _valid(current)
        kept = {name: cfg for name, cfg in remembered.items() if name not in declared and name in used}
        record = {**kept, **{name: dict(cfg) for name, cfg in declared.items()}}
        if not record and current is None and not old_file.exists():
            return None      # nothing applied, nothing remembered: write nothing
        return record

    store.update_applied_targets(update)
    old_file.unlink(missing_ok=True)     # moved into the registry: one record, never two that disagree
