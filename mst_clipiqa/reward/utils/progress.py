"""One progress style for every long loop: tqdm bars on a terminal or in a notebook, plain lines in logs.

Piped to a file, tqdm's carriage returns and the cursor moves of nested bars
leave ``\\r`` runs and ``[A`` fragments. So when stderr is not a terminal, a
top-level bar prints one whole line at most every ``interval`` seconds and one
when it closes, and a nested bar (opened while another is open) prints a line
only when no bar has printed for ``interval`` seconds, and none when it closes:
a long inner loop still shows a sign of life every ``interval`` seconds.
"""
from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import autonotebook, std
from tqdm.auto import tqdm

__all__ = ["LineProgress", "nested_bar_kwargs", "progress_bar"]

_BARS: weakref.WeakSet = weakref.WeakSet()  # the bars progress_bar made


def _redraws(file: IO[str] | None) -> bool:
    """Whether bars can redraw in place: a terminal, or a notebook (tqdm.auto's widgets)."""
    if autonotebook.tqdm is not std.tqdm:  # running in a notebook
        return True
    isatty = getattr(file or sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _nested() -> bool:
    return any(not bar.disable for bar in _BARS)  # close() sets disable, as in tqdm


class LineProgress:
    """A progress reporter for logs: whole lines (``desc: n/total unit in s, postfix``), no redraws.

    Supports the part of tqdm's interface the library uses: iteration,
    ``update``, ``set_postfix``, ``set_description``, ``close`` and ``with``.
    ``nested``: inside another bar, print only when no bar has printed for
    ``interval`` seconds, and nothing on closing.
    """

    last_line = 0.0  # monotonic time of the last line any reporter printed

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
                 unit: str = "it", initial: int = 0, file: IO[str] | None = None, interval: float = 30.0,
                 nested: bool = False):
        if total is None and hasattr(iterable, "__len__"):
            total = initial + len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc or "progress", unit
        self.n, self.file, self.interval, self.postfix = initial, file, interval, ""
        self.start = self._last = time.monotonic()
        self._written: tuple[int, str] | None = None
        self.disable, self.nested = False, nested

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise ValueError("this progress reporter was made without an iterable; call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        last = max(self._last, LineProgress.last_line) if self.nested else self._last
        if time.monotonic() - last >= self.interval:
            self._write()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **kwargs}.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc

    def close(self) -> None:
        if not self.disable:
            self.disable = True
            if not self.nested and self._written != (self.n, self.postfix):  # not a repeat of the last line
                self._write()

    def _write(self) -> None:
        self._last, self._written = time.monotonic(), (self.n, self.postfix)
        LineProgress.last_line = self._last
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        line = f"{self.desc}: {count} {self.unit} in {self._last - self.start:.1f} s"
        print(line + (f", {self.postfix}" if self.postfix else ""), file=self.file or sys.stderr, flush=True)


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
                 unit: str = "it", disable: bool = False, initial: int = 0, file: IO[str] | None = None,
                 interval: float = 30.0) -> Any:
    """A progress bar in the library's one style: tqdm where it can redraw (terminal, notebook), else
    :class:`LineProgress` lines every ``interval`` seconds; nested bars are transient on a terminal and,
    in logs, print only when nothing else has for ``interval`` seconds. Use it as tqdm: iterate it, or
    ``update`` / ``set_postfix`` / ``close`` it."""
    nested = _nested()
    if disable:
        return tqdm(iterable, total=total, disable=True)
    if _redraws(file):
        bar = tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file, leave=not nested,
                   dynamic_ncols=True)
    else:
        bar = LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file,
                           interval=interval, nested=nested)
    _BARS.add(bar)
    return bar


def nested_bar_kwargs(file: IO[str] | None = None) -> dict[str, Any]:
    """tqdm options for another library's bar running inside ours (e.g. ``pipe.set_progress_bar_config``):
    transient on a terminal, off in logs."""
    return {"leave": False} if _redraws(file) else {"disable": True}
