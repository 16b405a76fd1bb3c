"""Old path of :mod:`integrations.pipelines.families`, kept one release with a ``DeprecationWarning``."""
import warnings

from .pipelines.families import *  # noqa: F403
from .pipelines.families import __all__  # noqa: F401

warnings.warn("mst_clipiqa.integrations.families moved to mst_clipiqa.integrations.pipelines.families (or import "
              "the names from mst_clipiqa); the old path goes in a later release", DeprecationWarning, stacklevel=2)
