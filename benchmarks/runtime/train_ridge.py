"""Train the benchmark's Ridge model on scikit-learn's bundled diabetes data; pickle it to argv[1].

Run with each benchmark virtualenv's own Python, so the pickle matches its scikit-learn version.
"""

import pickle
import sys
from pathlib import Path

from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

X, y = load_diabetes(return_X_y=True)
model = Ridge(alpha=1.0).fit(X, y)
target = Path(sys.argv[1])
target.mkdir(parents=True, exist_ok=True)
(target / "model.pkl").write_bytes(pickle.dumps(model))
print(f"trained Ridge on {X.shape[0]} rows, R^2={model.score(X, y):.3f}")
