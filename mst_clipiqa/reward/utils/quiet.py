"""Other libraries' messages that repeat what the library says in its own line, kept from the user.

Only messages that the library's own error or result replaces are held back: a log line that announces the error
raised next (and turned into one line by the caller), or a notice that says nothing the user can act on.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path


class _DropFrom(logging.Filter):
    """Drops records logged from files under ``folder`` whose message contains ``text``."""

    def __init__(self, folder: Path, text: str) -> None:
        super().__init__()
        self.folder, self.text = str(folder), text

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.pathname.startswith(self.folder) and self.text in record.getMessage())


@contextlib.contextmanager
def root_log_dropped(module, text: str) -> Iterator[None]:
    """Within the block, the records ``module``'s package logs on the root logger (``logging.error(...)``) that
    contain ``text`` are dropped. Other records print as they would have; but where the root logger has no handler,
    the one ``logging.error`` would install for good (``ERROR:root:...`` on stderr) is there for the block only."""
    root = logging.getLogger()
    drop = _DropFrom(Path(module.__file__).resolve().parent, text)
    placeholder = None
    if not root.handlers:
        placeholder = logging.StreamHandler()
        placeholder.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    root.addFilter(drop)
    if placeholder:
        root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeFilter(drop)
        if placeholder:
            root.removeHandler(placeholder)


@contextlib.contextmanager
def loggers_quiet(*names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Within the block, the named loggers (``diffusers``, ``transformers``, ...) pass only ``level`` and above."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, old in zip(loggers, levels):
            logger.setLevel(old)
