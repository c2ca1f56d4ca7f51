"""Paths in the manifest: inside the project folder, regular files only, and out of what is hashed.

A manifest may come from a pull request: a path must not reach outside the manifest's folder or
through a symbolic link, a FIFO or a device, and a sample request must be JSON a service accepts.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..hashing import SKIP_DIRS, UnsafeFile, iter_files
from ..yamlpos import one_line
from .document import Manifest
from .interpolation import Checks
from .reading import read_regular, why
from .wording import show

MAX_SAMPLE_BYTES = 10 * 1024 * 1024
"""The scoring runtime's default body limit: a larger sample request could never be sent."""
MAX_PATH_CHARS = 1024


def _plain_path(value: Any) -> bool:
    """A path string the schema accepts (short, no control characters); others are reported there."""
    return isinstance(value, str) and 0 < len(value) <= MAX_PATH_CHARS and value.isprintable()


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (OSError, ValueError):
        return None


def check_paths(manifest: Manifest, checks: Checks) -> None:
    """Every path exists inside the project folder and holds only regular files and folders."""
    report = checks.report
    root = manifest.root.resolve()
    models = manifest.section("models")

    resolved: dict[str, Path] = {}   # services share paths: resolve and stat each one once

    def inside(rel: str, where: tuple, field_name: str, *, kind: str) -> Path | None:
        if rel in resolved:
            return resolved[rel]
        try:
            p = (manifest.root / rel).resolve()
        except (OSError, ValueError, RuntimeError) as exc:
            report(where, f"{field_name}: {checks.shown(where, rel)} cannot be used ({why(exc)})")
            return None
        if not p.is_relative_to(root):
            report(where, f"{field_name}: {checks.shown(where, rel)} is outside the project folder "
                          "(use a path inside the manifest's folder)")
            return None
        try:
            os.stat(p)
        except FileNotFoundError:
            report(where, f"{field_name}: {kind} {checks.shown(where, rel)} does not exist "
                          "(path is relative to the manifest)")
            return None
        except (OSError, ValueError) as exc:
            report(where, f"{field_name}: {checks.shown(where, rel)} cannot be used ({why(exc)})")
            return None
        resolved[rel] = p
        return p

    def regular_tree(p: Path, rel: str, where: tuple, field_name: str, *, quiet: bool = False) -> bool:
        """Nothing but regular files and folders under ``p`` (and ``rel`` itself is not a link).

        ``quiet``: a problem was reported for this folder already (its entry script); say no more.
        """
        if rel not in linked:
            st = _lstat(manifest.root / rel)
            linked[rel] = st is not None and stat.S_ISLNK(st.st_mode)
        if linked[rel]:
            report(where, f"{field_name}: {checks.shown(where, rel)} is a symbolic link; mlops never follows links "
                          "in model and source folders (use the real path, or a copy)")
            return False
        if p not in walked:  # services often share one source folder: walk it once
            try:
                iter_files(p)
                walked[p] = None
            except UnsafeFile as exc:
                walked[p] = exc
        exc = walked[p]
        if exc is not None:
            if not quiet:
                what = "a file in it" if checks.secret(where) else show(_relative(exc.path, root), 120)
                report(where, f"{field_name}: {what} {exc.reason}")
            return False
        return True

    walked: dict[Path, UnsafeFile | None] = {}
    linked: dict[str, bool] = {}
    hashed: list[tuple[Path, str]] = []
    for name, model in models.items():
        rel = model.get("path")
        if _plain_path(rel):
            where, field_name = ("models", name, "path"), f"models.{name}.path"
            p = inside(rel, where, field_name, kind="file or folder")
            if p == root:
                report(where, f"{field_name}: {checks.shown(where, rel)} is the project folder itself (it holds "
                              "ml.yaml, the code and the registry); point at the model file or its own folder")
                continue
            if p is not None and regular_tree(p, rel, where, field_name):
                hashed.append((p, field_name))
    for name, service in manifest.section("services").items():
        base = ("services", name)
        source_dir = service.get("source_dir")
        if _plain_path(source_dir):
            field_name = f"services.{name}.source_dir"
            src = inside(source_dir, (*base, "source_dir"), field_name, kind="folder")
            if src is not None:
                if not src.is_dir():
                    shown = checks.shown((*base, "source_dir"), source_dir)
                    report((*base, "source_dir"), f"{field_name}: {shown} is not a folder")
                else:
                    entry_ok = _check_entry_script(service, src, name, checks)
                    if regular_tree(src, source_dir, (*base, "source_dir"), field_name, quiet=not entry_ok):
                        hashed.append((src, field_name))
        sample = service.get("sample_request")
        if _plain_path(sample):
            _check_sample_request(sample, (*base, "sample_request"), name, inside, checks)
    _check_registry(manifest, root, hashed, checks)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _check_entry_script(service: Mapping[str, Any], src: Path, name: str, checks: Checks) -> bool:
    """The entry script: a regular file inside source_dir, not a link (it would run another file)."""
    entry = service.get("entry_script")
    if not _plain_path(entry):
        return True
    key = (src, entry)
    verdict = checks.entry_scripts.get(key)   # services share scripts: look once
    if verdict is None:
        verdict = checks.entry_scripts[key] = _entry_script_verdict(src, entry)
    kind, detail = verdict
    if not kind:
        return True
    where, field_name = ("services", name, "entry_script"), f"services.{name}.entry_script"
    report, shown = checks.report, checks.shown(where, entry)
    if kind == "unusable":
        report(where, f"{field_name}: {shown} cannot be used ({detail})")
        return False
    if kind == "outside":
        report(where, f"{field_name}: {shown} is outside source_dir (it is relative to source_dir)")
        return False
    if kind == "link":
        report(where, f"{field_name}: {shown} is a symbolic link; mlops runs only regular files "
                      "(replace the link with the script)")
        return False
    secret = checks.secret(("services", name, "source_dir"))
    folder = "source_dir" if secret else one_line(service["source_dir"], 120)
    report(where, f"{field_name}: {shown} not found in {folder} (it is relative to source_dir)")
    return True


