"""Preference pairs from a reward: N seeded samples per prompt, scored, paired, written as a Diffusion-DPO data set.

The rows are those the Diffusion-DPO trainers read (Pick-a-Pic's layout): ``caption``, ``jpg_0`` /
``jpg_1`` (encoded image bytes), ``label_0`` (1.0 when ``jpg_0`` is preferred), plus the seeds, batch
seeds and scores that regenerate and explain each image. One parquet shard per prompt, so an
interrupted run resumes where it stopped and several processes split the prompts.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mst_clipiqa.reward.utils import atomic_write, jsonable, write_json
from mst_clipiqa.reward.utils.quiet import datasets_bars_hidden
from mst_clipiqa.runtime.preemption import Interrupted, Preempted, StopSignals, interruptible
from mst_clipiqa.runtime.processes import launcher_rank, launcher_world_size

from ..pipelines.prompt_cache import PromptCache
from ..rewards import Rewards
from .best_of_n import best_of_n, encode_for_sampling
from .grid import to_pil
from .ranking import Candidate

__all__ = ["PAIR_RULES", "PairsWritten", "load_pairs", "preference_pairs", "select_pairs", "shard_path"]

PAIR_RULES = ("best-worst", "all", "margin>X")
IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG"}
SETTINGS_FILE, SHARDS = "pairs.json", "data"
_MARGIN = re.compile(r"^margin>([0-9.eE+-]+)$")


def select_pairs(scores: Sequence[float], rule: str) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, of the candidates to compare: ``"best-worst"`` (the highest and
    the lowest score), ``"all"`` (every pair) or ``"margin>X"`` (every pair whose scores differ by more
    than X). Tied scores are never paired (a tie states no preference), nor NaN or infinite ones (they
    rank nothing)."""
    scores = [float(s) for s in scores]
    finite = [i for i, s in enumerate(scores) if math.isfinite(s)]
    if rule == "best-worst":
        if not finite:
            return []
        best, worst = max(finite, key=scores.__getitem__), min(finite, key=scores.__getitem__)
        return [] if scores[best] == scores[worst] else [tuple(sorted((best, worst)))]
    margin = _margin(rule)
    return [(i, j) for i in finite for j in finite if i < j and abs(scores[i] - scores[j]) > margin]


def _margin(rule: str) -> float:
    if rule == "all":
        return 0.0
    match = _MARGIN.match(rule) if isinstance(rule, str) else None
    try:
        margin = float(match.group(1)) if match else math.nan
    except ValueError:
        margin = math.nan
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"pairs must be one of {list(PAIR_RULES)} (X a number >= 0, e.g. 'margin>0.1'), "
                         f"got {rule!r}")
    return margin


@dataclass
class PairsWritten:
    """What one process wrote: the data set folder, the shards it wrote, those it found finished, and the
    markers of prompts with no pair (every candidate tied or scored NaN / inf), which have no shard."""

    directory: Path
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    no_pairs: list[Path] = field(default_factory=list)
    rows: int = 0


