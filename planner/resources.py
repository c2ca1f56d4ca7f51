"""An alias of ``planner.core.resources`` (the module moved into the core package): the very same module object,
so code written against the old name keeps working. New code imports ``planner.core.resources``."""

import sys

from .core import resources

sys.modules[__name__] = resources
