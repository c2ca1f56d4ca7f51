"""Ctrl-C and SIGTERM as a cancel: apply and the rollout verbs stop waiting and finish what they must."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def cancel_on_signals(cancel: threading.Event) -> Iterator[None]:
    """Ctrl-C or SIGTERM during apply: stop starting changes, stop waiting, report what is left.

    A second Ctrl-C interrupts at once (providers' own clean-up still runs as the stack unwinds).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        cancel.set()
        print(f"\nReceived {signal.Signals(signum).name}: cancelling; running changes stop at their next wait "
              "(Ctrl-C again to stop at once).", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
