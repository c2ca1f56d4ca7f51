"""Stand-in for the bidaf_onnx score.py of Azure's example (the model itself is not shipped)."""

import json


def init():
    pass


def run(request):
    return json.loads(request)
