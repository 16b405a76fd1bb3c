"""Images a request names by path instead of carrying them: read only from under the folder the server was started
with (``--file-root``), never through a link that leads out of it."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .protocol import RequestError

__all__ = ["FileRoot"]


class FileRoot:
    """The one folder whose files (and its sub-folders' files) requests may name: ``{"encoding": "file", "path":
    P}``, ``P`` relative to the folder or absolute inside it. A path that leads outside, by ``..`` or by a symbolic
    link, is refused (403) before anything is opened, and the opened file is checked again, so a link swapped in
    meanwhile is refused too."""

    def __init__(self, root: str | Path):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"file root {root} is not a folder; expected the folder whose images requests may name")
        self.root = root.resolve()

    def read(self, path: object, index: int, max_bytes: int) -> bytes:
        """The bytes of the file ``path`` names (at most ``max_bytes``); a :class:`RequestError` otherwise."""
        if not isinstance(path, str) or not path or "\0" in path:
            raise RequestError(f"image {index}: 'path' must be a non-empty string naming a file under the server's "
                               "file root")
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root):
            raise RequestError(f"image {index}: path {path!r} leads outside the server's file root; expected a file "
                               "under it", 403)
        try:
            descriptor = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as error:
            raise RequestError(f"image {index}: cannot open {path!r} under the server's file root "
                               f"({error.strerror})") from None
        try:
            self._check_opened(descriptor, path, index, max_bytes)
        except RequestError:
            os.close(descriptor)
            raise
        with os.fdopen(descriptor, "rb") as file:
            data = file.read(max_bytes + 1)  # bounded: the file may have grown since it was measured
        if len(data) > max_bytes:
            raise _too_big(path, index, len(data), max_bytes)
        return data

    def _check_opened(self, descriptor: int, path: str, index: int, max_bytes: int) -> None:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise RequestError(f"image {index}: {path!r} is not a regular file; expected an image file")
        opened = Path(f"/proc/self/fd/{descriptor}")
        if opened.exists() and not Path(os.readlink(opened)).is_relative_to(self.root):
            raise RequestError(f"image {index}: path {path!r} leads outside the server's file root; expected a file "
                               "under it", 403)
        if info.st_size > max_bytes:
            raise _too_big(path, index, info.st_size, max_bytes)


def _too_big(path: str, index: int, size: int, max_bytes: int) -> RequestError:
    return RequestError(f"image {index}: {path!r} is {size} bytes or more; the limit is {max_bytes}", 413)
