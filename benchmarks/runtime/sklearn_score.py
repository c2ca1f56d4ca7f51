"""Real-model entry script for the runtime benchmark: a scikit-learn Ridge on the diabetes data.

``init()`` loads ``model.pkl`` from ``AZUREML_MODEL_DIR`` (the benchmark trains and pickles it);
``run()`` takes ``{"data": [[10 features], ...]}`` and returns the predictions as a list.
"""

import json
import os
import pickle

import numpy as np


def init():
    global model
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"), "rb") as handle:
        model = pickle.load(handle)


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"])
    return model.predict(data).tolist()
