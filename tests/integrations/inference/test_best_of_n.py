"""Best-of-N sampling, reranking, the `rank` CLI and the DDPO reward function, offline."""

import json

import pytest
import torch
from PIL import Image

from mst_clipiqa.cli import main as cli_main
from mst_clipiqa.integrations import (
    best_of_n,
    ddpo_reward_fn,
    generate_candidates,
    rank_images,
    regenerate,
    score_images,
)
from mst_clipiqa.integrations.inference.grid import to_pil
from mst_clipiqa.integrations.pipelines.tiny import (
    TINY_PIPELINES,
    tiny_lcm_pipeline,
    tiny_pixart_pipeline,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward

EXTRA = {"sd3": {"max_sequence_length": 8}, "flux": {"max_sequence_length": 16}}


@pytest.fixture(scope="module")
def reward_b():
    """Prompt-anchored tiny reward (variant B): needs one prompt per image."""
    torch.manual_seed(0)
    return MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant="B"))).eval()


@pytest.fixture(scope="module")
def reward_a():
    torch.manual_seed(0)
    return MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant="A"))).eval()


@pytest.mark.parametrize("name", ["sd", "sdxl", "sd3", "flux"])
def test_candidates_sorted_and_winner_regenerates_exactly(name, reward_b):
    pipe, prompt = TINY_PIPELINES[name](), "a red car"
    kwargs = {"num_inference_steps": 3, "guidance_scale": 2.0, **EXTRA.get(name, {})}
    ranking = best_of_n(pipe, prompt, reward_b, n=5, seed=10, chunk_size=2, top_k=2, **kwargs)

    scores = ranking.scores
    assert torch.all(scores[:-1] >= scores[1:]), scores
    assert sorted(ranking.seeds) == list(range(10, 15))
    assert [c.rank for c in ranking.candidates] == [1, 2, 3, 4, 5]
    assert scores.unique().numel() > 1  # distinct seeds gave distinct images
    assert len(ranking.best) == 2 and all(isinstance(im, Image.Image) for im in ranking.best)
    assert ranking.contact_sheet.size[0] > 0

    winner = ranking.winner
    replayed = regenerate(pipe, prompt, winner.seed, batch_seeds=winner.batch_seeds, **kwargs)
    assert torch.equal(replayed, winner.image)  # the same batch again: bitwise
    alone = regenerate(pipe, prompt, winner.seed, **kwargs)
    torch.testing.assert_close(alone, winner.image, atol=1e-5, rtol=0)  # alone: up to batch-size rounding
    assert reward_b(alone[None], [prompt]).item() == pytest.approx(winner.score, abs=1e-4)
    assert reward_b(replayed[None], [prompt]).item() == pytest.approx(winner.score, abs=1e-6)


def test_candidate_does_not_depend_on_chunking():
    pipe = tiny_sd_pipeline()
    one = generate_candidates(pipe, "a cat", [3, 4, 5], chunk_size=1, num_inference_steps=2)
    three = generate_candidates(pipe, "a cat", [3, 4, 5], chunk_size=3, num_inference_steps=2)
    torch.testing.assert_close(one, three, atol=1e-5, rtol=0)


@pytest.mark.parametrize("guidance, text_encoder_calls", [(1.0, 1), (3.0, 2)])  # with guidance: + negative
def test_prompt_is_encoded_once_per_call(reward_b, guidance, text_encoder_calls):
    pipe = tiny_sd_pipeline()
    counts = {"text_encoder": 0, "reward_text": 0}
    pipe.text_encoder.register_forward_hook(lambda *_: counts.__setitem__("text_encoder", counts["text_encoder"] + 1))
    model = reward_b.model
    states = model._text_states

    def counting_states(prompts):
        counts["reward_text"] += len(prompts)
        return states(prompts)

    model._text_states = counting_states
    try:
        model._prompt_cache.clear()
        best_of_n(pipe, "a lighthouse at dusk", reward_b, n=6, chunk_size=2, score_batch_size=2,
                  num_inference_steps=2, guidance_scale=guidance)
    finally:
        del model._text_states
    # three pipeline calls and three scoring batches, one encoding on each side
    assert counts == {"text_encoder": text_encoder_calls, "reward_text": 1}


