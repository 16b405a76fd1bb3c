"""Other libraries' messages that repeat what the library says in its own line, kept from the user.

Only messages that the library's own error or result replaces are held back: a log line that announces the error
raised next (and turned into one line by the caller), or a notice that says nothing the user can act on.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path


class _Drop(logging.Filter):
    """Drops records whose message contains ``text`` (and, with ``folder``, that were logged from files under it)."""

    def __init__(self, text: str, folder: Path | None) -> None:
        super().__init__()
        self.text, self.folder = text, str(folder) if folder else ""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.pathname.startswith(self.folder) and self.text in record.getMessage())


@contextlib.contextmanager
def log_dropped(text: str, *names: str, module=None) -> Iterator[None]:
    """Within the block, records containing ``text`` logged on the named loggers (the root logger where none is
    named, as by ``logging.error(...)``), with ``module`` only those from its package's files, are dropped.

    Other records print as they would have; but where the root logger has no handler, the one ``logging.error``
    would install for good (``ERROR:root:...`` on stderr) is there for the block only.
    """
    loggers = [logging.getLogger(name) for name in names] or [logging.getLogger()]
    drop = _Drop(text, Path(module.__file__).parent if module else None)  # as imported: the records' paths
    root = logging.getLogger()
    placeholder = None
    if root in loggers and not root.handlers:
        placeholder = logging.StreamHandler()
        placeholder.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
        root.addHandler(placeholder)
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)
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


@contextlib.contextmanager
def datasets_bars_hidden() -> Iterator[None]:
    """Within the block, ``datasets`` draws no progress bars (its "Generating train split" inside ours)."""
    from datasets.utils import logging as datasets_logging

    shown = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            datasets_logging.enable_progress_bar()
