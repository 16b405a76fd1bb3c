"""A checkpoint in the reference implementation's layout, built here, imports and matches its formulas."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from mst_clipiqa.reward import MSTCLIPIQAConfig, from_official_checkpoint
from mst_clipiqa.reward.backbones.tokenizer import openai_clip_tokenizer

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
WIDTH, PROJ, HIDDEN, HEADS = 128, 96, 24, 8  # width 128 -> 2 attention heads of 64, as the importer assumes


def vision(patch, proj=PROJ):
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=64, patch_size=patch, hidden_size=WIDTH, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=WIDTH // 64, projection_dim=proj, hidden_act="quick_gelu"))


def text(with_projection, proj=PROJ):
    config = CLIPTextConfig(vocab_size=49408, hidden_size=WIDTH, intermediate_size=256, num_hidden_layers=2,
                            num_attention_heads=WIDTH // 64, max_position_embeddings=77, projection_dim=proj,
                            hidden_act="quick_gelu")
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


class Reference(nn.Module):
    """The reference formulas, written out independently of the library."""

    def __init__(self, variant, proj=PROJ):
        super().__init__()
        torch.manual_seed(3)
        self.variant = variant
        self.coarse, self.fine, self.text = vision(32, proj), vision(16, proj), text(variant == "A", proj)
        self.W_h, self.W_g = nn.Linear(2 * proj, HIDDEN), nn.Linear(HIDDEN, proj)
        self.W_c, self.W_f = nn.Linear(proj, proj), nn.Linear(proj, proj)
        self.temperature = nn.Parameter(torch.tensor(37.0))
        # proj == WIDTH gives the paper's packed in_proj_weight; otherwise separate q/k/v projections
        self.attn = nn.MultiheadAttention(proj, HEADS, kdim=WIDTH, vdim=WIDTH, batch_first=True)
        self.alpha = nn.Parameter(torch.tensor(0.7))
        self.W_1, self.W_2, self.w_o = nn.Linear(proj, proj), nn.Linear(proj, proj), nn.Linear(proj, 1)
        tok = openai_clip_tokenizer()
        if variant == "A":
            ids = tok([f"a photo with {q} quality" for q in ("bad", "poor", "fair", "good", "perfect")],
                      padding=True, return_tensors="pt")
            with torch.no_grad():
                self.text_features = F.normalize(self.text(**ids).text_embeds, dim=-1)

    def state(self):
        s = {f"mstfe.encoder_coarse.{k}": v for k, v in self.coarse.state_dict().items()}
        s.update({f"mstfe.encoder_fine.{k}": v for k, v in self.fine.state_dict().items()})
        s.update({f"head.text_encoder.{k}": v for k, v in self.text.state_dict().items()})
        s.update({f"gff.{n}.{k}": v for n in ("W_h", "W_g", "W_c", "W_f")
                  for k, v in getattr(self, n).state_dict().items()})
        if self.variant == "A":
            s.update({"head.temperature": self.temperature.data, "head.quality_scores": torch.arange(1.0, 6.0),
                      "head.text_features": self.text_features})
        else:
            s.update({"head.alpha": self.alpha.data, **{f"head.cross_attn.{k}": v for k, v in
                                                        self.attn.state_dict().items()}})
            s.update({f"head.{n}.{k}": v for n in ("W_1", "W_2", "w_o")
                      for k, v in getattr(self, n).state_dict().items()})
        return s

    @torch.no_grad()
    def score(self, images, prompt=None):
        x = (images - MEAN) / STD
        f_c, f_f = self.coarse(pixel_values=x).image_embeds, self.fine(pixel_values=x).image_embeds
        g = torch.sigmoid(self.W_g(torch.relu(self.W_h(torch.cat([f_c, f_f], -1)))))
        z = g * self.W_c(f_c) + (1 - g) * self.W_f(f_f)
        if self.variant == "A":
            p = (self.temperature * F.normalize(z, dim=-1) @ self.text_features.T).softmax(-1)
            return p @ torch.arange(1.0, 6.0)
        ids = openai_clip_tokenizer()([prompt] * len(z), return_tensors="pt")
        states = self.text(**ids).last_hidden_state
        a = self.attn(z[:, None], states, states)[0][:, 0]
        z = z + self.alpha * a
        return self.w_o(F.gelu(self.W_1(z)) + self.W_2(z)).squeeze(-1)


@pytest.mark.parametrize("variant", ["A", "B"])
@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("proj", [PROJ, WIDTH])
def test_official_checkpoint_matches_reference_formulas(tmp_path, variant, wrapped, proj):
    ref = Reference(variant, proj)
    state = ref.state()
    if proj == WIDTH:
        assert "head.cross_attn.in_proj_weight" in state or variant == "A"  # the paper's packed layout
    path = tmp_path / "best_model.pth"
    torch.save({"model_state_dict": state, "epoch": 3} if wrapped else state, path)
    model = from_official_checkpoint(path)
    assert model.config.variant == variant
    assert model.coarse.image_spec.size == 64 and model.fine.model.config.patch_size == 16
    assert model.fusion.W_h.out_features == HIDDEN and model.coarse.embed_dim == proj
    images = torch.rand(3, 3, 64, 64)
    prompt = "a lighthouse on a cliff"
    with torch.no_grad():
        ours = model(images, [prompt] * 3 if variant == "B" else None)["quality"]
    assert torch.allclose(ours, ref.score(images, prompt), atol=1e-5)


def test_official_checkpoint_with_safetensors_and_scores_in_range(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in Reference("A").state().items()}, str(path))
    scores = from_official_checkpoint(path)(torch.rand(2, 3, 64, 64))["quality"]
    assert ((scores >= 1) & (scores <= 5)).all()


def test_non_reference_files_are_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="not an MST-CLIPIQA reference checkpoint"):
        from_official_checkpoint(path)
    with pytest.raises(ValueError, match="missing.pth not found; expected a reference checkpoint"):
        from_official_checkpoint(tmp_path / "missing.pth")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "optimizer": Reference}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        from_official_checkpoint(path)


def test_config_sets_output_name_and_cross_attention_heads(tmp_path):
    path = tmp_path / "b.pth"
    torch.save({f"module.{k}": v for k, v in Reference("B").state().items()}, path)  # a DataParallel save
    config = MSTCLIPIQAConfig.tiny("B", heads={"correspondence": "prompt"}, attention_heads=HEADS,
                                   score_ranges={"correspondence": (0.0, 1.0)})
    model = from_official_checkpoint(path, config)
    assert model.outputs == ("correspondence",) and model.heads["correspondence"].cross_attn.num_heads == HEADS
    assert model.config.score_ranges["correspondence"] == (0.0, 1.0)
    assert model.config.coarse.pretrained is None  # imported encoder weights are kept, never re-fetched
    a_config = MSTCLIPIQAConfig.tiny("A", attention_heads=HEADS)
    assert from_official_checkpoint(path, a_config).config.score_ranges["quality"] == (0.0, 5.0)  # B's range


def test_keys_outside_the_layout_are_named(tmp_path):
    path = tmp_path / "extra.pth"
    torch.save({**Reference("A").state(), "ema.shadow": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"outside the reference layout: \['ema.shadow'\]"):
        from_official_checkpoint(path)


@pytest.fixture(scope="module")
def state_a():
    return Reference("A").state()


@pytest.mark.parametrize("drop, message", [
    ("mstfe.encoder_fine.vision_model.encoder.layers.1.mlp.fc2.weight", "do not match the config: missing 1 "
     "tensor(s) ['mstfe.encoder_fine.vision_model.encoder.layers.1.mlp.fc2.weight']"),
    ("head.text_encoder.text_model.encoder.layers.1.self_attn.q_proj.bias",
     "missing 1 tensor(s) ['head.text_encoder.text_model.encoder.layers.1.self_attn.q_proj.bias']"),
    ("mstfe.encoder_fine.visual_projection.weight",
     "missing 1 tensor(s) ['mstfe.encoder_fine.visual_projection.weight']"),
    ("mstfe.encoder_coarse.vision_model.encoder.layers.0.",
     "lacks whole transformer layers [0] under 'mstfe.encoder_coarse.vision_model.'"),
    ("mstfe.encoder_coarse.vision_model.embeddings.patch_embedding.weight",
     "lacks 'mstfe.encoder_coarse.vision_model.embeddings.patch_embedding.weight'"),
    ("mstfe.encoder_coarse.visual_projection.weight", "lacks 'mstfe.encoder_coarse.visual_projection.weight'"),
])
def test_missing_tensors_are_named_never_left_random(tmp_path, state_a, drop, message):
    path = tmp_path / "best_model.pth"
    torch.save({k: v for k, v in state_a.items() if not k.startswith(drop)}, path)
    with pytest.raises(ValueError) as error:
        from_official_checkpoint(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_a_missing_last_layer_is_warned_about(tmp_path, state_a):
    path = tmp_path / "best_model.pth"
    torch.save({k: v for k, v in state_a.items() if ".vision_model.encoder.layers.1." not in k
                or not k.startswith("mstfe.encoder_fine.")}, path)
    with pytest.warns(UserWarning, match="unequal depths .*'fine vision': 1"):
        from_official_checkpoint(path)


@pytest.mark.parametrize("damage, message", [("empty", "is empty (0 bytes)"), ("truncated", "cannot be read as a "
                                             "weights-only PyTorch checkpoint"), ("nan", "holds NaN or inf values")])
def test_damaged_checkpoint_files_are_named(tmp_path, state_a, damage, message):
    path = tmp_path / "best_model.pth"
    state = dict(state_a)
    if damage == "nan":
        state["gff.W_h.weight"] = torch.full_like(state["gff.W_h.weight"], float("nan"))
    torch.save(state, path)
    data = path.read_bytes()
    if damage != "nan":
        path.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(ValueError) as error:
        from_official_checkpoint(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)
