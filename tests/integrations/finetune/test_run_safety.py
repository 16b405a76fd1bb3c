"""Long fine-tuning runs that cannot be silently poisoned: resume checks what it resumes, damaged checkpoints fall
back, non-finite values stop the run where they start, and SIGTERM / SIGINT checkpoint and exit 143 / 130."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mst_clipiqa.cli import main
from mst_clipiqa.integrations import RewardFinetuner, complete_checkpoints
from mst_clipiqa.integrations.finetune.trainer_parts import SKIP_LIMIT
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.reward.utils import nonfinite_names
from mst_clipiqa.runtime.nonfinite import NonFiniteError

from .test_base import ToyTrainer, toy_config
from .test_finetuner import PROMPTS, config, make_reward
from .test_state import assert_same_tensors, run_raising

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("finetune_worker.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def cli(prompts: Path, out: Path, *extra: str, steps: int = 2) -> list[str]:
    return ["finetune", "--pipeline", "tiny", "--model", "tiny", "--prompts", str(prompts), "--out", str(out),
            "--num-inference-steps", "2", "--max-steps", str(steps), "--learning-rate", "1e-2", "--save-every", "1",
            "--eval-images", "0", "--quiet", *extra]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("a red car\na cat on a sofa\n")
    return path


# --- resume checks identity ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory, prompts) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(cli(prompts, out)) == 0
    return out


@pytest.mark.parametrize("change, field", [
    (["--model", "tiny-hf"], "reward_model"), (["--variant", "B"], "reward_variant"),
    (["--pipeline", "tiny-lcm"], "pipeline"), ("other prompts", "prompts"),
    (["--pipeline", "tiny-sd3"], "pipeline")])  # other LoRA tensors: not to be called damaged
def test_resume_against_another_reward_variant_pipeline_or_prompts_is_refused(finished, prompts, tmp_path, capsys,
                                                                             change, field):
    args = cli(prompts, finished, "--resume", "--max-steps", "3")
    if change == "other prompts":
        other = tmp_path / "other.txt"
        other.write_text("a lighthouse at dusk\n")
        args[args.index("--prompts") + 1] = str(other)
    else:
        flag = change[0]
        if flag in args:
            args[args.index(flag) + 1] = change[1]
        else:
            args += change
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained against something else" in err and f"{field}:" in err
    assert "damaged" not in err and "remove" not in err
    with pytest.raises(ValueError, match=rf"{field}: '[^']*' in the checkpoint, '[^']*' now"):
        run_raising(args)
    assert [r["step"] for r in json.loads((finished / "log.json").read_text())["history"]] == [1, 2]


def test_resume_with_the_same_identity_and_free_settings_continues(finished, prompts, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished / "checkpoints", run / "checkpoints")
    assert main(cli(prompts, run, "--resume", "--max-steps", "3", "--save-every", "3", "--on-nonfinite", "skip")) == 0
    state = json.loads((complete_checkpoints(run)[-1] / "state.json").read_text())
    assert state["step"] == 3 and state["identity"]["reward_variant"] == "A"
    # the library's classes go by their first import names, as in checkpoints from before mst_clipiqa/ held them
    assert state["identity"]["reward"].startswith(("reward.", "integrations.")), state["identity"]["reward"]
    assert set(state["identity"]) >= {"reward", "reward_model", "reward_outputs", "reward_weights", "pipeline",
                                      "pipeline_family", "denoiser", "prompts"}


def test_a_checkpoint_lacking_part_of_the_optimizer_state_falls_back(finished, prompts, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished / "checkpoints", run / "checkpoints")
    path = run / "checkpoints" / "step_00000002" / "state.safetensors"
    tensors = load_file(path)
    del tensors["optim.3.exp_avg"]
    save_file(tensors, path)
    with pytest.warns(RuntimeWarning, match=r"step_00000002 is damaged .*first: \['optim.3.exp_avg'\]"):
        assert main(cli(prompts, run, "--resume")) == 0
    assert [r["step"] for r in json.loads((run / "log.json").read_text())["history"]] == [1, 2]


# --- damaged checkpoints --------------------------------------------------------------------------------------------

@pytest.fixture
def toy_run(tmp_path) -> Path:
    ToyTrainer(toy_config(tmp_path, save_every=1, keep_checkpoints=3, max_steps=3)).train()
    return tmp_path


def resumed(run: Path) -> ToyTrainer:
    return ToyTrainer(toy_config(run, save_every=1, keep_checkpoints=3, max_steps=3, resume=True))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_field(path: Path) -> None:
    meta = json.loads(path.read_text())
    del meta["history"]
    path.write_text(json.dumps(meta))


def _drop_tensor(path: Path) -> None:
    tensors = load_file(path)
    del tensors["lora.weight"]
    save_file(tensors, path)


def _nan_tensor(path: Path) -> None:
    tensors = load_file(path)
    tensors["lora.weight"][0, 1] = float("nan")
    save_file(tensors, path)


@pytest.mark.parametrize("name, damage, said", [
    ("state.json", _truncate, "state.json cannot be read"), ("state.safetensors", _truncate, "does not load"),
    ("state.json", _drop_field, "lacks the field(s) ['history']"),
    ("state.safetensors", _drop_tensor, "lacks 'lora.weight' (trained weights, EMA or trainer state)"),
    ("state.safetensors", _nan_tensor, "NaN or inf in 1 tensor(s), first: ['lora.weight']"),
    ("state.safetensors", Path.unlink, "state.safetensors does not load")])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_complete_one(toy_run, name, damage, said):
    damage(toy_run / "checkpoints" / "step_00000003" / name)
    with pytest.warns(RuntimeWarning, match="step_00000003 is damaged") as caught:
        trainer = resumed(toy_run)
    assert said in str(caught[0].message)
    assert trainer.global_step == 2 and len(trainer.log.history) == 2


def test_every_checkpoint_damaged_is_an_error_naming_them(toy_run):
    for path in complete_checkpoints(toy_run):
        _truncate(path / "state.safetensors")
    damaged = r"every checkpoint .* is damaged \(step_00000003, step_00000002, step_00000001"
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match=damaged):
        resumed(toy_run)


def test_a_folder_named_for_another_step_is_refused(toy_run):
    root = toy_run / "checkpoints"
    (root / "step_00000003").rename(root / "step_00000007")
    with pytest.raises(ValueError, match="named for step 7 but records step 3"):
        resumed(toy_run)


# --- non-finite values ----------------------------------------------------------------------------------------------

class NaNOnCalls(torch.nn.Module):
    """The tiny reward, NaN for the first image on the given (1-based) calls."""

    def __init__(self, calls):
        super().__init__()
        self.reward, self.calls, self.count = make_reward(), set(calls), 0

    def forward(self, images, prompts):
        self.count += 1
        scores = self.reward(images, prompts)
        if self.count in self.calls:
            scores = torch.cat([scores[:1] * float("nan"), scores[1:]])
        return scores


def assert_no_nonfinite_files(run: Path) -> None:
    files = [*run.glob("checkpoints/*/state.safetensors"), *run.glob("lora/*.safetensors")]
    for path in files:
        assert not nonfinite_names(load_file(path)), path


def test_a_nan_reward_stops_the_run_naming_step_and_images(tmp_path):
    trainer = RewardFinetuner(tiny_sd_pipeline(), NaNOnCalls({3}), PROMPTS,
                              config(max_steps=4, save_every=1, output_dir=str(tmp_path)))
    with pytest.raises(NonFiniteError, match=r"reward returned NaN or inf for 1 of 2 image\(s\).* at step 3.*newest: "
                                             r"step 2.*lower learning_rate"):
        trainer.train()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000001", "step_00000002"]
    assert not (tmp_path / "lora").exists()
    assert_no_nonfinite_files(tmp_path)


def test_a_huge_learning_rate_never_writes_nonfinite_weights(tmp_path):
    trainer = RewardFinetuner(tiny_sd_pipeline(), make_reward(), PROMPTS,
                              config(max_steps=6, save_every=1, output_dir=str(tmp_path), learning_rate=1e30,
                                     max_grad_norm=None))
    with pytest.raises(NonFiniteError, match="at step [2-6]"):
        trainer.train()
    assert complete_checkpoints(tmp_path) and not (tmp_path / "lora").exists()
    assert_no_nonfinite_files(tmp_path)


def test_skip_mode_drops_nonfinite_batches_and_counts_them(tmp_path):
    trainer = RewardFinetuner(tiny_sd_pipeline(), NaNOnCalls({2, 3}), PROMPTS,
                              config(max_steps=3, save_every=3, output_dir=str(tmp_path), on_nonfinite="skip"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    dropped = [str(w.message) for w in caught if "dropped a batch" in str(w.message)]
    assert len(dropped) == 2 and dropped[-1].endswith("2 batch(es) dropped in this run")
    assert "at step 2" in dropped[0] and "at step 2" in dropped[1]  # the step is retried with the next batch
    history = trainer.log.history
    assert [r["step"] for r in history] == [1, 2, 3] and all(torch.isfinite(torch.tensor(r["reward"]))
                                                             for r in history)
    assert json.loads((complete_checkpoints(tmp_path)[-1] / "state.json").read_text())["skipped_batches"] == 2
    assert_no_nonfinite_files(tmp_path)


def test_skip_mode_gives_up_after_too_many_dropped_batches_in_a_row(tmp_path):
    trainer = RewardFinetuner(tiny_sd_pipeline(), NaNOnCalls(range(1, 100)), PROMPTS,
                              config(max_steps=2, on_nonfinite="skip"))
    with pytest.warns(RuntimeWarning, match="dropped a batch"), \
            pytest.raises(NonFiniteError, match=f"{SKIP_LIMIT} batches in a row"):
        trainer.train()
    assert trainer.global_step == 0


class PoisonedToy(ToyTrainer):
    """A trainer that does not call drop_batch: its weights turn NaN in step 3."""

    def train_step(self):
        if self.global_step == 2:
            self.model.weight.data.fill_(float("nan"))
        return super().train_step()


def test_the_base_stops_a_trainer_whose_record_is_nonfinite(tmp_path):
    trainer = PoisonedToy(toy_config(tmp_path, save_every=1, max_steps=4))
    with pytest.raises(NonFiniteError, match="loss, reward non-finite at step 3"):
        trainer.train()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000001", "step_00000002"]
    with pytest.raises(NonFiniteError, match=r"not writing the step-3 checkpoint: 3 tensor\(s\) .*\[.lora.weight."):
        trainer.save_checkpoint()


# --- preemption -----------------------------------------------------------------------------------------------------

def signalled(args: list[str], tmp_path: Path, when: str, step: int, name: str = "TERM"
              ) -> subprocess.CompletedProcess:
    """``python -m mst_clipiqa``-style run (through the worker) that receives SIG<name> in step ``step``: as its
    loss starts (``when="in-step"``: before its sampling) or once its loss is computed (``"after-loss"``)."""
    return subprocess.run([sys.executable, str(WORKER), "--record", str(tmp_path / "records"),
                           f"--signal-{when}={step}", f"--signal={name}", "--", *args],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name, status, when, kept", [("TERM", 143, "in-step", 1), ("INT", 130, "after-loss", 2)])
def test_a_signal_checkpoints_the_step_and_resume_is_bit_identical(tmp_path, prompts, name, status, when, kept):
    """A signal during step 2's sampling gives the step up (its sampler stops at the next step; the checkpoint is
    step 1's, with the random streams as they were); one after its sampling lets the step finish."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"

    def args(out: Path, *more: str) -> list[str]:  # no periodic checkpoints: the signal's is the only one
        return cli(prompts, out, "--save-every", "0", "--use-ema", *more, steps=4)

    assert main(args(whole)) == 0
    done = signalled(args(stopped), tmp_path, when, step=2, name=name)
    assert done.returncode == status, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    cut = " (step 2 was cut short and runs again on resume);" if kept == 1 else ";"
    assert last.startswith(f"mst-clipiqa finetune: stopped by SIG{name} at step {kept}{cut}") and "--resume" in last
    assert "Traceback" not in done.stderr
    assert len(json.loads((tmp_path / "records" / "rank0.json").read_text())) == kept  # losses computed
    assert [p.name for p in complete_checkpoints(stopped)] == [f"step_{kept:08d}"]
    assert not (stopped / "lora").exists()
    assert main(args(stopped, "--resume")) == 0
    assert_same_tensors(whole / "lora" / "pytorch_lora_weights.safetensors",
                        stopped / "lora" / "pytorch_lora_weights.safetensors")
    logs = [json.loads((p / "log.json").read_text())["history"] for p in (whole, stopped)]
    assert logs[0] == logs[1] and [r["step"] for r in logs[0]] == [1, 2, 3, 4]


def test_sigterm_on_one_process_of_two_cuts_the_same_step_short_on_both(tmp_path, prompts):
    """Rank 1 alone is signalled as step 3 starts: both processes give step 3 up at its first sampler step. ReFL
    stops each process's trajectory at its own random step; the steps it skips still count, so the processes
    agree at as many points (else they would wait for each other for ever)."""
    out = tmp_path / "run"
    args = cli(prompts, out, "--method", "refl", steps=4)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(WORKER), "--record", str(tmp_path / "records"), "--signal-in-step=3",
                           "--signal-rank=1", "--", *args],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, done.stderr[-3000:]
    assert done.stderr.count("stopped by SIGTERM at step 2 (step 3 was cut short") == 2, done.stderr[-3000:]
    # torchrun tears the group down at the first exit and may report only that one; each process's own line
    # above shows that both stopped at step 2
    assert done.stderr.count("exitcode  : 143") >= 1 and "exitcode  : 1 " not in done.stderr
    records = [json.loads((tmp_path / "records" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [len(r) for r in records] == [2, 2]  # step 3's loss was never computed
    checkpoint = complete_checkpoints(out)[-1]
    assert checkpoint.name == "step_00000002"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["state.json", "state.safetensors"]
