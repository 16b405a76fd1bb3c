import pytest
import torch

from mst_clipiqa.integrations.pipelines.families import pipeline_family
from mst_clipiqa.integrations.planner import meta_pipeline
from mst_clipiqa.integrations.planner.architectures import random_pipeline


def test_sd3_without_t5_conditions_the_transformer_with_the_same_shapes():
    pipe = random_pipeline("sd3.5-medium", torch.bfloat16, "meta", without=("text_encoder_3",))
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
    assert pipe.text_encoder_2 is not None and pipe.tokenizer_2 is not None
    with_t5, _ = meta_pipeline("sd3.5-medium")
    without = pipeline_family(pipe).encode(["a photo"], guidance=False)
    full = pipeline_family(with_t5).encode(["a photo"], guidance=False)
    assert {k: v.shape for k, v in without.items()} == {k: v.shape for k, v in full.items()}


def test_leaving_out_an_unknown_component_gets_one_line():
    with pytest.raises(ValueError, match=r"without text_encoder_4: not a component of sd3.5-medium; expected"):
        random_pipeline("sd3.5-medium", torch.bfloat16, "meta", without=("text_encoder_4",))


def test_fp32_buffers_take_the_pipelines_dtype_as_from_pretrained_gives_them():
    pipe = random_pipeline("sd3.5-medium", torch.bfloat16, "meta", without=("text_encoder_3",))
    assert pipe.transformer.pos_embed.pos_embed.dtype == torch.bfloat16  # built in fp32 by diffusers
