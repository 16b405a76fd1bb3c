"""Atomic writes: all or nothing, with the permissions a plain write gives; the safetensors reader names a
damaged file."""

import errno
import json
import stat
from pathlib import Path

import pytest
import torch

from mst_clipiqa.reward.utils import atomic_write, read_tensors, save_tensors, write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    write_json(path, {"a": 1})

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # what a write to a full disk raises: no file named

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left on device") as caught:
        write_json(path, {"a": 2})
    assert caught.value.filename == str(path) and str(path) in str(caught.value)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_written_files_get_the_permissions_of_a_plain_write_not_owner_only(tmp_path):
    write_json(tmp_path / "report.json", {"nan": float("nan")})
    (tmp_path / "plain.json").write_text("{}")
    mode = stat.S_IMODE((tmp_path / "report.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode), oct(mode)
    assert json.loads((tmp_path / "report.json").read_text()) == {"nan": None}


def test_a_failed_tensor_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "entry.safetensors"

    def disk_full(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", disk_full)  # save_tensors imports it where it writes
    with pytest.raises(OSError):
        save_tensors({"x": torch.zeros(2)}, target)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_safetensors_file_is_named_with_what_was_expected(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_tensors({"x": torch.arange(3.0)}, path, {"note": "kept"})
    tensors, metadata = read_tensors(path)
    assert torch.equal(tensors["x"], torch.arange(3.0)) and metadata == {"note": "kept"}
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match=rf"{path} does not load .*; expected the weights of a test"):
        read_tensors(path, "the weights of a test")
