"""Best-of-N sampling and reranking: generate N seeded candidates, score, rank."""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mst_clipiqa.reward import MSTCLIPIQAReward, as_image_list, load_image
from mst_clipiqa.reward.utils import UNIT, nested_bar_kwargs, progress_bar, rescale
from mst_clipiqa.runtime.preemption import interruption_point

from ..pipelines.families import pipeline_family
from ..pipelines.prompt_cache import PromptCache
from ..pipelines.prompts import guidance_enabled, split_prompt_kwargs, supports_prompt_embeds
from ..rewards import Rewards, objective, score_images
from .overlays import quality_maps
from .ranking import Candidate, Ranking
from .seeds import check_seeds

__all__ = ["best_of_n", "encode_for_sampling", "generate_candidates", "regenerate",
           "rank_images", "score_images"]

_RESERVED = ("prompt", "num_images_per_prompt", "generator", "output_type", "latents", "return_dict")
logger = logging.getLogger(__name__)


def generate_candidates(
    pipe: Any, prompt: str, seeds: Sequence[int], *, chunk_size: int = 4, generator_device: str = "cpu",
    progress: bool = True, device: torch.device | str | None = "cpu",
    on_chunk: Callable[[torch.Tensor], Any] | None = None, encoder: PromptCache | None = None, **pipe_kwargs: Any,
) -> torch.Tensor:
    """Generate one image per seed, ``chunk_size`` per pipeline call, as (N, 3, H, W) float32 on ``device``
    (the CPU by default; None: where the pipeline made them, e.g. to score them there). ``on_chunk`` gets
    each call's images as soon as they exist (best-of-N scores them there while the next chunk is generated).

    Each image gets its own ``torch.Generator(generator_device).manual_seed(seed)``,
    so it does not depend on the chunking and ``regenerate`` reproduces it.
    Pipelines of a registered family get the prompt encoded once (by ``encoder``, a prompt cache whose text
    encoders may be released: :func:`encode_for_sampling`); any other pipeline is called with prompt strings
    (slower, same images), with a notice.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be one string, got {type(prompt).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    reserved = sorted(set(pipe_kwargs) & set(_RESERVED))
    if reserved:
        raise ValueError(f"{reserved} are set by best-of-N itself; pass seeds / chunk_size instead")
    seeds = check_seeds(seeds)
    if not seeds:
        raise ValueError("seeds is empty; expected at least one seed")
    text, pipe_kwargs = _text_inputs(pipe, prompt, pipe_kwargs, encoder)
    images = []
    bar = progress_bar(total=len(seeds), desc="best-of-N", unit="image", disable=not progress)
    with _inner_bars(pipe):
        for start in range(0, len(seeds), chunk_size):
            interruption_point()  # inside a trainer's monitor or sample grid: given up between chunks
            chunk = seeds[start : start + chunk_size]
            generators = [torch.Generator(generator_device).manual_seed(s) for s in chunk]
            out = pipe(**_batched(text, len(chunk)), generator=generators, output_type="pt", **pipe_kwargs)
            batch = out.images if hasattr(out, "images") else out[0]
            if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[0] != len(chunk):
                raise ValueError(f"{type(pipe).__name__} did not return a (B, 3, H, W) tensor for output_type='pt'")
            images.append(batch.float() if device is None else batch.float().to(device))
            if on_chunk is not None:
                on_chunk(images[-1])
            bar.update(len(chunk))
    bar.close()
    return torch.cat(images)


def _text_inputs(pipe: Any, prompt: str, pipe_kwargs: dict[str, Any],
                 encoder: PromptCache | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the prompt's ``__call__`` inputs, the remaining kwargs): embeddings encoded once by the pipeline's
    family (or ``encoder``), or the prompt string for a pipeline no family covers."""
    if not supports_prompt_embeds(pipe):
        logger.warning("%s is not a registered pipeline family: calling it with prompt strings, which encodes "
                       "the prompt again in every call (same images, slower); see docs/pipeline_families.md",
                       type(pipe).__name__)
        return {"prompt": prompt}, pipe_kwargs
    family = pipeline_family(pipe)
    encode_kwargs, call_kwargs = split_prompt_kwargs(pipe, pipe_kwargs)
    embeds = (encoder or family).encode(prompt, guidance=guidance_enabled(pipe, call_kwargs), **encode_kwargs)
    return family.call_kwargs(embeds), call_kwargs


def encode_for_sampling(pipe: Any, prompts: Sequence[str], text_encoders: str = "offload", *,
                        cache: PromptCache | None = None, **pipe_kwargs: Any) -> PromptCache:
    """``prompts`` encoded (each once) as :func:`generate_candidates` encodes them for ``pipe_kwargs``, then the
    pipeline's text encoders released as ``text_encoders`` says (``keep``, ``offload`` to the CPU, ``free``);
    pass the result as ``generate_candidates(encoder=...)``. ``cache``: one to add them to (its own mode)."""
    if cache is None:
        if not supports_prompt_embeds(pipe):
            raise ValueError(f"text_encoders={text_encoders!r}: {type(pipe).__name__} is not a registered pipeline "
                             "family, so its prompts cannot be encoded ahead; use text_encoders='keep'")
        cache = PromptCache(pipeline_family(pipe), text_encoders)
    encode_kwargs, call_kwargs = split_prompt_kwargs(pipe, pipe_kwargs)
    cache.warm(prompts, guidance=guidance_enabled(pipe, call_kwargs), **encode_kwargs)
    return cache


