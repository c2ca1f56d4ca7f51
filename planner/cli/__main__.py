"""`python -m planner.cli` is `mlops`."""

import sys

from . import main

sys.exit(main())
