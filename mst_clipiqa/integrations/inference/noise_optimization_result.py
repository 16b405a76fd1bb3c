"""What a noise optimisation run gives back: the best image and its noise, the start, the reward curve."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mst_clipiqa.reward.utils import atomic_write, write_json

from .grid import to_pil

__all__ = ["NoiseOptimization"]


@dataclass
class NoiseOptimization:
    """The result of :func:`optimize_noise`.

    ``image`` / ``noise`` / ``reward``: the kept iterate (number ``iteration``)
    and its named ``scores``; ``initial_*``: the start noise's sample.
    ``noise`` is in the VAE's latent layout, float32 on the CPU; ``latents``
    is the same noise as ``pipe(latents=...)`` takes it (packed for Flux);
    ``generator_state``: the state stochastic sampler steps start from (the
    seed's generator past its initial noise draw, as in ``pipe(generator=...)``).
    ``history``: one record per iteration (``reward``, ``noise_norm``, named
    scores, ``monitor``, ``penalty`` where they apply).
    """

    prompt: str
    seed: int
    image: torch.Tensor
    noise: torch.Tensor
    latents: torch.Tensor
    reward: float
    iteration: int
    initial_image: torch.Tensor
    initial_noise: torch.Tensor
    initial_reward: float
    history: list[dict[str, float]]
    generator_state: torch.Tensor
    scores: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rewards(self) -> list[float]:
        """The reward of every iteration's image (the start noise's first)."""
        return [r["reward"] for r in self.history]

    @property
    def pil(self) -> Image.Image:
        return to_pil(self.image)

    def pipe_kwargs(self) -> dict[str, Any]:
        """``pipe(prompt, **result.pipe_kwargs())`` regenerates ``image`` (up to float error): the kept noise
        as ``latents``, the generator stochastic steps draw from, and the sampler settings."""
        generator = torch.Generator("cpu")
        generator.set_state(self.generator_state)
        keys = ("num_inference_steps", "guidance_scale", "height", "width")
        return {"latents": self.latents.clone(), "generator": generator,
                **{k: self.settings[k] for k in keys if k in self.settings}}

    def record(self) -> dict[str, Any]:
        """Everything but the tensors, as written to ``result.json``."""
        return {"prompt": self.prompt, "seed": self.seed, "reward": self.reward, "initial_reward": self.initial_reward,
                "iteration": self.iteration, "scores": self.scores, "stopped_early": self.stopped_early,
                "evaluations": len(self.history), "settings": self.settings, "timings": self.timings,
                "history": self.history}

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``before.png`` (the start noise's image), ``after.png`` (the kept one), ``reward_curve.png``,
        ``noise.safetensors`` (kept and start noise, generator state) and ``result.json`` into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"before": directory / "before.png", "after": directory / "after.png"}
        for name, image in (("before", self.initial_image), ("after", self.image)):
            with atomic_write(paths[name]) as tmp:
                to_pil(image).save(tmp, format="PNG")
        paths["noise"] = directory / "noise.safetensors"
        with atomic_write(paths["noise"]) as tmp:
            save_file({"noise": self.noise.contiguous(), "initial_noise": self.initial_noise.contiguous(),
                       "generator_state": self.generator_state}, str(tmp))
        paths["reward_curve"] = self.plot(directory / "reward_curve.png")
        paths["json"] = write_json(directory / "result.json",
                                   {**self.record(), "files": {k: p.name for k, p in paths.items()}})
        return paths

    def plot(self, path: str | Path) -> Path:
        """Reward per iteration (and the monitor's, when one watched), and the noise norm against the norm of
        a Gaussian sample."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r["iteration"] for r in self.history]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
        top.plot(steps, self.rewards, marker=".", label="reward")
        top.plot(steps, [max(self.rewards[: i + 1]) for i in range(len(steps))], label="best so far")
        top.axvline(self.iteration, color="grey", linestyle=":", label=f"kept (iteration {self.iteration})")
        if any("monitor" in r for r in self.history):
            twin = top.twinx()
            twin.plot(steps, [r["monitor"] for r in self.history], color="tab:red", alpha=0.6)
            twin.set_ylabel("monitor", color="tab:red")
        top.set_ylabel("reward")
        top.legend(fontsize=8)
        bottom.plot(steps, [r["noise_norm"] for r in self.history], label="noise norm")
        mode = math.sqrt(self.noise[0].numel() - 1)
        bottom.axhline(mode, color="grey", linestyle=":", label=f"Gaussian noise norm ({mode:.1f})")
        bottom.set_xlabel("iteration (one reward evaluation each)")
        bottom.set_ylabel("noise norm")
        bottom.legend(fontsize=8)
        fig.tight_layout()
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        return Path(path)
