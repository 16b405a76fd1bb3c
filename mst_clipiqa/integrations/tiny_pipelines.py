"""Old path of :mod:`integrations.pipelines.tiny`, kept one release with a ``DeprecationWarning``."""
import warnings

from .pipelines.tiny import *  # noqa: F403
from .pipelines.tiny import __all__  # noqa: F401

warnings.warn("mst_clipiqa.integrations.tiny_pipelines moved to mst_clipiqa.integrations.pipelines.tiny; the old "
              "path goes in a later release", DeprecationWarning, stacklevel=2)
