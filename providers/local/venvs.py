"""One virtualenv per environment fingerprint, built once and shared by every project.

A venv is built in a temporary folder and renamed into place only when complete, under a file
lock, so concurrent applies that need the same environment build it once and never see half.
"""

from __future__ import annotations

import fcntl
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


def ensure_venv(cache_dir: Path, env_spec: Mapping[str, Any], progress: Callable[[str], None]) -> Path:
    """Return a ready virtualenv for this environment spec, building it if needed."""
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
        try:
            progress(f"creating virtualenv (python {env_spec['python']})")
            _run([find_python(env_spec["python"]), "-m", "venv", str(build)], "python -m venv")
            for args in pip_installs(env_spec):
                packages = [a for a in args if not a.startswith("--")]
                index = "" if len(packages) == len(args) else " from the environment's index"
                progress(f"installing {len(packages)} packages with pip{index}")
                _run([str(venv_python(build)), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                      *args], "pip install")
            site = Path(subprocess.run(
                [str(venv_python(build)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True, text=True, check=True).stdout.strip())
            install_runtime(site)
            # A venv records its own path in scripts; we only ever run `bin/python -m`, which
            # resolves relative to the interpreter, so renaming the folder is safe.
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


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_die_with_us())
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        if what.startswith("pip"):
            # pip can echo a requirements file's contents or the environment: keep only its own
            # ERROR lines about a requirement, never a line quoted from a file, each cut short.
            lines = [ln[:300] for ln in lines if ln.startswith("ERROR:") and "(from line" not in ln]
        tail = " | ".join(lines[-2:]) or f"exit code {proc.returncode}"
        raise ProviderError(f"{what} failed: {tail}")
