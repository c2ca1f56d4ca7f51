"""load_manifest: read, interpolate and check a manifest, every problem collected (not just the first).

The checks run in order, each in its own module: the shipped schema, targets and deploy settings
against their provider's schemas, environments' packages, services' variables, rollouts,
cross-references, paths. Later checks run even when the schema found problems (all errors at
once); they skip entries whose shape is already reported as wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..envrefs import EnvReferences
from ..errors import ManifestError, Problem
from ..yamlpos import YamlProblem, decode, load, one_line
from .document import Manifest, display_path
from .files import check_paths
from .interpolation import PUBLIC_VARS, Checks, public_vars, typed_value
from .packages import check_environments
from .reading import read_manifest_bytes
from .references import check_references
from .schema_errors import check_schema
from .targets import check_targets_and_deploy
from .variables import check_variables


def load_manifest(path: Path, env: Mapping[str, str] | None = None) -> Manifest:
    """Read, interpolate and validate a manifest; raise ManifestError listing every problem."""
    env = os.environ if env is None else env
    path = Path(path).absolute()
    shown = display_path(path)
    raw = read_manifest_bytes(path, shown)
    try:
        data, positions = load(decode(raw))
    except YamlProblem as exc:
        raise ManifestError([Problem(shown, exc.line, exc.col, exc.message)]) from None
    if not isinstance(data, dict):
        raise ManifestError([Problem(shown, 1, 1, "the manifest must be a mapping (start with `version: 1`)")])

    problems: list[Problem] = []

    def report(where: tuple[str | int, ...], message: str, *, key: bool = False) -> None:
        line, col = positions.of(where, key=key)
        problems.append(Problem(shown, line, col, checks.redact(one_line(message, 1000))))

    checks = Checks(report)
    checks.public = public_vars(data.get(PUBLIC_VARS))
    data = {k: v if k == PUBLIC_VARS else checks.interpolate(v, (k,), env) for k, v in data.items()}
    # A value equal to a declared name is public already (names are keys, never interpolated), and
    # masking it would hide which model or environment a service uses.
    names = {k for section in ("models", "environments", "services", "targets")
             if isinstance(data.get(section), dict) for k in data[section]}
    references = EnvReferences({v: r for v, r in checks.references.items() if v not in names}, checks.written)
    manifest = Manifest(path, data, positions, references)
    if checks.whole:
        _type_interpolated(manifest, checks)
    check_schema(data, checks)
    # Later checks run even when the schema found problems (all errors at once); they skip
    # entries whose shape is already reported as wrong.
    check_targets_and_deploy(manifest, checks)
    check_environments(manifest, checks)
    check_variables(manifest, checks)
    _check_rollouts(manifest, checks)
    check_references(manifest, checks)
    check_paths(manifest, checks)
    if problems:
        raise ManifestError(problems)
    return manifest


def _type_interpolated(manifest: Manifest, checks: Checks) -> None:
    """Give a whole-``${VAR}`` value a type where the schema refuses it as text (see interpolation)."""
    candidates = {p: t for p in checks.whole if (t := typed_value(_get(manifest.data, p))) is not None}
    if not candidates:
        return
    refused: set[tuple] = set()

    def collect(where: tuple, message: str, *, key: bool = False) -> None:
        refused.add(tuple(where))

    dry = Checks(collect)
    check_schema(dict(manifest.data), dry)
    check_targets_and_deploy(manifest, dry)
    for path, typed in candidates.items():
        if path in refused:
            _set(manifest.data, path, typed)


def _get(data: Any, path: tuple) -> Any:
    for p in path:
        data = data[p]
    return data


def _set(data: Any, path: tuple, value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


def _check_rollouts(manifest: Manifest, checks: Checks) -> None:
    """Each ``rollout:`` block's relations (planner.rollout.spec), and whether its target can split traffic."""
    from ..rollout.support import rollout_problems

    for where, message in rollout_problems(manifest):
        checks.report(where, message)
