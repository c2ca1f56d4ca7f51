"""An alias of ``planner.core.redact`` (the module moved into the core package): the very same module object,
so code written against the old name keeps working. New code imports ``planner.core.redact``."""

import sys

from .core import redact

sys.modules[__name__] = redact
