"""What a provider reports while it works on one change, and how it learns it should stop.

Long cloud operations report steps ("pushing the image") and waits with counts ("waiting for
replicas: 3/5"); Ctrl-C or SIGTERM sets the shared cancel flag, and every wait a provider does
through ``Events`` (``sleep``, ``check``, ``wait_until``) then raises ``CancelledError`` at once,
so the provider's own clean-up runs and apply can report what was left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .errors import CancelledError

StepSink = Callable[[str], None]


class Events:
    """Progress and cancellation for one change. Calling it like a function reports a step."""

    def __init__(self, on_step: StepSink | None = None, cancel: threading.Event | None = None):
        self._on_step = on_step or (lambda text: None)
        self.cancel = cancel or threading.Event()
        self._last_wait: tuple[str, int, int] | None = None

    def __call__(self, text: str) -> None:
        self.step(text)

    def step(self, text: str) -> None:
        self._on_step(text)

    def waiting(self, what: str, done: int, total: int) -> None:
        """``waiting for replicas: 3/5``; repeated identical counts are reported once."""
        if self._last_wait == (what, done, total):
            return
        self._last_wait = (what, done, total)
        self._on_step(f"waiting for {what}: {done}/{total}")

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def check(self) -> None:
        """Raise ``CancelledError`` if the user asked to stop."""
        if self.cancel.is_set():
            raise CancelledError("cancelled")

    def sleep(self, seconds: float) -> None:
        """Sleep, waking (and raising) at once on cancellation."""
        if self.cancel.wait(max(0.0, seconds)):
            raise CancelledError("cancelled")

    def wait_until(self, check: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
        """Poll ``check`` until it is true or ``timeout`` passes; raises on cancellation."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            if check():
                return True
            if time.monotonic() >= deadline:
                return False
            self.sleep(interval)


NO_EVENTS = Events()
"""For callers that report nowhere and never cancel (tests, one-off look-ups)."""
