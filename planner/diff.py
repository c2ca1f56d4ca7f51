"""An alias of ``planner.core.diff`` (the module moved into the core package): the very same module object,
so code written against the old name keeps working. New code imports ``planner.core.diff``."""

import sys

from .core import diff

sys.modules[__name__] = diff
