"""Live progress of an apply: which resource, which step, how long, plus a heartbeat for slow steps."""

from __future__ import annotations

import threading
import time
from typing import TextIO

from .plan import Action, Change

_VERBS = {
    Action.CREATE: ("Creating", "Creation"),
    Action.UPDATE: ("Modifying", "Modifications"),
    Action.DELETE: ("Destroying", "Destruction"),
    Action.DELETE_THEN_CREATE: ("Replacing", "Replacement"),
    Action.CREATE_THEN_DELETE: ("Replacing", "Replacement"),
}


class ProgressPrinter:
    """Thread-safe line printer; every ``heartbeat`` seconds says which changes are still going."""

    def __init__(self, out: TextIO, heartbeat: float = 10.0):
        self.out = out
        self.heartbeat = heartbeat
        self._lock = threading.Lock()
        self._started: dict[str, tuple[Change, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="progress")

    def __enter__(self) -> ProgressPrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _print(self, line: str) -> None:
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def __call__(self, change: Change, event: str) -> None:
        key = str(change.address)
        doing, done = _VERBS.get(change.action, ("Working on", "Work"))
        if event == "start":
            with self._lock:
                self._started[key] = (change, time.monotonic())
            self._print(f"{key}: {doing}...")
            return
        started = self._started.get(key, (change, time.monotonic()))[1]
        elapsed = f"{time.monotonic() - started:.0f}s"
        if event == "done":
            self._forget(key)
            self._print(f"{key}: {done} complete after {elapsed}")
        elif event == "failed":
            self._forget(key)
            self._print(f"{key}: {done} failed after {elapsed}")
        elif event == "cancelled":
            self._forget(key)
            self._print(f"{key}: {done} cancelled after {elapsed}")
        elif event == "skipped":
            self._print(f"{key}: skipped (a change it depends on failed)")
        else:
            self._print(f"{key}: {event} [{elapsed} elapsed]")

    def _forget(self, key: str) -> None:
        with self._lock:
            self._started.pop(key, None)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                running = list(self._started.items())
            for key, (change, started) in running:
                doing = _VERBS.get(change.action, ("Working on", ""))[0]
                self._print(f"{key}: Still {doing.lower()}... [{time.monotonic() - started:.0f}s elapsed]")
