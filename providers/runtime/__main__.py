"""``python -m mlops_runtime`` (or ``python -m providers.runtime``): serve an entry script."""

from .cli import main

raise SystemExit(main())
