"""Entry script in Azure ML's format: init() loads the model once, run() scores a request.

It runs unchanged under Azure ML's inference server and under mlops's runtime.
"""

import json
import os

import joblib
import numpy as np

model = None


def init():
    global model
    # AZUREML_MODEL_DIR points at the registered model version's folder.
    model = joblib.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.pkl"))


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"])
    return {"predictions": model.predict(data).tolist()}
