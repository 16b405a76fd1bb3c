"""Pipelines by name: a downloaded one loads without other libraries' notices; offline and not cached, one line;
every loading option reaches the component it names (no network: folders saved here)."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

from mst_clipiqa.cli.pipeline_loading import LoadOptions, load_pipeline, resolve_dtype
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline


def test_an_uncached_hub_pipeline_offline_is_one_short_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        with pytest.raises(ValueError) as error:
            load_pipeline("stabilityai/stable-diffusion-xl-base-1.0")
    message = str(error.value)
    assert "HF_HUB_OFFLINE=1" in message and "tiny-sdxl" in message and len(message) < 300 and "\n" not in message
    assert not caught and not caplog.records  # no torch_dtype deprecation, no "Couldn't connect to the Hub"


def test_an_uncached_hub_pipeline_the_hub_does_not_give_is_one_short_line(monkeypatch, tmp_path):
    """Online but unreachable (no HF_HUB_OFFLINE): diffusers' several sentences become ours (no network here: the
    failed download is diffusers' own error, raised in its place)."""
    from diffusers import DiffusionPipeline

    def unreachable(*args, **kwargs):
        raise OSError("Cannot load model stabilityai/stable-diffusion-xl-base-1.0: the model is not fully cached "
                      "locally (...) and an error occurred while trying to fetch metadata from the Hub. Please check "
                      "out the root cause in the stacktrace above.")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", unreachable)
    with pytest.raises(ValueError) as error:
        load_pipeline("sdxl")
    message = str(error.value)
    assert message.startswith("--pipeline sdxl: not in the local Hugging Face cache, and the Hub did not give it")
    assert "tiny-sdxl" in message and "stacktrace" not in message and len(message) < 300
    tiny_sd_pipeline().save_pretrained(tmp_path / "saved")  # a folder: diffusers' reason, for it is about the files
    with pytest.raises(ValueError, match=r"cannot load it \(Cannot load model"):
        load_pipeline(str(tmp_path / "saved"))


def test_a_saved_pipeline_loads_without_notices(tmp_path, caplog):
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline

    tiny_sd_pipeline().save_pretrained(tmp_path / "pipe")
    handler = logging.Handler()
    handler.emit = caplog.records.append
    logging.getLogger("diffusers").addHandler(handler)  # diffusers' loggers may not propagate to the root
    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
            warnings.simplefilter("always")
            pipe, tiny = load_pipeline(str(tmp_path / "pipe"))
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert tiny is None and type(pipe).__name__ == "StableDiffusionPipeline"
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe")
    tiny_sd_pipeline(seed=0).save_pretrained(folder / "sd")
    tiny_sd_pipeline(seed=1).vae.save_pretrained(folder / "vae")
    tiny_sd_pipeline(seed=0).save_pretrained(folder / "sd-fp16", variant="fp16")
    return folder


def _dtypes(pipe):
    return {name: m.dtype for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}


def test_dtype_reaches_every_component_and_upcast_keeps_the_vae_fp32(saved):
    pipe, tiny = load_pipeline(str(saved / "sd"), options=LoadOptions(dtype="bf16", upcast_vae=True))
    dtypes = _dtypes(pipe)
    assert tiny is None and dtypes.pop("vae") == torch.float32 and pipe.vae.config.force_upcast
    assert set(dtypes) == {"unet", "text_encoder"} and set(dtypes.values()) == {torch.bfloat16}


def test_vae_is_replaced_by_the_one_named(saved):
    pipe, _ = load_pipeline(str(saved / "sd"), options=LoadOptions(vae=str(saved / "vae")))
    other = tiny_sd_pipeline(seed=1).vae.state_dict()
    own = tiny_sd_pipeline(seed=0).vae.state_dict()
    assert all(torch.equal(v, other[k]) for k, v in pipe.vae.state_dict().items())
    assert not all(torch.equal(v, own[k]) for k, v in pipe.vae.state_dict().items())
    with pytest.raises(ValueError, match="--vae .*no AutoencoderKL"):
        load_pipeline(str(saved / "sd"), options=LoadOptions(vae=str(saved / "missing")))


def test_checkpointing_compile_and_variant_reach_the_denoiser(saved):
    pipe, _ = load_pipeline(str(saved / "sd-fp16"), options=LoadOptions(
        variant="fp16", gradient_checkpointing=True, compile=True))
    assert pipe.unet.is_gradient_checkpointing
    assert pipe.unet._compiled_call_impl is not None  # compiled lazily, at the first call
    assert not tiny_sd_pipeline().unet.is_gradient_checkpointing


def test_quantize_reaches_the_denoiser():
    pytest.importorskip("torchao.quantization")
    pipe, _ = load_pipeline("tiny", options=LoadOptions(quantize="int8"))
    assert type(pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q.weight).__name__ == "Int8Tensor"
    assert type(pipe.vae.decoder.mid_block.attentions[0].to_q.weight) is torch.nn.Parameter  # the denoiser only


def test_nf4_reaches_the_denoiser():
    bnb = pytest.importorskip("bitsandbytes")
    pipe, _ = load_pipeline("tiny", options=LoadOptions(quantize="nf4"))
    assert isinstance(pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q, bnb.nn.Linear4bit)
    assert type(pipe.vae.decoder.mid_block.attentions[0].to_q) is torch.nn.Linear  # the denoiser only


def test_nf4_for_a_gpu_is_diffusers_bitsandbytes_config_on_the_denoiser(saved, monkeypatch):
    pytest.importorskip("bitsandbytes")  # diffusers' config checks its version; its loader then needs a GPU
    from diffusers import DiffusionPipeline

    asked = {}

    def from_pretrained(source, **kwargs):
        asked.update(kwargs)
        raise OSError("stopped before loading")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", from_pretrained)
    monkeypatch.setattr("mst_clipiqa.cli.pipeline_loading._allow_tf32", lambda *_: None)
    with pytest.raises(ValueError, match="stopped before loading"):
        load_pipeline(str(saved / "sd"), "cuda", LoadOptions(dtype="fp32", quantize="nf4"), place=False)
    config = asked["quantization_config"]
    assert config.components_to_quantize == ["unet"]
    assert config.quant_kwargs == {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                   "bnb_4bit_compute_dtype": torch.float32, "bnb_4bit_use_double_quant": False}


def test_tiny_names_keep_fp32_unless_asked():
    assert set(_dtypes(load_pipeline("tiny")[0]).values()) == {torch.float32}
    assert set(_dtypes(load_pipeline("tiny", options=LoadOptions(dtype="bf16"))[0]).values()) == {torch.bfloat16}


def test_wrong_combinations_get_one_line():
    with pytest.raises(ValueError, match="--dtype fp16 needs a GPU"):
        resolve_dtype("fp16", torch.device("cpu"))
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="--pipeline nowhere: (cannot load it|not in the local Hugging Face cache)"):
        load_pipeline("nowhere")
