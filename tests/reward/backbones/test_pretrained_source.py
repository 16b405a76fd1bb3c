"""A transformers encoder named by a local folder that was deleted is named as a missing folder, not
tried as a Hub id ("Repo id must be in the form ...")."""
import pytest

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig
from mst_clipiqa.reward.backbones import BackboneConfig


@pytest.mark.parametrize("relative", [False, True])
def test_a_deleted_pretrained_folder_is_named(tmp_path, monkeypatch, relative):
    monkeypatch.chdir(tmp_path)
    folder = "./encoders/clip-b32" if relative else str(tmp_path / "encoders" / "clip-b32")
    config = MSTCLIPIQAConfig.tiny(backend="transformers")
    config.coarse = BackboneConfig("transformers", "clip", folder)
    with pytest.raises(ValueError, match=r"pretrained encoder folder .*clip-b32 does not exist .*deleted or moved"):
        MSTCLIPIQA(config)


def test_a_file_where_a_folder_is_expected_is_named(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    config = MSTCLIPIQAConfig.tiny(backend="transformers")
    config.coarse = BackboneConfig("transformers", "clip", str(tmp_path / "model.bin"))
    with pytest.raises(ValueError, match=r"model\.bin is a file; expected a folder"):
        MSTCLIPIQA(config)
