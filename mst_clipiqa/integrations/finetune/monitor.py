"""A reward-hacking monitor for any trainer: scorers the run does not optimise and the diversity of the samples,
on fixed held-out prompts and seeds, with early stopping when the monitor stalls while the reward still rises."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mst_clipiqa.reward.utils import atomic_write
from mst_clipiqa.runtime.preemption import interruption_point

from ..inference.best_of_n import generate_candidates, score_images
from ..inference.patience import MonitorPatience
from ..rewards import Rewards, map_reward
from .uncertainty import SigmaTap

__all__ = ["HackingMonitor", "MonitorError", "Sampler", "diversity", "image_features", "pipeline_sampler"]

Sampler = Callable[[list[str], list[int]], torch.Tensor]
State = Mapping[str, torch.Tensor] | Callable[[], Mapping[str, torch.Tensor]]
_STATE = "monitor.best."


def pipeline_sampler(pipe: Any, *, chunk_size: int = 4, encoder: Any = None, **pipe_kwargs: Any) -> Sampler:
    """``sample(prompts, seeds)``: one image per (prompt, seed) from ``pipe`` as it is at the call (a LoRA
    being trained included), each seed's generator as in ``best_of_n``; ``pipe_kwargs`` go to the pipeline;
    ``encoder``: the prompt cache of ``encode_for_sampling`` (text encoders released)."""
    def sample(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        images: list[torch.Tensor | None] = [None] * len(prompts)
        for prompt in dict.fromkeys(prompts):
            where = [i for i, p in enumerate(prompts) if p == prompt]
            batch = generate_candidates(pipe, prompt, [seeds[i] for i in where], chunk_size=chunk_size,
                                        progress=False, encoder=encoder, **pipe_kwargs)
            for i, image in zip(where, batch):
                images[i] = image
        return torch.stack(images)

    return sample


def _scorers(*rewards: Rewards | None) -> Iterator[Any]:
    for reward in rewards:
        if isinstance(reward, Mapping):
            yield from reward.values()
        elif reward is not None:
            yield reward


def image_features(images: torch.Tensor, *scorers: Rewards | None) -> torch.Tensor:
    """(N, D) features of (N, 3, H, W) images in [0, 1] for the diversity measure: the unit-norm CLIP image
    embeddings of the first scorer that has them (an MST-CLIPIQA reward's coarse stream), else the images
    area-downsampled to 16 x 16, scaled so that distances are root-mean-square pixel differences."""
    with torch.no_grad():
        for scorer in _scorers(*scorers):
            model = getattr(scorer, "model", None)
            if callable(getattr(model, "encode_images", None)):
                device = next(model.parameters()).device
                return F.normalize(model.encode_images(images.to(device))[0].float(), dim=-1).cpu()
        small = F.adaptive_avg_pool2d(images.float(), (min(16, images.shape[-2]), min(16, images.shape[-1])))
        return (small.flatten(1) / math.sqrt(small[0].numel())).cpu()


def diversity(features: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance of (N, D) features, N >= 2: 0 when every sample is the same."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"diversity needs (N, D) features of N >= 2 samples, got shape {tuple(features.shape)}")
    return float(torch.pdist(features.float()).mean())


def _tap(scorer: Rewards | None) -> SigmaTap | None:
    return SigmaTap(scorer) if scorer is not None and map_reward(scorer) is not None else None


class MonitorError(ValueError):
    """The monitor's scorers gave no finite score on the held-out grid: the monitor cannot watch the run."""


def _finite_scores(total: torch.Tensor, step: int) -> torch.Tensor:
    finite = torch.isfinite(total.float())
    if not bool(finite.any()):
        raise MonitorError(f"the hacking monitor cannot score: it returned NaN or inf for all {len(total)} held-out "
                           f"images at step {step} (check the monitor model, --monitor)")
    if not bool(finite.all()):
        warnings.warn(f"the hacking monitor returned NaN or inf for {int((~finite).sum())} of {len(total)} held-out "
                      f"images at step {step}; its record averages the other {int(finite.sum())}", RuntimeWarning,
                      stacklevel=3)
    return total[finite]


def _snapshot(state: State | None) -> dict[str, torch.Tensor] | None:
    if state is None:
        return None
    values = state() if callable(state) else state
    return {name: t.detach().cpu().clone() for name, t in values.items()}


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    values = values.float()
    se = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(values.mean()), se


class HackingMonitor:
    """Watches a training run for reward hacking; call it from any trainer after each step:
    ``monitor(step, state=lambda: lora_weights)``.

    Every ``every`` steps it samples the fixed held-out grid ``prompts`` x ``seeds`` with ``sample(prompts,
    seeds)`` (e.g. :func:`pipeline_sampler` or a trainer's ``sample``), scores the images by ``monitor`` (one
    or several scorers the run does not optimise, any reward form; ``monitor_weights`` weight their named
    outputs) and, when given, by the optimised ``reward``, and measures their ``diversity`` (mean pairwise
    distance of :func:`image_features`, or of ``features(images)``). Each evaluation's record (``step``,
    ``monitor`` and ``reward`` means with standard errors ``*_se``, named monitor outputs, ``diversity``, and
    ``reward_sigma``, the mean sigma of an MST-CLIPIQA ``reward``, read from the pass that scores the images)
    is appended to ``records`` and passed to ``log(record, step)`` (e.g. ``accelerator.log``). The
    MST-CLIPIQA ``reward`` (else the ``monitor``) gives the diversity's embeddings from that same pass: each
    held-out image goes through its encoders once per evaluation.

    With ``patience``: ``should_stop`` turns true when the monitor has not improved for ``patience``
    evaluations while the reward (when given) is above its value at the monitor's best, the rule of
    ``optimize_noise(monitor=, patience=)`` plus the reward's rise. ``best_state`` is a copy of ``state``
    at the monitor's best evaluation (``best_step``), for the trainer to keep or restore.
    """

    def __init__(self, sample: Sampler, monitor: Rewards, prompts: Sequence[str], seeds: Sequence[int], *,
                 reward: Rewards | None = None, every: int = 10, patience: int | None = None,
                 weights: Mapping[str, float] | None = None, monitor_weights: Mapping[str, float] | None = None,
                 features: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 log: Callable[[dict[str, float], int], Any] | None = None, score_batch_size: int = 16):
        if isinstance(prompts, str) or not prompts or not seeds:
            raise ValueError("prompts and seeds must be non-empty lists: the held-out grid is every prompt with "
                             "every seed")
        if len(prompts) * len(seeds) < 2:
            raise ValueError("the held-out grid needs at least 2 samples (prompts x seeds) to measure diversity")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (steps between evaluations), got {every!r}")
        if patience is not None and (not isinstance(patience, int) or patience < 1):
            raise ValueError(f"patience must be an integer >= 1 or None (no early stop), got {patience!r}")
        self.sample, self.monitor, self.reward = sample, monitor, reward
        self.tap = _tap(reward)  # the reward's sigma and embeddings from the pass that scores the images
        self.monitor_tap = _tap(monitor) if self.tap is None and features is None else None
        self.prompts = [p for p in prompts for _ in seeds]
        self.seeds = [int(s) for _ in prompts for s in seeds]
        self.every, self.patience = every, patience
        self.weights, self.monitor_weights = weights, monitor_weights
        self.features, self.log, self.score_batch_size = features, log, score_batch_size
        self.records: list[dict[str, float]] = []
        self.watch = MonitorPatience(patience or 1)
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.should_stop = False

    def __call__(self, step: int, state: State | None = None) -> dict[str, float] | None:
        """Evaluate when ``step`` is a multiple of ``every`` (step 0: before training); returns the record or
        None."""
        return self.evaluate(step, state) if step % self.every == 0 else None

    @torch.no_grad()
    def evaluate(self, step: int, state: State | None = None) -> dict[str, float]:
        """Sample, score and measure the held-out grid now; update the best state and ``should_stop``. A
        :class:`MonitorError` when the monitor scores no image (NaN / inf for all); images it cannot score are
        left out of the record's mean, with a warning."""
        images = self.sample(list(self.prompts), list(self.seeds)).float()
        interruption_point()  # inside a trainer: a stop request gives the evaluation up before it is scored
        total, named, _, embedded = self._score(self.monitor, self.monitor_tap, images, self.monitor_weights)
        total = _finite_scores(total, step)
        record = {"step": step, **dict(zip(("monitor", "monitor_se"), _mean_se(total)))}
        if len(named) > 1:
            record.update({f"monitor/{name}": float(v.float().mean()) for name, v in named.items()})
        if self.reward is not None:
            reward, _, sigmas, reward_embedded = self._score(self.reward, self.tap, images, self.weights)
            record.update(zip(("reward", "reward_se"), _mean_se(reward)))
            if sigmas:
                record["reward_sigma"] = float(torch.cat(sigmas).mean())
            embedded = reward_embedded or embedded
        record["diversity"] = diversity(self._features(images, embedded))
        if self.watch.update(len(self.records), record["monitor"]):
            self.best_step, self.best_state = step, _snapshot(state)
        self.records.append(record)
        self.should_stop = self.patience is not None and self.watch.exhausted and self._reward_rose(record)
        if self.log is not None:
            self.log({k: v for k, v in record.items() if k != "step"}, step)
        return record

    def _score(self, scorer: Rewards, tap: SigmaTap | None, images: torch.Tensor,
               weights: Mapping[str, float] | None) -> tuple[torch.Tensor, dict[str, torch.Tensor], list, list]:
        """``score_images`` of the held-out grid, through ``tap`` when there is one: the objective, the named
        outputs, and the tapped judge's sigmas and coarse embeddings (empty lists without a tap)."""
        with tap.recording() if tap else nullcontext([]) as sigmas:
            total, named = score_images(tap.reward if tap else scorer, images, self.prompts,
                                        batch_size=self.score_batch_size, weights=weights)
        return total, named, sigmas, tap.embeddings if tap else []

    def _features(self, images: torch.Tensor, embedded: list[torch.Tensor]) -> torch.Tensor:
        """``features(images)`` when given, else the unit-norm coarse embeddings a tapped scoring pass gave
        (:func:`image_features`' first choice, without a second encoder pass), else :func:`image_features`."""
        if self.features is not None:
            return self.features(images)
        if embedded:
            return F.normalize(torch.cat(embedded).float(), dim=-1).cpu()
        return image_features(images, self.reward, self.monitor)

    def _reward_rose(self, record: dict[str, float]) -> bool:
        if "reward" not in record:
            return True
        if self.best_step is None:  # no evaluation was ever the best: nothing to compare the reward with
            return False
        best = next(r for r in self.records if r["step"] == self.best_step)
        return record["reward"] > best["reward"]

    def plot(self, path: str | Path) -> Path:
        """The reward and the monitor per evaluation (the kept step marked) over the diversity, as a PNG."""
        from matplotlib.figure import Figure  # not pyplot: no backend to choose, no global state

        steps = [r["step"] for r in self.records]
        fig = Figure(figsize=(6, 5))
        top, bottom = fig.subplots(2, 1, sharex=True)
        top.plot(steps, [r["monitor"] for r in self.records], marker=".", color="tab:red", label="monitor")
        if self.best_step is not None:
            top.axvline(self.best_step, color="grey", linestyle=":", label=f"monitor's best (step {self.best_step})")
        top.set_ylabel("monitor")
        top.legend(fontsize=8)
        if self.reward is not None:
            twin = top.twinx()
            twin.plot(steps, [r["reward"] for r in self.records], marker=".", label="reward")
            twin.set_ylabel("reward (optimised)")
        bottom.plot(steps, [r["diversity"] for r in self.records], marker=".", color="tab:green")
        bottom.set_ylabel("diversity")
        bottom.set_xlabel("step")
        fig.tight_layout()
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        return Path(path)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The monitor's progress for a checkpoint: the best state (tensors) and the records, the best step,
        the patience counters and the stop flag (JSON)."""
        tensors = {_STATE + name: t for name, t in (self.best_state or {}).items()}
        meta = {"records": self.records, "best_step": self.best_step, "watch": asdict(self.watch),
                "should_stop": self.should_stop, "has_state": self.best_state is not None}
        return tensors, meta

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Continue from what :meth:`state_dict` returned (``tensors`` may hold other entries too)."""
        self.records = [dict(r) for r in meta["records"]]
        self.best_step, self.should_stop = meta["best_step"], meta["should_stop"]
        self.watch = MonitorPatience(**meta["watch"])
        self.best_state = ({k[len(_STATE):]: t.clone() for k, t in tensors.items() if k.startswith(_STATE)}
                           if meta["has_state"] else None)
