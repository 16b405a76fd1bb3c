"""The differentiable reward / loss API on top of an MST-CLIPIQA model."""
from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..model import MODEL_NAMES, MSTCLIPIQA, check_image_shape, check_prompts, load_model
from ..model.files import REWARD_CONFIG_NAME, check_readable, resolve_model_dir
from ..model.hub import HUB_KWARGS, HubMixin
from ..utils import UNIT, autocast, rescale, write_json
from .batching import score_in_batches
from .images import load_image
from .inputs import ValueCheck, check_input_range
from .uncertainty import EMBEDDINGS, MAPS, ScoresWithUncertainty, assemble, uncertainty_parts

Outputs = str | Sequence[str] | Mapping[str, float] | None


# accelerate.prepare would wrap forward in its autocast (and a reward someone unfroze in DDP), hidden from `dtype`
_PREPARED = ("this MSTCLIPIQAReward was passed to accelerator.prepare: do not prepare a frozen reward. Move it "
             "with reward.to(accelerator.device) and choose its precision with dtype= "
             "(MSTCLIPIQAReward.from_pretrained(..., dtype=torch.bfloat16)); prepare only what you train")


class MSTCLIPIQAReward(nn.Module, HubMixin):
    """A reward differentiable w.r.t. the pixels: ``reward(images, prompts) -> (B,)``, higher is better.

    ``outputs`` picks and weights the model's named outputs (default: the
    first); ``normalize=True`` maps each output to [0, 1] with its known range
    (an affine map, so gradients are never clipped). ``dtype=torch.bfloat16``
    runs the encoders under autocast; ``gradient_checkpointing=True``
    recomputes encoder activations in backward to save memory. The wrapped
    model is frozen (``requires_grad_(False)``): gradients go to the pixels
    only; train the model with ``reward.training``, not through the reward.
    ``compile=True`` runs both image towers through ``torch.compile`` (a mode
    name such as ``"max-autotune"``, or a dict of ``torch.compile`` options,
    also works); like checkpointing, it changes the wrapped model in place.
    Under ``dtype`` the frozen matmul weights are cast once and kept (a half-
    precision copy of them), not re-cast on every call; results are the same.
    ``save_pretrained`` writes the model and these options (``reward_config.json``), which
    ``from_pretrained`` uses again; ``push_to_hub`` uploads them (``huggingface_hub``'s mixin surface).

    Thread-safe: one reward, or several of different ``dtype`` over one model, may be called from many
    threads and gives exactly the serial results (the prompt cache is locked; on a CPU, calls needing the
    float32 weights wait while half-precision copies are swapped in, and the reverse). Not covered: a
    direct ``model(...)`` call, or ``gradient_checkpointing=True`` (its backward recomputes the encoders
    outside the call), concurrent with a half-precision reward over the same model on a CPU.
    """

    lower_better = False

    def __init__(self, model: MSTCLIPIQA, outputs: Outputs = None, input_range: tuple[float, float] = (0.0, 1.0),
                 normalize: bool = False, gradient_checkpointing: bool = False, dtype: torch.dtype | None = None,
                 tolerance: float = 1e-3, compile: bool | str | Mapping[str, Any] = False):
        super().__init__()
        self.model = model
        self.weights = _weights(outputs, model.outputs)
        self.input_range = check_input_range(input_range, tolerance)
        self.normalize = normalize
        self.dtype = dtype
        self.tolerance = float(tolerance)
        self.gradient_checkpointing = gradient_checkpointing
        if not isinstance(compile, (bool, str, Mapping)):
            raise ValueError(f"compile must be True/False, a torch.compile mode name or a dict of options, "
                             f"got {compile!r}")
        self.compile_options = dict(compile) if isinstance(compile, Mapping) else compile
        model.requires_grad_(False)  # a reward: gradients go to the pixels, never into its own weights
        model.coarse.set_grad_checkpointing(gradient_checkpointing)
        model.fine.set_grad_checkpointing(gradient_checkpointing)
        if compile:
            options = {} if compile is True else {"mode": compile} if isinstance(compile, str) else dict(compile)
            model.coarse.compile_image_encoder(**options)
            model.fine.compile_image_encoder(**options)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, variant: str | None = None,
                        adapters: Sequence[str | Path] = (), device: torch.device | str | None = None,
                        seed: int = 0, **options: Any) -> MSTCLIPIQAReward:
        """A frozen scorer in one call: the model by name (``tiny``, ``tiny-hf``, ``paper-A``, ``paper-B``),
        ``save_pretrained`` directory or Hub id (see :func:`reward.load_model`), wrapped with the reward
        options (``outputs``, ``normalize``, ``dtype``, ...; a saved reward's own options are the defaults).
        The Hub keywords (``revision``, ``cache_dir``, ``local_files_only``, ``token``, ``force_download``)
        are forwarded; any other keyword is a ``TypeError``."""
        hub = {k: options.pop(k) for k in HUB_KWARGS if k in options}
        unknown = sorted(set(options) - set(REWARD_OPTIONS))
        if unknown:
            raise TypeError(f"MSTCLIPIQAReward.from_pretrained got unknown keyword argument(s) {unknown}; it takes "
                            f"the reward options {list(REWARD_OPTIONS)} and the Hub keywords {list(HUB_KWARGS)}")
        if str(name_or_path) not in MODEL_NAMES:
            name_or_path = resolve_model_dir(name_or_path, **hub)
            options = {**read_reward_options(name_or_path / REWARD_CONFIG_NAME), **options}
        outputs = options.get("outputs")
        names = [outputs] if isinstance(outputs, str) else list(outputs) if outputs is not None else None
        model = load_model(name_or_path, variant=variant, outputs=names, seed=seed, adapters=adapters,
                           device=device)
        return cls(model, **options)

    @property
    def reward_options(self) -> dict[str, Any]:
        """The options this reward was made with, as JSON data (what ``save_pretrained`` stores)."""
        return {"outputs": dict(self.weights), "input_range": list(self.input_range), "normalize": self.normalize,
                "gradient_checkpointing": self.gradient_checkpointing,
                "dtype": None if self.dtype is None else str(self.dtype).removeprefix("torch."),
                "tolerance": self.tolerance, "compile": self.compile_options}

    def _save_pretrained(self, save_directory: Path) -> None:
        self.model._save_pretrained(save_directory)
        write_json(save_directory / REWARD_CONFIG_NAME, self.reward_options)

    def _card_parts(self) -> tuple[MSTCLIPIQA, dict[str, Any]]:
        return self.model, self.reward_options

    def _range(self, name: str) -> tuple[float, float]:
        return (0.0, 1.0) if self.normalize else self.model.config.score_ranges[name]

    @property
    def score_range(self) -> tuple[float, float]:
        """The (low, high) the reward can take (prompt heads: the nominal range training maps their labels onto)."""
        ends = [sorted((w * self._range(n)[0], w * self._range(n)[1])) for n, w in self.weights.items()]
        return sum(e[0] for e in ends), sum(e[1] for e in ends)

    @property
    def fit_size(self) -> int:
        """Images may be resized and centre-cropped to this square first without changing their scores."""
        return self.model.fit_size

    @property
    def _ddp_params_and_buffers_to_ignore(self):
        # DistributedDataParallel reads this before it wraps a module (accelerator.prepare on several processes
        # does, even with nothing to train, on the CPU): the library's line then, rather than torch's
        raise ValueError(_PREPARED)

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None,
                return_uncertainty: bool = False) -> torch.Tensor | ScoresWithUncertainty:
        """(B,) rewards; with ``return_uncertainty`` a :class:`ScoresWithUncertainty` (``.scores``, ``.sigma``,
        and the coarse image ``.embeddings`` of the same pass)."""
        if return_uncertainty:
            return self._uncertain(self._checked(partial(self._parts, embeddings=True), images, prompts))
        return self._combine(self.named_scores(images, prompts))

    def named_scores(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Every output of the model, (B,) each (in [0, 1] with ``normalize``), differentiable in the pixels."""
        return self._checked(self._scores, images, prompts)

    def _checked(self, fn, images: torch.Tensor, prompts: Sequence[str] | None) -> Any:
        """``fn(images in [0, 1], prompts)`` after the input checks."""
        if getattr(self, "_is_accelerate_prepared", False):
            raise ValueError(_PREPARED)
        check_image_shape(images)
        values = ValueCheck(images, self.input_range, self.tolerance)
        prompts = check_prompts(prompts, len(images), required=self.model.config.needs_prompts)
        result = fn(self._to_unit(images), prompts)
        values.verify()  # after the forward pass is queued: on a GPU the check has finished by then
        return result

    def _to_unit(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.input_range == UNIT else rescale(images, self.input_range, UNIT)

    def _scores(self, images: torch.Tensor, prompts: list[str] | None) -> dict[str, torch.Tensor]:
        """Images already in [0, 1] and checked."""
        scores = self.model.score_features(*self._encode(images), text=self.model.prompt_text(prompts))
        return {name: self._scale(name, score) for name, score in scores.items()}

    def _encode(self, images: torch.Tensor, tokens: bool = False) -> tuple[torch.Tensor, ...]:
        model = self.model
        with autocast(images.device, self.dtype), model.coarse.image_weights_in(self.dtype), \
                model.fine.image_weights_in(self.dtype):
            return model.encode_images(images, tokens)

    def _parts(self, images: torch.Tensor, prompts: list[str] | None, maps: bool = False,
               embeddings: bool = False) -> dict[str, torch.Tensor]:
        """Scores and uncertainty variances in the model's units (see ``uncertainty_parts``); with ``maps`` also
        the quality maps in the reward's units, with ``embeddings`` the coarse image embeddings, from the same
        encoder pass."""
        encoded, text = self._encode(images, tokens=maps), self.model.prompt_text(prompts)
        parts = uncertainty_parts(self.model, *encoded[:2], text)
        if maps:
            parts[MAPS] = self._regions(encoded[0], encoded[2], text)
        if embeddings:
            parts[EMBEDDINGS] = encoded[0]
        return parts

    def _uncertain(self, parts: Mapping[str, torch.Tensor]) -> ScoresWithUncertainty:
        return assemble(parts, self.weights, self._scale)

    def quality_map(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """(B, h, w) per-region rewards, differentiable in the pixels; (h, w) is the fine stream's patch grid
        over the centre crop it sees (14 x 14 for ViT-B/16 at 224 px). Region r is scored as the image is,
        with the fine stream's embedding replaced by patch token r through the same final norm and visual
        projection: the same gate, heads, output weights and units. Its mean over regions is not the score
        (the class token that makes the score attends to every patch); ``docs/uncertainty.md`` states the
        relation that is tested."""
        return self._checked(self._map, images, prompts)

    def _map(self, images: torch.Tensor, prompts: list[str] | None) -> torch.Tensor:
        f_coarse, _, tokens = self._encode(images, tokens=True)
        return self._regions(f_coarse, tokens, self.model.prompt_text(prompts))

    def _regions(self, f_coarse: torch.Tensor, tokens: torch.Tensor,
                 text: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        scores = self.model.region_scores(f_coarse, tokens, text)
        return self._combine({name: self._scale(name, score) for name, score in scores.items()})

    def region_score(self, images: torch.Tensor, prompts: Sequence[str] | None = None, *,
                     temperature: float = 0.25) -> torch.Tensor:
        """(B,) a soft minimum of :meth:`quality_map` over regions, ``-t log mean_r exp(-m_r / t)``: near the
        worst region's value for a small ``temperature`` t, the mean for a large one. A reward form (images,
        prompts) -> (B,) for DRaFT, ReFL and noise optimisation that a single bad region cannot hide in."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        return soft_minimum(self.quality_map(images, prompts).flatten(1), temperature)

    def _combine(self, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(w * scores[n] for n, w in self.weights.items())

    def _scale(self, name: str, score: torch.Tensor) -> torch.Tensor:
        if not self.normalize:
            return score
        return rescale(score, self.model.config.score_ranges[name], UNIT)

    def loss(self, images: torch.Tensor, prompts: Sequence[str] | None = None,
             reduction: str = "mean") -> torch.Tensor:
        """Lower-is-better: the negated reward, averaged (``reduction="mean"``) or per image (``"none"``)."""
        loss = -self(images, prompts)
        if reduction == "none":
            return loss
        if reduction != "mean":
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        return loss.mean()

    def score(self, images: Any, prompts: Sequence[str] | str | None = None, batch_size: int = 32,
              return_uncertainty: bool = False, return_maps: bool = False) -> torch.Tensor | ScoresWithUncertainty:
        """Convenience scoring, not differentiable: paths, a folder, PIL images, arrays or tensors.

        One image, a list, or a batch (NCHW or NHWC). Files and PIL images are read by their mode
        (16-bit by its range, EXIF orientation applied, transparency on white); uint8 arrays and
        tensors as 0..255, uint16 as 0..65535, float ones in ``input_range`` (the rule of
        :mod:`reward.scoring.images`). A single prompt string applies to every image. Returns a (N,) CPU tensor,
        or with ``return_uncertainty`` a :class:`ScoresWithUncertainty` of them; ``return_maps`` gives that result
        too, with the quality maps (``.maps``, (N, h, w)) read from the same encoder pass as the scores.
        """
        if return_uncertainty or return_maps:
            parts = partial(self._parts, maps=return_maps)
            return self._uncertain(self._in_batches(parts, images, prompts, batch_size))
        return self._combine(self.score_outputs(images, prompts, batch_size))

    def score_outputs(self, images: Any, prompts: Sequence[str] | str | None = None,
                      batch_size: int = 32) -> dict[str, torch.Tensor]:
        """Like :meth:`score`, but every output of the model, (N,) each."""
        return self._in_batches(self._scores, images, prompts, batch_size)

    def score_maps(self, images: Any, prompts: Sequence[str] | str | None = None, batch_size: int = 32
                   ) -> torch.Tensor:
        """:meth:`quality_map` of images read as :meth:`score` reads them, not differentiable: (N, h, w) on the
        CPU. For the scores too, ``score(..., return_maps=True)`` reads both from one encoder pass."""
        maps = self._in_batches(lambda batch, p: {MAPS: self._map(batch, p)}, images, prompts, batch_size)
        return maps[MAPS]

    def _in_batches(self, fn, images: Any, prompts: Sequence[str] | str | None, batch_size: int):
        return score_in_batches(fn, images, prompts, batch_size=batch_size, fit_size=self.fit_size,
                                device=self.model.device, load=self._load,
                                require_prompts=self.model.config.needs_prompts)

    def _load(self, item: Any) -> torch.Tensor:
        return load_image(item, self.input_range, self.tolerance)


REWARD_OPTIONS = tuple(inspect.signature(MSTCLIPIQAReward.__init__).parameters)[2:]  # after self, model


def soft_minimum(values: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, R) -> (B,) ``-t log mean_r exp(-v_r / t)``: :meth:`MSTCLIPIQAReward.region_score` over region values."""
    return -temperature * (torch.logsumexp(-values / temperature, dim=1) - math.log(values.shape[1]))


def read_reward_options(path: Path) -> dict[str, Any]:
    """A saved reward's options ({} where the folder holds a model alone); errors name the file."""
    if not path.exists():
        return {}
    check_readable(path, "the options of a saved MSTCLIPIQAReward")
    try:
        options = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON (truncated or damaged?): {error}") from error
    if not isinstance(options, dict):
        raise ValueError(f"{path}: expected a JSON object of reward options, got {type(options).__name__}")
    unknown = sorted(set(options) - set(REWARD_OPTIONS))
    if unknown:
        raise ValueError(f"{path} names unknown reward options {unknown}; expected some of {list(REWARD_OPTIONS)}")
    dtype = options.get("dtype")
    if dtype is not None:
        options["dtype"] = getattr(torch, str(dtype), None)
        if not isinstance(options["dtype"], torch.dtype):
            raise ValueError(f"{path}: dtype {dtype!r} is not a torch dtype; expected e.g. 'bfloat16' or null")
    if "input_range" in options:
        options["input_range"] = tuple(options["input_range"])
    return options


def _weights(outputs: Outputs, available: tuple[str, ...]) -> dict[str, float]:
    if outputs is None:
        weights = {available[0]: 1.0}
    elif isinstance(outputs, str):
        weights = {outputs: 1.0}
    elif isinstance(outputs, Mapping):
        weights = {k: float(v) for k, v in outputs.items()}
    else:
        if len(set(outputs)) != len(outputs):
            raise ValueError(f"outputs {list(outputs)} repeat a name; give each output once, or weights as a dict")
        weights = {name: 1.0 / len(outputs) for name in outputs}
    if not weights:
        raise ValueError(f"outputs is empty; pick some of {list(available)}")
    unknown = [name for name in weights if name not in available]
    if unknown:
        raise ValueError(f"unknown outputs {unknown}; this model predicts {list(available)}")
    nonfinite = {name: w for name, w in weights.items() if not math.isfinite(w)}
    if nonfinite:
        raise ValueError(f"output weights {nonfinite} are not finite; expected finite numbers (every score would be "
                         "NaN or inf)")
    return weights
