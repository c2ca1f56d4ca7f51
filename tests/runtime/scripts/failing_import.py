"""The script's top level raises while being imported."""

raise ImportError("no module named imaginary_dependency")


def init():
    pass


def run(data):
    return data
