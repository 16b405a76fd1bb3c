"""Training, evaluation, feature cache and LoRA adapters for MST-CLIPIQA.

    from reward.training import TrainConfig, train
    report = train(model, dataset, TrainConfig(epochs=20), output_dir="runs/agiqa3k")
"""
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .feature_cache import CachedFeatures, FeatureCache, default_cache_dir, encode_features, encoder_settings
from .lora import (active_adapter, adapter_names, add_adapter, load_adapter, merge_adapters, save_adapter,
                   set_adapter, trainable_state_dict)
from .report import make_plots, write_json
from .trainer import (TrainConfig, Trainer, epoch_batches, evaluate_model, new_accelerator, predict_features,
                      resolve_outputs, train)

__all__ = [
    "CachedFeatures", "Checkpoint", "FeatureCache", "TrainConfig", "Trainer", "active_adapter", "adapter_names",
    "add_adapter", "default_cache_dir", "encode_features", "encoder_settings", "epoch_batches", "evaluate_model",
    "load_adapter", "load_checkpoint", "make_plots", "merge_adapters", "new_accelerator", "predict_features",
    "resolve_outputs", "save_adapter", "save_checkpoint", "set_adapter", "train", "trainable_state_dict",
    "write_json",
]
