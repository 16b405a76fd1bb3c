"""The scoring protocol, both ends: requests and responses as bytes, images in and out, the limits a server
enforces. No server or client here, and never pickle: JSON, base64 and raw pixel bytes only.

A request is ``POST /v1/score`` with either body:

* ``application/json``: ``{"images": [IMAGE, ...], "prompts": [str, ...] | null}``, where an ``IMAGE`` is
  ``{"encoding": "png" | "jpeg" | "webp", "data": BASE64}`` (an image file) or
  ``{"encoding": "uint8" | "float32", "shape": [H, W, 3], "data": BASE64}`` (raw pixels, row-major HWC,
  float32 little-endian in [0, 1]);
* ``application/x-mst-clipiqa`` (no base64): one line of JSON, the same object with ``"length": BYTES`` in place
  of each ``"data"``, a newline, then every image's bytes in order.

An ``IMAGE`` may instead name a file on the server's disk, ``{"encoding": "file", "path": "a/b.png"}`` (no bytes),
where the server was started with a file root (:class:`~.files.FileRoot`): relative to it, or absolute inside it.

The answer is ``{"protocol": ..., "scores": [float, ...], "outputs": {name: [float, ...]}}``, one value per image
in request order; ``GET /v1/info`` says what each output means (range, higher is better) and the limits.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from .files import FileRoot

__all__ = ["BINARY", "ENCODED", "FILE", "PROTOCOL", "RAW", "Limits", "RequestError", "ScoreRequest", "decode_images",
           "decode_request", "encode_request", "flow_factory_request", "image_items"]

PROTOCOL = "mst-clipiqa-score/1"
BINARY = "application/x-mst-clipiqa"
JSON = "application/json"
ENCODED = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}  # image files, decoded by PIL restricted to this format
RAW = {"uint8": np.dtype(np.uint8), "float32": np.dtype("<f4")}
FILE = "file"  # a path under the server's file root, read by the server


@dataclass(frozen=True)
class Limits:
    """What a server accepts: ``max_body_bytes`` per request, ``max_images`` per request, ``max_pixels`` per image
    (checked from the header, before an image file is decompressed) and ``request_timeout_s`` per request."""

    max_body_bytes: int = 256 * 2**20
    max_images: int = 256
    max_pixels: int = 4096 * 4096
    request_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"limit {name} must be > 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestError(ValueError):
    """A request the server refuses: ``status`` (4xx) and one line naming what was wrong and what is expected."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class ScoreRequest:
    """Decoded images, each (H, W, 3) uint8 or float32 in [0, 1], and their prompts (or None)."""

    images: list[np.ndarray]
    prompts: list[str] | None = None


# --- the server's side ----------------------------------------------------------------------------------------

def decode_request(body: bytes, content_type: str, limits: Limits, files: FileRoot | None = None) -> ScoreRequest:
    """A request body (either content type) as images and prompts; a :class:`RequestError` for anything else.
    ``files``: where images named by path are read (None: such images are refused)."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(f"request body of {len(body)} bytes; the limit is {limits.max_body_bytes}", 413)
    kind = content_type.split(";")[0].strip().lower()
    if kind == BINARY:
        end = body.find(b"\n")
        if end < 0:
            raise RequestError(f"{BINARY} body has no newline after its JSON header; expected header, newline, bytes")
        header = _json(body[:end])
        blobs = _split(_items(header, limits), memoryview(body)[end + 1:])  # views: no copy of the pixels
    elif kind in (JSON, ""):
        header = _json(body)
        blobs = [b"" if item["encoding"] == FILE else _base64(item.get("data"), i)
                 for i, item in enumerate(_items(header, limits))]
    else:
        raise RequestError(f"content type {content_type!r}; expected {JSON} or {BINARY}", 415)
    prompts = _prompts(header.get("prompts"), len(blobs))
    return ScoreRequest(decode_images(header["images"], blobs, limits, files), prompts)


def flow_factory_request(body: bytes, limits: Limits) -> ScoreRequest:
    """Flow-Factory's remote-reward body: ``{"prompt": [str], "image": [BASE64 PNG], ...}`` (its other fields,
    video and condition images, are refused: this reward scores images)."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(f"request body of {len(body)} bytes; the limit is {limits.max_body_bytes}", 413)
    header = _json(body)
    for field in ("video", "condition_images", "condition_videos"):
        if header.get(field):
            raise RequestError(f"field {field!r} is not scored by this server; send images in 'image'")
    images = header.get("image")
    if not isinstance(images, list) or not images:
        raise RequestError("field 'image' must be a non-empty list of base64 PNG images")
    items = [{"encoding": "png", "data": data} for data in images]
    _items({"images": items}, limits)
    prompts = _prompts(header.get("prompt"), len(items))
    return ScoreRequest(decode_images(items, [_base64(data, i) for i, data in enumerate(images)], limits), prompts)


