"""Echo entry script for the runtime benchmark: the server's own overhead, nearly nothing else.

It is the entry script of Azure's deploy-local tutorial (``echo_score.py``), unchanged in spirit:
parse the JSON body and answer with a string built from it.
"""

import json


def init():
    print("This is init")


def run(data):
    test = json.loads(data)
    return f"test is {test}"
