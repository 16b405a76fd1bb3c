"""The Hub surface: save_pretrained / push_to_hub (mocked upload) / model card, the Hub keywords of every
from_pretrained entry point (a local fake Hub cache), and saves that leave no stale files."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, ModelCard

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward, load_model
from mst_clipiqa.reward.model.hub import HUB_KWARGS

IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
PROMPTS = ["a cat", "a dog"]
REPO = "someone/mst-clipiqa-test"


def tiny(seed: int = 0, **overrides) -> MSTCLIPIQA:
    torch.manual_seed(seed)
    return MSTCLIPIQA(MSTCLIPIQAConfig.tiny(init="random", **overrides))


def scores(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IMAGES, PROMPTS)["quality"] if isinstance(model, MSTCLIPIQA) else model(IMAGES, PROMPTS)


def fake_hub_cache(cache: Path, repo: str, revisions: dict[str, Path]) -> Path:
    """A folder laid out as huggingface_hub's cache: models--owner--name/{refs/REV, snapshots/COMMIT/...}."""
    root = cache / f"models--{repo.replace('/', '--')}"
    for k, (revision, source) in enumerate(revisions.items()):
        commit = f"{k + 1:040x}"
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / revision).write_text(commit)
        snapshot = root / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in source.iterdir():
            (snapshot / file.name).write_bytes(file.read_bytes())
    return cache


@pytest.fixture
def hub_cache(tmp_path):
    tiny(0).save_pretrained(tmp_path / "main")
    MSTCLIPIQAReward(tiny(1), normalize=True).save_pretrained(tmp_path / "v1")
    return fake_hub_cache(tmp_path / "cache", REPO, {"main": tmp_path / "main", "v1": tmp_path / "v1"})


def test_every_entry_point_loads_from_the_local_hub_cache_by_revision(hub_cache, monkeypatch):
    main, v1 = scores(tiny(0)), scores(tiny(1))
    assert torch.equal(scores(MSTCLIPIQA.from_pretrained(REPO, cache_dir=hub_cache, local_files_only=True)), main)
    assert torch.equal(scores(load_model(REPO, cache_dir=hub_cache, revision="v1")), v1)
    reward = MSTCLIPIQAReward.from_pretrained(REPO, cache_dir=hub_cache, revision="v1")
    assert reward.normalize  # the saved reward's options came with it
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))  # what HF_HUB_CACHE sets
    assert torch.equal(scores(MSTCLIPIQAReward.from_pretrained(REPO).model), main)
    with pytest.raises(ValueError, match="the Hub repo has no such revision|no copy"):
        MSTCLIPIQA.from_pretrained(REPO, revision="v2")


@pytest.mark.parametrize("entry", ["model", "load_model", "reward"])
def test_every_entry_point_forwards_the_hub_keywords_and_refuses_others(tmp_path, monkeypatch, entry):
    tiny().save_pretrained(tmp_path)
    asked = {}

    def fake_snapshot(repo_id, allow_patterns, **kwargs):
        asked.update(kwargs)
        return str(tmp_path)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    load = {"model": MSTCLIPIQA.from_pretrained, "load_model": load_model,
            "reward": MSTCLIPIQAReward.from_pretrained}[entry]
    hub = {"revision": "v1", "cache_dir": str(tmp_path / "c"), "local_files_only": True, "token": "hf_x",
           "force_download": True}
    assert set(hub) == set(HUB_KWARGS)
    load(REPO, **hub)
    assert asked == hub
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['torch_dtype'\].*revision"):
        load(REPO, torch_dtype=torch.float16)
    with pytest.raises(TypeError, match="torch_dtype"):
        load("tiny", torch_dtype=torch.float16)


def test_save_pretrained_writes_a_model_card_and_a_typed_config(tmp_path):
    model = tiny()
    assert model.save_pretrained(tmp_path / "m") == tmp_path / "m"
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "mst-clipiqa"
    card = ModelCard.load(tmp_path / "m" / "README.md")
    assert card.data.library_name == "mst-clipiqa" and card.data.license == "mit"
    assert "model_hub_mixin" in card.data.tags
    for text in ("variant A", "| quality | template |", "No training report", "@article{meng2026mstclipiqa",
                 "MST-CLIPIQA", "from mst_clipiqa import MSTCLIPIQAReward"):
        assert text in card.text
    assert torch.equal(scores(MSTCLIPIQA.from_pretrained(tmp_path / "m")), scores(model))
    config["model_type"] = "bert"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type is 'bert'"):
        MSTCLIPIQA.from_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="takes no config="):
        model.save_pretrained(tmp_path / "m", config={"a": 1})