def decode_images(items: Sequence[Mapping[str, Any]], blobs: Sequence[bytes | memoryview], limits: Limits,
                  files: FileRoot | None = None) -> list[np.ndarray]:
    """Each item's bytes (or the file it names, read from ``files``) as an (H, W, 3) array, its pixel count
    checked before anything is decompressed."""
    return [_decode(item, blob, i, limits, files) for i, (item, blob) in enumerate(zip(items, blobs))]


def _decode(item: Mapping[str, Any], blob: bytes | memoryview, index: int, limits: Limits,
            files: FileRoot | None) -> np.ndarray:
    encoding = item.get("encoding")
    if encoding in RAW:
        return _raw(item, blob, index, limits)
    if encoding != FILE:
        return _image_file(blob, [ENCODED[encoding]], index, limits)
    if files is None:
        raise RequestError(f"image {index}: this server reads no files (start it with --file-root DIR); send the "
                           "image's bytes instead", 403)
    return _image_file(files.read(item.get("path"), index, limits.max_body_bytes), list(ENCODED.values()), index,
                       limits)


def _raw(item: Mapping[str, Any], blob: bytes | memoryview, index: int, limits: Limits) -> np.ndarray:
    encoding = item["encoding"]
    height, width = _shape(item, index, limits)
    dtype = RAW[encoding]
    if len(blob) != height * width * 3 * dtype.itemsize:
        raise RequestError(f"image {index}: {len(blob)} bytes for a {height}x{width}x3 {encoding} image; "
                           f"expected {height * width * 3 * dtype.itemsize}")
    array = np.frombuffer(blob, dtype=dtype).reshape(height, width, 3)
    if encoding == "float32" and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
        raise RequestError(f"image {index}: float32 pixels outside [0, 1] or not finite; expected [0, 1]")
    return array.astype(np.float32, copy=False) if encoding == "float32" else array