def preference_pairs(
    pipe: Any,
    prompts: Sequence[str],
    reward: Rewards,
    output_dir: str | Path,
    *,
    n: int = 4,
    pairs: str = "best-worst",
    seed: int = 0,
    weights: Mapping[str, float] | None = None,
    image_format: str = "png",
    chunk_size: int = 4,
    score_batch_size: int = 16,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    async_scoring: bool = False,
    text_encoders: str = "keep",
    **pipe_kwargs: Any,
) -> PairsWritten:
    """Sample ``n`` seeds per prompt with ``pipe`` (best-of-N's generation), score them with ``reward`` (any
    form ``best_of_n`` takes; several named ones weighted by ``weights``) and write the ``pairs`` of each
    prompt as a parquet shard ``output_dir/data/prompt-NNNNNN.parquet``; read them with :func:`load_pairs`.

    Prompt ``p`` gets the seeds ``seed + p * n + k``, ``k < n``, whatever the process, so a row's
    ``seed_0`` / ``batch_seeds_0`` with the settings in ``output_dir/pairs.json`` regenerate its image
    (``best_of_n.regenerate``; bitwise with PNG). A rerun skips finished shards and refuses other
    settings. Process ``rank`` of ``world_size`` (default: the launcher's ``RANK`` / ``WORLD_SIZE``)
    takes prompts ``rank::world_size``. ``image_format``: ``"png"`` (lossless) or ``"jpeg"`` (smaller).
    ``pipe_kwargs`` go to the pipeline (``num_inference_steps``, ``guidance_scale``, ...). SIGTERM / SIGINT
    stop it with ``Preempted``, the finished shards kept: the prompt in hand is given up at its next chunk of
    images (a rerun redoes it: its seeds are fixed), or finished once its images are all made.
    ``async_scoring``: best-of-N's, each chunk scored while the next is generated. ``text_encoders``: ``offload``
    (to the CPU) or ``free`` the text encoders once this process's prompts are encoded (each once, kept on the CPU),
    before any image is made (``free`` leaves the pipeline without them).
    """
    prompts = _check_prompts(prompts)
    select_pairs([0.0, 1.0], pairs)  # a bad rule fails before any generation
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (samples per prompt to pair), got {n!r}")
    if image_format.lower() not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
    rank = launcher_rank() if rank is None else rank
    world_size = launcher_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    directory = Path(output_dir)
    settings = {"n": n, "pairs": pairs, "seed": seed, "weights": dict(weights) if weights else None,
                "image_format": image_format.lower(), "chunk_size": chunk_size, "pipe_kwargs": pipe_kwargs,
                "prompts": prompts}
    _check_settings(directory, jsonable(settings))
    result = PairsWritten(directory)
    mine = range(rank, len(prompts), world_size)
    encoder = (encode_for_sampling(pipe, [prompts[i] for i in mine], text_encoders, **pipe_kwargs)
               if text_encoders != "keep" else None)
    with StopSignals() as signals:
        for done, index in enumerate(mine):
            try:
                with interruptible():
                    _prompt_pairs(pipe, prompts, index, reward, result, settings, score_batch_size, progress,
                                  async_scoring, encoder)
            except Interrupted as cut:
                _stop(cut.signum, done, len(mine), directory, f" (prompt {index} was cut short: a rerun makes it)")
            if signals.received and done + 1 < len(mine):  # between prompts: every finished shard is kept
                _stop(signals.received, done + 1, len(mine), directory)
    return result


def _stop(signum: int, done: int, total: int, directory: Path, cut: str = "") -> None:
    raise Preempted(signum, f"after {done} of {total} prompts{cut}; the finished ones are in {directory}; run the "
                            "same command again to continue (they are skipped)")


def _prompt_pairs(pipe: Any, prompts: list[str], index: int, reward: Rewards, result: PairsWritten,
                  settings: dict[str, Any], score_batch_size: int, progress: bool, async_scoring: bool,
                  encoder: PromptCache | None) -> None:
    """Sample, score and write the pairs of prompt ``index`` (or skip it when done)."""
    path = shard_path(result.directory, index)
    if path.is_file() or _no_pairs_path(path).is_file():
        result.skipped.append(path if path.is_file() else _no_pairs_path(path))
        return
    n, seed = settings["n"], settings["seed"]
    seeds = [seed + index * n + k for k in range(n)]
    ranking = best_of_n(pipe, prompts[index], reward, seeds=seeds, chunk_size=settings["chunk_size"],
                        score_batch_size=score_batch_size, weights=settings["weights"], progress=progress,
                        async_scoring=async_scoring, text_encoders=encoder or "keep", **settings["pipe_kwargs"])
    rows = _rows(index, prompts[index], sorted(ranking.candidates, key=lambda c: seeds.index(c.seed)),
                 settings["pairs"], IMAGE_FORMATS[settings["image_format"]])
    if not rows:  # an empty shard would stop load_pairs; the marker says the prompt is done
        write_json(_no_pairs_path(path), {"prompt_index": index, "scores": [c.score for c in ranking.candidates],
                                          "reason": "every candidate tied or scored NaN / inf: no pair"})
        result.no_pairs.append(_no_pairs_path(path))
        return
    _write_shard(path, rows, list(ranking.winner.scores))
    result.written.append(path)
    result.rows += len(rows)


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a list of strings (one caption per prompt)")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty; expected at least one prompt")
    return prompts


