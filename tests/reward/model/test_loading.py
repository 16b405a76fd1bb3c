"""Built-in names, ``load_model`` and the one-object scorer ``MSTCLIPIQAReward.from_pretrained``, offline."""

import pytest
import torch

from mst_clipiqa.reward import MODEL_NAMES, MSTCLIPIQA, MSTCLIPIQAReward, load_model


def test_builtin_names_build_the_same_model_every_time_without_touching_global_rng():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = MSTCLIPIQA.from_pretrained("tiny")
    assert torch.equal(torch.rand(1), expected_next)  # the global generator was left alone
    second = MSTCLIPIQA.from_pretrained("tiny")
    other_seed = MSTCLIPIQA.from_pretrained("tiny", seed=1)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(first.fusion.W_h.weight, other_seed.fusion.W_h.weight)


def test_load_model_shapes_heads_and_returns_an_eval_model():
    model = load_model("tiny-hf", variant="A,B", outputs=["quality", "correspondence"])
    assert model.config.heads == {"quality": "template", "correspondence": "prompt"}
    assert model.config.coarse.backend == "transformers"
    assert not model.training and model.fusion.W_h.weight.device.type == "cpu"
    assert set(MODEL_NAMES) == {"tiny", "tiny-hf", "paper-A", "paper-B"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(name_or_path="tiny", variant="C"), "variant 'C': expected A or B"),
    (dict(name_or_path="tiny", variant="A,B", outputs=["quality"]), "one of them per output"),
    (dict(name_or_path="paper-A", variant="B"), "paper-A is variant A"),
])
def test_bad_builtin_options_name_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_model(**kwargs)


def test_saved_models_keep_their_heads(tmp_path):
    MSTCLIPIQA.from_pretrained("tiny").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="heads fixed by its config"):
        load_model(tmp_path, variant="B")
    with pytest.raises(ValueError, match=r"outputs \['align'\] are not outputs"):
        load_model(tmp_path, outputs=["align"])
    assert load_model(tmp_path).outputs == ("quality",)


def test_reward_from_pretrained_is_a_frozen_scorer_ready_to_use():
    reward = MSTCLIPIQAReward.from_pretrained("tiny", variant="A,B",
                                              outputs={"quality": 0.7, "correspondence": 0.3}, normalize=True)
    assert reward.weights == {"quality": 0.7, "correspondence": 0.3} and reward.score_range == (0.0, 1.0)
    assert not any(p.requires_grad for p in reward.parameters())
    images = torch.rand(2, 3, 48, 40, requires_grad=True)
    values = reward(images, ["a cat", "a dog"])
    values.sum().backward()
    assert values.shape == (2,) and images.grad.abs().sum() > 0
    scored = reward.score(images.detach(), ["a cat", "a dog"])
    torch.testing.assert_close(scored, values.detach(), atol=1e-5, rtol=0)
