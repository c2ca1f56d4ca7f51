"""The port keepers of one project: start one per (service, port), find it, stop it.

Records live beside the service records (``<state>/ports/<service>-<port>.json``: pid, start id,
port, control socket); the control socket itself sits in a short per-user folder under /tmp,
because unix socket paths are limited to 108 bytes and state folders can be deep.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from planner.errors import ProviderError
from planner.hashing import digest

from ..store import _read_json, _write_json
from . import processes

SOCKET_ROOT = Path(f"/tmp/mlops-ports-{os.getuid()}")


@dataclass(frozen=True)
class Keeper:
    name: str
    port: int
    pid: int
    start_id: str
    socket: Path

    @property
    def alive(self) -> bool:
        return processes.is_running(self.pid, self.start_id) and self.socket.exists()


class PortKeepers:
    def __init__(self, state_dir: Path, host: str):
        self.folder = state_dir / "ports"
        self.state_dir = state_dir
        self.host = host

    def _record(self, name: str, port: int) -> Path:
        return self.folder / f"{name}-{port}.json"

    def socket_path(self, name: str, port: int) -> Path:
        return SOCKET_ROOT / f"{digest({'state': str(self.state_dir.resolve()), 'name': name, 'port': port})[:20]}.sock"

    def find(self, name: str, port: int) -> Keeper | None:
        data = _read_json(self._record(name, port))
        if not data:
            return None
        keeper = Keeper(name, port, int(data["pid"]), str(data["start_id"]), Path(data["socket"]))
        return keeper if keeper.alive else None

    def of_service(self, name: str) -> list[Keeper]:
        out = []
        for path in sorted(self.folder.glob(f"{name}-*.json")) if self.folder.is_dir() else []:
            port = path.stem[len(name) + 1:]
            if port.isdigit():
                found = self.find(name, int(port))
                if found:
                    out.append(found)
                else:
                    path.unlink(missing_ok=True)
        return out

    def all(self) -> list[Keeper]:
        """Every live keeper of this project (dead ones' records are removed on the way)."""
        out = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            name, _, port = path.stem.rpartition("-")
            if name and port.isdigit():
                found = self.find(name, int(port))
                if found:
                    out.append(found)
                else:
                    path.unlink(missing_ok=True)
        return out

    def owner_of(self, keeper: Keeper) -> tuple[str, str] | None:
        """(target, engine) of the service the keeper serves; None for a keeper from before they were written."""
        data = _read_json(self._record(keeper.name, keeper.port)) or {}
        return (str(data["target"]), str(data.get("engine") or "process")) if data.get("target") else None

    def ensure(self, name: str, port: int, log_file: Path, *, target: str = "", engine: str = "process",
               adopt_from: Sequence[int] = (),
               on_conflict: Callable[[], None] | None = None) -> Keeper:
        """The live keeper of ``name``'s ``port``, started if there is none (one line if the port is taken).

        ``adopt_from``: processes of this very service that may still hold the port's listener
        (their keeper was killed): the new keeper takes the listener over from the first that
        has it, so the port never changes hands. When that is not possible (no ptrace rights on
        the process), ``on_conflict`` is called to release the port (stop those processes) and
        the keeper binds it afresh.
        """
        found = self.find(name, port)
        if found:
            if target and self.owner_of(found) != (target, engine):   # the service moved to another target
                data = _read_json(self._record(name, port)) or {}
                _write_json(self._record(name, port), {**data, "target": target, "engine": engine})
            return found
        for pid in adopt_from:
            try:
                return self._start(name, port, log_file, (target, engine), adopt_from=pid)
            except ProviderError:
                continue
        try:
            return self._start(name, port, log_file, (target, engine))
        except ProviderError:
            if on_conflict is None or not adopt_from:
                raise
        on_conflict()
        return self._start(name, port, log_file, (target, engine))

    def _start(self, name: str, port: int, log_file: Path, owner: tuple[str, str], adopt_from: int = 0) -> Keeper:
        path = self.socket_path(name, port)
        record = self._record(name, port)
        cmd = [sys.executable, "-m", "providers.local.portkeeper", "--host", self.host, "--port", str(port),
               "--socket", str(path), "--record", str(record.resolve()), "--target", owner[0], "--engine", owner[1]]
        if adopt_from:
            cmd += ["--adopt-from", str(adopt_from)]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": _our_path()}
        self.folder.mkdir(parents=True, exist_ok=True)
        pid, start = processes.start_detached(cmd, cwd=Path("/"), env=env, log_file=log_file)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = _read_json(record) or {}
            if path.exists() and data.get("pid") == pid:
                return Keeper(name, port, pid, start, path)
            if not processes.is_running(pid, start):
                break
            time.sleep(0.02)
        processes.stop(pid, start, timeout=2)
        last = " | ".join(ln.strip()[len("portkeeper: "):] for ln in processes.tail(log_file, 2)
                          if ln.strip().startswith("portkeeper"))
        raise ProviderError(f"port {port} on {self.host} cannot be held for service {name!r}: "
                            f"{last or 'the port keeper did not start'} (stop what uses it or choose another port)")

    def stop(self, keeper: Keeper) -> None:
        processes.stop(keeper.pid, keeper.start_id, timeout=5)
        self._record(keeper.name, keeper.port).unlink(missing_ok=True)


def _our_path() -> str:
    """Where the `providers` package is, so the keeper runs the same code as this apply."""
    return str(Path(__file__).resolve().parents[2])
