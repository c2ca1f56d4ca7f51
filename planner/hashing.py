"""An alias of ``planner.core.hashing`` (the module moved into the core package): the very same module object,
so code written against the old name keeps working. New code imports ``planner.core.hashing``."""

import sys

from .core import hashing

sys.modules[__name__] = hashing
