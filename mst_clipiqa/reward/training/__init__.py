"""Training and evaluation of MST-CLIPIQA: recipes, feature cache, the trainer, the field's split protocol,
metrics and a linear probe.

    from mst_clipiqa.reward.training import TrainConfig, train
    report = train(model, dataset, TrainConfig(), output_dir="runs/agiqa3k")          # the protocol recipe
    report = train(model, dataset, TrainConfig.paper(), output_dir="runs/paper")     # the reference's setting
"""
from typing import TYPE_CHECKING

from mst_clipiqa.reward.utils.lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from ...runtime.checkpoints import flatten_optimizer_state, unflatten_optimizer_state
    from ...runtime.processes import (
        MainProcessFailed,
        launcher_rank,
        launcher_world_size,
        new_accelerator,
        on_main,
    )
    from ...runtime.runs import RunLock
    from ..model import (
        active_adapter,
        adapter_names,
        add_adapter,
        load_adapter,
        merge_adapters,
        save_adapter,
        set_adapter,
        trainable_state_dict,
    )
    from ..utils import write_json
    from .config import TrainConfig
    from .distributed import epoch_batches
    from .evaluation import evaluate_model, predict_features, resolve_outputs
    from .feature_cache import FeatureCache, default_cache_dir, encoder_settings
    from .features import CachedFeatures, encode_features
    from .label_units import head_labels, to_label_units
    from .probe import RidgeProbe, fit_ridge, linear_probe
    from .recipes import PAPER, RECIPES
    from .report import make_plots
    from .run_folder import Checkpoint, load_checkpoint, save_checkpoint
    from .saturation import head_saturation, start_check
    from .selection import per_output_best
    from .trainer import Trainer, train

__all__ = [
    "PAPER", "RECIPES", "CachedFeatures", "Checkpoint", "FeatureCache", "MainProcessFailed", "RidgeProbe", "RunLock",
    "TrainConfig", "Trainer", "active_adapter", "adapter_names", "add_adapter", "default_cache_dir", "encode_features",
    "encoder_settings", "epoch_batches", "evaluate_model", "fit_ridge", "flatten_optimizer_state", "head_labels",
    "head_saturation", "launcher_rank", "launcher_world_size", "linear_probe", "load_adapter", "load_checkpoint",
    "make_plots", "merge_adapters", "new_accelerator", "on_main", "per_output_best", "predict_features",
    "resolve_outputs", "save_adapter", "save_checkpoint", "set_adapter", "start_check", "to_label_units", "train",
    "trainable_state_dict", "unflatten_optimizer_state", "write_json",
]

load_lazily(__name__)
