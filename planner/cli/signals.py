"""Ctrl-C and SIGTERM as a cancel: apply, the rollout verbs and the reconcile loop finish what they must."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

CANCELLING = "\nReceived {signal}: cancelling; running changes stop at their next wait (Ctrl-C again to stop at once)."


@contextlib.contextmanager
def cancel_on_signals(cancel: threading.Event, message: str = CANCELLING) -> Iterator[None]:
    """Ctrl-C or SIGTERM sets ``cancel`` and says ``message`` (``{signal}`` is the signal's name): apply
    stops starting changes and stops waiting; the reconcile loop finishes its change and exits.

    A second Ctrl-C interrupts at once (providers' own clean-up still runs as the stack unwinds).
    Off the main thread (tests driving the CLI in a thread) signals cannot be caught: nothing is set up.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        cancel.set()
        print(message.format(signal=signal.Signals(signum).name), file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
