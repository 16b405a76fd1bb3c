"""Training over splits: learning, model selection, report and plots, checkpoints and resume."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig
from mst_clipiqa.reward.datasets.splits import make_splits
from mst_clipiqa.reward.datasets.synthetic import make_synthetic_dataset
from mst_clipiqa.reward.scoring.images import load_image
from mst_clipiqa.reward.training import TrainConfig, Trainer, epoch_batches, evaluate_model, load_checkpoint, train
from mst_clipiqa.reward.training import trainer as trainer_module
from mst_clipiqa.reward.training.metrics import srcc
from mst_clipiqa.runtime.checkpoints import complete_checkpoints
from mst_clipiqa.runtime.nonfinite import NonFiniteError

FAST = dict(epochs=3, lr=1e-3, batch_size=16, n_splits=2, progress=False, cpu=True)  # CPU: bitwise reproducible


def tiny(variant: str = "B", backend: str = "transformers", seed: int = 0) -> MSTCLIPIQA:
    torch.manual_seed(seed)
    return MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant, backend=backend))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_scenes=4)


@pytest.fixture(scope="module")
def blur_set(tmp_path_factory):
    """Clean and blurred images at eight severities: a defect the tiny random encoders can see.

    Random encoders see little of noise, JPEG or banding (ridge regression on
    their embeddings reaches SRCC ~0.3 on the full synthetic set), but the
    blur family alone is learnable (ridge ~0.85), which makes the test about
    the trainer rather than about the random features.
    """
    full = make_synthetic_dataset(tmp_path_factory.mktemp("synthetic-blur"), n_scenes=24,
                                  levels=[i / 8 for i in range(1, 9)])
    return full.subset([i for i, s in enumerate(full.samples) if "_clean" in s.image.name or "_blur_" in s.image.name])


def test_training_improves_test_srcc_over_untrained(blur_set, tmp_path):
    config = TrainConfig(epochs=100, lr=3e-3, batch_size=16, n_splits=2, outputs=("quality",),
                         cache_dir=str(tmp_path / "cache"), progress=False, cpu=True)
    report = train(tiny("B"), blur_set, config, tmp_path / "run")
    before = report["summary"]["untrained_test"]["quality"]["srcc"]["mean"]
    after = report["summary"]["test"]["quality"]["srcc"]["mean"]
    probe = report["summary"]["probe_test"]["quality"]["srcc"]["mean"]
    print(f"test SRCC over {config.n_splits} splits: untrained {before:.3f}, trained {after:.3f}, probe {probe:.3f}")
    # measured (mean of 2 splits): untrained -0.23, trained 0.76, probe 0.94; transformers < 5.13 draws the tiny
    # towers' random weights in another order: untrained 0.10, trained 0.58, probe 0.94
    assert after > 0.5
    assert after > before + 0.4


def test_report_model_and_plots(small_set, tmp_path):
    report = train(tiny(), small_set, TrainConfig(**FAST, cache_dir=str(tmp_path / "cache")), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["summary"]["test"]["quality"]["srcc"]["count"] == 2
    assert set(saved["summary"]["test"]["quality"]) == {"srcc", "plcc", "plcc_logistic", "krcc", "rmse"}
    assert saved["settings"]["train"]["lr"] == 1e-3 and saved["settings"]["model"]["heads"] == {"quality": "prompt"}
    for name in saved["plots"]:
        assert (tmp_path / "run" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chosen = report["splits"][report["selected_split"]]
    for result in report["splits"]:  # the chosen epoch is the best on validation, scored without test
        val = [h["val"]["quality"]["srcc"] for h in result["history"]]
        assert result["best_epoch"] == int(np.nanargmax(val)) + 1
    card = (tmp_path / "run" / "model" / "README.md").read_text()  # the model card gives the test metrics
    srcc = saved["summary"]["test"]["quality"]["srcc"]
    assert f"| quality | srcc | {srcc['mean']:.4f} | {srcc['std']:.4f} | 2 |" in card
    model = MSTCLIPIQA.from_pretrained(tmp_path / "run" / "model")
    split = make_splits(small_set, 2, seed=0)[report["selected_split"]]
    again = evaluate_model(model, small_set, [split], cache_dir=tmp_path / "cache", progress=False)
    assert again["splits"][0]["test"]["quality"]["srcc"] == pytest.approx(chosen["test"]["quality"]["srcc"], abs=1e-6)


def test_evaluate_model_matches_metrics_by_hand(small_set, tmp_path):
    model = tiny("A")
    splits = make_splits(small_set, 3, seed=1)
    result = evaluate_model(model, small_set, splits, cache_dir=tmp_path, progress=False)
    with torch.no_grad():  # the synthetic images are all 64 px: one batch, straight through the encoders
        scores = model(torch.stack([load_image(s.image) for s in small_set.samples]))["quality"].numpy()
    target = small_set.score_array("quality")
    for split, row in zip(splits, result["splits"]):
        assert row["test"]["quality"]["srcc"] == pytest.approx(srcc(scores[split.test], target[split.test]), abs=1e-5)
    assert result["summary"]["quality"]["srcc"]["count"] == 3


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def _without_timing(report: dict) -> list[list[dict]]:
    return [[{k: v for k, v in h.items() if not k.endswith("_seconds")} for h in r["history"]]
            for r in report["splits"]]


def _leaves(value, path=""):
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _leaves(item, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{path}/{i}").items()}
    return {path: value}


def assert_same_report(resumed: dict, straight: dict, runs: tuple[Path, Path]) -> None:
    """The resumed run predicts every test image bit for bit as the straight one, and reports the same metrics.
    The metrics to 1e-12 relative (NaN equal to NaN): numpy's and scipy's SIMD reductions round by where an array
    lies in memory, so the logistic fit and Pearson correlation of bit-identical predictions can differ in the last
    bit between two calls in one process (the fit or the correlation moved in 8 of 200 random cases across 8 array
    offsets; numpy 2.4.6, scipy 1.17.1)."""
    for split in sorted(p.name for p in runs[1].glob("split_*")):
        predictions = [json.loads((run / split / "result.json").read_text())["test_predictions"] for run in runs]
        assert predictions[0] == predictions[1], split
    for got, want in ((resumed["summary"], straight["summary"]), (_without_timing(resumed), _without_timing(straight))):
        got, want = _leaves(got), _leaves(want)
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-12, nan_ok=True), key
            else:
                assert got[key] == value, key


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])  # an average of the weights travels in the checkpoint too
def test_kill_and_resume_gives_the_same_weights(small_set, tmp_path, monkeypatch, ema_decay):
    config = TrainConfig(**{**FAST, "epochs": 4}, cache_dir=str(tmp_path / "cache"), ema_decay=ema_decay)
    straight = train(tiny(), small_set, config, tmp_path / "straight")

    original = trainer_module.epoch_batches

    def killed_in_split_1_epoch_3(indices, batch_size, seed, split_index, epoch, rank=0, world=1):
        batches = original(indices, batch_size, seed, split_index, epoch, rank, world)
        return _die_after(batches, 2) if (split_index, epoch) == (1, 2) else batches

    monkeypatch.setattr(trainer_module, "epoch_batches", killed_in_split_1_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(), small_set, config, tmp_path / "killed")
    monkeypatch.setattr(trainer_module, "epoch_batches", original)
    assert [p.name for p in complete_checkpoints(tmp_path / "killed" / "split_01")] == ["step_00000002"]

    epochs_run = []
    resumed = Trainer(tiny(), small_set, config, tmp_path / "killed", resume=True,
                      on_epoch_end=lambda k, e, record: epochs_run.append((k, e))).run()
    assert epochs_run == [(1, 2), (1, 3)]  # the epoch in flight is redone, nothing before it
    straight_weights, resumed_weights = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    assert straight_weights.keys() == resumed_weights.keys()
    for name, tensor in straight_weights.items():
        assert torch.equal(tensor, resumed_weights[name]), name
    assert_same_report(resumed, straight, (tmp_path / "straight", tmp_path / "killed"))


def _die_after(batches, n):
    for i, batch in enumerate(batches):
        if i == n:
            raise KeyboardInterrupt("killed mid-epoch")
        yield batch


def test_checkpoint_write_is_atomic(small_set, tmp_path, monkeypatch):
    config = TrainConfig(**{**FAST, "n_splits": 1, "epochs": 3}, cache_dir=str(tmp_path / "cache"))
    folder = tmp_path / "run" / "split_00"
    original = safetensors.torch.save_file

    def disk_full_on_second_checkpoint(tensors, filename, metadata=None):
        if Path(filename).name == "state.safetensors" and complete_checkpoints(folder):
            Path(filename).write_bytes(b"half a file")
            raise OSError("disk full")
        return original(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full_on_second_checkpoint)  # what save_tensors calls
    with pytest.raises(OSError, match="disk full"):
        train(tiny(), small_set, config, tmp_path / "run")
    assert [p.name for p in complete_checkpoints(folder)] == ["step_00000001"]  # the half-written one unpublished
    assert load_checkpoint(folder).meta["progress"]["epoch"] == 1


def test_resume_checks_settings_and_fresh_runs_refuse_old_folders(small_set, tmp_path):
    config = TrainConfig(**{**FAST, "n_splits": 1, "epochs": 1}, cache_dir=str(tmp_path / "cache"))
    train(tiny(), small_set, config, tmp_path / "run")
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny(), small_set, config, tmp_path / "run")
    changed = TrainConfig(**{**FAST, "n_splits": 1, "epochs": 1, "lr": 1e-2}, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"\['train'\] differ"):
        train(tiny(), small_set, changed, tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match="initial_state"):
        train(tiny(seed=1), small_set, config, tmp_path / "run", resume=True)


@pytest.mark.parametrize("recipe", ["protocol", "paper"])  # paper: no validation part, so nothing else would stop it
def test_diverged_weights_stop_the_run_and_are_never_checkpointed(small_set, tmp_path, recipe):
    config = TrainConfig.from_recipe(recipe, **{**FAST, "n_splits": 1, "lr": 1e30, "split_by": "image"},
                                     cache_dir=str(tmp_path / "cache"))
    with pytest.raises(NonFiniteError, match=r"training diverged in split 0, epoch 1: .* NaN or inf.* lower lr"):
        train(tiny(), small_set, config, tmp_path / "run")
    assert list((tmp_path / "run").rglob("*.safetensors")) == []  # the first epoch diverged: nothing to keep


def test_a_run_from_before_an_option_existed_resumes_at_its_default(small_set, tmp_path):
    config = TrainConfig(**{**FAST, "n_splits": 1, "epochs": 1}, cache_dir=str(tmp_path / "cache"))
    train(tiny(), small_set, config, tmp_path / "run")
    run_json = tmp_path / "run" / "run.json"
    saved = json.loads(run_json.read_text())
    del saved["train"]["ema_decay"]  # written before ema_decay existed
    run_json.write_text(json.dumps(saved))
    again = train(tiny(), small_set, config, tmp_path / "run", resume=True)
    assert again["settings"]["train"]["ema_decay"] == 0.0
    with_ema = TrainConfig(**{**FAST, "n_splits": 1, "epochs": 1, "ema_decay": 0.9}, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"\['train'\] differ"):
        train(tiny(), small_set, with_ema, tmp_path / "run", resume=True)


def test_epoch_batches_are_seeded_and_shard_evenly():
    indices = list(range(10, 31))
    batches = epoch_batches(indices, 4, seed=0, split_index=0, epoch=0)
    assert sorted(i for b in batches for i in b) == indices
    assert batches == epoch_batches(indices, 4, 0, 0, 0)
    assert batches != epoch_batches(indices, 4, 0, 0, 1)
    shards = [epoch_batches(indices, 4, 0, 0, 0, rank=r, world=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    assert set(indices) == {i for shard in shards for b in shard for i in b}
    few = [epoch_batches(indices, 8, 0, 0, 0, rank=r, world=8) for r in range(8)]  # 3 batches, 8 processes
    assert all(len(shard) == 1 for shard in few)


@pytest.mark.parametrize("bad, message", [
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"lr": 0.0}, "expected lr > 0"),
    ({"optimizer": "sgd"}, "optimizer must be one of"),
    ({"mixed_precision": "fp8"}, "mixed_precision must be one of"),
    ({"lora_encoders": True}, "lora_rank >= 1"),
    ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
])
def test_train_config_rejects_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_only_the_fusion_and_the_trained_heads_are_optimised(small_set):
    torch.manual_seed(0)
    heads = {"quality": "prompt", "correspondence": "template"}
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny("B", backend="transformers", heads=heads))
    trainer = Trainer(model, small_set, TrainConfig(outputs=("quality",), use_cache=False, progress=False, cpu=True))
    trainer.prepare()
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in optimised}
    assert names == {n for n, _ in model.named_parameters() if n.startswith(("fusion.", "heads.quality."))}


def test_outputs_must_exist_in_model_and_data(small_set, tmp_path):
    with pytest.raises(ValueError, match="must be predicted by the model"):
        Trainer(tiny(), small_set, TrainConfig(outputs=("authenticity",), progress=False, cpu=True)).prepare()


def test_trainers_with_other_precisions_in_one_process(small_set):
    first = Trainer(tiny(), small_set, TrainConfig(use_cache=False, progress=False, cpu=True))
    first.prepare()
    second = Trainer(tiny(), small_set, TrainConfig(use_cache=False, progress=False, cpu=True, mixed_precision="bf16"))
    second.prepare()
    assert second.accelerator.mixed_precision == "bf16"
    second.train_epoch(range(8), 0)


def test_labels_outside_the_declared_range_are_flagged(small_set, tmp_path):
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny("A"))
    shifted = small_set.subset(range(len(small_set)))
    shifted.samples = [type(s)(s.image, s.prompt, {k: v - 10 for k, v in s.scores.items()}, s.group)
                       for s in shifted.samples]
    config = TrainConfig(**{**FAST, "n_splits": 1, "epochs": 1}, outputs=("quality",),
                         cache_dir=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match=r"labels of 'synthetic' lie outside its declared label range \[1, 5\]"):
        Trainer(model, shifted, config, tmp_path / "run").prepare()


@pytest.fixture(scope="module")
def straight_run(small_set, tmp_path_factory):
    """One uninterrupted 1-split, 2-epoch run, the reference for repaired ones."""
    root = tmp_path_factory.mktemp("straight")
    config = TrainConfig(**{**FAST, "n_splits": 1, "epochs": 2}, cache_dir=str(root / "cache"))
    train(tiny(), small_set, config, root / "run")
    return config, root / "run"


@pytest.mark.parametrize("damaged", ["checkpoints/step_00000001/state.safetensors", "best.safetensors",
                                     "result.json"])
def test_a_damaged_split_file_is_named_and_the_split_trained_again_on_resume(small_set, straight_run, tmp_path,
                                                                          damaged):
    config, straight_dir = straight_run
    run = tmp_path / "run"
    if damaged.startswith("checkpoints"):  # killed after the first epoch's checkpoint
        def kill(*_):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            Trainer(tiny(), small_set, config, run, on_epoch_end=kill).run()
    else:  # a finished run
        shutil.copytree(straight_dir, run)
    path = run / "split_00" / damaged
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    epochs_run = []
    with pytest.warns(Warning, match=re.escape(str(path))):
        Trainer(tiny(), small_set, config, run, resume=True,
                on_epoch_end=lambda k, e, record: epochs_run.append(e)).run()
    assert epochs_run == [0, 1]  # the whole split again: its checkpoint is the only record of its epochs
    for name, tensor in _weights(straight_dir).items():
        assert torch.equal(tensor, _weights(run)[name]), name
    summary = [json.loads((d / "report.json").read_text())["summary"] for d in (straight_dir, run)]
    assert summary[0] == summary[1]  # as written: the one split's std is NaN in the returned report


def test_a_split_checkpoint_of_the_earlier_single_file_layout_is_refused_by_name(small_set, straight_run, tmp_path):
    config, straight_dir = straight_run

    def kill(*_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny(), small_set, config, tmp_path / "run", on_epoch_end=kill).run()
    split = tmp_path / "run" / "split_00"
    shutil.rmtree(split / "checkpoints")
    (split / "checkpoint.safetensors").write_bytes(b"what the earlier release wrote")
    for resume in (True, False):
        with pytest.raises(ValueError, match=re.escape(f"{split / 'checkpoint.safetensors'} is an earlier release's "
                                                       "checkpoint, which this release does not resume; finish the "
                                                       "run with that release, or delete the file to train its split "
                                                       "again")):
            train(tiny(), small_set, config, tmp_path / "run", resume=resume)
    (split / "checkpoint.safetensors").unlink()
    train(tiny(), small_set, config, tmp_path / "run", resume=True)  # what the message says works
    for name, tensor in _weights(straight_dir).items():
        assert torch.equal(tensor, _weights(tmp_path / "run")[name]), name
