"""run() answers which version it is (``TEST_WHO``), so a client can tell who answered; with
``TEST_FAIL_EVERY=n`` every n-th call raises (a 500), with ``TEST_SLEEP_S`` each call sleeps."""

import os
import time

_calls = 0


def init():
    global who, fail_every, sleep_s
    who = os.environ.get("TEST_WHO", "unnamed")
    fail_every = int(os.environ.get("TEST_FAIL_EVERY", "0"))
    sleep_s = float(os.environ.get("TEST_SLEEP_S", "0"))


def run(data):
    global _calls
    _calls += 1
    if sleep_s:
        time.sleep(sleep_s)
    if fail_every and _calls % fail_every == 0:
        raise RuntimeError("planned failure")
    return {"who": who, "pid": os.getpid()}
