"""run() returning what models return: NumPy values, or a response object with its own status."""

import json

import numpy as np


class Response:
    """Duck-typed like Azure's AMLResponse / flask.Response."""

    status_code = 201
    headers = {"X-From-Script": "yes", "Content-Type": "text/plain"}

    def get_data(self):
        return b"created"


def init():
    pass


def run(data):
    kind = json.loads(data)["kind"]
    if kind == "numpy":
        return {"array": np.arange(3) * 1.5, "scalar": np.int64(7)}
    return Response()
