"""run() raises on demand, with a detail that must never reach the client."""

import json


def init():
    pass


def run(data):
    if json.loads(data).get("boom"):
        raise ValueError("secret-detail-from-run")
    return "ok"
