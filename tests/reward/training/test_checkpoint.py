"""The IQA trainer's checkpoints in the runtime's format, and the previous release's single file still read."""

import json

import pytest
import torch
from safetensors.torch import save_file

from mst_clipiqa.reward.training import load_checkpoint, save_checkpoint
from mst_clipiqa.runtime.checkpoints import complete_checkpoints, rng_state


def _optimizer() -> torch.optim.Optimizer:
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    weight.sum().backward()
    optimizer.step()
    return optimizer


def test_a_split_keeps_its_newest_checkpoint_and_reads_it_back(tmp_path):
    optimizer = _optimizer()
    for epoch in (1, 2):
        save_checkpoint(tmp_path, {"w": torch.full((2,), float(epoch))}, {"w": torch.zeros(2)}, optimizer,
                        {"epoch": epoch, "history": [epoch]}, {"w": torch.ones(2)})
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000002"]
    back = load_checkpoint(tmp_path)
    assert back.progress == {"epoch": 2, "history": [2]} and torch.equal(back.model_state["w"], torch.full((2,), 2.))
    assert torch.equal(back.ema_state["w"], torch.ones(2)) and torch.equal(back.best_state["w"], torch.zeros(2))
    assert torch.equal(back.optimizer_state["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(back.rng[0]["rng.torch"], torch.get_rng_state())


def _legacy(path, drop: str = "") -> None:
    """The single file the previous release's save_checkpoint wrote, built here key by key."""
    optim = _optimizer().state_dict()
    rng_tensors, rng_meta = rng_state()
    tensors = {"model.w": torch.ones(2), "best.w": torch.zeros(2), "optim.0.exp_avg": optim["state"][0]["exp_avg"],
               "optim.0.exp_avg_sq": optim["state"][0]["exp_avg_sq"], "optim.0.step": optim["state"][0]["step"],
               **rng_tensors}
    metadata = {"progress": json.dumps({"epoch": 1}), "rng": json.dumps(rng_meta),
                "optim": json.dumps({"param_groups": optim["param_groups"], "scalars": {}})}
    save_file(tensors, str(path), metadata={k: v for k, v in metadata.items() if k != drop})


def test_the_previous_single_file_checkpoint_still_loads_or_is_named(tmp_path):
    _legacy(tmp_path / "checkpoint.safetensors")
    back = load_checkpoint(tmp_path)
    assert back.progress == {"epoch": 1} and torch.equal(back.model_state["w"], torch.ones(2))
    assert set(back.optimizer_state["state"][0]) == {"exp_avg", "exp_avg_sq", "step"}
    _legacy(tmp_path / "checkpoint.safetensors", drop="rng")
    with pytest.raises(ValueError, match=r"checkpoint\.safetensors lacks metadata \['rng'\]"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        load_checkpoint(tmp_path / "empty")
