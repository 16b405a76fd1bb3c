"""Tiny diffusers pipelines built from configs, for tests, examples and benchmarks.

Nothing is downloaded: the components are randomly initialised from small
configs (as diffusers' own tests do) and the CLIP tokenizer is built from the
BPE vocabulary bundled with open_clip. The same ``seed`` always gives the same
weights, so a "fresh" pipeline is an exact copy of an untouched one.
"""

from __future__ import annotations

import functools

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from mst_clipiqa.reward import openai_clip_tokenizer

__all__ = ["tiny_sd_pipeline", "tiny_sd_turbo_pipeline", "tiny_sdxl_pipeline", "tiny_sd3_pipeline",
           "tiny_flux_pipeline", "tiny_pixart_pipeline", "tiny_lcm_pipeline", "TINY_PIPELINES"]

_CLIP_BOS, _CLIP_EOS = 49406, 49407


@functools.lru_cache(maxsize=1)
def _clip_text_config(hidden: int = 32, projection_dim: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=_CLIP_BOS,
        eos_token_id=_CLIP_EOS,
        pad_token_id=_CLIP_EOS,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=49408,
        hidden_act="gelu",
        projection_dim=projection_dim,
        max_position_embeddings=77,
    )


def _tiny_vae(latent_channels: int = 4, **kwargs):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=latent_channels,
        norm_num_groups=2,
        layers_per_block=1,
        sample_size=32,
        **kwargs,
    )


def _finish(pipe, device: str | torch.device):
    # Modules built from configs start in training mode (T5 has dropout); from_pretrained would eval() them.
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# The UNet shape shared by the tiny SD and SDXL pipelines (diffusers' own test configs).
TINY_UNET = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=2)


def _sd_components(seed: int, scheduler, **unet_kwargs) -> dict:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET, cross_attention_dim=32, **unet_kwargs)
    torch.manual_seed(seed + 1)
    vae = _tiny_vae()
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_clip_text_config())
    return dict(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=openai_clip_tokenizer(),
                safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)


def tiny_sd_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """A Stable Diffusion 1.x-style pipeline (UNet (32, 64), DDIM, CLIP text) that
    generates 32x32 images by default."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        steps_offset=1,
    )
    return _finish(StableDiffusionPipeline(**_sd_components(seed, scheduler)), device)


def tiny_sd_turbo_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """The tiny SD pipeline with SD-Turbo's sampler (Euler ancestral, trailing timesteps): call it with
    ``num_inference_steps=1, guidance_scale=0.0``, as SD-Turbo is. Its weights are random, not distilled."""
    from diffusers import EulerAncestralDiscreteScheduler

    pipe = tiny_sd_pipeline(seed, device)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    return pipe


def tiny_lcm_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """A latent-consistency pipeline (``LatentConsistencyModelPipeline``: the SD UNet with a guidance-scale
    embedding, ``time_cond_proj_dim``, and the LCM scheduler) that generates 32x32 images by default."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                             set_alpha_to_one=True)
    return _finish(LatentConsistencyModelPipeline(**_sd_components(seed, scheduler, time_cond_proj_dim=32)), device)


def tiny_sdxl_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """An SDXL-style pipeline (two CLIP text encoders, text-time conditioning,
    Euler scheduler) that generates 32x32 images by default."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **TINY_UNET,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
        cross_attention_dim=64,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    torch.manual_seed(seed + 1)
    vae = _tiny_vae()
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_clip_text_config())
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config())
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=openai_clip_tokenizer(),
        tokenizer_2=openai_clip_tokenizer(),
        image_encoder=None,
        feature_extractor=None,
    )
    return _finish(pipe, device)


def tiny_sd3_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """An SD3-style pipeline (MMDiT transformer, flow-matching Euler scheduler,
    two CLIP text encoders, no T5: the pipeline then feeds zeros for it) that
    generates 32x32 images by default."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    )
    torch.manual_seed(seed + 1)
    vae = _tiny_vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModelWithProjection(_clip_text_config())
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config())
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=openai_clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=openai_clip_tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    return _finish(pipe, device)


def _tiny_t5_tokenizer():
    # A toy unigram vocabulary (letters, digits, punctuation): the real T5 one is not bundled offline.
    import string

    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    pieces += [("\u2581" + c, -2.5) for c in string.ascii_lowercase]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=32)


def tiny_flux_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """A FLUX.1-style pipeline (packed-latent transformer with guidance embedding, flow-matching Euler,
    CLIP + tiny T5 text encoders) that generates 32x32 images by default."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x 2x2 packing
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    )
    torch.manual_seed(seed + 1)
    vae = _tiny_vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_clip_text_config())
    t5_tokenizer = _tiny_t5_tokenizer()
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                             num_heads=4, pad_token_id=0, eos_token_id=1, dropout_rate=0.0))
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=openai_clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
    )
    pipe.default_sample_size = 16  # 32 px (the pipeline assumes 128 latents, i.e. 1024 px)
    return _finish(pipe, device)


def tiny_pixart_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """A PixArt-alpha-style pipeline (DiT with adaLN-single and learned variance, tiny T5 text encoder,
    DPM-Solver++) that generates 32x32 images by default.

    Its transformer's ``sample_size`` (16) has no resolution bins: call it with
    ``use_resolution_binning=False``, as any custom-size PixArt.
    """
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=16, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3, caption_channels=32,
        in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6,
    )
    torch.manual_seed(seed + 1)
    vae = _tiny_vae()
    torch.manual_seed(seed + 2)
    tokenizer = _tiny_t5_tokenizer()
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                           num_heads=4, pad_token_id=0, eos_token_id=1, dropout_rate=0.0))
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())
    return _finish(pipe, device)


TINY_PIPELINES = {"sd": tiny_sd_pipeline, "sdxl": tiny_sdxl_pipeline, "sd3": tiny_sd3_pipeline,
                  "flux": tiny_flux_pipeline, "pixart": tiny_pixart_pipeline, "lcm": tiny_lcm_pipeline}
