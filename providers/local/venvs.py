"""One virtualenv per environment fingerprint, built once and shared by every project.

A venv is built in a temporary folder and renamed into place only when complete, under a file
lock, so concurrent applies that need the same environment build it once and never see half.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from planner.hashing import digest

from ..base import ProviderError
from ..bundle import install_runtime, requirements, runtime_version
from . import venvclone
from .pipreport import reasons


def find_python(version: str) -> str:
    """The interpreter for ``3.X``: ``python3.X`` on PATH, or this one if it matches."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    found = shutil.which(f"python{version}")
    if found:
        probe = subprocess.run([found, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return found
    raise ProviderError(
        f"Python {version} is not installed here (no working python{version} on PATH); "
        f"install it or set the environment's python to {sys.version_info.major}.{sys.version_info.minor}"
    )


def venv_key(env_spec: Mapping[str, Any]) -> str:
    inputs = {"python": env_spec["python"], "pip": list(env_spec.get("pip", [])), "runtime": runtime_version()}
    if env_spec.get("pip_index_url"):   # only when set: existing virtualenvs keep their keys
        inputs["pip_index_url"] = env_spec["pip_index_url"]
    return digest(inputs)[:16]


def pip_installs(env_spec: Mapping[str, Any]) -> list[list[str]]:
    """The `pip install` arguments for an environment: its packages from its own index when it names
    one (pip_index_url replaces PyPI for them), and the scoring runtime's from the machine's index."""
    packages = list(env_spec.get("pip", []))
    index = env_spec.get("pip_index_url")
    if not index:
        return [[*packages, *requirements()]]
    return [a for a in ([f"--index-url={index}", *packages] if packages else [], list(requirements())) if a]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def build_log(cache_dir: Path, env_spec: Mapping[str, Any]) -> Path:
    """The full output of the last build of this environment's virtualenv (kept when it fails)."""
    return cache_dir / "venvs" / f"{venv_key(env_spec)}.log"


def ensure_venv(cache_dir: Path, env_spec: Mapping[str, Any], progress: Callable[[str], None], *,
                log_copy: Path | None = None, log_hint: str = "", reuse: bool = True) -> Path:
    """Return a ready virtualenv for this environment spec, building it if needed.

    The build's whole output is kept beside it (``build_log``) and copied to ``log_copy`` (where
    `mlops logs --build SERVICE` finds it); a failure quotes pip's own reason and ``log_hint``.
    With ``reuse``, a new virtualenv starts as a copy of the nearest one built (venvclone.py).
    """
    try:
        return _ensure_venv(cache_dir, env_spec, progress, log_hint, reuse)
    finally:
        if log_copy is not None:
            with contextlib.suppress(OSError):
                log_copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(build_log(cache_dir, env_spec), log_copy)


def _ensure_venv(cache_dir: Path, env_spec: Mapping[str, Any], progress: Callable[[str], None],
                 log_hint: str, reuse: bool) -> Path:
    root = cache_dir / "venvs"
    root.mkdir(parents=True, exist_ok=True)
    final = root / venv_key(env_spec)
    _remove_stale_builds(root, final.name)
    if (final / ".complete").exists():
        return final
    with (root / f"{final.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / ".complete").exists():
            return final
        shutil.rmtree(final, ignore_errors=True)
        build = Path(tempfile.mkdtemp(dir=root, prefix=f".build-{final.name}-"))
        log = build_log(cache_dir, env_spec)
        log.write_text(f"--- mlops: building virtualenv {final.name} (python {env_spec['python']}, "
                       f"{len(env_spec.get('pip', []))} packages)\n")
        described = venvclone.describe(env_spec, runtime_version())
        try:
            source = venvclone.nearest(root, described) if reuse else None
            if source is not None:
                progress(f"copying virtualenv {source.name} (the nearest built) to install only what differs")
                with log.open("a") as out:
                    out.write(f"--- copy of virtualenv {source.name} ({len(described['pip'])} packages wanted)\n")
                venvclone.clone(source, build)
            else:
                progress(f"creating virtualenv (python {env_spec['python']})")
                _run([find_python(env_spec["python"]), "-m", "venv", str(build)], "python -m venv", log, log_hint)
            for args in pip_installs(env_spec):
                packages = [a for a in args if not a.startswith("--")]
                index = "" if len(packages) == len(args) else " from the environment's index"
                progress(f"installing {len(packages)} packages with pip{index}")
                _run([str(venv_python(build)), "-m", "pip", "install", "--disable-pip-version-check",
                      "--progress-bar", "off", *args], "pip install", log, log_hint)
            if source is not None:
                extra = venvclone.unneeded(venv_python(build), [*env_spec.get("pip", []), *requirements()])
                if extra:
                    progress(f"removing {len(extra)} packages the copy had and this environment does not need")
                    _run([str(venv_python(build)), "-m", "pip", "uninstall", "-y", *extra], "pip uninstall", log,
                         log_hint)
            site = Path(subprocess.run(
                [str(venv_python(build)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True, text=True, check=True).stdout.strip())
            install_runtime(site)
            # A venv records its own path in scripts; we only ever run `bin/python -m`, which
            # resolves relative to the interpreter, so renaming the folder is safe.
            (build / venvclone.SPEC_FILE).write_text(json.dumps(described, indent=2) + "\n")
            (build / ".complete").write_text(runtime_version() + "\n")
            build.rename(final)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return final


def _remove_stale_builds(root: Path, key: str) -> None:
    """Build folders of ``key`` that no live build holds: what a killed apply left (hundreds of MB
    each), and the processes still working in them (pip, ensurepip's own pip), which die with them.

    A build holds the key's lock for as long as it runs, and the kernel drops the lock of a killed
    process; so when the lock can be had at once, no build of this key is alive.
    """
    stale = list(root.glob(f".build-{key}-*"))
    if not stale:
        return
    with (root / f"{key}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return   # a build of this environment is running right now: its folder is not stale
        for folder in stale:
            _kill_processes_in(folder)
            shutil.rmtree(folder, ignore_errors=True)


def _kill_processes_in(folder: Path) -> None:
    """SIGKILL every process whose command line names ``folder`` (orphans of a killed build)."""
    needle = str(folder).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def _die_with_us() -> Callable[[], None]:
    """A pre-exec hook: the child gets SIGKILL when the apply that started it dies (no orphaned pip).

    libc is loaded here, in the parent; the child only makes the one prctl call (fork-safe).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return lambda: libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


def _run(cmd: list[str], what: str, log: Path | None = None, log_hint: str = "") -> None:
    """Run one build step, its output appended to ``log``; a failure says why in pip's own words."""
    if log is None:
        with tempfile.TemporaryDirectory() as tmp:
            return _run(cmd, what, Path(tmp) / "output.log", log_hint or "not kept")
    with log.open("a") as out:
        out.write(f"--- {what}\n")
        out.flush()
        start = out.tell()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_us())
    if proc.returncode != 0:
        with log.open(errors="replace") as fh:
            fh.seek(start)
            output = fh.read()
        if what.startswith("pip"):
            # pip's own lines only (never a line it quotes from a requirements file), cut short.
            lines = reasons(output)
        else:
            lines = [ln.strip()[:300] for ln in output.splitlines() if ln.strip()][-2:]
        tail = "; ".join(lines) or f"exit code {proc.returncode}"
        hint = f" (the whole log: {log_hint})" if log_hint else f" (the whole log: {log})"
        raise ProviderError(f"{what} failed: {tail}{hint}")
