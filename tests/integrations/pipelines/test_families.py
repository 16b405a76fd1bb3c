"""The pipeline-family registry: the documented way to add a family works as written; matching rules."""

import re
from pathlib import Path

import pytest
import torch

from mst_clipiqa.integrations import (
    PipelineFamily,
    SDXLFamily,
    UNetFamily,
    best_of_n,
    find_family,
    pipeline_family,
    register_family,
    registered_families,
)
from mst_clipiqa.integrations.pipelines.tiny import _finish, _tiny_t5_tokenizer, _tiny_vae, tiny_sdxl_pipeline

DOC = Path(__file__).resolve().parents[3] / "docs" / "pipeline_families.md"


def tiny_auraflow_pipeline():
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    transformer = AuraFlowTransformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, num_mmdit_layers=1, num_single_dit_layers=1,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
        out_channels=4, pos_embed_max_size=256)
    tokenizer = _tiny_t5_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                               num_heads=4, pad_token_id=0, eos_token_id=1, dropout_rate=0.0))
    return _finish(AuraFlowPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=_tiny_vae(),
                                    transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler()), "cpu")


def test_the_documented_family_works_as_written(caplog):
    """Runs the doc's code blocks as they are: the AuraFlow family, then its check against the pipeline."""
    define, check = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    pipe = tiny_auraflow_pipeline()
    assert find_family(pipe) is None
    namespace = {"pipe": pipe}
    exec(define, namespace)  # registers AuraFlowFamily
    assert type(pipeline_family(pipe)).__name__ == "AuraFlowFamily"
    exec(check, namespace)  # its own assert: the loop reproduces the pipeline's images
    assert namespace["images"].shape == (1, 3, 32, 32)

    kwargs = {"num_inference_steps": 2, "guidance_scale": 3.0, "height": 32, "width": 32}
    ranking = best_of_n(pipe, "a red car", lambda images, prompts: images.mean(dim=(1, 2, 3)), n=2, **kwargs)
    assert not [r for r in caplog.records if "not a registered pipeline family" in r.getMessage()]
    plain = pipe("a red car", output_type="pt", generator=torch.Generator().manual_seed(ranking.winner.seed),
                 **kwargs).images[0]
    torch.testing.assert_close(plain, ranking.winner.image, atol=1e-5, rtol=0)


def test_nearest_registered_class_wins_and_registering_again_replaces():
    from diffusers import StableDiffusionXLPipeline

    class MySDXLPipeline(StableDiffusionXLPipeline):
        pass

    pipe = MySDXLPipeline(**tiny_sdxl_pipeline().components)
    assert type(pipeline_family(pipe)) is SDXLFamily  # through its base class

    @register_family
    class MyFamily(SDXLFamily):
        pipelines = ("MySDXLPipeline",)

    assert type(pipeline_family(pipe)) is MyFamily and registered_families()["MySDXLPipeline"] is MyFamily
    assert registered_families()["StableDiffusionPipeline"] is UNetFamily


@pytest.mark.parametrize("family, message", [
    (int, "PipelineFamily subclass"),
    (type("NoPipelines", (PipelineFamily,), {}), "pipelines must be a non-empty tuple"),
    (type("OneString", (PipelineFamily,), {"pipelines": "FooPipeline"}), "pipelines must be a non-empty tuple"),
])
def test_bad_registration_is_a_clear_value_error(family, message):
    with pytest.raises(ValueError, match=message):
        register_family(family)
