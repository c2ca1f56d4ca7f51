"""An alias of ``planner.core.addresses`` (the module moved into the core package): the very same module object,
so code written against the old name keeps working. New code imports ``planner.core.addresses``."""

import sys

from .core import addresses

sys.modules[__name__] = addresses
