"""Reads AZUREML_MODEL_DIR in init(), as real scripts do."""

import os


def init():
    global model_dir
    model_dir = os.environ["AZUREML_MODEL_DIR"]


def run(data):
    return {"model_dir": model_dir, "files": sorted(os.listdir(model_dir))}
