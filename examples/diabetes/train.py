"""Train the example model: Ridge regression on scikit-learn's bundled diabetes data.

This is the model Azure ML's own deployment tutorials serve. Run it to re-create model.pkl:
    python examples/diabetes/train.py
"""

from pathlib import Path

import joblib
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent


def main() -> None:
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    model = Ridge(alpha=0.1).fit(x_train, y_train)
    print(f"R^2 on held-out data: {model.score(x_test, y_test):.3f}")
    joblib.dump(model, HERE / "model.pkl")


if __name__ == "__main__":
    main()
