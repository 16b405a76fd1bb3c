"""``RemoteReward``: a served reward as a reward form, over HTTP (standard library only) or a Ray handle."""
from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .protocol import FILE, encode_request

__all__ = ["RemoteReward", "RemoteRewardError"]

RETRYABLE = (503,)  # overloaded: back off and try again
_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


class RemoteRewardError(ConnectionError):
    """The reward server could not be reached, stayed busy past the retries, or did not answer in time."""


class RemoteReward:
    """A reward served by ``mst-clipiqa serve`` (or any server of its protocol), usable wherever a reward is:
    ``reward(images, prompts) -> (B,)`` with no gradient (best-of-N, the policy trainers, DPO pair export, the
    monitor).

    ``url_or_handle``: the server's base address (``http://127.0.0.1:8000``) or a Ray Serve handle of its
    deployment (``serve.get_app_handle("mst-clipiqa")``; Ray itself is needed only by whoever makes the handle).
    ``output``: the value returned, ``"score"`` (the reward's objective) or a named output.
    Images (a (B, 3, H, W) float tensor in [0, 1], uint8 arrays or tensors, PIL images, PNG / JPEG / WebP
    files) are sent as they are (float32 or uint8 pixels, the files' own bytes) in chunks of ``batch_size``,
    up to ``max_workers`` chunks at once. Each request may take ``timeout`` seconds; a busy server (503) or
    a refused connection is retried ``retries`` times with back-off ``backoff * 2**k`` seconds.
    ``file_references``: send image paths as they are, for the server to read under its ``--file-root``
    (relative to it, or absolute inside it), instead of the files' bytes.
    """

    lower_better = False

    def __init__(self, url_or_handle: str | Any, *, output: str = "score", token: str | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 0.5, batch_size: int = 32,
                 max_workers: int = 4, binary: bool = True, file_references: bool = False):
        if batch_size < 1 or retries < 0 or timeout <= 0 or max_workers < 1:
            raise ValueError(f"RemoteReward needs batch_size >= 1, retries >= 0, timeout > 0 and max_workers >= 1; "
                             f"got {batch_size}, {retries}, {timeout}, {max_workers}")
        self.handle = None if isinstance(url_or_handle, str) else url_or_handle
        self.url = url_or_handle.rstrip("/") if isinstance(url_or_handle, str) else None
        if self.url is not None and urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"RemoteReward url {url_or_handle!r}; expected http://HOST:PORT or https://HOST:PORT")
        self.output, self.token, self.timeout = output, token, float(timeout)
        self.retries, self.backoff, self.batch_size, self.binary = retries, float(backoff), batch_size, binary
        self.file_references = file_references
        self.executor = ThreadPoolExecutor(max_workers, thread_name_prefix="remote-reward")
        self.local = threading.local()

    def __repr__(self) -> str:
        return f"RemoteReward({self.url or type(self.handle).__name__!r}, output={self.output!r})"

    @property
    def where(self) -> str:
        return self.url or f"Ray handle {type(self.handle).__name__}"

    def __call__(self, images: Any, prompts: Sequence[str] | None = None) -> torch.Tensor:
        scores = self.submit(images, prompts).result()
        if self.output not in scores:
            raise ValueError(f"reward server {self.where} has no output {self.output!r}; it gives {sorted(scores)}")
        return scores[self.output]

    def named_scores(self, images: Any, prompts: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Every output the server gives (``"score"`` and each named output), (B,) each."""
        return self.submit(images, prompts).result()

    def submit(self, images: Any, prompts: Sequence[str] | None = None) -> Future:
        """A future of :meth:`named_scores`: the chunks are sent at once and the results keep the input order."""
        items, device = _as_items(images, self.file_references)
        if not items:
            raise ValueError("no images to score; expected at least one")
        prompts = [prompts] * len(items) if isinstance(prompts, str) else None if prompts is None else list(prompts)
        if prompts is not None and len(prompts) != len(items):
            raise ValueError(f"{len(prompts)} prompts for {len(items)} images; expected one per image")
        starts = range(0, len(items), self.batch_size)
        parts = [self.executor.submit(self._score, items[s:s + self.batch_size],
                                      None if prompts is None else prompts[s:s + self.batch_size]) for s in starts]
        return _gather(parts, device)

    def info(self) -> dict[str, Any]:
        """The server's description: protocol, model, outputs with their ranges, limits."""
        if self.handle is not None:
            return self.handle.info.remote().result(timeout_s=self.timeout)
        return self._request("GET", "/v1/info", b"", "")

    def close(self) -> None:
        self.executor.shutdown(wait=False)

    # --- one chunk ---------------------------------------------------------------------------------------------

    def _score(self, items: list[Any], prompts: list[str] | None) -> dict[str, list[float | None]]:
        if self.handle is not None:
            return self._call_handle(items, prompts)
        body, content_type = encode_request(items, prompts, binary=self.binary)
        answer = self._request("POST", "/v1/score", body, content_type)
        return {"score": answer["scores"], **answer["outputs"]}

    def _call_handle(self, items: list[Any], prompts: list[str] | None) -> dict[str, list[float | None]]:
        for attempt in range(self.retries + 1):
            try:
                return self.handle.score.remote(items, prompts).result(timeout_s=self.timeout)
            except Exception as error:
                if type(error).__name__ != "BackPressureError" or attempt == self.retries:
                    raise
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, body: bytes, content_type: str) -> dict[str, Any]:
        reason = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                status, answer = self._send(method, path, body, content_type)
            except TimeoutError:
                self._reset()
                raise RemoteRewardError(f"reward server {self.url} did not answer within {self.timeout:g} s "
                                        f"(RemoteReward timeout=); it may be overloaded or stuck") from None
            except (ConnectionError, http.client.HTTPException, OSError) as error:
                self._reset()
                reason = " ".join(str(error).split()) or type(error).__name__
                continue
            if status in RETRYABLE:
                reason = f"busy (HTTP {status}: {answer.get('error', '')})"
                continue
            if 400 <= status < 500:
                raise ValueError(f"reward server {self.url} refused the request (HTTP {status}): "
                                 f"{answer.get('error', answer)}")
            if status != 200:
                raise RemoteRewardError(f"reward server {self.url} failed (HTTP {status}): {answer.get('error', '')}")
            return answer
        raise RemoteRewardError(f"reward server {self.url} unreachable after {self.retries + 1} tries ({reason}); "
                                "is 'mst-clipiqa serve' running there?")

    def _send(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            parts = urllib.parse.urlsplit(self.url)
            kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            connection = self.local.connection = kind(parts.netloc, timeout=self.timeout)
        prefix = urllib.parse.urlsplit(self.url).path
        headers = {"Content-Type": content_type} if body else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connection.request(method, prefix + path, body=body or None, headers=headers)
        response = connection.getresponse()
        data = response.read()
        if response.getheader("connection", "").lower() == "close":
            self._reset()
        try:
            return response.status, json.loads(data)
        except json.JSONDecodeError:
            return response.status, {"error": data[:200].decode(errors="replace")}

    def _reset(self) -> None:
        connection = getattr(self.local, "connection", None)
        if connection is not None:
            connection.close()
        self.local.connection = None


def _as_items(images: Any, file_references: bool = False) -> tuple[list[Any], torch.device | None]:
    """Images as a list the protocol encodes (arrays, PIL images, (format, bytes)) and the device to answer on."""
    device = images.device if isinstance(images, torch.Tensor) else None
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        return list(images), device
    if isinstance(images, (str, Path)) or not isinstance(images, Sequence):
        images = [images]
    return [(FILE, str(item)) if file_references and isinstance(item, (str, Path)) else
            _file(item) if isinstance(item, (str, Path)) else
            item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item for item in images], device


def _file(path: str | Path) -> tuple[str, bytes]:
    path = Path(path)
    encoding = _SUFFIXES.get(path.suffix.lower())
    if encoding is None:
        raise ValueError(f"image file {path}: RemoteReward sends PNG, JPEG or WebP files; convert it, or pass the "
                         "image as an array")
    return encoding, path.read_bytes()


def _gather(parts: list[Future], device: torch.device | None) -> Future:
    """One future of the chunks' results, concatenated in order; the first failure fails it."""
    done: Future = Future()
    remaining = [len(parts)]
    lock = threading.Lock()

    def finished(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0] or done.done():
                return
        try:
            columns = [part.result() for part in parts]
            done.set_result({name: _tensor([v for c in columns for v in c[name]], device) for name in columns[0]})
        except Exception as error:  # noqa: BLE001 - handed to whoever waits on the future
            done.set_exception(error)

    for part in parts:
        part.add_done_callback(finished)
    return done


def _tensor(values: Sequence[float | None], device: torch.device | None) -> torch.Tensor:
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
    return torch.from_numpy(array).to(device or "cpu")

