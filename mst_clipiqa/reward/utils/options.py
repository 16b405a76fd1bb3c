"""Settings dataclasses whose fields carry their help, so that a CLI can build its options from them."""
from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with ``default`` and ``help`` (and ``flag``, ``type``, ... for the CLI) in its metadata."""
    return field(default=default, metadata={"help": help, **metadata})
