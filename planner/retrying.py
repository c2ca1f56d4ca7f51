"""An alias of ``planner.core.retrying`` (the module moved into the core package): the very same module object,
so code written against the old name keeps working. New code imports ``planner.core.retrying``."""

import sys

from .core import retrying

sys.modules[__name__] = retrying
