"""Reuse what did not change between two environments: start a new virtualenv as a copy of the
nearest one already built, and let pip install only the difference.

A changed pin used to rebuild everything (about 100 s for scikit-learn and its numpy and scipy).
Now the complete virtualenv with the same Python, runtime and index whose package list shares
the most lines is copied with hard links (instant, no extra disk; pip and the runtime installer
replace files by unlinking them first, so the original is never written through a link), pip
is given the full list (what is already satisfied stays; a changed pin is uninstalled and
installed), and whatever the copy had that the new list does not need is uninstalled, so the
result holds the same distributions a fresh build would. Unpinned packages keep the version the
copy had, as a fresh build made at that copy's time would have.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SPEC_FILE = ".spec.json"
KEEP_ALWAYS = frozenset({"pip", "setuptools", "wheel"})
"""What `python -m venv` itself installs: never uninstalled."""

_NEEDED = r"""
import json, sys
import importlib.metadata as md
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

wanted = [Requirement(r) for r in json.loads(sys.argv[1])]
dists = {}
for d in md.distributions():
    name = d.metadata["Name"]
    if name:
        dists.setdefault(canonicalize_name(name), d)
keep, todo = set(), [(r, frozenset(r.extras)) for r in wanted]
seen = set()
while todo:
    req, extras = todo.pop()
    name = canonicalize_name(req.name)
    if (name, extras) in seen or name not in dists:
        continue
    seen.add((name, extras))
    keep.add(name)
    for text in dists[name].requires or []:
        sub = Requirement(text)
        if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (extras | {""})):
            todo.append((sub, frozenset(sub.extras)))
print(json.dumps(sorted(set(dists) - keep)))
"""


def describe(env_spec: Mapping[str, Any], runtime: str) -> dict[str, Any]:
    """What a virtualenv was built from (written beside it, read to find the nearest one)."""
    return {"python": env_spec["python"], "pip": sorted(env_spec.get("pip", [])),
            "index": env_spec.get("pip_index_url") or "", "runtime": runtime}


def nearest(root: Path, wanted: Mapping[str, Any]) -> Path | None:
    """The complete virtualenv under ``root`` most like ``wanted`` (same python, runtime, index)."""
    best: tuple[int, int] | None = None
    found = None
    for spec_file in root.glob(f"*/{SPEC_FILE}"):
        folder = spec_file.parent
        if folder.name.startswith(".") or not (folder / ".complete").exists():
            continue
        try:
            have = json.loads(spec_file.read_text())
        except (OSError, ValueError):
            continue
        if any(have.get(k) != wanted[k] for k in ("python", "index", "runtime")):
            continue
        common = len(set(have.get("pip", [])) & set(wanted["pip"]))
        score = (common, -len(set(have.get("pip", [])) - set(wanted["pip"])))
        if best is None or score > best:
            best, found = score, folder
    return found


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def clone(source: Path, dest: Path) -> None:
    """``dest`` (an empty folder) becomes a copy of the virtualenv ``source``, files hard-linked."""
    shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns(".complete", SPEC_FILE))


def unneeded(python: Path, requirements: list[str]) -> list[str]:
    """Distributions installed in the virtualenv of ``python`` that ``requirements`` do not need."""
    out = subprocess.run([str(python), "-c", _NEEDED, json.dumps(requirements)], capture_output=True, text=True,
                         check=True).stdout
    return [name for name in json.loads(out) if name not in KEEP_ALWAYS]
