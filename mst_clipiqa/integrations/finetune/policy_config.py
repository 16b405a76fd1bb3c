"""Settings of the online RL methods (DDPO, GRPO, DiffusionNFT) and of a run of ``PolicyTrainer``, as data: no
torch here, so ``mst-clipiqa finetune --help`` needs none."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mst_clipiqa.reward.utils.options import option

from .config import RunConfig, composed, renamed_fields, require

if TYPE_CHECKING:
    from ..pipelines.stochastic import StochasticSampler

__all__ = ["METHODS", "PolicyConfig", "PolicyFinetuneConfig"]

METHODS = ("ddpo", "grpo", "nft")
AGGREGATIONS = ("sum", "gdpo", "quantile")
UNCERTAINTY = ("none", "shrink", "kl")
MAX_SAMPLING_STEPS = 1000  # a UNet's training schedule has 1000 timesteps; more would only run without end
_NO_OP = {"adv_clip_max": "advantages clipped to 0 make every update a no-op (DDPO and Flow-GRPO use 5)",
          "clip_range": "an importance ratio clipped to 1 gives no gradient (trl's DDPO uses 1e-4)",
          "nft_beta": "the implicit policies would equal the old one (DiffusionNFT uses 1.0)"}


@renamed_fields
@dataclass
class PolicyConfig:
    """Settings of the online RL methods; defaults from the papers' code where one exists (docs/online_rl.md).

    ``method``: ``"ddpo"`` (per-prompt running statistics when ``per_prompt_stats``, else the batch's),
    ``"grpo"`` (normalised within each prompt's group) or ``"nft"`` (DiffusionNFT, flow families).
    ``clip_range`` 1e-4 and ``adv_clip_max`` 5: trl's DDPO and Flow-GRPO. ``kl_coeff``: weight of the KL
    to the reference policy (LoRA disabled); Flow-GRPO uses 0.004-0.04, DDPO none. ``nft_beta`` 1.0 and
    ``nft_timesteps``: DiffusionNFT's guidance strength and the forward-process times drawn per sample.
    """

    method: str = option("grpo", "online RL method: ddpo, grpo or nft")
    num_inference_steps: int = option(10, "sampling steps of the rollouts (train with fewer than you evaluate with: "
                                "denoising reduction)")
    guidance_scale: float | None = option(None, "classifier-free guidance in rollouts and training (default: the "
                                                "pipeline's)", type=float)
    eta: float = option(1.0, "DDIM eta of the rollouts on UNet families (DDPO: 1.0)")
    noise_level: float = option(0.7, "Flow-GRPO's SDE noise level a (paper: 0.7)")
    sigma_schedule: str = option("flow_grpo", "SDE noise schedule: flow_grpo (a sqrt(t / (1 - t))) or constant "
                                              "(DanceGRPO's a)")
    sde_window: tuple[int, int] | None = option(None, "only steps START..STOP-1 are stochastic and trained "
                                                      "(MixGRPO / Flow-GRPO-Fast; default: every noisy step)",
                                                nargs=2, type=int, metavar=("START", "STOP"))
    inner_epochs: int = option(1, "passes over each batch of rollouts")
    minibatch_size: int | None = option(None, "rollouts per optimizer step within a pass (default: all of a "
                                              "process's)", type=int)
    steps_per_call: int = option(1, "recorded steps recomputed per denoiser call in an update (0: all of them at "
                                    "once; the same loss in fewer, larger calls; activation memory grows with it)")
    clip_range: float = option(1e-4, "PPO clip range of the importance ratio (trl's DDPO, Flow-GRPO)")
    adv_clip_max: float = option(5.0, "advantages are clipped to +-this (DDPO, Flow-GRPO)")
    kl_coeff: float = option(0.0, "weight of the KL to the reference policy (Flow-GRPO: 0.004-0.04)")
    per_prompt_stats: bool = option(True, "ddpo: normalise by per-prompt running statistics",
                                    flag="--no-per-prompt-stats")
    stat_buffer_size: int = option(16, "ddpo: rewards kept per prompt")
    stat_min_count: int = option(16, "ddpo: rewards a prompt needs before its own statistics are used")
    nft_beta: float = option(1.0, "nft: DiffusionNFT's guidance strength beta")
    nft_timesteps: int = option(4, "nft: forward-process times drawn per sample")
    nft_stochastic_rollouts: bool = option(False, "nft: sample rollouts with the SDE instead of the ODE")
    rollout_chunk: int | None = option(None, "rollouts per sampler call (default: all of a process's at once)",
                                       type=int)
    async_scoring: bool = option(False, "score each rollout chunk on a background thread while the next chunk is "
                                        "sampled (a RemoteReward scores on its server); same results")
    reward_weights: dict[str, float] | None = option(None, "weights of named reward outputs", cli=False)
    reward_aggregation: str = option("sum", "how named rewards combine into advantages: sum (their weighted sum, "
                                            "normalised as one), gdpo (each normalised within its group first, "
                                            "GDPO arXiv 2601.05242) or quantile (each mapped through its own "
                                            "running quantiles, then weighted)")
    uncertainty: str = option("none", "use the reward's uncertainty (an MSTCLIPIQAReward's sigma), after GARDO "
                                      "(arXiv 2512.24138): shrink (advantages / (1 + sigma / uncertainty_scale)) "
                                      "or kl (each sample's KL weighted by sigma / the batch's mean sigma)")
    uncertainty_scale: float = option(0.25, "shrink: the sigma, in the reward's units, that halves an advantage")
    sigma_patience: int | None = option(None, "stop (after a checkpoint) once the rollouts' sigma has risen with "
                                              "their reward for N updates in a row; needs an MSTCLIPIQAReward "
                                              "(default: warn only, with --uncertainty)", type=int)
    sampler_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "StochasticSampler arguments",
                                                                          "cli": False})
    renamed: ClassVar[dict[str, str]] = {"num_steps": "num_inference_steps"}  # one name for sampling steps

    def __post_init__(self) -> None:
        if self.sde_window is not None:
            self.sde_window = tuple(self.sde_window)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("inner_epochs", "nft_timesteps", "num_inference_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_inference_steps > MAX_SAMPLING_STEPS:
            raise ValueError(f"num_inference_steps must be <= {MAX_SAMPLING_STEPS} (sampling steps per rollout; the "
                             f"papers use 10-50), got {self.num_inference_steps}")
        if self.steps_per_call < 0:
            raise ValueError(f"steps_per_call must be >= 1, or 0 for every recorded step in one call, got "
                             f"{self.steps_per_call}")
        for name in ("minibatch_size", "rollout_chunk"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if self.kl_coeff < 0:
            raise ValueError(f"kl_coeff must be >= 0, got {self.kl_coeff}")
        self._check_update()
        check_uncertainty_options(self)

    def _check_update(self) -> None:
        """Refuse settings under which an update changes nothing (or trains without the reward)."""
        for name in ("adv_clip_max", "clip_range", "nft_beta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}: "
                                 + _NO_OP.get(name, "every update would be a no-op"))
        if self.eta < 0 or self.noise_level < 0:
            raise ValueError(f"eta and noise_level must be >= 0, got {self.eta}, {self.noise_level}")
        if self.method != "nft" or self.nft_stochastic_rollouts:
            if self.eta == 0 and self.noise_level == 0:
                raise ValueError(f"{self.method} needs stochastic rollouts, but eta = 0 (UNet families) and "
                                 "noise_level = 0 (flow families) leave no step with noise: raise one of them")
        steps = self.num_inference_steps
        if self.sde_window is not None and not 0 <= self.sde_window[0] < self.sde_window[1] <= steps:
            raise ValueError(f"sde_window must be (start, stop) with 0 <= start < stop <= num_inference_steps "
                             f"({steps}), got {self.sde_window}: no step of it would be stochastic and trained")
        if self.method == "ddpo" and self.per_prompt_stats and self.stat_min_count > self.stat_buffer_size:
            raise ValueError(f"stat_min_count ({self.stat_min_count}) must be <= stat_buffer_size "
                             f"({self.stat_buffer_size}): a prompt would never collect enough rewards for its own "
                             "statistics")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sampler(self, pipe: Any, **settings: Any) -> StochasticSampler:
        """The rollout sampler these settings describe (``settings``: more ``StochasticSampler`` arguments)."""
        from ..pipelines.stochastic import StochasticSampler

        return StochasticSampler(pipe, num_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                                 eta=self.eta, noise_level=self.noise_level, sigma_schedule=self.sigma_schedule,
                                 sde_window=self.sde_window, **{**self.sampler_kwargs, **settings})


def check_uncertainty_options(config: PolicyConfig) -> None:
    """The choices of ``reward_aggregation`` and ``uncertainty``, and what each needs."""
    if config.reward_aggregation not in AGGREGATIONS:
        raise ValueError(f"reward_aggregation must be one of {AGGREGATIONS}, got {config.reward_aggregation!r}")
    if config.reward_aggregation == "gdpo" and config.method == "ddpo" and config.per_prompt_stats:
        raise ValueError("reward_aggregation='gdpo' normalises each reward within its group: use method 'grpo', "
                         "or 'ddpo' with per_prompt_stats=False (the batch is the group)")
    if config.uncertainty not in UNCERTAINTY:
        raise ValueError(f"uncertainty must be one of {UNCERTAINTY}, got {config.uncertainty!r}")
    if config.uncertainty == "kl" and not config.kl_coeff > 0:
        raise ValueError("uncertainty='kl' weights the KL to the reference by each sample's sigma: set kl_coeff > 0")
    if config.sigma_patience is not None and config.sigma_patience < 1:
        raise ValueError(f"sigma_patience must be >= 1 or None (never stop), got {config.sigma_patience}")
    if not config.uncertainty_scale > 0:
        raise ValueError(f"uncertainty_scale must be > 0, got {config.uncertainty_scale}")


@composed
@dataclass
class PolicyFinetuneConfig(PolicyConfig):
    """Settings of an online RL run: :class:`PolicyConfig`'s method fields, how many rollouts a step takes
    (``prompts_per_step`` prompts over all processes together, each sampled ``group_size`` times with its own
    seed: Flow-GRPO's G, 12-24 in the paper) and the shared run settings as ``run`` (a :class:`RunConfig`,
    whose ``max_grad_norm`` and ``on_nonfinite`` rule the updates too)."""

    group_size: int = option(8, "rollouts per prompt in a step, normalised together (GRPO's G)")
    prompts_per_step: int = option(4, "prompts per step over all processes, each sampled --group-size times")
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "the shared run settings", "cli": False})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("group_size", "prompts_per_step"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        require(self.group_size >= 2 or self.method == "ddpo",
                f"--method {self.method} normalises each reward within its prompt's group: group_size must be >= 2, "
                f"got {self.group_size} (a group of one has advantage 0, so nothing would be trained)")
        require(self.rollouts_per_step >= 2 or self.method != "ddpo" or self.per_prompt_stats,
                "ddpo without per-prompt statistics normalises over the step's rollouts: prompts_per_step x "
                "group_size must be >= 2, got 1 (one rollout has advantage 0, so nothing would be trained)")
        accumulation = self.run.gradient_accumulation_steps
        require(accumulation == 1, "online RL accumulates over the recorded steps of a minibatch; got "
                f"gradient_accumulation_steps={accumulation}, expected 1 (set minibatch_size for smaller optimizer "
                "steps)")

    @property
    def rollouts_per_step(self) -> int:
        return self.group_size * self.prompts_per_step
