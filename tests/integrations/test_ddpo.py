"""The DDPO reward function takes every image form DDPO code passes and gives the same rewards for each."""
import pytest
import torch
from PIL import Image

from mst_clipiqa.integrations import ddpo_reward_fn
from mst_clipiqa.reward import MSTCLIPIQAReward, straight_through_clamp


@pytest.fixture()
def reward_b(tiny_models):
    return MSTCLIPIQAReward(tiny_models("B"))


def test_every_input_form_gives_the_same_rewards(reward_b):
    reward_fn = ddpo_reward_fn(reward_b, batch_size=2)
    pixels = torch.randint(0, 256, (3, 3, 32, 40), dtype=torch.uint8)
    prompts, metadata = ["a cat", "a dog", "a cat"], [{}, {}, {}]
    expected = reward_b(pixels.float() / 255, prompts).detach()
    nhwc = pixels.permute(0, 2, 3, 1)
    forms = {"float NCHW in [0, 1]": pixels.float() / 255, "float NHWC": nhwc.float() / 255,
             "uint8 NCHW": pixels, "uint8 NHWC": nhwc, "numpy uint8 NHWC": nhwc.numpy(),
             "numpy uint8 NCHW": pixels.numpy(), "list of PIL": [Image.fromarray(a) for a in nhwc.numpy()],
             "list of uint8 arrays": list(nhwc.numpy())}
    for name, images in forms.items():
        rewards, named = reward_fn(images, prompts, metadata)
        torch.testing.assert_close(rewards, expected, atol=1e-5, rtol=0, msg=name)
        assert set(named) == {"reward"}


def test_errors_suggest_the_fix(reward_b):
    reward_fn = ddpo_reward_fn(reward_b)
    decoded = torch.rand(2, 3, 32, 32) * 1.04 - 0.02  # a VAE decode overshoots [0, 1] slightly
    with pytest.raises(ValueError, match=r"a slight overshoot, .*straight_through_clamp\(images, 0, 1\)"):
        reward_fn(decoded, ["a", "b"], [{}, {}])
    assert torch.isfinite(reward_fn(straight_through_clamp(decoded), ["a", "b"], [{}, {}])[0]).all()
    with pytest.raises(ValueError, match="they look like 0..255 pixels: divide by 255"):
        reward_fn(torch.rand(2, 3, 32, 32) * 255, ["a", "b"], [{}, {}])
    with pytest.raises(ValueError, match=r"they look like \[-1, 1\] pixels"):
        reward_fn(torch.rand(2, 3, 32, 32) * 2 - 1, ["a", "b"], [{}, {}])