def test_rank_images_from_folder_and_save(tmp_path, reward_a):
    torch.manual_seed(1)
    images = torch.rand(4, 3, 32, 32)
    for i, image in enumerate(images):
        to_pil(image).save(tmp_path / f"img_{i}.png")
    to_pil(torch.rand(3, 48, 40)).save(tmp_path / "other_size.png")  # scored in its own batch
    ranking = rank_images(tmp_path, None, reward_a, top_k=2)
    assert len(ranking.candidates) == 5
    assert torch.all(ranking.scores[:-1] >= ranking.scores[1:])
    assert {c.name for c in ranking.candidates} == {f"img_{i}.png" for i in range(4)} | {"other_size.png"}
    expected = reward_a(torch.stack([ranking.candidates[0].image]), None).item()
    assert ranking.candidates[0].score == pytest.approx(expected, abs=1e-4)

    paths = ranking.save(tmp_path / "out")
    rows = json.loads(paths["json"].read_text())["candidates"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert paths["csv"].read_text().splitlines()[0] == "rank,score,name"
    assert Image.open(paths["contact_sheet"]).size[0] > 0 and paths["best_1"].exists()


def test_rank_cli_prints_table_and_writes_files(tmp_path, capsys):
    for i in range(3):
        to_pil(torch.rand(3, 32, 32)).save(tmp_path / f"{i}.png")
    out = tmp_path / "out"
    code = cli_main(["rank", str(tmp_path), "--model", "tiny", "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    printed, written = lines[:lines.index("wrote:")], lines[lines.index("wrote:") + 1:]
    assert code == 0
    assert printed[0].split() == ["rank", "score", "image"] and len(printed) == 4
    assert {line.strip() for line in written} >= {str(out / "ranking.csv"), str(out / "contact_sheet.png")}
    assert [line.split()[0] for line in printed[1:]] == ["1", "2", "3"]
    scores = [float(line.split()[1]) for line in printed[1:]]
    assert scores == sorted(scores, reverse=True)
    assert len((out / "ranking.csv").read_text().splitlines()) == 4
    assert len(json.loads((out / "ranking.json").read_text())["candidates"]) == 3
    assert (out / "contact_sheet.png").exists()


def test_rank_cli_rejects_missing_files(tmp_path, capsys):
    assert cli_main(["rank", str(tmp_path / "a.png"), "--model", "tiny"]) == 2
    assert "a.png is neither an image file nor a folder" in capsys.readouterr().err


def test_ddpo_reward_fn_returns_one_finite_reward_per_image(reward_b):
    reward_fn = ddpo_reward_fn(reward_b, batch_size=2)
    images = torch.rand(5, 3, 32, 32)
    prompts = ["a cat", "a dog", "a car", "a tree", "a cat"]
    rewards, metadata = reward_fn(images, prompts, [{} for _ in prompts])
    assert rewards.shape == (5,) and torch.isfinite(rewards).all()
    assert set(metadata) == {"reward"} and metadata["reward"].shape == (5,)
    torch.testing.assert_close(rewards, reward_b(images, prompts).detach(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="one prompt per image"):
        reward_fn(images, prompts[:2], [])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"top_k": 9}, "top_k"), ({"generator": None}, "set by best-of-N"), ({"seeds": [1, 1]}, "distinct"),
     ({"chunk_size": 0}, "chunk_size")],
)
def test_best_of_n_bad_input_is_a_clear_value_error(reward_a, kwargs, message):
    with pytest.raises(ValueError, match=message):
        best_of_n(tiny_sd_pipeline(), "a cat", reward_a, n=3, num_inference_steps=1, **kwargs)