def _entry_script_verdict(src: Path, entry: str) -> tuple[str, str]:
    """What is wrong with ``entry`` in ``src``: ("", "") nothing, else unusable/outside/link/missing."""
    target = src / entry
    try:
        resolved = target.resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        return "unusable", why(exc)
    try:
        st: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as exc:
        return "unusable", why(exc)
    if Path(entry).is_absolute() or not resolved.is_relative_to(src):
        return "outside", ""
    if st is not None and stat.S_ISLNK(st.st_mode):
        return "link", ""
    if st is None or not stat.S_ISREG(st.st_mode):
        return "missing", ""
    return "", ""


def _check_sample_request(sample: str, where: tuple, name: str, inside: Callable[..., Path | None],
                          checks: Checks) -> None:
    field_name = f"services.{name}.sample_request"
    path = inside(sample, where, field_name, kind="file")
    if path is None:
        return
    if path not in checks.samples:
        checks.samples[path] = sample_problem(path)
    problem = checks.samples[path]
    if problem:
        checks.report(where, f"{field_name}: {checks.shown(where, sample)} {problem}")


def sample_problem(path: Path) -> str | None:
    """Why a sample request file cannot be sent, or None: a regular file of bounded, valid JSON."""
    try:
        raw = read_regular(path, MAX_SAMPLE_BYTES)
    except (OSError, ValueError) as exc:
        return f"cannot be read ({why(exc)}); it must be a regular file"
    if raw is None:
        return f"is over {MAX_SAMPLE_BYTES // (1024 * 1024)} MiB, more than a service accepts"
    try:
        json.loads(raw.decode("utf-8"))
    except RecursionError:
        return "is not valid JSON (nested too deeply)"
    except UnicodeDecodeError as exc:
        return f"is not valid JSON (invalid UTF-8 at byte {exc.start})"
    except ValueError as exc:
        return f"is not valid JSON ({one_line(str(exc), 120)})"
    return None


def _check_registry(manifest: Manifest, root: Path, hashed: list[tuple[Path, str]], checks: Checks) -> None:
    """registry.path stays inside the manifest's folder and out of what is hashed (or plans never settle)."""
    registry = manifest.data.get("registry")
    rel = registry.get("path") if isinstance(registry, dict) else None
    if rel is None and not (isinstance(registry, dict) and "path" in registry):
        rel, where, name = ".mlops", (), "the registry folder .mlops"  # a committed link counts too
    elif _plain_path(rel):
        where, name = ("registry", "path"), "registry.path"
    else:
        return  # reported by the schema
    report, shown = checks.report, checks.shown(where, rel) if where else "'.mlops'"
    try:
        state = (manifest.root / rel).resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        report(where, f"{name}: {shown} cannot be used ({why(exc)})")
        return
    if state == root or not state.is_relative_to(root):
        fix = "use a folder inside it, such as .mlops" if where else "remove the link (mlops creates the folder)"
        report(where, f"{name}: {shown} is outside the manifest's folder (plan writes there); {fix}")
        return
    if state.exists() and not state.is_dir():
        report(where, f"{name}: {shown} is a file, not a folder (mlops keeps its registry there); remove the file "
                      "or name another path, such as .mlops")
        return
    inside: dict[Path, bool] = {}   # thousands of services share a few folders: decide each once
    for folder, field_name in hashed:
        if folder not in inside:
            inside[folder] = False
            if state.is_relative_to(folder) and folder.is_dir():
                first = state.relative_to(folder).parts[:1]
                inside[folder] = not first or first[0] not in SKIP_DIRS
        if inside[folder]:
            report(where, f"{name}: {shown} is inside {field_name}, which is hashed: every plan "
                          "would change it; use a folder outside it, such as .mlops")
