"""The explicit adapters: what each wraps, what it keeps (``lower_better``, ``input_range``, the wrapped module's
parameters) and what it refuses. The peers' own are in ``test_peer_scorers.py``."""
import pytest
import torch
from torch import nn

from mst_clipiqa.integrations import ddpo_reward_fn, from_imscore, from_pyiqa, from_trl, named_rewards


class Brightness(nn.Module):
    lower_better = True
    input_range = (-1.0, 1.0)

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def score(self, images, prompts):
        return self.scale * images.mean(dim=(1, 2, 3))


def test_our_ddpo_reward_fn_comes_back_through_from_trl_unchanged():
    brightness = lambda images, prompts: images.mean(dim=(1, 2, 3))  # noqa: E731
    images = torch.rand(3, 3, 8, 8)
    again = named_rewards(from_trl(ddpo_reward_fn(brightness)), images, ["a", "b", "c"])["reward"]
    torch.testing.assert_close(again, brightness(images, None))


def test_an_adapter_keeps_the_wrapped_scorers_direction_range_and_parameters():
    scorer = Brightness()
    adapted = from_imscore(scorer)
    assert (adapted.lower_better, adapted.input_range) == (True, (-1.0, 1.0))
    assert list(adapted.parameters()) == [scorer.scale]  # its device, train / eval and freezing follow
    images = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(named_rewards(adapted, images, ["a", "b"])["reward"],
                               -(images * 2 - 1).mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)


def test_what_an_adapter_cannot_wrap_is_named():
    with pytest.raises(ValueError, match="from_imscore got a Linear without a .score method"):
        from_imscore(nn.Linear(1, 1))
    with pytest.raises(ValueError, match="from_trl got a str; expected reward_fn"):
        from_trl("reward")
    with pytest.raises(ValueError, match="from_pyiqa got a int"):
        from_pyiqa(3)
