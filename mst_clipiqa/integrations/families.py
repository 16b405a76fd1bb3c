"""Old path of :mod:`integrations.pipelines.families` (``docs/pipeline_families.md`` and code that adds a family
imported from here)."""

from .pipelines.families import *  # noqa: F403
from .pipelines.families import __all__  # noqa: F401
