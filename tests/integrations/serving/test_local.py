"""LocalServer and the request handling it shares with the Ray deployment: served scores equal in-process ones for
every image form, security (loopback by default, the bearer token, limits) and bad requests answered with one line
while the server keeps serving; 16 concurrent clients get every answer once, in order. Loopback namespace only."""
import http.client
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mst_clipiqa.integrations import score_images
from mst_clipiqa.integrations.serving import Limits, LocalServer, RemoteReward, ScoringService
from mst_clipiqa.reward import MSTCLIPIQAReward

from .load import check_concurrent_clients
from .netns import loopback_only

pytestmark = loopback_only


@pytest.fixture(scope="module")
def reward():
    return MSTCLIPIQAReward.from_pretrained("tiny", variant="B")  # prompt-anchored: prompts matter


@pytest.fixture(scope="module")
def server(reward):
    with LocalServer(ScoringService(reward, model="tiny", limits=Limits(max_body_bytes=2**20, max_pixels=64 * 64))
                     ) as running:
        yield running


def post(url, path, body, headers=None):
    host = url.removeprefix("http://")
    connection = http.client.HTTPConnection(host, timeout=30)
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


def forms(images, folder):
    """The same images in every form a client may hold them: {name: (what is sent, what is scored in process)}."""
    uint8 = (images * 255).round().to(torch.uint8)
    nhwc = uint8.permute(0, 2, 3, 1).numpy()
    pil = [Image.fromarray(a) for a in nhwc]
    files = []
    for i, (image, suffix) in enumerate(zip(pil, [".png", ".jpg", ".webp"] * len(pil))):
        files.append(folder / f"{i}{suffix}")
        image.save(files[-1], quality=90)
    pngs = []
    for image in pil:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pngs.append(("png", buffer.getvalue()))
    return {"float tensor": (images, images), "uint8 tensor": (uint8, uint8), "uint8 NHWC array": (nhwc, nhwc),
            "PIL": (pil, pil), "PNG bytes": (pngs, pil), "PNG / JPEG / WebP files": (files, files)}


@pytest.mark.parametrize("binary", [True, False])
def test_served_scores_equal_in_process_scores_for_every_form(reward, server, binary, tmp_path):
    images = torch.rand(64, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    prompts = [f"prompt {i % 5}" for i in range(64)]
    remote = RemoteReward(server.url, binary=binary)
    for name, (sent, held) in list(forms(images, tmp_path).items())[:None if binary else 2]:  # JSON: base64 of the same
        expected = score_images(reward, held, prompts)[0]
        served = remote(sent, prompts)
        assert torch.allclose(served, expected, atol=1e-5, rtol=0), name


def test_served_scores_equal_in_process_scores_at_every_batch_size_from_1_to_64(reward, server):
    images = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    prompts = [f"prompt {i % 5}" for i in range(64)]
    remote = RemoteReward(server.url, batch_size=64)  # one request per size: the server's own batching of 32 is used
    for size in range(1, 65):
        served = remote.named_scores(images[:size], prompts[:size])
        assert torch.allclose(served["score"], reward(images[:size], prompts[:size]), atol=1e-5, rtol=0), size
        assert torch.allclose(served["quality"], served["score"]) and served["score"].shape == (size,)


def test_images_named_by_path_are_read_under_the_file_root_only(reward, tmp_path):
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    root = tmp_path / "root"
    root.mkdir()
    files = forms(images, root)["PNG / JPEG / WebP files"][0]
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    with LocalServer(ScoringService(reward, file_root=root)) as server:
        remote = RemoteReward(server.url, file_references=True)
        expected = score_images(reward, files, ["a"] * 3)[0]
        assert torch.allclose(remote([f.name for f in files], "a"), expected, atol=1e-5, rtol=0)  # relative
        assert torch.allclose(remote(files, "a"), expected, atol=1e-5, rtol=0)  # absolute, inside the root
        with pytest.raises(ValueError, match="HTTP 403.*leads outside the server's file root"):
            remote(["../secret.png"], "a")
    with LocalServer(ScoringService(reward)) as server:
        with pytest.raises(ValueError, match="HTTP 403.*reads no files"):
            RemoteReward(server.url, file_references=True)(files, "a")


def test_info_says_what_each_output_means(server):
    info = RemoteReward(server.url).info()
    assert info["outputs"] == {"quality": {"range": [0.0, 5.0]}} and info["higher_is_better"]
    assert info["needs_prompts"] and info["limits"]["max_pixels"] == 64 * 64


def test_bad_requests_get_one_line_and_the_server_keeps_serving(server):
    cases = [
        ("/v1/score", b"{oops", 400, "not valid JSON"),
        ("/v1/score", b'{"images": [{"encoding": "uint8", "shape": [100, 100, 3], "data": ""}]}', 413,
         "100x100 pixels; the limit is 4096"),
        ("/v1/nothing", b"{}", 404, "no route /v1/nothing"),
        ("/v1/score", json.dumps({"images": [{"encoding": "uint8", "shape": [8, 8, 3],
                                              "data": "AAAA" * 64}]}).encode(), 400, "pass one prompt per image"),
    ]
    for path, body, status, message in cases:
        got, answer = post(server.url, path, body)
        assert got == status and message in answer["error"] and "\n" not in answer["error"], (path, answer)
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    connection.putrequest("POST", "/v1/score")
    connection.putheader("Content-Length", str(2**30))  # refused from the header, before a byte of it is read
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "the limit is 1048576" in json.loads(response.read())["error"]
    assert RemoteReward(server.url)(torch.rand(2, 3, 16, 16), ["a", "b"]).shape == (2,)  # still serving


def test_a_token_is_required_when_set_and_beyond_loopback(reward):
    with pytest.raises(ValueError, match="needs a bearer token"):
        LocalServer(ScoringService(reward), host="0.0.0.0")
    with LocalServer(ScoringService(reward, token="s3cret")) as server:
        images, prompts = torch.rand(1, 3, 16, 16), ["a"]
        for token in (None, "wrong"):
            with pytest.raises(ValueError, match="HTTP 401.*bearer token"):
                RemoteReward(server.url, token=token)(images, prompts)
        assert RemoteReward(server.url, token="s3cret")(images, prompts).shape == (1,)
        connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200  # health needs no token


def test_flow_factorys_remote_protocol_is_served(reward, server):
    import base64

    images = torch.rand(3, 3, 16, 16)
    uint8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    data = []
    for array in uint8:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        data.append(base64.b64encode(buffer.getvalue()).decode())
    status, answer = post(server.url, "/compute", json.dumps({"prompt": ["a", "b", "c"], "image": data}).encode())
    assert status == 200
    assert np.allclose(answer["rewards"], score_images(reward, list(uint8), ["a", "b", "c"])[0], atol=1e-5)


def test_16_concurrent_clients_get_every_answer_once_in_order(reward, server):
    assert check_concurrent_clients(server.url, reward) >= 16
