"""One transient-error policy for every remote call (GitHub, cloud APIs, registries).

A failure is either worth retrying (``TransientError``: 429, 5xx, a dropped connection, with the
server's Retry-After when it gave one) or not (anything else). Retries use tenacity with
exponential backoff and jitter, honour Retry-After up to a bound, and stop after a few attempts
or as soon as the caller's cancellation is set, so Ctrl-C never waits out a backoff.

One error tree: both kinds are ``ProviderError``s (what a target or a remote API could not do), and a
cancellation during a backoff is a ``CancelledError``, never turned into a failure: apply reports
the change as cancelled, and handlers of ``ProviderError`` cannot swallow it.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from .errors import CancelledError, ProviderError

T = TypeVar("T")

MAX_RETRY_AFTER = 120.0
"""Longer waits than this are not worth holding a job for; the error tells the user to re-run."""


class TransientError(ProviderError):
    """A failure worth retrying: the same call may succeed later (after ``retry_after`` seconds)."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ProviderError):
    """A failure that retrying cannot fix (bad request, forbidden, not found, conflict)."""

    retryable = False


def is_transient_status(status: int) -> bool:
    """HTTP statuses that mean "try again": throttling and server-side failures."""
    return status == 429 or status == 408 or status >= 500


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds, given as a number or as an HTTP date; None when absent or unreadable."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Cancelled(Exception):
    pass


def call_with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int = 5,
    max_retry_after: float = MAX_RETRY_AFTER,
    sleep: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> T:
    """Call ``fn`` until it succeeds, retrying only ``TransientError``; raise one clear error after."""
    fallback = wait_exponential_jitter(initial=1, max=30)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            if exc.retry_after > max_retry_after:
                raise PermanentError(f"{what}: the server asks to wait {exc.retry_after:.0f}s before retrying "
                                     f"({exc}); try again later")
            return exc.retry_after
        return fallback(state)

    def pause(seconds: float) -> None:
        if cancel is None:
            (sleep or time.sleep)(seconds)
        elif cancel.wait(seconds):
            raise _Cancelled

    retrying = Retrying(stop=stop_after_attempt(max(1, attempts)), wait=wait,
                        retry=retry_if_exception_type(TransientError), sleep=pause, reraise=True)
    try:
        return retrying(fn)
    except TransientError as exc:
        raise PermanentError(f"{what} failed after {attempts} attempts: {exc}; try again later") from None
    except _Cancelled:
        raise CancelledError(f"{what}: cancelled while waiting to retry") from None
