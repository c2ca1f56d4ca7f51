"""Stand-in for MLOpsPython's scoring script: loads the model through the v1 SDK's Model class."""

import json

import joblib
from azureml.core.model import Model


def init():
    global model
    model = joblib.load(Model.get_model_path("diabetes_regression_model.pkl"))


def run(raw_data):
    data = json.loads(raw_data)["data"]
    return {"result": model.predict(data).tolist()}
