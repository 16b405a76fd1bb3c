"""Images named by path: read only from under the server's file root, never through ``..`` or a link that leads out
of it; each refusal one line with its status. No server: the request handling alone."""
import os

import numpy as np
import pytest
from PIL import Image

from mst_clipiqa.integrations.serving import FileRoot, Limits, RequestError, ScoringService
from mst_clipiqa.integrations.serving.protocol import decode_request, encode_request

PIXELS = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)


@pytest.fixture
def root(tmp_path):
    inside = tmp_path / "root"
    (inside / "sub").mkdir(parents=True)
    Image.fromarray(PIXELS).save(inside / "sub" / "a.png")
    Image.fromarray(PIXELS).save(tmp_path / "secret.png")
    os.symlink(tmp_path / "secret.png", inside / "escape.png")
    os.symlink(inside / "sub" / "a.png", inside / "alias.png")
    return inside


def decoded(root, *paths, binary=True):
    body, content_type = encode_request([("file", p) for p in paths], None, binary=binary)
    return decode_request(body, content_type, Limits(), FileRoot(root))


@pytest.mark.parametrize("binary", [True, False])
def test_files_under_the_root_are_read_by_relative_or_absolute_path_and_links_within_it(root, binary):
    images = decoded(root, "sub/a.png", str(root / "sub" / "a.png"), "alias.png", binary=binary).images
    assert len(images) == 3 and all(np.array_equal(image, PIXELS) for image in images)


@pytest.mark.parametrize("path, status, message", [
    ("../secret.png", 403, "leads outside the server's file root"),
    ("escape.png", 403, "leads outside the server's file root"),  # a link out of it
    ("/etc/hostname", 403, "leads outside the server's file root"),
    ("sub", 400, "is not a regular file"),
    ("missing.png", 400, "cannot open 'missing.png'"),
    ("", 400, "'path' must be a non-empty string"),
])
def test_paths_outside_the_root_or_not_files_are_refused_with_one_line(root, path, status, message):
    with pytest.raises(RequestError, match=message) as error:
        decoded(root, path)
    assert error.value.status == status and "\n" not in str(error.value) and str(root.parent) not in str(error.value)


def test_a_server_without_a_root_reads_no_files_and_a_missing_root_is_named(root, tmp_path):
    body, content_type = encode_request([("file", "sub/a.png")], None)
    with pytest.raises(RequestError, match="reads no files \\(start it with --file-root DIR\\)"):
        decode_request(body, content_type, Limits())
    with pytest.raises(ValueError, match="file root .*nowhere is not a folder"):
        FileRoot(tmp_path / "nowhere")


def test_a_file_over_the_body_limit_is_refused(root):
    body, content_type = encode_request([("file", "sub/a.png")], None)
    with pytest.raises(RequestError, match=f"'sub/a.png' is \\d+ bytes or more; the limit is {len(body)}") as error:
        decode_request(body, content_type, Limits(max_body_bytes=len(body)), FileRoot(root))
    assert error.value.status == 413


def test_the_service_scores_named_files_as_the_images_themselves(root):
    service = ScoringService(lambda images: images.mean(dim=(1, 2, 3)), file_root=root)
    body, content_type = encode_request([("file", "sub/a.png"), PIXELS], None)
    status, answer = service.handle("POST", "/v1/score", {"Content-Type": content_type}, body)
    assert status == 200 and answer["scores"][0] == pytest.approx(answer["scores"][1], abs=1e-6)
    assert service.info()["file_references"] and not ScoringService(lambda x: x).info()["file_references"]
