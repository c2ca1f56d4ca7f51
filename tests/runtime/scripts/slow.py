"""run() sleeps as long as asked: timeouts, queueing, SIGTERM with a request in flight."""

import json
import os
import time


def init():
    delay = float(os.environ.get("TEST_INIT_SLEEP", "0"))
    time.sleep(delay)


def run(data):
    seconds = json.loads(data).get("sleep", 0) if data else 0
    time.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}
