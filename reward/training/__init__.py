"""Training and evaluation of MST-CLIPIQA: feature cache, the trainer, the field's split protocol, metrics.

    from reward.training import TrainConfig, train
    report = train(model, dataset, TrainConfig(epochs=20), output_dir="runs/agiqa3k")
"""
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
from .checkpoint import (
    Checkpoint,
    flatten_optimizer_state,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unflatten_optimizer_state,
)
from .config import TrainConfig
from .distributed import MainProcessFailed, epoch_batches, launcher_rank, launcher_world_size, new_accelerator, on_main
from .evaluation import evaluate_model, predict_features, resolve_outputs
from .feature_cache import FeatureCache, default_cache_dir, encoder_settings
from .features import CachedFeatures, encode_features
from .report import make_plots
from .run_folder import RunLock
from .trainer import Trainer, train

__all__ = [
    "CachedFeatures", "Checkpoint", "FeatureCache", "MainProcessFailed", "RunLock", "TrainConfig", "Trainer",
    "active_adapter", "adapter_names", "add_adapter", "default_cache_dir", "encode_features", "encoder_settings",
    "epoch_batches", "evaluate_model", "flatten_optimizer_state", "launcher_rank", "launcher_world_size",
    "load_adapter", "load_checkpoint", "make_plots", "merge_adapters", "new_accelerator", "on_main",
    "predict_features", "resolve_outputs", "rng_state", "save_adapter", "save_checkpoint", "set_adapter",
    "set_rng_state", "train", "trainable_state_dict", "unflatten_optimizer_state", "write_json",
]
