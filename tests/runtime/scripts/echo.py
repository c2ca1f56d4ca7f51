"""Undecorated run(): gets the raw body as a string and returns it (plus whether a key leaked)."""

import os


def init():
    global prefix
    prefix = "raw"


def run(data):
    return {prefix: data, "key_visible": "MLOPS_PRIMARY_KEY" in os.environ}
