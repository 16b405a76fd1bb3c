"""Scorers of other libraries as they are (imscore, pyiqa; random weights, offline): their adapters
(``from_imscore``, ``from_pyiqa``) call each through its own scoring API, give (B,) for every batch size, rank
and fine-tune with them."""

import pytest
import torch
import transformers
from torch import nn

from mst_clipiqa.integrations import (
    RewardFinetuneConfig,
    RewardFinetuner,
    RunConfig,
    best_of_n,
    from_imscore,
    from_pyiqa,
    named_rewards,
)
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.reward import openai_clip_tokenizer

imscore = pytest.importorskip("imscore", reason="imscore is a test extra (pip install imscore==0.0.11)")
pyiqa = pytest.importorskip("pyiqa", reason="pyiqa is a test extra (pip install pyiqa==0.1.16)")
from imscore.aesthetic.model import CLIPAestheticScorer  # noqa: E402
from imscore.dummy.model import DummyReward  # noqa: E402
from imscore.pickscore import model as pickscore  # noqa: E402

PROMPTS = ["a cat", "a red car", "a lighthouse"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIP with its processor, saved where imscore's constructors load a Hub id from (224 px: what
    PickScorer resizes to)."""
    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    layers = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
    config = transformers.CLIPConfig(text_config=dict(**layers, max_position_embeddings=77),
                                     vision_config=dict(**layers, image_size=224, patch_size=32), projection_dim=16)
    transformers.CLIPModel(config).save_pretrained(folder)
    size = dict(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    transformers.CLIPProcessor(image_processor=transformers.CLIPImageProcessor(**size),
                               tokenizer=openai_clip_tokenizer()).save_pretrained(folder)
    return str(folder)


def scores(reward, images, prompts=None) -> torch.Tensor:
    (value,) = named_rewards(reward, images, prompts).values()
    return value


@pytest.mark.parametrize("batch", [1, 3])
def test_imscore_scorers_are_called_through_their_score(tiny_clip, batch):
    images = torch.rand(batch, 3, 40, 40)
    torch.manual_seed(0)
    aesthetic = CLIPAestheticScorer(tiny_clip).eval()
    for scorer in (DummyReward(), aesthetic):
        got = scores(from_imscore(scorer), images, PROMPTS[:batch])
        assert got.shape == (batch,)  # CLIPAestheticScorer.score gives a 0-d tensor for one image
        torch.testing.assert_close(got, scorer.score(images, PROMPTS[:batch]).reshape(batch))
    # its forward is the raw vision tower, without the preprocessing .score applies
    with pytest.raises(Exception):  # noqa: B017 (whatever transformers raises on unprocessed 40-px pixels)
        aesthetic(images)


@pytest.mark.xfail(strict=True, raises=AttributeError,
                   reason="imscore 0.0.11's PickScorer.score breaks on transformers 5: get_image_features returns a "
                          "ModelOutput, and torch.norm of it raises")
def test_imscore_pickscorer_ranks_through_best_of_n(tiny_clip, monkeypatch):
    load = transformers.AutoProcessor.from_pretrained  # its processor is a hard-coded Hub id: the tiny one offline
    monkeypatch.setattr(pickscore.AutoProcessor, "from_pretrained", lambda name, *a, **k: load(tiny_clip))
    scorer = pickscore.PickScorer(tiny_clip)
    best_of_n(tiny_sd_pipeline(), "a cat", from_imscore(scorer), n=2, num_inference_steps=1, progress=False)


def pyiqa_metric(name: str, **options) -> nn.Module:
    torch.manual_seed(0)  # the same random weights each time
    return pyiqa.create_metric(name, device="cpu", **({"pretrained": None} if name == "cnniqa" else {}), **options)


@pytest.mark.parametrize("name", ["cnniqa", "piqe"])
@pytest.mark.parametrize("batch", [1, 3])
def test_pyiqa_metrics_score_each_image_higher_is_better(name, batch):
    torch.manual_seed(0)
    images = torch.rand(batch, 3, 64, 64)
    metric = pyiqa_metric(name)
    sign = -1.0 if metric.lower_better else 1.0  # piqe: lower is better
    expected = sign * metric(images).reshape(batch)
    torch.testing.assert_close(scores(from_pyiqa(metric), images), expected)
    for reduction in ("mean", "sum", "none"):  # as a loss: still one score per image, with gradients
        loss = pyiqa_metric(name, as_loss=True, loss_reduction=reduction)
        pixels = images.clone().requires_grad_(True)
        got = scores(from_pyiqa(loss), pixels)
        torch.testing.assert_close(got.detach(), expected, rtol=1e-4, atol=1e-4)
        (grad,) = torch.autograd.grad(got.sum(), pixels)
        assert torch.isfinite(grad).all() and (name == "piqe" or grad.abs().sum() > 0)  # piqe: flat on noise


def test_pyiqa_without_as_loss_or_with_a_reference_is_refused_with_the_fix():
    pixels = torch.rand(2, 3, 64, 64, requires_grad=True)
    with pytest.raises(ValueError, match=r"without as_loss=True.*create_metric\('piqe', as_loss=True\)"):
        scores(from_pyiqa(pyiqa_metric("piqe")), pixels)
    with pytest.raises(ValueError, match=r"'psnr' is FR .*lambda images: metric\(images, reference\)"):
        from_pyiqa(pyiqa_metric("psnr"))


def test_a_peer_passed_as_it_is_still_scores_with_a_deprecation_naming_its_adapter():
    images = torch.rand(2, 3, 64, 64)
    for scorer, adapter in ((pyiqa_metric("cnniqa"), from_pyiqa), (DummyReward(), from_imscore)):
        with pytest.warns(DeprecationWarning, match=f"pass {adapter.__name__}"):
            guessed = scores(scorer, images, PROMPTS[:2])
        torch.testing.assert_close(guessed, scores(adapter(scorer), images, PROMPTS[:2]))


def test_peers_rank_through_best_of_n_as_their_own_api_scores(tiny_clip):
    torch.manual_seed(0)
    metric, aesthetic = pyiqa_metric("piqe"), CLIPAestheticScorer(tiny_clip).eval()
    for scorer, own in ((from_pyiqa(metric), lambda x: -metric(x)), (from_imscore(aesthetic), aesthetic.score)):
        ranking = best_of_n(tiny_sd_pipeline(), "a cat", scorer, n=3, chunk_size=1, num_inference_steps=1,
                            progress=False)
        images = torch.stack([c.image for c in ranking.candidates])
        ranked = [c.score for c in ranking.candidates]
        torch.testing.assert_close(torch.tensor(ranked), own(images).reshape(3).float(), rtol=1e-4, atol=1e-4)
        assert ranked == sorted(ranked, reverse=True)


@pytest.mark.parametrize("peer", ["imscore", "pyiqa"])
def test_peers_fine_tune_through_reward_finetuner(tiny_clip, peer):
    torch.manual_seed(0)
    scorer = CLIPAestheticScorer(tiny_clip) if peer == "imscore" else pyiqa_metric("cnniqa", as_loss=True)
    config = RewardFinetuneConfig(num_inference_steps=2,
                                  run=RunConfig(max_steps=2, batch_size=2, cpu=True, progress_bar=False,
                                                learning_rate=1e-2))
    adapted = from_imscore(scorer) if peer == "imscore" else from_pyiqa(scorer)
    finetuner = RewardFinetuner(tiny_sd_pipeline(), adapted, PROMPTS, config)
    before = {k: v.clone() for k, v in finetuner.trained_parameters().items()}
    log = finetuner.train()
    assert [r["step"] for r in log.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["reward"])) for r in log.history)
    assert any(not v.equal(before[k]) for k, v in finetuner.trained_parameters().items())
    assert all(p.grad is None for p in scorer.parameters())  # the critic stays fixed
