"""A Stable Diffusion 1.5-architecture pipeline with random weights, built from its configs in code (no download).

The UNet, VAE, text encoder and scheduler configs are those of
``stable-diffusion-v1-5/stable-diffusion-v1-5`` (860M-parameter UNet, 4-level VAE, the
CLIP ViT-L/14 text tower); the tokenizer is the CLIP BPE bundled with
open_clip. Weights are initialised directly on the target device, so building
it on a GPU takes seconds.
"""
from __future__ import annotations

import torch

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, center_input_sample=False,
)
SD15_VAE = dict(
    sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, act_fn="silu", scaling_factor=0.18215,
)
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406,
    eos_token_id=49407, pad_token_id=49407,
)
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1)


def sd15_pipeline(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """A ``StableDiffusionPipeline`` of the SD 1.5 architecture, random weights (seeded), DDIM scheduler."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mst_clipiqa.reward import openai_clip_tokenizer

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=openai_clip_tokenizer(), unet=unet,
                                   scheduler=DDIMScheduler(**SD15_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)
