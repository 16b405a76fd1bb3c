"""A saved model's files: damaged weight files and mistyped paths are named, never loaded as random weights."""
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import load_file, save_file

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig


@pytest.fixture(scope="module")
def saved_once(tmp_path_factory):
    torch.manual_seed(0)
    return MSTCLIPIQA(MSTCLIPIQAConfig.tiny()).save_pretrained(tmp_path_factory.mktemp("saved") / "model")


@pytest.fixture()
def saved(saved_once, tmp_path):
    return Path(shutil.copytree(saved_once, tmp_path / "model"))


@pytest.mark.parametrize("name", ["model.safetensors", "backbones.safetensors"])
@pytest.mark.parametrize("damage, message", [("empty", r"is empty \(0 bytes\)"),
                                             ("truncated", "is not a readable safetensors file")])
def test_empty_or_truncated_weights_are_named(saved, name, damage, message):
    path = saved / name
    data = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(ValueError, match=message) as error:
        MSTCLIPIQA.from_pretrained(saved)
    assert str(error.value).startswith(str(path))


@pytest.mark.parametrize("name, key", [("model.safetensors", "fusion.W_h.weight"),
                                       ("backbones.safetensors", "fine.model.visual.proj")])
def test_nan_or_inf_weights_are_named(saved, name, key):
    path = saved / name
    state = load_file(str(path))
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan") if name == "model.safetensors" else float("inf")
    save_file(state, str(path))
    with pytest.raises(ValueError, match=f"holds NaN or inf values in 1 tensor\\(s\\), first: \\['{key}'\\]"):
        MSTCLIPIQA.from_pretrained(saved)


class _NoSuchRepo(RepositoryNotFoundError):
    def __init__(self):  # the real one needs an HTTP response
        OSError.__init__(self, "404 Client Error: Repository Not Found")


@pytest.mark.parametrize("failure, reason", [
    (LocalEntryNotFoundError("offline"), "the Hub was not reachable (offline or HF_HUB_OFFLINE=1)"),
    (_NoSuchRepo(), "the Hub has no such repo"),
])
def test_mistyped_path_that_looks_like_a_hub_id_says_there_is_no_such_folder(monkeypatch, failure, reason):
    def snapshot_download(repo_id, **kwargs):
        raise failure

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    with pytest.raises(ValueError) as error:
        MSTCLIPIQA.from_pretrained("runs/mymodel")
    message = str(error.value)
    assert message.startswith("no local folder runs/mymodel (") and f"as a Hub id {reason}" in message


def test_paths_that_cannot_be_hub_ids_never_ask_the_hub(monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda *a, **k: pytest.fail("asked the Hub"))
    for typo in (tmp_path / "modle", "runs/agiqa3k/modle", "./model", "runs/my model"):
        with pytest.raises(ValueError, match=f"no local folder {typo} .*does not exist\\); expected a directory "
                                             "written by save_pretrained") as error:
            MSTCLIPIQA.from_pretrained(typo)
        assert "Hub id (owner/name)" in str(error.value) and "as a Hub id" not in str(error.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file is a file; expected a directory"):
        MSTCLIPIQA.from_pretrained(tmp_path / "file")


def test_hub_repo_without_a_config_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda *a, **k: str(tmp_path))
    with pytest.raises(ValueError, match="Hub repo someone/other-model has no config.json"):
        MSTCLIPIQA.from_pretrained("someone/other-model")