def _batched(text: dict[str, Any], size: int) -> dict[str, Any]:
    # Embeddings expanded to the chunk here: some pipelines (SD3, Flux) do not
    # repeat precomputed embeddings by num_images_per_prompt themselves.
    if "prompt" in text:
        return {**text, "prompt": [text["prompt"]] * size}
    return {name: t.expand(size, *t.shape[1:]) if isinstance(t, torch.Tensor) else t
            for name, t in text.items()} | {"num_images_per_prompt": 1}


@contextmanager
def _inner_bars(pipe: Any) -> Iterator[None]:
    """The pipeline's own per-call bars nested under best-of-N's: transient on a terminal, off in logs."""
    if not callable(getattr(pipe, "set_progress_bar_config", None)):
        yield
        return
    saved = dict(getattr(pipe, "_progress_bar_config", {}))
    pipe.set_progress_bar_config(**{**nested_bar_kwargs(), **saved})
    try:
        yield
    finally:
        pipe.set_progress_bar_config(**saved)


def regenerate(pipe: Any, prompt: str, seed: int, *, batch_seeds: Sequence[int] | None = None,
               **pipe_kwargs: Any) -> torch.Tensor:
    """Regenerate one candidate, (3, H, W), from its seed and the same pipeline arguments.

    With ``batch_seeds`` (``Candidate.batch_seeds``) the whole original batch is
    replayed, so the image is bitwise the same on any device.
    """
    (seed,) = check_seeds([seed], "seed")
    batch = [seed] if batch_seeds is None else check_seeds(batch_seeds, "batch_seeds")
    if seed not in batch:
        raise ValueError(f"seed {seed} is not among batch_seeds {list(batch)}")
    images = generate_candidates(pipe, prompt, batch, chunk_size=len(batch), progress=False, **pipe_kwargs)
    return images[batch.index(seed)]


def _ranking(prompt: str | Sequence[str] | None, images: torch.Tensor | list[torch.Tensor], total: torch.Tensor,
             named: dict[str, torch.Tensor], top_k: int, seeds: Sequence[int | None], names: Sequence[str | None],
             timings: dict[str, float], batches: Sequence[tuple[int, ...] | None] | None = None,
             maps: torch.Tensor | None = None) -> Ranking:
    nan = torch.isnan(total)
    order = torch.argsort(torch.where(nan, -torch.inf, total), descending=True, stable=True).tolist()
    order = [i for i in order if not nan[i]] + [i for i in order if nan[i]]
    if nan.any():
        labels = [seeds[i] if seeds[i] is not None else names[i] or f"#{i}" for i in range(len(total)) if nan[i]]
        warnings.warn(f"the reward returned NaN for {len(labels)} of {len(total)} candidates "
                      f"({'seeds' if seeds[0] is not None else 'images'} {labels}); they are ranked last",
                      RuntimeWarning, stacklevel=3)
    batches = batches or [None] * len(order)
    candidates = [Candidate(rank=r + 1, score=float(total[i]), image=images[i], seed=seeds[i], name=names[i],
                            scores={k: float(v[i]) for k, v in named.items()}, batch_seeds=batches[i],
                            quality_map=None if maps is None else maps[i])
                  for r, i in enumerate(order)]
    return Ranking(prompt, candidates, top_k, timings)


def _check_top_k(top_k: int, n: int) -> None:
    if not 1 <= top_k <= n:
        raise ValueError(f"top_k must be in [1, {n}] (the number of candidates), got {top_k}")


