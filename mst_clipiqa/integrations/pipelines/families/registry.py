"""The pipeline-family registry: which :class:`PipelineFamily` drives which pipeline class."""

from __future__ import annotations

from typing import Any, TypeVar

from .base import PipelineFamily

__all__ = ["register_family", "find_family", "pipeline_family", "registered_families"]

F = TypeVar("F", bound=type[PipelineFamily])
_REGISTRY: dict[str, type[PipelineFamily]] = {}


def register_family(family: F) -> F:
    """Register ``family`` for each pipeline class named in its ``pipelines`` (usable as a class decorator).

    A pipeline class also matches through its base classes, the nearest one
    first; registering a name again replaces the earlier family.
    """
    if not (isinstance(family, type) and issubclass(family, PipelineFamily)):
        raise ValueError(f"register_family expects a PipelineFamily subclass, got {family!r}")
    names = family.pipelines
    if isinstance(names, str) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{family.__name__}.pipelines must be a non-empty tuple of pipeline class names, "
                         f"got {names!r}")
    for name in names:
        _REGISTRY[name] = family
    return family


def find_family(pipe: Any) -> PipelineFamily | None:
    """The registered family for ``pipe`` (matched on its class, then its base classes), or None."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in _REGISTRY:
            return _REGISTRY[cls.__name__](pipe)
    return None


def pipeline_family(pipe: Any) -> PipelineFamily:
    """The registered family for ``pipe``; a ValueError naming the known pipelines when there is none."""
    family = find_family(pipe)
    if family is None:
        raise ValueError(f"{type(pipe).__name__} is not a registered pipeline family (known: "
                         f"{', '.join(sorted(_REGISTRY))}); add one with integrations.register_family, "
                         "see docs/pipeline_families.md")
    return family


def registered_families() -> dict[str, type[PipelineFamily]]:
    """Pipeline class name -> family, a copy."""
    return dict(_REGISTRY)
