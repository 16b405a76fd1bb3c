"""Atomic writes: all or nothing, with the permissions a plain write gives."""

import json
import stat

import pytest

from reward.utils import atomic_write, write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_written_files_get_the_permissions_of_a_plain_write_not_owner_only(tmp_path):
    write_json(tmp_path / "report.json", {"nan": float("nan")})
    (tmp_path / "plain.json").write_text("{}")
    mode = stat.S_IMODE((tmp_path / "report.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode), oct(mode)
    assert json.loads((tmp_path / "report.json").read_text()) == {"nan": None}
