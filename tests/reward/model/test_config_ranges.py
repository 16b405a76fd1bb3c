"""Label ranges in the model config, and a fresh initialisation of the trained parts."""
import pytest
import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, from_pretrained


def test_label_ranges_are_saved_validated_and_default_to_the_score_range(tmp_path):
    config = MSTCLIPIQAConfig.tiny(heads={"quality": "template", "correspondence": "prompt"},
                                   label_ranges={"quality": [0, 5]})
    assert config.label_range("quality") == (0.0, 5.0)
    assert config.label_range("correspondence") == config.score_ranges["correspondence"] == (0.0, 5.0)
    MSTCLIPIQA(config).save_pretrained(tmp_path)
    assert from_pretrained(tmp_path).config.label_ranges == {"quality": (0.0, 5.0)}
    with pytest.raises(ValueError, match=r"label_ranges\['quality'\] is \(5.0, 0.0\); expected finite numbers"):
        MSTCLIPIQAConfig.tiny(label_ranges={"quality": (5, 0)})
    with pytest.raises(ValueError, match=r"label_ranges names \['align'\], not outputs"):
        MSTCLIPIQAConfig.tiny(label_ranges={"align": (0, 1)})


def test_reinitialize_starts_fusion_and_heads_afresh():
    torch.manual_seed(0)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny("B"))
    assert torch.equal(model.fusion.W_c.weight, torch.eye(64))
    with torch.no_grad():
        model.heads["quality"].alpha.fill_(3.0)
    model.reinitialize("random")
    assert model.config.init == "random" and not torch.equal(model.fusion.W_c.weight, torch.eye(64))
    assert model.heads["quality"].alpha.item() == 0.0
    model.reinitialize("zero_shot")
    assert torch.equal(model.fusion.W_c.weight, torch.eye(64))
    with pytest.raises(ValueError, match="init must be one of"):
        model.reinitialize("xavier")