def test_wrong_reward_shape_is_a_clear_value_error():
    with pytest.raises(ValueError, match="one reward per image"):
        best_of_n(tiny_sd_pipeline(), "a cat", lambda images, prompts: images.mean(), n=2, num_inference_steps=1)


def sdxl_with_dpm_solver():
    from diffusers import DPMSolverMultistepScheduler

    pipe = tiny_sdxl_pipeline()
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    return pipe


def unregistered_pipeline():
    """A real diffusers pipeline class no family covers (perturbed-attention guidance on top of CFG)."""
    from diffusers import StableDiffusionPAGPipeline

    return StableDiffusionPAGPipeline(**tiny_sd_pipeline().components, pag_applied_layers=["mid"])


PIXART = {"use_resolution_binning": False, "max_sequence_length": 16, "clean_caption": False}
GUIDED = {  # each pipeline with its own kind of guidance
    "pixart": (tiny_pixart_pipeline, {"guidance_scale": 4.5, **PIXART}),
    "lcm": (tiny_lcm_pipeline, {"guidance_scale": 8.5}),
    "sdxl-dpm-solver": (sdxl_with_dpm_solver, {"guidance_scale": 5.0}),
    "unregistered": (unregistered_pipeline, {"guidance_scale": 3.0, "pag_scale": 2.0}),
}


@pytest.mark.parametrize("case", GUIDED)
def test_guided_best_of_n_winner_is_the_pipelines_own_image_for_its_seed(case, reward_b, caplog):
    build, kwargs = GUIDED[case]
    pipe, prompt = build(), "a red car"
    kwargs = {"num_inference_steps": 3, **kwargs}
    bar_settings = dict(getattr(pipe, "_progress_bar_config", {}))
    ranking = best_of_n(pipe, prompt, reward_b, n=4, chunk_size=2, **kwargs)
    assert pipe._progress_bar_config == bar_settings  # the pipeline's own bar settings are restored
    notices = [r.getMessage() for r in caplog.records if "not a registered pipeline family" in r.getMessage()]
    assert notices == (["StableDiffusionPAGPipeline is not a registered pipeline family: calling it with prompt "
                        "strings, which encodes the prompt again in every call (same images, slower); see "
                        "docs/pipeline_families.md"] if case == "unregistered" else [])
    assert torch.all(ranking.scores[:-1] >= ranking.scores[1:]) and ranking.scores.unique().numel() > 1
    winner = ranking.winner
    replayed = regenerate(pipe, prompt, winner.seed, batch_seeds=winner.batch_seeds, **kwargs)
    assert torch.equal(replayed, winner.image)
    with torch.no_grad():  # the pipeline called plainly, the way its users would, with the winner's seed
        plain = pipe(prompt, generator=torch.Generator().manual_seed(winner.seed), output_type="pt", **kwargs).images
    torch.testing.assert_close(plain[0], winner.image, atol=1e-5, rtol=0)


def test_pixart_negative_prompt_none_means_its_default(reward_a):
    pipe = tiny_pixart_pipeline()
    kwargs = {"n": 2, "num_inference_steps": 2, "guidance_scale": 4.5, **PIXART}
    default = best_of_n(pipe, "a cat", reward_a, **kwargs)
    explicit = best_of_n(pipe, "a cat", reward_a, negative_prompt=None, **kwargs)
    assert torch.equal(default.scores, explicit.scores) and default.seeds == explicit.seeds


def test_a_reward_without_gradients_ranks(reward_b):
    def numpy_reward(images, prompts, metadata):  # trl / ddpo-pytorch style: numpy out, metadata dict
        return reward_b(images, prompts).cpu().numpy(), {"kind": "numpy"}

    images = torch.rand(3, 3, 32, 32)
    ranking = rank_images(images, "a cat", numpy_reward)
    expected = reward_b(images, ["a cat"] * 3)
    torch.testing.assert_close(ranking.scores, expected.sort(descending=True).values, atol=1e-5, rtol=0)