def _image_file(blob: bytes | memoryview, formats: list[str], index: int, limits: Limits) -> np.ndarray:
    """An image file's pixels, by PIL restricted to ``formats``, its size checked from the header first."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob), formats=formats) as image:
                if image.width * image.height > limits.max_pixels:
                    raise RequestError(f"image {index} is {image.width}x{image.height} pixels; the limit is "
                                       f"{limits.max_pixels} pixels per image", 413)
                return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        if isinstance(error, RequestError):
            raise
        raise RequestError(f"image {index}: not a readable {' / '.join(formats).lower()} file "
                           f"({' '.join(str(error).split())})") from None


def _json(data: bytes) -> dict[str, Any]:
    try:
        header = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(f"body is not valid JSON ({error}); expected an object with 'images'") from None
    if not isinstance(header, dict):
        raise RequestError(f"body is a JSON {type(header).__name__}; expected an object with 'images'")
    return header


def _items(header: Mapping[str, Any], limits: Limits) -> list[Mapping[str, Any]]:
    items = header.get("images")
    if not isinstance(items, list) or not items:
        raise RequestError("field 'images' must be a non-empty list of image objects")
    if len(items) > limits.max_images:
        raise RequestError(f"{len(items)} images in one request; the limit is {limits.max_images}", 413)
    for i, item in enumerate(items):
        encoding = item.get("encoding") if isinstance(item, dict) else None
        if encoding not in ENCODED and encoding not in RAW and encoding != FILE:
            raise RequestError(f"image {i}: encoding {encoding!r}; expected one of "
                               f"{sorted({**ENCODED, **RAW, FILE: None})}")
        if encoding in RAW:
            _shape(item, i, limits)
    return items


def _shape(item: Mapping[str, Any], index: int, limits: Limits) -> tuple[int, int]:
    shape = item.get("shape")
    if (not isinstance(shape, list) or len(shape) != 3 or shape[2] != 3
            or not all(isinstance(n, int) and n > 0 for n in shape)):
        raise RequestError(f"image {index}: shape {shape!r}; expected [H, W, 3] with positive integers")
    if shape[0] * shape[1] > limits.max_pixels:
        raise RequestError(f"image {index} is {shape[1]}x{shape[0]} pixels; the limit is {limits.max_pixels} "
                           "pixels per image", 413)
    return shape[0], shape[1]


def _split(items: Sequence[Mapping[str, Any]], payload: memoryview) -> list[memoryview]:
    lengths = [item.get("length", 0 if item["encoding"] == FILE else None) for item in items]
    if not all(isinstance(n, int) and n >= 0 for n in lengths):
        raise RequestError(f"{BINARY} header: every image needs an integer 'length' in bytes, got {lengths}")
    if sum(lengths) != len(payload):
        raise RequestError(f"{BINARY} body: the header's lengths add up to {sum(lengths)} bytes, but "
                           f"{len(payload)} follow it")
    offsets = np.cumsum([0, *lengths]).tolist()
    return [payload[a:b] for a, b in zip(offsets, offsets[1:])]


def _base64(data: Any, index: int) -> bytes:
    if not isinstance(data, str):
        raise RequestError(f"image {index}: 'data' must be a base64 string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"image {index}: 'data' is not valid base64") from None


def _prompts(prompts: Any, count: int) -> list[str] | None:
    if prompts is None:
        return None
    if isinstance(prompts, str):
        return [prompts] * count
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts) or len(prompts) != count:
        raise RequestError(f"field 'prompts' must be one string or a list of {count} strings (one per image)")
    return prompts


# --- the client's side ----------------------------------------------------------------------------------------

def image_items(images: Sequence[Any]) -> list[tuple[dict[str, Any], memoryview]]:
    """Each image as (header item, its bytes, a flat view): encoded files (bytes with their format) pass as they
    are, PIL images as PNG, uint8 arrays as raw uint8 and float arrays (in [0, 1]) as raw float32, all HWC;
    ``("file", path)`` names a file under the server's file root (no bytes sent)."""
    return [_item(image) for image in images]


def _item(image: Any) -> tuple[dict[str, Any], memoryview]:
    if isinstance(image, tuple) and len(image) == 2 and image[0] == FILE:
        return {"encoding": FILE, "path": str(image[1])}, memoryview(b"")
    if isinstance(image, tuple) and len(image) == 2 and image[0] in ENCODED:
        return {"encoding": image[0]}, memoryview(image[1]).cast("B")
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return {"encoding": "png"}, buffer.getbuffer()
    array = np.asarray(image)
    if array.ndim != 3 or 3 not in (array.shape[0], array.shape[-1]):
        raise ValueError(f"an image of shape {array.shape}; expected (3, H, W) or (H, W, 3)")
    if array.shape[0] == 3:
        array = array.transpose(1, 2, 0)
    if array.dtype == np.uint8:
        return {"encoding": "uint8", "shape": list(array.shape)}, _flat(array)
    if array.dtype.kind != "f":
        raise ValueError(f"images of dtype {array.dtype}; expected uint8 (0..255) or float in [0, 1]")
    return {"encoding": "float32", "shape": list(array.shape)}, _flat(array.astype("<f4", copy=False))


def _flat(array: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(array)).cast("B")


def encode_request(images: Sequence[Any], prompts: Sequence[str] | None, *, binary: bool = True
                   ) -> tuple[bytes, str]:
    """A request body and its content type: binary (raw bytes after a JSON line) or JSON (base64)."""
    items = image_items(images)
    prompts = None if prompts is None else list(prompts)
    if binary:
        header = {"images": [{**item, "length": blob.nbytes} for item, blob in items], "prompts": prompts}
        return b"".join([json.dumps(header).encode(), b"\n", *(blob for _, blob in items)]), BINARY
    header = {"images": [{**item, "data": base64.b64encode(blob).decode()} for item, blob in items],
              "prompts": prompts}
    return json.dumps(header).encode(), JSON
