"""An alias of ``planner.core.events`` (the module moved into the core package): the very same module object,
so code written against the old name keeps working. New code imports ``planner.core.events``."""

import sys

from .core import events

sys.modules[__name__] = events
