"""The scoring runtime as a versioned bundle that targets copy next to the user's code.

The runtime package (``providers/runtime``) imports nothing outside itself, so each target can
ship it verbatim (into a virtualenv, an image) under the name ``mlops_runtime``; its version is
a hash of its files, so a runtime change shows in the plan of every service that runs it.
"""

from __future__ import annotations

import shutil
from functools import cache
from pathlib import Path

from planner.hashing import ContentHasher

PACKAGE_NAME = "mlops_runtime"


def runtime_dir() -> Path:
    return Path(__file__).resolve().parent / "runtime"


@cache
def runtime_version() -> str:
    """``mlops-runtime@<hash>`` over the runtime's files and its pip requirements."""
    from .runtime import REQUIREMENTS

    tree = ContentHasher().tree_hash(runtime_dir())
    from planner.hashing import digest

    return f"mlops-runtime@{digest([tree, sorted(REQUIREMENTS)])[:12]}"


def requirements() -> list[str]:
    from .runtime import REQUIREMENTS

    return list(REQUIREMENTS)


def install_runtime(site_packages: Path) -> Path:
    """Copy the runtime package into ``site_packages`` as ``mlops_runtime``; returns its folder."""
    dest = site_packages / PACKAGE_NAME
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(runtime_dir(), dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest
