"""Checkpoint folders: published whole or not at all, the newest kept, damaged ones never picked."""

import json

import pytest
import torch

from mst_clipiqa.runtime.checkpoints import (
    CHECKPOINTS,
    TrainingState,
    check_same_run,
    complete_checkpoints,
    read_checkpoint,
    write_checkpoint,
)


class OneProcess:
    """What write_checkpoint asks of an Accelerator, for one process."""

    is_main_process, process_index, num_processes = True, 0, 1

    def wait_for_everyone(self) -> None:
        pass


OPTIMIZER = {"param_groups": [{"params": [0]}], "scalars": {}}


def state(step: int) -> TrainingState:
    return TrainingState({"lora.a": torch.full((2, 3), float(step)), "optim.0.step": torch.tensor(float(step))},
                         {"step": step, "history": [{"step": step, "reward": 0.5}], "optimizer": OPTIMIZER},
                         {"rng.torch": torch.arange(4, dtype=torch.uint8)}, {"python": [3, [1, 2], None]})


def test_newest_checkpoints_are_kept_and_read_back(tmp_path):
    for step in (2, 4, 6):
        write_checkpoint(OneProcess(), tmp_path, state(step), keep=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000004", "step_00000006"]
    back = read_checkpoint(complete_checkpoints(tmp_path)[-1], rank=0)
    assert torch.equal(back.tensors["lora.a"], torch.full((2, 3), 6.0))
    assert back.meta == {"step": 6, "history": [{"step": 6, "reward": 0.5}], "optimizer": OPTIMIZER, "world_size": 1}
    assert torch.equal(back.rng_tensors["rng.torch"], torch.arange(4, dtype=torch.uint8))
    assert back.rng_meta == {"python": [3, [1, 2], None]}
    assert read_checkpoint(complete_checkpoints(tmp_path)[-1], rank=1).rng_tensors is None  # no such process


def test_partial_and_damaged_folders_are_ignored_and_cleared(tmp_path):
    write_checkpoint(OneProcess(), tmp_path, state(2), keep=5)
    root = tmp_path / CHECKPOINTS
    (root / "step_00000009.tmp").mkdir()  # killed before publishing
    lacking = root / "step_00000007"  # written by 2 processes, one rng file missing
    write_checkpoint(OneProcess(), tmp_path, state(7), keep=5)
    meta = json.loads((lacking / "state.json").read_text())
    (lacking / "state.json").write_text(json.dumps({**meta, "world_size": 2}))
    damaged = root / "step_00000008"
    write_checkpoint(OneProcess(), tmp_path, state(8), keep=5)
    (damaged / "state.json").write_text("{")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000002"]
    write_checkpoint(OneProcess(), tmp_path, state(3), keep=5)
    assert not (root / "step_00000009.tmp").exists()  # the next checkpoint clears what a killed one left
    (tmp_path / CHECKPOINTS / "step_00000002" / "state.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="does not load"):
        read_checkpoint(tmp_path / CHECKPOINTS / "step_00000002", rank=0)


def test_a_checkpoint_that_records_no_identity_is_refused_in_one_line_where_one_is_checked(tmp_path):
    settings = ({"lr": 1.0}, {"lr": 1.0})
    with pytest.raises(ValueError, match="records no identity .* start a new run") as caught:
        check_same_run(tmp_path, settings, (None, {"reward": "A"}), ["max_steps"])
    assert "\n" not in str(caught.value)
    check_same_run(tmp_path, settings, (None, {}), ["max_steps"])  # nothing to check (the IQA trainer's)
    with pytest.raises(ValueError, match=r"reward: 'A' in the checkpoint, 'B' now"):
        check_same_run(tmp_path, settings, ({"reward": "A"}, {"reward": "B"}), ["max_steps"])


def test_a_full_disk_during_a_checkpoint_is_an_oserror_naming_the_file(tmp_path, monkeypatch):
    """The CLI prints such an OSError as one line and exits 2; safetensors' own error type came through raw."""
    import errno

    from safetensors import SafetensorError

    from tests.integrations.finetune.test_base import ToyTrainer, toy_config

    def full(tensors, filename, metadata=None):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                              'left on device" })')

    trainer = ToyTrainer(toy_config(tmp_path))
    monkeypatch.setattr("safetensors.torch.save_file", full)  # files.write_safetensors imports it when it writes
    with pytest.raises(OSError, match="No space left on device") as caught:
        trainer.train()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename.endswith(".safetensors")
