"""The IQA trainer's checkpoints in the runtime's format; the previous release's single file is refused by name."""

import pytest
import torch

from mst_clipiqa.reward.training import load_checkpoint, save_checkpoint
from mst_clipiqa.runtime.checkpoints import complete_checkpoints


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
    rng, saved = torch.get_rng_state(), optimizer.state_dict()["state"][0]["exp_avg"].clone()
    back = load_checkpoint(tmp_path)
    assert back.meta["progress"] == {"epoch": 2, "history": [2]}
    model, best, ema = (back.part(name)["w"] for name in ("model", "best", "ema"))
    assert torch.equal(model, torch.full((2,), 2.)) and torch.equal(best, torch.zeros(2))
    assert torch.equal(ema, torch.ones(2))
    torch.rand(5)
    fresh = _optimizer()
    back.restore(fresh)
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], saved) and torch.equal(torch.get_rng_state(), rng)


def test_a_folder_without_a_checkpoint_of_this_release_is_named(tmp_path):
    (tmp_path / "checkpoint.safetensors").write_bytes(b"the previous release's single file")
    with pytest.raises(ValueError, match=r"holds no checkpoint of this release; .*checkpoint\.safetensors is not read"):
        load_checkpoint(tmp_path)
