"""MST-CLIPIQA: two frozen CLIP streams, gated fusion, and named score heads."""
from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ..backbones import BackboneConfig, CLIPBackbone, build_backbone, preprocess
from .checks import check_image_shape, check_prompts
from .config import FUSION_INITS, MSTCLIPIQAConfig
from .ensemble import Member, read_members
from .files import BACKBONES_NAME, CONFIG_NAME, WEIGHTS_NAME, read_weights, resolve_model_dir
from .fusion import GatedFusion
from .heads import HEAD_KINDS
from .hub import HubMixin, check_hub_kwargs, remove_stale
from .limits import check_sizes_against_weights
from .names import MODEL_NAMES, named_config
from .reference import add_unscored, convert_state_dict, read_state_dict, reference_config, reference_key

BACKBONE_PREFIXES = ("coarse.", "fine.")
# one for every model: a lock attribute would stop copy.deepcopy, and text encodes are rare and short
_PROMPT_CACHE_LOCK = threading.RLock()
ADAPTER_MARK = "lora_"  # peft names every adapter weight lora_A / lora_B / lora_embedding_*


def is_adapter_key(name: str) -> bool:
    """Whether a parameter or state-dict key belongs to a LoRA adapter."""
    return ADAPTER_MARK in name


class MSTCLIPIQA(nn.Module, HubMixin):
    """The multi-scale two-stream CLIP quality model.

    ``model(images, prompts)`` takes (B, 3, H, W) images in [0, 1] of any size
    and returns a dict of (B,) scores, one per named output. The coarse stream
    (patch 32) also provides the text encoder for both head kinds. It has the
    Hub surface of ``huggingface_hub.PyTorchModelHubMixin`` (see ``reward.model.hub``).
    """

    def __init__(self, config: MSTCLIPIQAConfig):
        super().__init__()
        self.config = config
        self.coarse = _build_backbone("coarse", config.coarse)
        self.fine = _build_backbone("fine", config.fine)
        config.check_attention_heads(self.coarse.embed_dim)
        self.fusion = self._make_fusion()
        self.heads = self._make_heads()
        # members 1..K-1 of an ensemble (member 0 is fusion / heads above): one encoder pass serves them all
        self.members = nn.ModuleList(Member(self._make_fusion(), self._make_heads())
                                     for _ in range(config.ensemble - 1))
        if not all(HEAD_KINDS[kind].needs_prompt for kind in config.heads.values()):
            self.register_buffer("template_features", self._encode_templates(), persistent=False)
        self._prompt_cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def _make_fusion(self) -> GatedFusion:
        dim = self.coarse.embed_dim
        return GatedFusion(dim, self.fine.embed_dim, dim, self.config.fusion_hidden, self.config.init,
                           self.config.gate_init_bias)

    def reinitialize(self, init: str) -> None:
        """Start the fusion and heads afresh: ``"zero_shot"`` (identity fusion, a zero-shot scorer) or
        ``"random"`` (PyTorch's default, as the reference code does); recorded in the config."""
        if any(is_adapter_key(k) for k in self.state_dict()):
            raise ValueError("this model carries LoRA adapters; reinitialize the base model before adding them")
        if init not in FUSION_INITS:
            raise ValueError(f"init must be one of {FUSION_INITS}, got {init!r}")
        self.config.init = init
        for fusion, heads in self.member_parts():
            fusion.load_state_dict(self._make_fusion().state_dict())
            heads.load_state_dict(self._make_heads().state_dict())

    def _make_heads(self) -> nn.ModuleDict:
        return nn.ModuleDict({name: HEAD_KINDS[kind].build(self.config, self.coarse)
                              for name, kind in self.config.heads.items()})

    def member_parts(self) -> list[tuple[GatedFusion, nn.ModuleDict]]:
        """(fusion, heads) of each ensemble member; one pair without an ensemble."""
        return [(self.fusion, self.heads), *((m.fusion, m.heads) for m in self.members)]

    @torch.no_grad()
    def _encode_templates(self) -> torch.Tensor:
        texts = [self.config.template.format(level) for level in self.config.levels]
        ids, mask, _ = self.coarse.tokenize(texts)
        return nn.functional.normalize(self.coarse.encode_text(ids, mask), dim=-1)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.heads)

    @property
    def fit_size(self) -> int:
        """The square side images of mixed sizes are brought to before they are batched."""
        return max(self.coarse.image_spec.size, self.fine.image_spec.size)

    def _apply(self, fn, recurse=True):
        self._prompt_cache.clear()  # cached states would be on the old device / dtype
        return super()._apply(fn, recurse)

    def encode_images(self, images: torch.Tensor, tokens: bool = False) -> tuple[torch.Tensor, ...]:
        """(B, 3, H, W) in [0, 1] -> projected embeddings of the coarse and fine streams; with ``tokens``
        also the fine stream's projected patch tokens, (B, h, w, D), from the same pass."""
        x_coarse = preprocess(images, self.coarse.image_spec)
        same = self.fine.image_spec == self.coarse.image_spec
        x_fine = (x_coarse if same else preprocess(images, self.fine.image_spec)).to(self.fine.dtype)
        f_coarse = self.coarse.encode_image(x_coarse.to(self.coarse.dtype))
        if tokens:
            return (f_coarse, *self.fine.encode_image_tokens(x_fine))
        return f_coarse, self.fine.encode_image(x_fine)

    def region_scores(self, f_coarse: torch.Tensor, tokens: torch.Tensor,
                      text: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """(B, h, w) scores per output: each fine-stream patch token (B, h, w, D) read in place of the fine
        embedding, fused with its image's coarse embedding (``text``: the images' prompt states and mask)."""
        b, h, w, d = tokens.shape
        f_c = f_coarse[:, None].expand(b, h * w, f_coarse.shape[-1]).reshape(b * h * w, -1)
        if text is not None:
            text = tuple(t.repeat_interleave(h * w, dim=0) for t in text)
        scores = self.member_scores(f_c, tokens.reshape(b * h * w, d), text=text)[0]
        return {name: s.mean(0).reshape(b, h, w) for name, s in scores.items()}

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, L, W) and mask (B, L); each distinct prompt is encoded once and cached."""
        if any(p.requires_grad for p in self.coarse.text_parameters()):
            return self._text_states(prompts)  # a trainable text tower must not be cached
        with _PROMPT_CACHE_LOCK:  # another thread's misses would evict this call's prompts between the steps
            missing = list(dict.fromkeys(p for p in prompts if p not in self._prompt_cache))
            if missing:
                with torch.no_grad():
                    states, mask = self._text_states(missing)
                for prompt, s, m in zip(missing, states, mask):
                    self._prompt_cache[prompt] = s[m]
            for prompt in prompts:
                self._prompt_cache.move_to_end(prompt)
            cached = [self._prompt_cache[p] for p in prompts]
            while len(self._prompt_cache) > self.config.prompt_cache_size:
                self._prompt_cache.popitem(last=False)
        return pad_states(cached)

    def _text_states(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask, truncated = self.coarse.tokenize(prompts)
        if truncated:
            warnings.warn(f"{truncated} prompt(s) longer than the text encoder's {self.coarse.context_length} "
                          "tokens were truncated", stacklevel=3)
        device = self.device
        ids, mask = ids.to(device), mask.to(device)
        return self.coarse.text_states(ids, mask), mask

    @property
    def device(self) -> torch.device:
        return next(self.fusion.parameters()).device

    def score_features(self, f_coarse: torch.Tensor, f_fine: torch.Tensor, prompts: list[str] | None = None,
                         text: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Scores from stream embeddings (an ensemble's: the members' mean); ``text`` = precomputed
        (states, mask) instead of ``prompts``."""
        return {name: scores.mean(0) for name, scores in self.member_scores(f_coarse, f_fine, prompts, text)[0].items()}

    def member_scores(self, f_coarse: torch.Tensor, f_fine: torch.Tensor, prompts: list[str] | None = None,
                      text: tuple[torch.Tensor, torch.Tensor] | None = None, gate: float | None = None,
                      spread: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Each ensemble member's scores, (K, B) per output (K = ``config.ensemble``), and with ``spread``
        the template heads' level variances; ``gate`` forces the fusion gate (1: coarse stream, 0: fine)."""
        dtype = self.fusion.W_h.weight.dtype  # fp32 heads under autocast, or a model cast as a whole
        if self.config.needs_prompts and text is None:
            text = self.encode_prompts(check_prompts(prompts, len(f_coarse), required=True))
        return read_members(self.member_parts(), self.config.heads, f_coarse.to(dtype), f_fine.to(dtype), text,
                            getattr(self, "template_features", None), gate, spread)

    def forward_features(self, f_coarse: torch.Tensor, f_fine: torch.Tensor, prompts: list[str] | None = None,
                         text: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Deprecated name of :meth:`score_features` (it consumes features rather than returning them)."""
        warnings.warn("MSTCLIPIQA.forward_features is renamed score_features", DeprecationWarning, stacklevel=2)
        return self.score_features(f_coarse, f_fine, prompts, text)

    def forward(self, images: torch.Tensor, prompts: list[str] | None = None) -> dict[str, torch.Tensor]:
        check_image_shape(images)
        prompts = check_prompts(prompts, len(images), required=self.config.needs_prompts)
        return self.score_features(*self.encode_images(images), text=self.prompt_text(prompts))

    def prompt_text(self, prompts: list[str] | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``encode_prompts(prompts)`` for a model with a prompt head (prompts already checked), else None."""
        return self.encode_prompts(prompts) if self.config.needs_prompts else None

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen backbones: fusion, heads, and any adapters on them."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(BACKBONE_PREFIXES)}

    def _save_pretrained(self, save_directory: Path) -> None:
        """``config.json`` and ``model.safetensors`` (trained parts only); backbones whose weights cannot be
        fetched by name (random or imported) go to ``backbones.safetensors`` beside them, so nothing is lost.
        Files of an earlier save that this one does not write are removed first."""
        if any(is_adapter_key(k) for k in self.state_dict()):
            raise ValueError("this model carries LoRA adapters: save them with reward.save_adapter, "
                             "or bake the active one in with reward.merge_adapters(model) first")
        save_directory.mkdir(parents=True, exist_ok=True)
        embedded = {f"{name}.{k}": v for name in self.config.embedded_backbones
                    for k, v in getattr(self, name).state_dict().items()}
        remove_stale(save_directory, {CONFIG_NAME, WEIGHTS_NAME} | ({BACKBONES_NAME} if embedded else set()))
        self.config.to_json(save_directory / CONFIG_NAME)
        save_file(_contiguous(self.trained_state_dict()), str(save_directory / WEIGHTS_NAME))
        if embedded:
            save_file(_contiguous(embedded), str(save_directory / BACKBONES_NAME))

    def _card_parts(self) -> tuple[MSTCLIPIQA, None]:
        return self, None

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, variant: str | None = None,
                        outputs: Sequence[str] | None = None, seed: int = 0, **hub_kwargs: Any) -> MSTCLIPIQA:
        """A built-in model (``tiny``, ``tiny-hf``, ``paper-A``, ``paper-B``), a ``save_pretrained``
        directory, or a Hugging Face Hub repo holding one.

        ``variant`` and ``outputs`` shape the heads of built-in models; ``seed`` fixes
        their random weights, so the same name always gives the same model. For a
        saved model ``outputs`` only checks that it predicts them. ``hub_kwargs``: ``revision``,
        ``cache_dir``, ``local_files_only``, ``token``, ``force_download`` (for a Hub id); any other
        keyword is a ``TypeError``.
        """
        hub_kwargs = check_hub_kwargs(hub_kwargs, "MSTCLIPIQA.from_pretrained")
        if str(name_or_path) in MODEL_NAMES:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return cls(named_config(str(name_or_path), variant, outputs))
        if variant:
            raise ValueError(f"variant applies to the built-in models {list(MODEL_NAMES)}; "
                             f"{name_or_path!s} has heads fixed by its config")
        directory = resolve_model_dir(name_or_path, **hub_kwargs)
        config = MSTCLIPIQAConfig.from_json(directory / CONFIG_NAME)
        weights, backbones = directory / WEIGHTS_NAME, directory / BACKBONES_NAME
        check_sizes_against_weights(config, weights, backbones if config.embedded_backbones else None)
        trained = read_weights(weights)  # every file is read and checked before the (slow) build
        embedded = config.embedded_backbones
        if embedded and not backbones.exists():
            raise ValueError(f"{backbones} is missing: {directory / CONFIG_NAME} says the {' and '.join(embedded)} "
                             "backbone weights are stored with the model (pretrained: null), not fetched by name; "
                             "without the file they would be random. Copy it from where the model was saved.")
        encoders = _stored_encoders(backbones, embedded) if embedded else None
        if not embedded and backbones.exists():
            warnings.warn(f"{backbones} is ignored: {directory / CONFIG_NAME} names pretrained encoders for both "
                          "streams (the file is left from another save)", stacklevel=2)
        model = cls(config)
        model.load_weights(trained, source=weights, part="trained")
        if encoders is not None:
            model.load_weights(encoders, source=backbones, part="backbones")
        unknown = [o for o in outputs or [] if o not in model.outputs]
        if unknown:
            raise ValueError(f"outputs {unknown} are not outputs of {name_or_path}; it predicts {list(model.outputs)}")
        return model

    @classmethod
    def from_official_checkpoint(cls, path: str | Path, config: MSTCLIPIQAConfig | None = None) -> MSTCLIPIQA:
        """Import a reference-implementation checkpoint (``.pth`` read with ``weights_only=True``, or safetensors).

        The variant comes from the head's keys and the architecture from tensor
        shapes; ``config`` may set attention heads, the output name and backbone names.
        """
        state = read_state_dict(path)
        try:
            model = cls(reference_config(state, config))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
        converted = add_unscored(convert_state_dict(state, model.outputs[0]), model.state_dict(),
                                 template_head="template" in model.config.heads.values())
        model.load_weights(converted, source=path, key_names=reference_key)
        if "head.text_features" in state:
            model.template_features = state["head.text_features"].float().to(model.template_features)
        return model

    def load_weights(self, state: dict[str, torch.Tensor], source: object = "state dict",
                     part: Literal["all", "trained", "backbones"] = "all",
                     key_names: Callable[[str], str] = str) -> None:
        """Load weights strictly: every tensor of ``part`` the model needs must be in ``state``
        (the file readers have checked that they are finite).

        ``trained`` is the fusion and heads; ``backbones`` are the encoders whose config names no
        pretrained source (``pretrained=None``: random or imported weights, stored with the model).
        A missing or unexpected key is a ``ValueError`` naming ``source`` and the first keys (as
        ``key_names`` spells them), so no tensor is ever left at its random initialisation.
        """
        try:
            result = self.load_state_dict(state, strict=False)
        except RuntimeError as error:  # tensors of the wrong shape
            raise ValueError(f"weights in {source} do not match the config: {error}") from error
        backbones = tuple(f"{name}." for name in self.config.embedded_backbones) if part != "trained" else ()
        missing = [key_names(k) for k in result.missing_keys
                   if (k.startswith(backbones) if k.startswith(BACKBONE_PREFIXES) else part != "backbones")]
        unexpected = [key_names(k) for k in result.unexpected_keys]
        if missing or unexpected:
            raise ValueError(f"weights in {source} do not match the config: missing {len(missing)} tensor(s) "
                             f"{missing[:5]}, unexpected {unexpected[:5]}")
        self._prompt_cache.clear()
        if any(k.startswith("coarse.") for k in state) and "template_features" in self._buffers:
            self.template_features = self._encode_templates().to(self.template_features)


from_pretrained = MSTCLIPIQA.from_pretrained  # reward.from_pretrained, as open_clip offers its loaders as functions
from_official_checkpoint = MSTCLIPIQA.from_official_checkpoint


def _build_backbone(which: str, config: BackboneConfig) -> CLIPBackbone:
    try:
        return build_backbone(config)
    except (TypeError, KeyError, AssertionError, ArithmeticError, ValueError) as error:  # an arch it cannot build
        raise ValueError(f"cannot build the {which} backbone from config field {which} ({config.backend} "
                         f"{config.name!r}): {type(error).__name__}: {error}") from error


def _stored_encoders(path: Path, embedded: list[str]) -> dict[str, torch.Tensor]:
    """The stored weights of the ``embedded`` backbones; tensors of an encoder the config names are refused."""
    state = read_weights(path)
    foreign = sorted({k.split(".")[0] for k in state} - set(embedded))
    if foreign:
        raise ValueError(f"{path} holds weights of the {' and '.join(foreign)} backbone, which config.json names as "
                         "pretrained (fetched by name): the file is left from another save. Delete it, or save the "
                         "model again")
    return state


def pad_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length token states -> padded (B, L, W) states and their key mask (B, L)."""
    lengths = torch.tensor([len(s) for s in states], device=states[0].device)
    mask = torch.arange(max(len(s) for s in states), device=lengths.device)[None] < lengths[:, None]
    return pad_sequence(states, batch_first=True), mask


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in state.items()}
