"""An alias of ``planner.core.plan`` (the module moved into the core package): the very same module object,
so code written against the old name keeps working. New code imports ``planner.core.plan``."""

import sys

from .core import plan

sys.modules[__name__] = plan
