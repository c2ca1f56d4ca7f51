"""init() raises: the runtime must exit non-zero with one clear line."""


def init():
    raise ValueError("model file missing")


def run(data):
    return data
