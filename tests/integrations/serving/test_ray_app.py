"""The Ray Serve deployment (one Ray start for the module): HTTP and the Ray handle give the in-process scores for
every image form and every batch size from 1 to 64 (requests of all sizes at once, batched together), batch 16
concurrent clients' requests, refuse bad and unauthenticated requests and keep serving, and answer 504 past the
request timeout. Loopback namespace only."""
import http.client
import io
import json
import socket

import pytest
import torch
from PIL import Image

from mst_clipiqa.integrations import score_images
from mst_clipiqa.integrations.serving import Limits, RemoteReward, ServeOptions
from mst_clipiqa.reward import MSTCLIPIQAReward

from .load import check_concurrent_clients
from .netns import loopback_only

pytestmark = [loopback_only, pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`")]
ray = pytest.importorskip("ray", reason="mst-clipiqa[serve] (Ray Serve) is not installed")
TOKEN = "t0ken"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    from mst_clipiqa.integrations.serving import ray_app

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    options = ServeOptions(port=port, token=TOKEN, num_cpus=0.5, max_batch_requests=8, batch_wait_s=0.01,
                           limits=Limits(max_pixels=64 * 64, max_body_bytes=2**20))
    handle = ray_app.serve_reward("tiny", options, variant="B")
    yield f"http://127.0.0.1:{port}", handle
    ray_app.shutdown()


@pytest.fixture(scope="module")
def reward():
    return MSTCLIPIQAReward.from_pretrained("tiny", variant="B")


def test_http_and_the_handle_give_the_in_process_scores(served, reward):
    url, handle = served
    images = torch.rand(64, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    prompts = [f"prompt {i % 5}" for i in range(64)]
    uint8 = (images * 255).round().to(torch.uint8)
    pil = [Image.fromarray(a) for a in uint8.permute(0, 2, 3, 1).numpy()]
    pngs = []
    for image in pil:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pngs.append(("png", buffer.getvalue()))
    expected = {size: reward(images[:size], prompts[:size]) for size in range(1, 65)}
    for remote in (RemoteReward(url, token=TOKEN, batch_size=64, max_workers=16), RemoteReward(handle, batch_size=64)):
        for sent, held in ((images, images), (uint8, uint8), (pil, pil), (pngs, pil)):
            assert torch.allclose(remote(sent, prompts), score_images(reward, held, prompts)[0], atol=1e-5, rtol=0)
        futures = {size: remote.submit(images[:size], prompts[:size]) for size in range(1, 65)}  # batched together
        for size, future in futures.items():
            assert torch.allclose(future.result(timeout=120)["score"], expected[size], atol=1e-5, rtol=0), size
    assert RemoteReward(handle).info()["outputs"] == {"quality": {"range": [0.0, 5.0]}}


def test_16_concurrent_clients_are_batched_and_answered_once_in_order(served, reward):
    url, handle = served
    before = RemoteReward(handle).info()["stats"]
    answered = check_concurrent_clients(url, reward, token=TOKEN)
    after = RemoteReward(handle).info()["stats"]
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == answered
    assert batches < requests  # several clients' requests shared forward passes


def request(url, method, path, body=b"", headers=None):
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
    connection.request(method, path, body=body or None, headers=headers or {})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


def test_bad_and_unauthenticated_requests_are_refused_and_the_server_keeps_serving(served):
    url, handle = served
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    cases = [
        ({}, "/v1/score", b"{}", 401, "bearer token"),
        ({"Authorization": "Bearer nope"}, "/v1/info", b"", 401, "bearer token"),
        (auth, "/v1/score", b"{oops", 400, "not valid JSON"),
        (auth, "/v1/score", json.dumps({"images": [{"encoding": "uint8", "shape": [100, 100, 3], "data": ""}]}),
         413, "100x100 pixels"),
        (auth, "/v1/score", b" " * (2**20 + 1), 413, "the limit is 1048576"),
        (auth, "/v1/score", json.dumps({"images": [{"encoding": "uint8", "shape": [8, 8, 3], "data": "AAAA" * 64}]}),
         400, "pass one prompt per image"),
    ]
    for headers, path, body, status, message in cases:
        got, answer = request(url, "GET" if path == "/v1/info" else "POST", path, body, headers)
        assert got == status and message in answer["error"] and "\n" not in answer["error"], (path, answer)
    assert request(url, "GET", "/health")[0] == 200
    assert RemoteReward(url, token=TOKEN)(torch.rand(2, 3, 16, 16), ["a", "b"]).shape == (2,)
    with pytest.raises(ValueError, match="413|limit"):
        RemoteReward(handle)(torch.rand(1, 3, 100, 100), ["a"])


def test_a_request_past_the_timeout_gets_504_and_the_replica_goes_on():
    import asyncio

    import numpy as np

    from mst_clipiqa.integrations.serving import RequestError, ScoringService
    from mst_clipiqa.integrations.serving.ray_app import RewardDeployment

    replica = RewardDeployment.func_or_class.__new__(RewardDeployment.func_or_class)  # its timeout, without Serve
    replica.service = ScoringService(lambda images: images.mean(dim=(1, 2, 3)), limits=Limits(request_timeout_s=0.2))

    async def batched(request):  # Serve's batching stand-in: 9 pixels wide is stuck for a while
        await asyncio.sleep(1.0 if request.images[0].shape[1] == 9 else 0.0)
        return replica.service.score_many([request])[0]

    replica.batched = batched

    async def requests():
        with pytest.raises(RequestError, match="longer than the server's request timeout of 0.2 s") as error:
            await replica.score([np.zeros((8, 9, 3), np.uint8)])
        assert error.value.status == 504
        return await replica.score([np.full((8, 8, 3), 255, np.uint8)])

    assert asyncio.run(asyncio.wait_for(requests(), 5))["score"] == [1.0]
