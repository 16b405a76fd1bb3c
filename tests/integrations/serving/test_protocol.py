"""The protocol without a server: every image form round-trips exactly through both bodies, and each bad request is
a RequestError with its status and one line naming what was wrong."""
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from mst_clipiqa.integrations.serving.protocol import (
    BINARY,
    Limits,
    RequestError,
    decode_request,
    encode_request,
    flow_factory_request,
)

LIMITS = Limits()
RNG = np.random.default_rng(0)
UINT8 = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
FLOAT = RNG.random((3, 12, 10), dtype=np.float32)


def png(array, fmt="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("binary", [True, False])
def test_every_image_form_round_trips_exactly(binary):
    images = [UINT8, FLOAT, Image.fromarray(UINT8), ("png", png(UINT8)), UINT8.transpose(2, 0, 1)]
    body, content_type = encode_request(images, ["a", "b", "c", "d", "e"], binary=binary)
    request = decode_request(body, content_type, LIMITS)
    assert request.prompts == ["a", "b", "c", "d", "e"]
    expected = [UINT8, FLOAT.transpose(1, 2, 0), UINT8, UINT8, UINT8]
    for got, want in zip(request.images, expected):
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_jpeg_and_webp_files_are_read_by_their_format_only():
    body, content_type = encode_request([("jpeg", png(UINT8, "JPEG"))], None)
    assert decode_request(body, content_type, LIMITS).images[0].shape == (12, 10, 3)
    body, content_type = encode_request([("jpeg", png(UINT8, "PNG"))], None)  # a PNG claiming to be a JPEG
    with pytest.raises(RequestError, match="image 0: not a readable jpeg file"):
        decode_request(body, content_type, LIMITS)


def request(header, payload=b""):
    return json.dumps(header).encode() + b"\n" + payload


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"[1, 2]", "application/json", 400, "JSON list; expected an object"),
    (b'{"images": []}', "application/json", 400, "non-empty list"),
    (b'{"images": [{"encoding": "pickle", "data": ""}]}', "application/json", 400, "encoding 'pickle'"),
    (b'{"images": [{"encoding": "png", "data": "@@@"}]}', "application/json", 400, "not valid base64"),
    (b'{"images": [{"encoding": "uint8", "shape": [2, 2], "data": ""}]}', "application/json", 400,
     "expected \\[H, W, 3"),
    (b'{"images": [{"encoding": "uint8", "shape": [2, 2, 3], "data": "AAAA"}]}', "application/json", 400,
     "3 bytes for a 2x2x3 uint8 image; expected 12"),
    (b'{"images": [{"encoding": "png", "data": "AAAA"}]}', "application/json", 400, "not a readable png file"),
    (b'{"images": [{"encoding": "png", "data": ""}], "prompts": ["a", "b"]}', "application/json", 400,
     "'prompts' must be one string or a list of 1"),
    (b'{"images": [{"encoding": "png", "length": 1}]}', BINARY, 400, "no newline after its JSON header"),
    (request({"images": [{"encoding": "png", "length": 5}]}, b"abc"), BINARY, 400, "add up to 5 bytes, but 3"),
    (request({"images": [{"encoding": "png"}]}), BINARY, 400, "integer 'length'"),
    (b"images", "text/plain", 415, "content type 'text/plain'"),
])
def test_a_bad_request_is_refused_with_one_line(body, content_type, status, message):
    with pytest.raises(RequestError, match=message) as error:
        decode_request(body, content_type, LIMITS)
    assert error.value.status == status and "\n" not in str(error.value)


def test_float_pixels_outside_the_unit_range_are_refused():
    body, content_type = encode_request([FLOAT * 2], None)
    with pytest.raises(RequestError, match="outside \\[0, 1\\]"):
        decode_request(body, content_type, LIMITS)


def test_the_limits_are_checked_before_decoding():
    small = Limits(max_body_bytes=1000, max_images=2, max_pixels=100)
    with pytest.raises(RequestError, match="body of 1001 bytes; the limit is 1000") as error:
        decode_request(b" " * 1001, "application/json", small)
    assert error.value.status == 413
    body, content_type = encode_request([("png", png(UINT8[:2, :2]))] * 3, None)
    with pytest.raises(RequestError, match="3 images in one request; the limit is 2"):
        decode_request(body, content_type, small)
    bomb = png(np.zeros((200, 300, 3), np.uint8))  # 60 000 pixels in a few hundred bytes
    body, content_type = encode_request([("png", bomb)], None)
    assert len(body) < 1000
    with pytest.raises(RequestError, match="300x200 pixels; the limit is 100 pixels") as error:
        decode_request(body, content_type, small)
    assert error.value.status == 413
    header = {"images": [{"encoding": "uint8", "shape": [20, 20, 3], "length": 1200}]}
    with pytest.raises(RequestError, match="20x20 pixels; the limit is 100"):
        decode_request(request(header, bytes(1200)), BINARY, Limits(max_pixels=100))


def test_flow_factorys_body_is_read_and_its_video_refused():
    data = base64.b64encode(png(UINT8)).decode()
    parsed = flow_factory_request(json.dumps({"prompt": ["a cat"], "image": [data], "video": None}).encode(), LIMITS)
    assert np.array_equal(parsed.images[0], UINT8) and parsed.prompts == ["a cat"]
    with pytest.raises(RequestError, match="'video' is not scored"):
        flow_factory_request(json.dumps({"prompt": ["a"], "image": [data], "video": [[data]]}).encode(), LIMITS)


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_images must be > 0"):
        Limits(max_images=0)

