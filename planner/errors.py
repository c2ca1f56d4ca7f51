"""An alias of ``planner.core.errors`` (the module moved into the core package): the very same module object,
so code written against the old name keeps working. New code imports ``planner.core.errors``."""

import sys

from .core import errors

sys.modules[__name__] = errors
