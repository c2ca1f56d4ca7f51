"""run() sleeps as long as asked: timeouts, queueing, SIGTERM with a request in flight.

Each answer also says how many run() calls were in progress at once, at most, so far.
"""

import json
import os
import threading
import time

_lock = threading.Lock()
_now = 0
_most = 0


def init():
    delay = float(os.environ.get("TEST_INIT_SLEEP", "0"))
    time.sleep(delay)


def run(data):
    global _now, _most
    seconds = json.loads(data).get("sleep", 0) if data else 0
    with _lock:
        _now += 1
        _most = max(_most, _now)
    try:
        time.sleep(seconds)
    finally:
        with _lock:
            _now -= 1
    return {"slept": seconds, "pid": os.getpid(), "most_at_once": _most}
