"""Checkpoint folders: published whole or not at all, the newest kept, damaged ones never picked."""

import random

import numpy as np
import pytest
import torch

from mst_clipiqa.runtime.checkpoints import (
    CHECKPOINTS,
    TrainingState,
    capture_state,
    check_same_run,
    complete_checkpoints,
    read_checkpoint,
    reseed,
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
                         {"step": step, "history": [{"step": step, "reward": 0.5}], "optimizer": OPTIMIZER})


def test_newest_checkpoints_are_kept_and_read_back(tmp_path):
    for step in (2, 4, 6):
        write_checkpoint(OneProcess(), tmp_path, state(step), keep=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000004", "step_00000006"]
    back = read_checkpoint(complete_checkpoints(tmp_path)[-1])
    assert torch.equal(back.tensors["lora.a"], torch.full((2, 3), 6.0))
    assert back.meta == {"step": 6, "history": [{"step": 6, "reward": 0.5}], "optimizer": OPTIMIZER}
    assert sorted(p.name for p in complete_checkpoints(tmp_path)[-1].iterdir()) == ["state.json", "state.safetensors"]


def test_partial_and_damaged_folders_are_ignored_and_cleared(tmp_path):
    write_checkpoint(OneProcess(), tmp_path, state(2), keep=5)
    root = tmp_path / CHECKPOINTS
    (root / "step_00000009.tmp").mkdir()  # killed before publishing
    lacking = root / "step_00000007"  # its tensors lost
    write_checkpoint(OneProcess(), tmp_path, state(7), keep=5)
    (lacking / "state.safetensors").unlink()
    damaged = root / "step_00000008"
    write_checkpoint(OneProcess(), tmp_path, state(8), keep=5)
    (damaged / "state.json").write_text("{")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000002"]
    write_checkpoint(OneProcess(), tmp_path, state(3), keep=5)
    assert not (root / "step_00000009.tmp").exists()  # the next checkpoint clears what a killed one left
    (tmp_path / CHECKPOINTS / "step_00000002" / "state.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="does not load"):
        read_checkpoint(tmp_path / CHECKPOINTS / "step_00000002")


def test_an_optimizer_with_a_parameter_that_got_no_gradient_resumes_exactly(tmp_path):
    # AdamW keeps no state for a parameter whose gradient was always None (a head no loss reaches): a healthy
    # checkpoint, which an earlier reader called damaged
    used, unused = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW([*used.parameters(), *unused.parameters()], lr=0.1)
    used(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    path = write_checkpoint(OneProcess(), tmp_path, capture_state({}, {"step": 1}, optimizer), keep=1)
    fresh = torch.optim.AdamW([*used.parameters(), *unused.parameters()], lr=0.1)
    read_checkpoint(path).restore(fresh)
    saved, restored = optimizer.state_dict(), fresh.state_dict()
    assert sorted(restored["state"]) == sorted(saved["state"]) == [0, 1]
    assert all(torch.equal(saved["state"][p][k], restored["state"][p][k]) for p in saved["state"]
               for k in saved["state"][p])


def test_a_key_reseeds_every_stream_alike_and_the_generator_apart():
    def draws(*key: int) -> tuple:
        generator = torch.Generator()
        reseed(*key, generator=generator)
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(),
                torch.rand(3, generator=generator).tolist())

    first = draws(0, 5, 1)
    assert draws(0, 5, 1) == first  # a resumed unit draws as the straight one
    assert first[0] != first[3]  # the trainer's own generator is not the global stream again
    assert all(a != b for a, b in zip(first, draws(0, 5, 0)))  # another process, other streams
    assert all(a != b for a, b in zip(first, draws(0, 6, 1)))  # another step, other streams


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