def test_ddpo_reward_fn_wraps_a_trl_style_reward(reward_b):
    def trl_reward(images, prompts, metadata):
        return reward_b(images, prompts).numpy(), {"n": len(metadata)}

    images, prompts = torch.rand(3, 3, 32, 32), ["a cat", "a dog", "a car"]
    rewards, metadata = ddpo_reward_fn(trl_reward)(images, prompts, [{}, {}, {}])
    torch.testing.assert_close(rewards, reward_b(images, prompts).detach(), atol=1e-5, rtol=0)


def test_best_of_n_scores_on_the_generator_device_as_the_cpu_path_did(reward_a):
    pipe, kwargs = tiny_sd_pipeline(), {"num_inference_steps": 2, "guidance_scale": 2.0}
    ranking = best_of_n(pipe, "a cat", reward_a, n=3, seed=5, chunk_size=2, **kwargs)
    images = generate_candidates(pipe, "a cat", [5, 6, 7], chunk_size=2, **kwargs)  # on the CPU, as before
    total, _ = score_images(reward_a, images, "a cat")
    order = torch.argsort(total, descending=True, stable=True).tolist()
    assert ranking.seeds == [5 + i for i in order]
    assert ranking.scores.tolist() == total[order].tolist()
    for candidate, i in zip(ranking.candidates, order):
        assert candidate.image.device.type == "cpu" and candidate.image.dtype == torch.float32
        assert torch.equal(candidate.image, images[i])
    assert set(ranking.timings) == {"generation_s", "scoring_s"}


def test_async_scoring_ranks_the_same_while_scoring_on_its_own_thread(reward_b):
    import threading

    threads = set()

    def recorded(images, prompts):
        threads.add(threading.current_thread().name)
        return reward_b(images, prompts)

    kwargs = {"n": 6, "chunk_size": 2, "num_inference_steps": 2, "progress": False}
    sync = best_of_n(tiny_sd_pipeline(), "a red car", reward_b, **kwargs)
    overlapped = best_of_n(tiny_sd_pipeline(), "a red car", recorded, async_scoring=True, **kwargs)
    assert [c.seed for c in overlapped.candidates] == [c.seed for c in sync.candidates]
    assert torch.allclose(overlapped.scores, sync.scores, atol=1e-6)
    assert threads == {"best-of-n-reward_0"}


def test_released_text_encoders_give_the_same_ranking_and_leave_before_the_images(reward_b):
    import gc
    import weakref

    from mst_clipiqa.integrations.pipelines.prompt_cache import text_encoders

    def run(mode):
        pipe, events = tiny_sd_pipeline(), []
        encoder = weakref.ref(pipe.text_encoder)
        if mode == "offload":  # the recorder would keep a freed encoder alive
            to = pipe.text_encoder.to
            pipe.text_encoder.to = lambda *a, **k: (events.append(f"to {a[0]}"), to(*a, **k))[1]
        pipe.unet.register_forward_pre_hook(lambda *_: events.append("denoise"))
        ranking = best_of_n(pipe, "a lighthouse at dusk", reward_b, n=3, chunk_size=2, num_inference_steps=2,
                            guidance_scale=3.0, text_encoders=mode)
        gc.collect()
        return ranking, pipe, encoder, events

    (kept, *_), (offloaded, _, _, events), (freed, pipe, encoder, _) = (run(m) for m in ("keep", "offload", "free"))
    assert events[0] == "to cpu" and "to cpu" not in events[1:]  # offloaded before the first image, never back
    assert encoder() is None and not text_encoders(pipe)
    for other in (offloaded, freed):
        assert other.seeds == kept.seeds and torch.equal(other.scores, kept.scores)
        assert all(torch.equal(a.image, b.image) for a, b in zip(other.candidates, kept.candidates))
    with pytest.raises(ValueError, match="^text_encoders='offload': StableDiffusionPAGPipeline is not a registered "
                                         "pipeline family, so its prompts cannot be encoded ahead; use "
                                         "text_encoders='keep'$"):
        best_of_n(unregistered_pipeline(), "a cat", reward_b, n=2, text_encoders="offload")