def _check_settings(directory: Path, settings: dict[str, Any]) -> None:
    path = directory / SETTINGS_FILE
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if differ:
            raise ValueError(f"{directory} holds pairs made with other settings ({differ} differ); resume with "
                             f"the settings in {path}, or write into another folder")
        return
    write_json(path, settings)  # every process writes the same content, atomically


def shard_path(directory: str | Path, index: int) -> Path:
    """The shard of prompt number ``index``."""
    return Path(directory) / SHARDS / f"prompt-{index:06d}.parquet"


def _no_pairs_path(shard: Path) -> Path:
    return shard.with_suffix(".no-pairs.json")


def _encoded(candidate: Candidate, image_format: str) -> bytes:
    buffer = io.BytesIO()
    to_pil(candidate.image).save(buffer, format=image_format, **({"quality": 95} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def _rows(index: int, prompt: str, candidates: list[Candidate], rule: str, image_format: str) -> list[dict[str, Any]]:
    encoded: dict[int, bytes] = {}
    rows = []
    for i, j in select_pairs([c.score for c in candidates], rule):
        a, b = candidates[i], candidates[j]
        for k in (i, j):
            encoded.setdefault(k, _encoded(candidates[k], image_format))
        rows.append({"caption": prompt, "jpg_0": encoded[i], "jpg_1": encoded[j],
                     "label_0": 1.0 if a.score > b.score else 0.0, "seed_0": a.seed, "seed_1": b.seed,
                     "score_0": a.score, "score_1": b.score, "scores_0": a.scores, "scores_1": b.scores,
                     "batch_seeds_0": list(a.batch_seeds), "batch_seeds_1": list(b.batch_seeds),
                     "prompt_index": index})
    return rows


def _schema(score_names: list[str]) -> Any:
    import pyarrow as pa

    scores = pa.struct([(name, pa.float64()) for name in score_names])
    return pa.schema([("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()),
                      ("label_0", pa.float64()), ("seed_0", pa.int64()), ("seed_1", pa.int64()),
                      ("score_0", pa.float64()), ("score_1", pa.float64()), ("scores_0", scores),
                      ("scores_1", scores), ("batch_seeds_0", pa.list_(pa.int64())),
                      ("batch_seeds_1", pa.list_(pa.int64())), ("prompt_index", pa.int64())])


def _write_shard(path: Path, rows: list[dict[str, Any]], score_names: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=_schema(score_names))
    with atomic_write(path) as tmp:
        pq.write_table(table, str(tmp))


def _shard_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{path} is not a readable parquet shard ({error}); delete it and run the same "
                         "'mst-clipiqa pairs' command again to rewrite it") from None


def load_pairs(directory: str | Path, cache_dir: str | Path | None = None) -> Any:
    """The pairs in ``directory`` (every finished shard) as a ``datasets.Dataset``, read by
    ``datasets.load_dataset("parquet", ...)``; prompts whose candidates all tied have no rows."""
    from datasets import load_dataset

    found = sorted((Path(directory) / SHARDS).glob("prompt-*.parquet"))
    if not found:
        raise ValueError(f"{directory} holds no pair shards ({SHARDS}/prompt-*.parquet); write them with "
                         "preference_pairs")
    shards = [str(p) for p in found if _shard_rows(p) > 0]  # older versions wrote empty shards for ties
    if not shards:
        raise ValueError(f"the {len(found)} shard(s) in {Path(directory) / SHARDS} hold no pairs (every prompt's "
                         "candidates tied); sample more per prompt (n) or use another reward")
    with datasets_bars_hidden():  # reading a few local shards: a bar of datasets' own would sit inside the trainer's
        return load_dataset("parquet", data_files=shards, split="train",
                            cache_dir=None if cache_dir is None else str(cache_dir))