def best_of_n(
    pipe: Any,
    prompt: str,
    reward: Rewards,
    *,
    n: int = 8,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    chunk_size: int = 4,
    score_batch_size: int = 16,
    top_k: int = 1,
    weights: Mapping[str, float] | None = None,
    generator_device: str = "cpu",
    progress: bool = True,
    async_scoring: bool = False,
    maps: bool = False,
    text_encoders: str | PromptCache = "keep",
    **pipe_kwargs: Any,
) -> Ranking:
    """Generate ``n`` candidates (seeds ``seed, seed+1, ...`` or ``seeds``) with any text-to-image
    pipeline, score them with ``reward`` (any form :mod:`integrations.rewards` accepts) and rank them best first.

    A pipeline of a registered family gets its prompt encoded once; any other
    is called with prompt strings and one seeded generator per image, with a
    one-line notice. ``progress``: a bar over the candidates (the pipeline's own
    per-call bars nest under it).

    ``pipe_kwargs`` go to the pipeline (``num_inference_steps``,
    ``guidance_scale``, ``height``, ...). The candidates stay on the pipeline's device until scored
    there (no round trip through the CPU), so that device holds all ``n`` images for a moment.
    ``async_scoring``: score each chunk on a background thread while the next is generated (a
    ``RemoteReward`` scores on its server); the same ranking, scores equal up to float rounding.
    ``maps``: each candidate's quality map by the MST-CLIPIQA reward in ``reward`` (``Candidate.quality_map``,
    overlaid in the contact sheet; one more pass of its encoders over the candidates).
    ``text_encoders``: ``offload`` (to the CPU) or ``free`` the pipeline's text encoders once the prompt is encoded,
    before the candidates are made (``free`` leaves the pipeline without them), or a cache of
    :func:`encode_for_sampling` that holds the prompt.
    Winner: ``ranking.winner``; its image again:
    ``regenerate(pipe, prompt, winner.seed, batch_seeds=winner.batch_seeds, **pipe_kwargs)``.
    """
    if seeds is None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer (the number of candidates to generate), got {n!r}")
        (seed,) = check_seeds([seed], "seed")
    seeds = list(range(seed, seed + n)) if seeds is None else check_seeds(seeds)
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must be distinct; a repeated seed gives a repeated candidate")
    _check_top_k(top_k, len(seeds))
    start = time.perf_counter()
    encoder = None
    if text_encoders != "keep":
        encoder = (text_encoders if isinstance(text_encoders, PromptCache) else
                   encode_for_sampling(pipe, [prompt], text_encoders, **pipe_kwargs))
    score = functools.partial(score_images, reward, prompt=prompt, batch_size=score_batch_size, weights=weights)
    with ThreadPoolExecutor(1, thread_name_prefix="best-of-n-reward") as executor:
        pending: list[Future] = []
        on_chunk = (lambda batch: pending.append(executor.submit(score, batch))) if async_scoring else None
        images = generate_candidates(pipe, prompt, seeds, chunk_size=chunk_size, generator_device=generator_device,
                                     progress=progress, device=None, on_chunk=on_chunk, encoder=encoder,
                                     **pipe_kwargs)
        _synchronize(images.device)  # the generator's queued work is generation time, not scoring time
        generated = time.perf_counter()
        total, named = _joined([f.result() for f in pending]) if async_scoring else score(images)
    scored = time.perf_counter()
    images = images.cpu()
    timings = {"generation_s": generated - start + time.perf_counter() - scored, "scoring_s": scored - generated}
    batches = [tuple(seeds[i - i % chunk_size: i - i % chunk_size + chunk_size]) for i in range(len(seeds))]
    ranking = _ranking(prompt, images, total, named, top_k, seeds, [None] * len(seeds), timings, batches)
    if maps:
        values, ranking.map_range = quality_maps(reward, images, prompt)
        for candidate in ranking.candidates:
            candidate.quality_map = values[seeds.index(candidate.seed)]
        timings["maps_s"] = time.perf_counter() - scored
    return ranking


def _joined(parts: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return torch.cat([t for t, _ in parts]), {k: torch.cat([n[k] for _, n in parts]) for k in parts[0][1]}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rank_images(
    images: Any,
    prompt: str | Sequence[str] | None,
    reward: Rewards,
    *,
    batch_size: int = 16,
    top_k: int = 1,
    weights: Mapping[str, float] | None = None,
    maps: bool = False,
) -> Ranking:
    """Rank existing images (a folder, paths, PIL images, uint8 arrays or a (N, 3, H, W) tensor) for a prompt
    (or one prompt per image), scored by :func:`score_images`.

    ``maps``: each image's quality map by the MST-CLIPIQA reward in ``reward`` (``Candidate.quality_map``,
    overlaid in the contact sheet). When ``reward`` is that MSTCLIPIQAReward itself, the scores and maps come
    from one pass of its encoders; in a mapping or under ``NamedScores``, the maps take one more pass."""
    items = as_image_list(images)
    if not items:
        raise ValueError(f"no images to rank in {images!r}")
    _check_top_k(top_k, len(items))
    names = [Path(item).name if isinstance(item, (str, Path)) else None for item in items]
    tensors = [load_image(item) for item in items]
    start = time.perf_counter()
    values, map_range = None, None
    if maps and isinstance(reward, MSTCLIPIQAReward):
        result = reward.score([_in_range(t, reward) for t in tensors], prompt, batch_size, return_maps=True)
        named, values, map_range = {"reward": result.scores}, result.maps, reward.score_range
        total = objective(named, weights)
    else:
        total, named = score_images(reward, tensors, prompt, batch_size=batch_size, weights=weights)
    timings = {"scoring_s": time.perf_counter() - start}
    if maps and values is None:
        values, map_range = quality_maps(reward, tensors, prompt)
        timings["maps_s"] = time.perf_counter() - start - timings["scoring_s"]
    ranking = _ranking(prompt, tensors, total, named, top_k, [None] * len(tensors), names, timings, maps=values)
    ranking.map_range = map_range
    return ranking


def _in_range(image: torch.Tensor, reward: MSTCLIPIQAReward) -> torch.Tensor:
    """A [0, 1] image as ``reward.score`` reads a float tensor: in the reward's ``input_range``."""
    return image if tuple(reward.input_range) == UNIT else rescale(image, UNIT, reward.input_range)