def test_the_card_reports_training_data_and_metrics_and_keeps_a_card_someone_wrote(tmp_path):
    report = {"model_dir": str(tmp_path / "run" / "model"),
              "settings": {"dataset": {"name": "agiqa3k", "n": 2982}},
              "recipe": {"description": "recipe paper: the paper's setting\n  more"},
              "summary": {"test": {"quality": {"srcc": {"mean": 0.8512, "std": 0.01, "count": 3}}}}}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text(json.dumps(report))
    tiny().save_pretrained(tmp_path / "run" / "model")  # the run's report sits beside its model
    text = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "agiqa3k (2982 images)" in text and "| quality | srcc | 0.8512 | 0.0100 | 3 |" in text
    tiny().save_pretrained(tmp_path / "elsewhere", model_card_kwargs={"report": tmp_path / "run" / "report.json"})
    assert "0.8512" in (tmp_path / "elsewhere" / "README.md").read_text()
    (tmp_path / "elsewhere" / "README.md").write_text("# my own card\n")
    tiny().save_pretrained(tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "README.md").read_text() == "# my own card\n"
    tiny().save_pretrained(tmp_path / "unrelated" / "model")  # a report of another model is not used
    (tmp_path / "unrelated" / "report.json").write_text(json.dumps(report))
    tiny().save_pretrained(tmp_path / "unrelated" / "model")
    assert "No training report" in (tmp_path / "unrelated" / "model" / "README.md").read_text()


@pytest.fixture
def mocked_upload(monkeypatch):
    """HfApi.create_repo / upload_folder replaced: what would be uploaded is recorded, nothing leaves."""
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = {"repo_id": repo_id, "token": self.token, **kwargs}
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        calls["upload"] = {"repo_id": repo_id, **kwargs,
                           "files": {p.name: p.read_bytes() for p in folder.iterdir()}}
        return f"https://huggingface.co/{repo_id}/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_uploads_the_saved_files_and_card(mocked_upload, tmp_path):
    model = tiny()
    url = model.push_to_hub(REPO, private=True, token="hf_secret", commit_message="first")
    assert url.endswith("/commit/abc")
    assert mocked_upload["create"]["private"] and mocked_upload["create"]["token"] == "hf_secret"
    upload = mocked_upload["upload"]
    assert upload["repo_id"] == REPO and upload["commit_message"] == "first"
    assert set(upload["files"]) == {"config.json", "model.safetensors", "backbones.safetensors", "README.md"}
    assert f'from_pretrained("{REPO}")' in upload["files"]["README.md"].decode()
    hub = fake_hub_cache(tmp_path / "cache", REPO, {"main": _written(tmp_path / "pushed", upload["files"])})
    assert torch.equal(scores(MSTCLIPIQA.from_pretrained(REPO, cache_dir=hub)), scores(model))


def test_save_pretrained_can_push_and_the_reward_pushes_its_options(mocked_upload, tmp_path):
    reward = MSTCLIPIQAReward(tiny(), normalize=True, dtype=torch.bfloat16, outputs={"quality": 2.0})
    assert reward.save_pretrained(tmp_path / "r", push_to_hub=True, repo_id=REPO).endswith("/commit/abc")
    files = mocked_upload["upload"]["files"]
    assert "reward_config.json" in files and "## Reward options" in files["README.md"].decode()
    assert files["model.safetensors"] == (tmp_path / "r" / "model.safetensors").read_bytes()
    loaded = MSTCLIPIQAReward.from_pretrained(_written(tmp_path / "pushed", files))
    assert loaded.reward_options == reward.reward_options and loaded.dtype is torch.bfloat16
    assert torch.equal(scores(loaded), scores(reward))
    assert not MSTCLIPIQAReward.from_pretrained(tmp_path / "r", normalize=False).normalize  # given options win


def _written(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_a_new_save_removes_the_stale_files_of_an_earlier_one(tmp_path):
    MSTCLIPIQAReward(tiny(1)).save_pretrained(tmp_path)  # stored encoders and reward options
    assert (tmp_path / "backbones.safetensors").exists() and (tmp_path / "reward_config.json").exists()
    named = tiny(2)
    named.config.coarse.pretrained = named.config.fine.pretrained = "openai"  # as if fetchable by name
    named.save_pretrained(tmp_path)
    assert not (tmp_path / "backbones.safetensors").exists() and not (tmp_path / "reward_config.json").exists()
    assert "pretrained `openai`" in (tmp_path / "README.md").read_text()  # the generated card is replaced


def test_a_stale_backbones_file_never_loads(tmp_path):
    tiny(1).save_pretrained(tmp_path / "old")
    half = tiny(2)
    half.config.coarse.pretrained = "openai"  # the fine stream alone is stored
    half.save_pretrained(tmp_path / "new")
    stale = (tmp_path / "old" / "backbones.safetensors").read_bytes()
    (tmp_path / "new" / "backbones.safetensors").write_bytes(stale)  # copied over by hand
    with pytest.raises(ValueError, match="holds weights of the coarse backbone, which config.json names"):
        MSTCLIPIQA.from_pretrained(tmp_path / "new")
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    config["fine"]["pretrained"] = "openai"
    (tmp_path / "new" / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            MSTCLIPIQA.from_pretrained(tmp_path / "new")
        except Exception:  # offline: the named "openai" encoders cannot be fetched; the file was not read first
            pass
    assert any("backbones.safetensors is ignored" in str(w.message) for w in caught)
