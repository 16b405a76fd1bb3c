"""Old path of :mod:`integrations.pipelines.tiny` (examples and other branches import it from here)."""

from .pipelines.tiny import *  # noqa: F403
from .pipelines.tiny import __all__  # noqa: F401
