"""RemoteReward against LocalServer: timeouts, back-off on 503, a server that is gone, futures in order, and a grpo
fine-tune whose reward server dies: the trainer stops with one line naming the server and resumes bit for bit once
it is back. Loopback namespace only."""
import time

import pytest
import torch

from mst_clipiqa.integrations import PolicyFinetuneConfig, PolicyTrainer
from mst_clipiqa.integrations.finetune.config import from_flat_settings
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline
from mst_clipiqa.integrations.serving import Limits, LocalServer, RemoteReward, RemoteRewardError, ScoringService

from .netns import loopback_only

pytestmark = loopback_only


def brightness(images):
    return images.mean(dim=(1, 2, 3))


def slow(seconds):
    def reward(images):
        time.sleep(seconds)
        return brightness(images)
    return reward


def test_a_slow_server_hits_the_timeout_without_retrying_it():
    with LocalServer(ScoringService(slow(2.0))) as server:
        remote = RemoteReward(server.url, timeout=0.3, retries=3)
        start = time.monotonic()
        with pytest.raises(RemoteRewardError, match=f"reward server {server.url} did not answer within 0.3 s"):
            remote(torch.rand(1, 3, 8, 8))
        assert time.monotonic() - start < 1.5


def test_the_server_answers_504_past_its_request_timeout_and_keeps_serving():
    def slow_when_wide(images):  # 9 pixels wide: stuck for a while; otherwise at once
        time.sleep(1.0 if images.shape[-1] == 9 else 0.0)
        return brightness(images)

    with LocalServer(ScoringService(slow_when_wide, limits=Limits(request_timeout_s=0.3))) as server:
        remote = RemoteReward(server.url, timeout=10)
        start = time.monotonic()
        with pytest.raises(RemoteRewardError, match="HTTP 504.*longer than the server's request timeout of 0.3 s"):
            remote(torch.rand(1, 3, 8, 9))
        assert time.monotonic() - start < 0.9  # answered at the timeout, not when the work ended
        assert remote.info()["protocol"]  # answering while the work goes on
        time.sleep(max(0.0, start + 1.1 - time.monotonic()))  # the stuck work has ended: scoring is free again
        images = torch.rand(2, 3, 8, 8)
        assert torch.allclose(remote(images), brightness(images))


def test_an_overloaded_server_answers_503_and_the_client_backs_off_then_succeeds():
    with LocalServer(ScoringService(slow(0.4)), max_pending=1) as server:
        images = torch.rand(2, 3, 8, 8)
        first = RemoteReward(server.url).submit(images)
        time.sleep(0.1)  # the first request now holds the only slot
        with pytest.raises(RemoteRewardError, match="unreachable after 1 tries \\(busy \\(HTTP 503"):
            RemoteReward(server.url, retries=0)(images)
        start = time.monotonic()
        patient = RemoteReward(server.url, retries=4, backoff=0.2)(images)
        assert time.monotonic() - start >= 0.2  # it waited at least one back-off
        assert torch.allclose(patient, brightness(images)) and torch.allclose(first.result()["score"], patient)


def test_a_server_that_is_gone_is_retried_then_named():
    with LocalServer(ScoringService(brightness)) as server:
        url = server.url
    start = time.monotonic()
    with pytest.raises(RemoteRewardError, match=f"reward server {url} unreachable after 3 tries") as error:
        RemoteReward(url, retries=2, backoff=0.1)(torch.rand(1, 3, 8, 8))
    assert time.monotonic() - start >= 0.3 and "\n" not in str(error.value)  # backed off 0.1 + 0.2 s


def test_futures_keep_the_order_of_the_chunks_and_calls():
    images = torch.rand(10, 3, 8, 8)
    with LocalServer(ScoringService(brightness)) as server:
        remote = RemoteReward(server.url, batch_size=3, max_workers=3)
        futures = [remote.submit(images[i:]) for i in range(4)]
        for i, future in enumerate(futures):
            assert torch.allclose(future.result(timeout=30)["score"], brightness(images[i:]), atol=1e-6)
        with pytest.raises(ValueError, match="2 prompts for 10 images"):
            remote.submit(images, ["a", "b"])


def policy_config(out, **overrides):
    settings = dict(method="grpo", num_inference_steps=2, guidance_scale=1.0, group_size=2, prompts_per_step=2,
                    learning_rate=1e-2, max_steps=2, save_every=1, lora_rank=2, progress_bar=False,
                    output_dir=str(out))
    return from_flat_settings(PolicyFinetuneConfig, {**settings, **overrides})


def test_a_grpo_run_stops_naming_a_dead_server_and_resumes_bit_for_bit(tmp_path):
    prompts = ["a cat", "a dog"]
    with LocalServer(ScoringService(brightness)) as server:
        url, port = server.url, int(server.url.rsplit(":", 1)[1])
        straight = PolicyTrainer(tiny_sd3_pipeline(), RemoteReward(url), prompts, policy_config(tmp_path / "a"))
        straight.train()
        killed = PolicyTrainer(tiny_sd3_pipeline(), RemoteReward(url, retries=2, backoff=0.05), prompts,
                               policy_config(tmp_path / "b"))
        killed.train(max_steps=1)  # step 1 checkpointed; then the server dies
    with pytest.raises(RemoteRewardError, match=f"reward server {url} unreachable after 3 tries") as error:
        killed.train()
    assert "\n" not in str(error.value)
    with LocalServer(ScoringService(brightness), port=port):  # back, at the same address
        resumed = PolicyTrainer(tiny_sd3_pipeline(), RemoteReward(url), prompts,
                                policy_config(tmp_path / "b", resume=True))
        assert resumed.global_step == 1
        resumed.train()
    after = resumed.trained_parameters()
    reference = straight.trained_parameters()
    assert after.keys() == reference.keys() and all(torch.equal(after[k], reference[k]) for k in after)
    assert resumed.log.history == straight.log.history
